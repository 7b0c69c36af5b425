"""`batchtrain probe`: measure before training, then recommend a batch size.

It measures the hardware curve (samples/s and estimated memory per physical batch), the memory
ceiling, and the gradient noise scale B_simple at initialisation and after a short warm-up. The
recommendation comes from branches (training/branch.py, as `--batch-size auto` starts): from the
initial weights each size trains on the same samples at the given learning rate, and the size
that lowers a probe loss fastest per second, by a clear margin over the smaller ones
(batching/branched.py first_choice), is recommended with that learning rate. On the
benchmark suite this picks the grid's best fixed size or its neighbour, where the noise scale's
goodput pick (Pollux, Qiao et al. 2021: throughput x (phi + B0) / (phi + B)) was off by up to
1.7x in time to target (README "Batch size"); the report shows both.
"""
import copy
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from batchtrain.batching.branched import MIN_BRANCH_GAIN as BRANCH_MARGIN  # noqa: E402
from batchtrain.batching.branched import first_choice  # noqa: E402
from batchtrain.batching.goodput import goodput_choice, statistical_efficiency  # noqa: E402
from batchtrain.batching.coupling import default_lr_scaling, lr_scale  # noqa: E402
from batchtrain.batching.memory import memory_ceiling  # noqa: E402
from batchtrain.data.arrays import as_features, as_tensor  # noqa: E402
from batchtrain.optim.optimizers import make_optimizer  # noqa: E402
from batchtrain.stats import (MicroBatchGradients, NoiseEstimate, NoiseScaleTracker,  # noqa: E402
                              Preconditioner)
from batchtrain.tasks.kinds import prepare_targets  # noqa: E402
from batchtrain.trainer import Trainer  # noqa: E402
from batchtrain.training.branch import BRANCH_STEPS, PROBE_SAMPLES, Branches, branch  # noqa: E402

REFERENCE_BATCH = 128  # the batch the given learning rate is taken to be tuned for


@dataclass
class ProbeResult:
    sizes: list[int]
    samples_per_s: dict[int, float]
    memory_bytes: dict[int, int]
    memory_line: str
    noise_at_init: NoiseEstimate | None
    noise_after_warmup: NoiseEstimate | None
    warmup_samples: int
    recommended_batch: int
    recommended_lr: float
    lr_rule: str
    goodput: dict[int, float]
    preconditioned: bool = False  # noise after warm-up measured in Adam's/RMSprop's geometry
    branches: Branches | None = None  # at the initial weights, at the given lr
    goodput_batch: int = 0  # the noise scale's goodput pick, for comparison


def probe(trainer: Trainer, x, y, sizes: list[int], warmup_samples: int, repeats: int = 5,
          budget_bytes: int | None = None) -> ProbeResult:
    """Measure and recommend (see the module docstring). trainer: unfitted, with its options."""
    trainer.prepare(x, y)
    inputs = as_features(x).to(trainer.device_)
    targets = prepare_targets(trainer.task_, as_tensor(y, "y")).to(trainer.device_)
    memory = memory_ceiling(trainer.model_, inputs[:16], trainer.device_, budget_bytes=budget_bytes,
                            optimizer=trainer.optimizer_)
    sizes = [size for size in sizes if size <= min(memory.max_batch, len(inputs))]
    curve = {size: size / time_step(trainer, inputs, targets, size, repeats) for size in sizes}
    generator = torch.Generator().manual_seed(trainer.seed_)
    at_init = measure_noise(trainer, inputs, targets, generator)
    branches = branch_sizes(trainer, inputs, targets, sizes, generator)
    base_lr = trainer.optimizer_.param_groups[0].get("initial_lr", trainer.optimizer_.param_groups[0]["lr"])
    trainer.fit(x[:warmup_samples], y[:warmup_samples], batch_size=REFERENCE_BATCH, epochs=1)
    after = measure_noise(trainer, inputs, targets, generator)
    phi = after.noise_scale if after is not None else float("inf")
    by_noise, details = goodput_choice(phi, REFERENCE_BATCH, sizes, curve.__getitem__)
    rule = default_lr_scaling(trainer.optimizer_)
    branched = first_choice(branches) if branches is not None else None
    best, lr = ((branched, base_lr) if branched is not None
                else (by_noise, base_lr * lr_scale(rule, by_noise, REFERENCE_BATCH)))
    return ProbeResult(sizes, curve, {size: memory.bytes_for(size) for size in sizes},
                       memory.describe(), at_init, after, warmup_samples, best, lr,
                       "branched" if branched is not None else rule, details["goodput"],
                       Preconditioner(trainer.optimizer_).adaptive, branches, by_noise)


def branch_sizes(trainer: Trainer, inputs, targets, sizes: list[int],
                 generator: torch.Generator) -> Branches | None:
    """Branches at every size from the current (initial) weights, each on the same BRANCH_STEPS x
    the largest size's samples (at most half the data), the probe loss on up to PROBE_SAMPLES
    others, at the optimizer's lr; None under two sizes. Undone afterwards."""
    if len(sizes) < 2:
        return None
    samples = min(BRANCH_STEPS * max(sizes), len(inputs) // 2)
    # not training/branch.py probe_samples (half a branch): a report off the run's clock can
    # afford the larger, steadier probe set
    probe_samples = min(PROBE_SAMPLES, len(inputs) // 4, samples)
    order = torch.randperm(len(inputs), generator=generator)[:samples + probe_samples]
    order = order.to(inputs.device)
    x, y = inputs[order], targets[order]
    return branch(trainer.model_, trainer.task_.loss_fn, trainer.optimizer_, x[probe_samples:],
                  y[probe_samples:], x[:probe_samples], y[:probe_samples], sizes,
                  seed=trainer.seed_)


def time_step(trainer: Trainer, inputs, targets, size: int, repeats: int) -> float:
    """Median seconds of one training step (forward, backward, update) at physical batch `size`,
    on a copy of the model and optimizer so the probe does not train the real ones."""
    model = copy.deepcopy(trainer.model_).train()
    optimizer = make_optimizer(trainer.optimizer if isinstance(trainer.optimizer, str) else "adam",
                               model, trainer.lr)
    x, y = inputs[:size], targets[:size]
    times = []
    for repeat in range(repeats + 1):  # the first step warms caches and allocators: not counted
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        trainer.task_.loss_fn(model(x), y).backward()
        optimizer.step()
        if inputs.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def measure_noise(trainer: Trainer, inputs, targets, generator: torch.Generator, batch: int = 256,
                  micro: int = 64, steps: int = 40) -> NoiseEstimate | None:
    """B_simple at the current parameters from `steps` random batches of `batch` samples split
    into micro-batches (stats/noise.py), without changing the parameters."""
    model = trainer.model_.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    collector, tracker = MicroBatchGradients(parameters), NoiseScaleTracker(decay=0.9)
    factors = Preconditioner(trainer.optimizer_).factors(parameters)  # None at initialisation
    batch = min(batch, len(inputs))
    for _ in range(steps):
        index = torch.randperm(len(inputs), generator=generator)[:batch].to(inputs.device)
        for parameter in parameters:
            parameter.grad = None
        collector.begin(factors)
        for part in index.split(micro):
            (trainer.task_.loss_fn(model(inputs[part]), targets[part]) * (len(part) / batch)).backward()
            collector.after_micro_batch(len(part), len(part) / batch)
        tracker.update(**collector.finish(batch))
    for parameter in parameters:
        parameter.grad = None
    return tracker.estimate()


def write_report(result: ProbeResult, out_dir: Path) -> Path:
    """probe.png (throughput, efficiency and goodput vs batch) and probe.md; returns the .md path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    phi = result.noise_after_warmup.noise_scale if result.noise_after_warmup else float("inf")
    efficiency = {size: statistical_efficiency(size, phi, REFERENCE_BATCH) for size in result.sizes}
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for axis, values, label in zip(axes, (result.samples_per_s, efficiency, result.goodput),
                                   ("throughput (samples/s)", f"efficiency vs batch {REFERENCE_BATCH}",
                                    "goodput (samples/s)")):
        axis.plot(result.sizes, [values[size] for size in result.sizes], marker="o")
        axis.axvline(result.recommended_batch, color="tab:red", linestyle="--")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("batch (samples)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_dir / "probe.png", dpi=100)
    plt.close(figure)
    path = out_dir / "probe.md"
    path.write_text(_markdown(result, efficiency))
    return path


def _noise_line(name: str, estimate: NoiseEstimate | None) -> str:
    if estimate is None:
        return f"- {name}: no estimate"
    return (f"- {name}: B_simple = {estimate.noise_scale:.0f} samples "
            f"(confidence {estimate.confidence:.2f}, {estimate.updates} batches)")


def _markdown(result: ProbeResult, efficiency: dict[int, float]) -> str:
    branches = result.branches
    rates = branches.per_second if branches is not None else {}
    rows = "\n".join(
        f"| {size} | {result.samples_per_s[size]:.0f} | {result.memory_bytes[size] / 2**20:.1f} | "
        f"{_rate(rates.get(size))} | {efficiency[size]:.3f} | {result.goodput[size]:.0f} |"
        for size in result.sizes)
    if result.lr_rule == "branched":
        why = f"""The batch lowered the loss on {branches.samples} training
samples fastest per second (loss {branches.loss_before:.4g} before), at the given learning rate,
by more than {int(100 * BRANCH_MARGIN)} % over every smaller size: branches from the initial
weights (Merrill et al. 2025), undone, as `--batch-size auto` starts. The noise scale's goodput
pick, for comparison: batch {result.goodput_batch}. `--batch-size auto` goes on branching
during training: the batch that trains fastest grows as training goes on."""
    else:
        why = f"""No branch lowered the loss, so the batch maximises goodput = throughput x
statistical efficiency (phi + {REFERENCE_BATCH}) / (phi + B) with phi the noise scale after
warm-up (Pollux, Qiao et al. 2021). The learning rate is the given one (taken as tuned for batch
{REFERENCE_BATCH}) scaled by the '{result.lr_rule}' rule for this optimizer."""
    return f"""# batchtrain probe

{result.memory_line}

| batch | samples/s | memory (MiB, estimate) | branch: loss decrease per s | efficiency | goodput |
|---|---|---|---|---|---|
{rows}

Gradient noise scale (McCandlish et al. 2018){_geometry(result.preconditioned)}:
{_noise_line("at initialisation", result.noise_at_init)}
{_noise_line(f"after {result.warmup_samples} samples of warm-up", result.noise_after_warmup)}

**Recommendation: batch {result.recommended_batch}, learning rate {result.recommended_lr:.3g}.**
{why}
"""


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _geometry(preconditioned: bool) -> str:
    if not preconditioned:
        return ""
    return (", after warm-up on gradients preconditioned as the adaptive optimizer steps "
            "(at initialisation it has no second moments yet: raw gradients)")
