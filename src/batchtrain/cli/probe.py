"""`batchtrain probe`: measure before training, then recommend a batch size and learning rate.

It measures the hardware curve (samples/s and estimated memory per physical batch), the memory
ceiling, and the gradient noise scale B_simple at initialisation and after a short warm-up; then
it picks the batch with the most goodput, throughput x statistical efficiency (Pollux, Qiao et
al. 2021: E(B) = (phi + B0) / (phi + B)), and scales the learning rate with the optimizer's rule.
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

from batchtrain.batching.adaptive import goodput_choice, statistical_efficiency  # noqa: E402
from batchtrain.batching.coupling import default_lr_scaling, lr_scale  # noqa: E402
from batchtrain.batching.memory import memory_ceiling  # noqa: E402
from batchtrain.data.arrays import as_features, as_tensor  # noqa: E402
from batchtrain.optim.optimizers import make_optimizer  # noqa: E402
from batchtrain.stats import (MicroBatchGradients, NoiseEstimate, NoiseScaleTracker,  # noqa: E402
                              Preconditioner)
from batchtrain.tasks.kinds import prepare_targets  # noqa: E402
from batchtrain.trainer import Trainer  # noqa: E402

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
    trainer.fit(x[:warmup_samples], y[:warmup_samples], batch_size=REFERENCE_BATCH, epochs=1)
    after = measure_noise(trainer, inputs, targets, generator)
    phi = after.noise_scale if after is not None else float("inf")
    best, details = goodput_choice(phi, REFERENCE_BATCH, sizes, curve.__getitem__)
    rule = default_lr_scaling(trainer.optimizer_)
    base_lr = trainer.optimizer_.param_groups[0].get("initial_lr", trainer.optimizer_.param_groups[0]["lr"])
    return ProbeResult(sizes, curve, {size: memory.bytes_for(size) for size in sizes},
                       memory.describe(), at_init, after, warmup_samples, best,
                       base_lr * lr_scale(rule, best, REFERENCE_BATCH), rule, details["goodput"],
                       Preconditioner(trainer.optimizer_).adaptive)


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
    rows = "\n".join(
        f"| {size} | {result.samples_per_s[size]:.0f} | {result.memory_bytes[size] / 2**20:.1f} | "
        f"{efficiency[size]:.3f} | {result.goodput[size]:.0f} |" for size in result.sizes)
    return f"""# batchtrain probe

{result.memory_line}

| batch | samples/s | memory (MiB, estimate) | efficiency | goodput |
|---|---|---|---|---|
{rows}

Gradient noise scale (McCandlish et al. 2018){_geometry(result.preconditioned)}:
{_noise_line("at initialisation", result.noise_at_init)}
{_noise_line(f"after {result.warmup_samples} samples of warm-up", result.noise_after_warmup)}

**Recommendation: batch {result.recommended_batch}, learning rate {result.recommended_lr:.3g}.**
The batch maximises goodput = throughput x statistical efficiency (phi + {REFERENCE_BATCH}) /
(phi + B) with phi the noise scale after warm-up (Pollux, Qiao et al. 2021): below the noise
scale a larger batch wastes few samples, above it most of its extra samples only average noise.
The learning rate is the given one (taken as tuned for batch {REFERENCE_BATCH}) scaled by the
'{result.lr_rule}' rule for this optimizer. The noise scale grows as training progresses, so
`--batch-size auto` (which re-measures it) usually ends above this starting point.
"""


def _geometry(preconditioned: bool) -> str:
    if not preconditioned:
        return ""
    return (", after warm-up on gradients preconditioned as the adaptive optimizer steps "
            "(at initialisation it has no second moments yet: raw gradients)")
