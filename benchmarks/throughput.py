"""Training throughput of the reference CNN: batchtrain against a hand-written PyTorch loop.

    .venv/bin/python benchmarks/throughput.py                  # batches 32, 128, 512; 5 repeats
    .venv/bin/python benchmarks/throughput.py --batches 128 --repeats 9 --samples 8192
    .venv/bin/python benchmarks/throughput.py --threads 1           # per-core figures
    .venv/bin/python benchmarks/throughput.py --adaptive-threads    # fit with AdaptiveThreads
    .venv/bin/python benchmarks/throughput.py --precision 32,bf16-mixed  # both, each under autocast

On a machine that other work shares, the figures follow its load (the last line reports it): with
another process busy on one of two cores, two torch threads wait on each other at every kernel
and both contestants slow down several-fold (see runtime/threads.py).

Both train the same network (Conv2D(32) > MaxPool > Conv2D(64) > MaxPool > Dense(64) > Dense(10),
Keras initialisation) with Adam (lr 1e-3, eps 1e-7) on the same images, in the same process,
interleaved: each repeat runs both (their order alternating), so a change of load on a shared
machine hits both alike. Figures are medians over repeats; ratios are medians of the per-repeat
ratios (paired).

- plain: the obvious loop a user writes: the layers in an nn.Sequential, torch.optim.Adam with its
  defaults, tensors in memory indexed by a shuffled permutation, running loss and accuracy read
  with .item() (what batchtrain reports too).
- batchtrain: Trainer("seed-cnn", seed=0, max_physical_batch=B).fit(x, y, batch_size=B, epochs=1),
  timed from call to return (setup, data checks, the epoch, metrics), after one warm-up fit.
- overhead: both at batch 8 with every optional speed-up of batchtrain off, so the difference is
  the library's own per-step work. "Speed-ups off": seed-cnn's plain layers instead of its fused CPU
  blocks (model_options={"fused": False}) and torch's default per-parameter Adam instead of the
  fused kernel (optimizer_options={"fused": False}); what is not optional stays on (the per-step
  NaN/inf check of the loss and gradients, the running loss and accuracy). On one thread
  (--overhead-threads). Two figures, each as the median of the per-repeat ratios (paired; with the
  middle half of the ratios) and as the ratio of the median times:
  - whole passes: fit() against plain_epoch over --overhead-samples, --overhead-repeats times
    interleaved (short passes, many repeats: a burst of load spoils few pairs);
  - step by step: during one fit, a plain step after every batchtrain step (StepRace), so each
    pair meets the same load; the stable figure. On the shared 2-core VM a 0.5 s pass varies by
    +-10 % from one pass to the next, in CPU time as much as in wall time (the noise comes from
    outside the guest, so process time does not remove it), while pairs of adjacent steps agree.

FLOPs: 2 per multiply-add, x3 for training (forward, gradient of the input, of the weights), over
the Conv2d and Linear layers: 15.2 MFLOP per 28x28 sample. Peak: cores x clock x FLOP per cycle,
with 32 FLOP/cycle/core for AVX2 + FMA (2 FMA units x 8 fp32 lanes x 2). The clock is read from
/proc/cpuinfo (the highest "cpu MHz"; a VM reports its nominal clock).
"""
import argparse
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from batchtrain import Callback, Trainer
from batchtrain.errors import DatasetNotFoundError
from batchtrain.models.init import keras_init_
from batchtrain.runtime.threads import AdaptiveThreads, CpuLoad, usable_cores

FLOP_PER_CYCLE = {"avx512f": 64, "avx2": 32, "sse2": 8}  # fp32, per core, with FMA where listed
# bfloat16 per core and cycle where the CPU has the units (else bf16 is emulated: the fp32 peak).
# AMX-BF16: TDPBF16PS makes 16x16 float32 outputs from 32 bf16 pairs each (16,384 FLOP) per 16
# cycles = 1024 FLOP/cycle (Intel's AMX documentation); AVX512-BF16: VDPBF16PS does a pair of bf16
# products per float32 lane, twice the fp32 FMA rate = 128 FLOP/cycle.
BF16_FLOP_PER_CYCLE = {"amx_bf16": 1024, "avx512_bf16": 128}
DTYPES = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def plain_model() -> nn.Sequential:
    """The reference CNN as a user writes it."""
    return keras_init_(nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10)))


def plain_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor, batch_size: int) -> dict:
    """One epoch of the hand-written loop; returns its loss and accuracy."""
    model.train()
    order = torch.randperm(len(x))
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        index = order[start:start + batch_size]
        batch_loss, batch_correct = plain_step(model, optimizer, x[index], y[index])
        total_loss += batch_loss
        correct += batch_correct
    return {"loss": total_loss / len(x), "accuracy": correct / len(x)}


PLAIN_PRECISION = {"dtype": None, "scaler": None}  # set by --precision: the plain loop's autocast


def plain_step(model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
               targets: torch.Tensor) -> tuple[float, int]:
    """One step of the hand-written loop; returns the batch's summed loss and correct count."""
    dtype, scaler = PLAIN_PRECISION["dtype"], PLAIN_PRECISION["scaler"]
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        outputs = model(inputs)
        loss = F.cross_entropy(outputs, targets)
    optimizer.zero_grad()
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:  # float16: torch.amp's recipe
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.item() * len(targets), (outputs.argmax(dim=1) == targets).sum().item()


class StepRace(Callback):
    """Runs one plain step after every batchtrain step of a fit, and times both.

    batchtrain's step is the time from this callback's return to its next call (batching, the
    step, records, policy, callbacks: all of its per-step work); the plain step is timed inside.
    Each pair runs within ~20 ms at batch 8, under the same load.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor, batch_size: int):
        self.model, self.optimizer, self.x, self.y = model, optimizer, x, y
        self.batch_size = batch_size
        self.plain_s: list[float] = []
        self.ours_s: list[float] = []

    def on_fit_begin(self, trainer, info) -> None:
        self.model.train()
        self.order, self.position = torch.randperm(len(self.x)), 0
        self.returned = time.perf_counter()

    def on_batch_end(self, trainer, batch_size: int) -> None:
        self.ours_s.append(time.perf_counter() - self.returned)
        if self.position >= len(self.x):
            self.order, self.position = torch.randperm(len(self.x)), 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        started = time.perf_counter()
        plain_step(self.model, self.optimizer, self.x[index], self.y[index])
        self.plain_s.append(time.perf_counter() - started)
        self.returned = time.perf_counter()


def adam(model: nn.Module, **options) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7, **options)


def training_flops_per_sample(model: nn.Module, sample_shape: tuple[int, ...]) -> int:
    """3 x 2 x the multiply-adds of the Conv2d and Linear layers for one sample (see the header)."""
    macs = []

    def count(layer, inputs, output):
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            macs.append(output[0].numel() * per_output)
        elif isinstance(layer, nn.Linear):
            macs.append(output[0].numel() * layer.in_features)

    handles = [layer.register_forward_hook(count) for layer in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, *sample_shape))
    for handle in handles:
        handle.remove()
    return 3 * 2 * sum(macs)


def cpu_peak(cores: int) -> tuple[float, str]:
    """Peak fp32 FLOP/s of `cores` cores, and how it was computed."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            text = cpuinfo.read()
    except OSError:
        return float("nan"), "unknown (no /proc/cpuinfo)"
    clocks_mhz = [float(value) for value in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)]
    clock_mhz = max(clocks_mhz) if clocks_mhz else _lscpu_max_mhz()
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.MULTILINE).group(1).split())
    vector = next((name for name in FLOP_PER_CYCLE if name in flags and
                   (name == "sse2" or "fma" in flags)), "sse2")
    per_cycle = FLOP_PER_CYCLE[vector]
    peak = cores * clock_mhz * 1e6 * per_cycle
    return peak, (f"{cores} cores x {clock_mhz / 1000:.3f} GHz x {per_cycle} FLOP/cycle "
                  f"({vector.upper()}{' + FMA' if vector != 'sse2' else ''}) = {peak / 1e9:.1f} GFLOP/s")


def precision_peak(fp32_peak: float, fp32_text: str, precision: str) -> tuple[float, str]:
    """The peak of the precision the run computes in: bf16 units where the CPU has them."""
    if precision == "32":
        return fp32_peak, fp32_text
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = set(re.search(r"^flags\s*:(.*)$", cpuinfo.read(), re.MULTILINE).group(1).split())
    except (OSError, AttributeError):
        flags = set()
    unit = next((name for name in BF16_FLOP_PER_CYCLE if name in flags), None)
    if precision != "bf16-mixed" or unit is None:
        return fp32_peak, (f"{fp32_text}; no native {precision.split('-')[0]} units, so the "
                           "low precision is emulated at (at most) the fp32 peak")
    factor = BF16_FLOP_PER_CYCLE[unit] / FLOP_PER_CYCLE["avx512f"]
    return fp32_peak * factor, f"{fp32_text} x {factor:g} ({unit.upper()}) for bfloat16"


def _lscpu_max_mhz() -> float:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return float("nan")
    match = re.search(r"CPU max MHz:\s*([\d.]+)", out)
    return float(match.group(1)) if match else float("nan")


def load_images(samples: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first `samples` Fashion-MNIST training images, or random ones where it is not installed."""
    try:
        from batchtrain import load_dataset
        data = load_dataset("fashion-mnist", download=False)
        x, y = torch.as_tensor(data.x_train[:samples]), torch.as_tensor(data.y_train[:samples])
        return x.float(), y.long(), "Fashion-MNIST"
    except DatasetNotFoundError:
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(samples, 1, 28, 28, generator=generator)
        return x, torch.randint(0, 10, (samples,), generator=generator), "random images"


class Contestants:
    """The two ways of training at one batch size, each timed over one pass of x, y."""

    def __init__(self, batch: int, x: torch.Tensor, y: torch.Tensor, speedups: bool,
                 adaptive_threads: bool):
        torch.manual_seed(0)
        self.batch, self.x, self.y = batch, x, y
        self.model = plain_model()
        self.optimizer = adam(self.model)
        options = {} if speedups else {"model_options": {"fused": False},
                                       "optimizer_options": {"fused": False}}
        self.trainer = Trainer("seed-cnn", seed=0, max_physical_batch=batch,
                               precision=PLAIN_PRECISION.get("name", "32"), **options)
        self.callbacks = [AdaptiveThreads()] if adaptive_threads else []
        warm_up = min(len(x), 4 * batch)
        self.trainer.fit(x[:warm_up], y[:warm_up], batch_size=batch, epochs=1)
        plain_epoch(self.model, self.optimizer, x[:warm_up], y[:warm_up], batch)

    def plain_s(self) -> float:
        started = time.perf_counter()
        plain_epoch(self.model, self.optimizer, self.x, self.y, self.batch)
        return time.perf_counter() - started

    def batchtrain_s(self) -> float:
        started = time.perf_counter()
        self.trainer.fit(self.x, self.y, batch_size=self.batch, epochs=1, callbacks=self.callbacks)
        return time.perf_counter() - started

    def race(self, repeats: int) -> tuple[list[float], list[float]]:
        """Seconds per pass for (plain, batchtrain), interleaved, the first to run alternating."""
        plain, ours = [], []
        for repeat in range(repeats):
            if repeat % 2 == 0:
                plain.append(self.plain_s())
                ours.append(self.batchtrain_s())
            else:
                ours.append(self.batchtrain_s())
                plain.append(self.plain_s())
        return plain, ours

    def step_race(self, epochs: int) -> tuple[list[float], list[float]]:
        """Seconds per step for (plain, batchtrain), alternating step by step (StepRace) during
        one fit of `epochs` passes."""
        race = StepRace(self.model, self.optimizer, self.x, self.y, self.batch)
        self.trainer.fit(self.x, self.y, batch_size=self.batch, epochs=epochs, callbacks=[race])
        return race.plain_s, race.ours_s


def paired_ratio(plain_s: list[float], ours_s: list[float]) -> float:
    """Median over repeats of plain time / batchtrain time (= batchtrain's speed-up)."""
    return statistics.median(p / o for p, o in zip(plain_s, ours_s))


def overhead_figures(plain_s: list[float], ours_s: list[float]) -> dict[str, float]:
    """batchtrain's extra time over plain's, as fractions: the median of the per-repeat ratios
    (paired), its interquartile range, and the ratio of the two medians (unpaired)."""
    extra = sorted(o / p - 1 for p, o in zip(plain_s, ours_s))
    quartiles = statistics.quantiles(extra, n=4) if len(extra) > 1 else [extra[0]] * 3
    return {"paired": statistics.median(extra), "low": quartiles[0], "high": quartiles[2],
            "of_medians": statistics.median(ours_s) / statistics.median(plain_s) - 1}


def use_precision(precision: str) -> None:
    """Sets the plain loop's autocast (and GradScaler for 16-mixed) and batchtrain's precision."""
    PLAIN_PRECISION.update(name=precision, dtype=DTYPES[precision],
                           scaler=torch.amp.GradScaler("cpu") if precision == "16-mixed" else None)


def throughput_table(args, x, y, flops: int, peaks: dict[str, float]) -> None:
    """One row per precision and batch size: samples/s of both, the paired ratio, each one's % of
    that precision's peak, and batchtrain's speed against its own first precision at that batch
    (rows run one after the other, so that column is unpaired)."""
    print(f"{'precision':>10} {'batch':>5} {'plain/s':>9} {'batchtrain/s':>12} {'ratio':>6} "
          f"{'plain % peak':>12} {'batchtrain % peak':>17} {'vs first':>8}")
    first_rates: dict[int, float] = {}
    for precision in args.precision.split(","):
        use_precision(precision)
        for batch in (int(size) for size in args.batches.split(",")):
            contestants = Contestants(batch, x[:args.samples], y[:args.samples], True,
                                      args.adaptive_threads)
            plain_s, ours_s = contestants.race(args.repeats)
            plain_rate = args.samples / statistics.median(plain_s)
            ours_rate = args.samples / statistics.median(ours_s)
            first_rates.setdefault(batch, ours_rate)
            peak = peaks[precision]
            print(f"{precision:>10} {batch:>5} {plain_rate:>9.0f} {ours_rate:>12.0f} "
                  f"{paired_ratio(plain_s, ours_s):>5.2f}x "
                  f"{100 * plain_rate * flops / peak:>11.1f}% {100 * ours_rate * flops / peak:>16.1f}% "
                  f"{ours_rate / first_rates[batch]:>7.2f}x", flush=True)


def overhead_line(args, x, y) -> None:
    """batchtrain's own per-step cost at batch 8, every optional speed-up off (see the header).

    On args.overhead_threads threads (default 1): two identical plain loops interleaved this way
    differ by up to 5 % on 2 threads of the 2-core machine, by 1 % on one, and the library's
    overhead is a few percent.
    """
    previous = torch.get_num_threads()
    threads = args.overhead_threads or previous
    torch.set_num_threads(threads)
    try:
        n = args.overhead_samples
        contestants = Contestants(8, x[:n], y[:n], False, False)
        passes = overhead_figures(*contestants.race(args.overhead_repeats))
        plain_steps, our_steps = contestants.step_race(args.overhead_step_epochs)
        steps = overhead_figures(plain_steps, our_steps)
    finally:
        torch.set_num_threads(previous)
    print(f"overhead at batch 8 with speed-ups off (both: the plain seed-cnn layers and torch's "
          f"per-parameter Adam; batchtrain's NaN/inf check and metrics stay on), {threads} "
          f"thread(s); extra time of batchtrain over the plain loop:")
    print(f"  whole passes, {args.overhead_repeats} interleaved repeats of {n} samples: median of "
          f"per-repeat ratios {passes['paired']:+.1%} (middle half {passes['low']:+.1%} to "
          f"{passes['high']:+.1%}), ratio of medians {passes['of_medians']:+.1%}")
    print(f"  step by step, {len(our_steps)} alternating steps: median of per-step ratios "
          f"{steps['paired']:+.1%} (middle half {steps['low']:+.1%} to {steps['high']:+.1%}), "
          f"ratio of medians {steps['of_medians']:+.1%}; per step plain "
          f"{1e3 * statistics.median(plain_steps):.2f} ms, batchtrain "
          f"{1e3 * statistics.median(our_steps):.2f} ms")


def precisions(text: str) -> str:
    """argparse type of --precision: comma-separated names of DTYPES."""
    unknown = [name for name in text.split(",") if name not in DTYPES]
    if unknown or not text:
        raise argparse.ArgumentTypeError(f"unknown precision {', '.join(unknown) or repr(text)}; "
                                         f"use a comma-separated list of {', '.join(DTYPES)}")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="32,128,512",
                        help="batch sizes, comma-separated ('' skips the table)")
    parser.add_argument("--samples", type=int, default=4096, help="samples per timed pass")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (>= 5)")
    parser.add_argument("--overhead-samples", type=int, default=512,
                        help="samples per timed pass at batch 8 (0 skips the overhead line)")
    parser.add_argument("--overhead-repeats", type=int, default=40,
                        help="interleaved repeats for the overhead line (short passes, many "
                             "repeats: a burst of load spoils few pairs)")
    parser.add_argument("--overhead-step-epochs", type=int, default=16,
                        help="passes of --overhead-samples for the step-by-step overhead figure")
    parser.add_argument("--overhead-threads", type=int, default=1,
                        help="threads for the batch-8 overhead line (0: as the table)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for both (default: torch's, one per core); "
                             "the peak counts this many cores")
    parser.add_argument("--precision", default="32,bf16-mixed", type=precisions,
                        help="comma-separated precisions, one table section each (of "
                             f"{', '.join(DTYPES)}): both contestants in it (the plain loop: "
                             "torch.autocast, and a GradScaler for 16-mixed); %% of peak is that "
                             "precision's peak")
    parser.add_argument("--adaptive-threads", action="store_true",
                        help="give batchtrain's fit the AdaptiveThreads callback (runtime/threads.py)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y, source = load_images(max(args.samples, args.overhead_samples))
    fp32_peak = cpu_peak(min(torch.get_num_threads(), usable_cores()))
    flops = training_flops_per_sample(plain_model(), tuple(x.shape[1:]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {source}, "
          f"{args.samples} samples per pass, medians of {args.repeats} interleaved repeats")
    peaks = {}
    for precision in args.precision.split(","):
        peaks[precision], peak_text = precision_peak(*fp32_peak, precision)
        print(f"peak in {precision}: {peak_text}")
    print(f"the job: {flops / 1e6:.1f} MFLOP per training sample")
    load = CpuLoad()
    if args.batches:
        throughput_table(args, x, y, flops, peaks)
    if args.overhead_samples:
        use_precision("32")
        overhead_line(args, x, y)
    others = load.others_busy_cores()
    if others is not None:
        print(f"other processes kept {others:.2f} of {usable_cores()} cores busy on average "
              "during the run")


if __name__ == "__main__":
    sys.exit(main())
