"""Time to target of fixed batch sizes (a grid) against batch-size policies, over a suite of tasks.

    python benchmarks/batch_suite.py --quick              # smoke check, about 2 min (below)
    python benchmarks/batch_suite.py                      # default tasks, 32..512, auto, seeds 0,1
    python benchmarks/batch_suite.py --tasks mlp,sgd --grid 32,128,512 --seeds 0,1,2
    python benchmarks/batch_suite.py --seeds 0,1 --repeats 3  # medians of 3 runs per seed
    python benchmarks/batch_suite.py --policies "auto;adaptive:noise-scale;double:64,1e,1024"
    python benchmarks/batch_suite.py --tasks all --policy auto --policy double:64,1e,1024
    python benchmarks/batch_suite.py --policies "auto;auto lr=none;auto lr=linear"  # lr coupling

Tasks (--tasks, comma-separated; the default is every task but cnn, `all` adds it):
  mlp         MLP 256,128 on Fashion-MNIST pixels, Adam 1e-3, to 88 % test accuracy. On a CPU an
              MLP's throughput rises steeply with the batch (per-step overhead dominates small
              ones): large batches can win on time while needing more samples.
  regression  MLP 64,64 on a seeded synthetic regression (20 features, 50,000 / 10,000 rows,
              noise floor MSE 0.09), Adam 1e-3, to test MSE 0.125: a smooth loss with a known floor,
              where the gradient noise grows as the fit nears it.
  small-data  seed-cnn on the first 3,000 Fashion-MNIST training images, Adam 1e-3, to 80 % on the
              first 5,000 test images: few steps per epoch (a large batch means few updates), and
              overfitting caps what more epochs can give.
  sgd         MLP 256,128 on Fashion-MNIST with SGD (momentum 0.9, lr 0.05), to 85 %: batchtrain
              couples SGD's lr linearly to the batch (sqrt for Adam), so a policy that grows the
              batch grows the lr much faster.
  cnn         the reference job (seed-cnn, Adam 1e-3, Fashion-MNIST, to 90 %); about a minute a
              run, so only with --tasks cnn or all.
  rmsprop     the mlp task with RMSprop (lr 1e-3), to 86 %: for the lr coupling of a third
              optimizer (batchtrain couples it by sqrt, as Adam); only with --tasks rmsprop or all.

Held out (--tasks held-out, or by name; not in all): tasks auto was never tuned on, to check
after a change to it that it generalises, not fits the tasks above.
  blobs       MLP 64 on 8 synthetic classes (Gaussian blobs through a fixed nonlinearity, 32
              features, 40,000 rows), Adam 1e-3, to 87.2 %: runs of a fraction of a second.
  tiny-data   MLP 256,128 on the first 1,000 Fashion-MNIST images, Adam 1e-3, to 78 %.
  deep-regression  MLP 128,128,128 on the synthetic regression with 40 features, noise 0.1
              (floor MSE 0.01), 30,000 rows, Adam 1e-3, to MSE 0.045.
  plain-sgd   MLP 256,128 on Fashion-MNIST, SGD lr 0.1 without momentum, to 84 %.
  adamw-cnn   seed-cnn on the first 12,000 Fashion-MNIST images, AdamW 2e-3, to 85 %.

Repeats (--repeats N, default 1): every contestant runs N times per seed (N rounds over the seeds),
and a seed's time (start-up, training, samples) is the median of its N runs: identical runs on a
shared machine differ by 10-30 %, more than the differences the suite is after.

Contestants: each size of --grid, with the task's lr unchanged (lr_scaling="none"), and each policy
(a batchtrain batch-size spec; --policies separates them with ';' because specs hold commas, or give
--policy once per spec), with batchtrain's default lr coupling (the task's lr applies to the
policy's first batch). A seed gives every contestant the same initialisation and data order
(Trainer(seed=...)). Per task, seed and repeat, every contestant runs once, in an order
rotated from one seed (and repeat) to the next, so drifting machine load meets all contestants
alike; torch keeps its default threads, and one short untimed fit per task takes the process's
one-time costs first.

Time: the held-out metric is evaluated every task-specific number of samples with the clock
paused; a run stops at the first evaluation that meets the target. Time to target = start-up
(calling fit() to its first hook: data checks, model, memory ceiling, and any start-up
calibration a policy does) + training time from that hook to the evaluation, evaluation
excluded; both parts are also shown on their own, with the calibration cost where the trainer
reports one. A run that misses the target within its budget is "not reached": its time counts
as inf in every ratio (a median or geometric mean over it can be inf; inf/inf shows as n/a).
Best fixed: the grid size with the lowest median time; a policy's per-seed ratio pairs its run
with that size's run of the same seed; median fixed: per seed, the median over the grid. Every
run (trajectories included) goes to --json, the curves to --plot.

--quick, a smoke check of the whole path rather than a measurement: grid 64,256 (unless --grid),
seed 0 (unless --seeds), and each task's easier target in a shorter budget (Task.quick).
"""
import argparse
import dataclasses
import functools
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from batchtrain import BatchTrainError, Callback, DatasetNotFoundError, Trainer, load_dataset
from batchtrain.batching import LearningRate, parse_batch_size
from suite_report import compare, plot, print_summary, print_task  # benchmarks/suite_report.py

HERE = Path(__file__).parent


# -- data -----------------------------------------------------------------------------------------

class Data(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@functools.cache
def fashion_mnist() -> Data:
    """All of Fashion-MNIST, from disk only (a benchmark should not wait on a download)."""
    try:
        return Data(*load_dataset("fashion-mnist", download=False))
    except DatasetNotFoundError as error:
        raise SystemExit("batch_suite: Fashion-MNIST is not installed; install the Debian package "
                         "dataset-fashion-mnist (files in /usr/share/datasets/fashion-mnist) or "
                         f"run `batchtrain download fashion-mnist`.\n{error}") from None


def small_fashion_mnist(train: int = 3000, test: int = 5000) -> Data:
    """The first `train` training images and the first `test` test images."""
    full = fashion_mnist()
    return Data(full.x_train[:train], full.y_train[:train], full.x_test[:test], full.y_test[:test])


def blobs(train: int = 40_000, test: int = 10_000, features: int = 32, classes: int = 8,
          seed: int = 7) -> Data:
    """Gaussian blobs around seeded centres, through tanh(x) + 0.1 x^2 (not linearly separable
    as drawn), labelled by their blob."""
    rng = np.random.default_rng(seed)
    centres = 0.6 * rng.standard_normal((classes, features))
    y = rng.integers(0, classes, train + test)
    x = centres[y] + rng.standard_normal((train + test, features))
    x = (np.tanh(x) + 0.1 * x ** 2).astype(np.float32)
    return Data(x[:train], y[:train], x[train:], y[train:])


def synthetic_regression(train: int = 50_000, test: int = 10_000, features: int = 20,
                         noise_std: float = 0.3, seed: int = 0) -> Data:
    """y = a fixed random tanh network of x plus one pairwise product, scaled to unit variance,
    plus Gaussian noise of `noise_std` (the floor of the test MSE is noise_std ** 2)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((train + test, features))
    hidden = np.tanh(x @ rng.standard_normal((features, 32)) / math.sqrt(features))
    signal = hidden @ rng.standard_normal(32) + x[:, 0] * x[:, 1]
    y = signal / signal.std() + noise_std * rng.standard_normal(train + test)
    x, y = x.astype(np.float32), y.astype(np.float32)
    return Data(x[:train], y[:train], x[train:], y[train:])


# -- tasks ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """One benchmark problem. target: of `metric`, a key of Trainer.evaluate's dict ("accuracy",
    or "loss": the MSE for regression), shown as metric_label; max_epochs: the budget;
    eval_every: samples between evaluations; quick: (target, epochs) for --quick, easier and
    shorter, a smoke check; in_default: run without --tasks."""

    name: str
    data: Callable[[], Data]
    model: str
    target: float
    max_epochs: int
    eval_every: int
    quick: tuple[float, int]
    model_options: dict = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 1e-3
    optimizer_options: dict = field(default_factory=dict)
    metric: str = "accuracy"
    metric_label: str = "accuracy"
    higher_is_better: bool = True
    in_default: bool = True

    def meets(self, value: float) -> bool:
        return value >= self.target if self.higher_is_better else value <= self.target

    def quick_version(self) -> "Task":
        return dataclasses.replace(self, target=self.quick[0], max_epochs=self.quick[1])

    def trainer(self, seed: int, lr_scaling: str, threads: int | str | None) -> Trainer:
        return Trainer(self.model, optimizer=self.optimizer, lr=self.lr, seed=seed,
                       model_options=self.model_options, optimizer_options=self.optimizer_options,
                       lr_scaling=lr_scaling, threads=threads)


MLP = {"hidden": [256, 128]}
TASKS = {task.name: task for task in [
    Task("mlp", fashion_mnist, "mlp", target=0.88, max_epochs=15, eval_every=7500,
         quick=(0.85, 3), model_options=MLP),
    Task("regression", synthetic_regression, "mlp", target=0.125, max_epochs=20, eval_every=6250,
         quick=(0.14, 8), model_options={"hidden": [64, 64]}, metric="loss", metric_label="MSE",
         higher_is_better=False),
    Task("small-data", small_fashion_mnist, "seed-cnn", target=0.80, max_epochs=30,
         eval_every=500, quick=(0.70, 3)),
    Task("sgd", fashion_mnist, "mlp", target=0.85, max_epochs=15, eval_every=7500,
         quick=(0.83, 3), model_options=MLP, optimizer="sgd", lr=0.05,
         optimizer_options={"momentum": 0.9}),
    Task("cnn", fashion_mnist, "seed-cnn", target=0.90, max_epochs=20, eval_every=6000,
         quick=(0.85, 2), in_default=False),
    Task("rmsprop", fashion_mnist, "mlp", target=0.86, max_epochs=15, eval_every=7500,
         quick=(0.83, 3), model_options=MLP, optimizer="rmsprop", lr=1e-3, in_default=False),
]}
HELD_OUT = {task.name: task for task in [
    Task("blobs", blobs, "mlp", target=0.872, max_epochs=10, eval_every=4000, quick=(0.85, 2),
         model_options={"hidden": [64]}, in_default=False),
    Task("tiny-data", functools.partial(small_fashion_mnist, 1000), "mlp", target=0.78,
         max_epochs=60, eval_every=250, quick=(0.7, 5), model_options=MLP, in_default=False),
    Task("deep-regression", functools.partial(synthetic_regression, 30_000, 10_000, 40, 0.1, 3),
         "mlp", target=0.045, max_epochs=30, eval_every=5000, quick=(0.2, 3),
         model_options={"hidden": [128, 128, 128]}, metric="loss", metric_label="MSE",
         higher_is_better=False, in_default=False),
    Task("plain-sgd", fashion_mnist, "mlp", target=0.84, max_epochs=15, eval_every=7500,
         quick=(0.8, 2), model_options=MLP, optimizer="sgd", lr=0.1, in_default=False),
    Task("adamw-cnn", functools.partial(small_fashion_mnist, 12_000), "seed-cnn", target=0.85,
         max_epochs=20, eval_every=2000, quick=(0.75, 2), optimizer="adamw", lr=2e-3,
         in_default=False),
]}


@dataclass(frozen=True)
class Contestant:
    """A fixed size of the grid (lr unchanged) or a policy spec (batchtrain's lr coupling)."""

    name: str
    batch_size: int | str
    is_policy: bool
    lr_scaling: str = "auto"  # a policy's coupling: "SPEC lr=RULE" on the command line


def policy_contestant(text: str) -> Contestant:
    """'auto' or 'auto lr=none': a batch-size spec and, optionally, the lr coupling it runs with."""
    spec, _, option = text.partition(" lr=")
    return Contestant(text, spec.strip(), True, option.strip() or "auto")


# -- measurement ----------------------------------------------------------------------------------

class TimeToTarget(Callback):
    """Evaluates the task's metric every task.eval_every samples, off the clock; stops at the
    target. curve: (train_s, samples, metric, batch_size) per evaluation; reached: the first
    (train_s, samples) that met the target, else None; startup_s: fit() call to first hook."""

    def __init__(self, task: Task, data: Data, fit_called: float):
        self.task, self.data, self.fit_called = task, data, fit_called

    def on_fit_begin(self, trainer, info):
        self.started = time.perf_counter()
        self.startup_s = self.started - self.fit_called
        self.info = dataclasses.asdict(info)  # the policy, memory and calibration lines
        self.curve, self.reached, self.eval_s = [], None, 0.0
        self.seen = 0  # after the last step: auto's kept branches train samples no step reports

    def on_batch_end(self, trainer, samples):
        before, self.seen = self.seen, trainer.state_.samples_seen
        if self.seen // self.task.eval_every != before // self.task.eval_every:
            self.evaluate(trainer)

    def on_fit_end(self, trainer, history):
        last_evaluated = self.curve[-1][1] if self.curve else -1
        if self.reached is None and last_evaluated < trainer.state_.samples_seen:
            self.evaluate(trainer)  # the budget's last samples

    def evaluate(self, trainer) -> None:
        paused = time.perf_counter()
        train_s = paused - self.started - self.eval_s  # the clock stops while evaluating
        value = trainer.evaluate(self.data.x_test, self.data.y_test)[self.task.metric]
        trainer.model_.train()
        self.eval_s += time.perf_counter() - paused
        seen = trainer.state_.samples_seen
        batch_size = trainer.last_step_["batch_size"] if trainer.last_step_ else None
        self.curve.append((train_s, seen, value, batch_size))
        if self.reached is None and self.task.meets(value):
            self.reached = (train_s, seen)
            trainer.stop_training = True


def batch_changes(steps: list[dict]) -> list[tuple[int, int]]:
    """(samples seen before the step, logical batch) wherever the batch size changes."""
    changes, before = [], 0
    for step in steps:
        if not changes or step["batch_size"] != changes[-1][1]:
            changes.append((before, step["batch_size"]))
        before = step["samples_seen"]
    return changes


def run_one(task: Task, contestant: Contestant, seed: int, data: Data,
            threads: int | str | None, repeat: int = 0) -> dict:
    """One fit to the target (or the budget); a JSON-ready record of it."""
    trainer = task.trainer(seed, contestant.lr_scaling if contestant.is_policy else "none", threads)
    probe = TimeToTarget(task, data, fit_called=time.perf_counter())
    history = trainer.fit(data.x_train, data.y_train, batch_size=contestant.batch_size,
                          epochs=task.max_epochs, callbacks=[probe])
    train_s, samples = probe.reached if probe.reached else (math.inf, None)
    values = [value for _, _, value, _ in probe.curve]
    # Reported by trainers that calibrate a policy at start-up; None where there is no such report.
    calibration_s = getattr(getattr(trainer.state_, "calibration", None), "cost_s", None)
    return {"task": task.name, "contestant": contestant.name, "policy": contestant.is_policy,
            "seed": seed, "repeat": repeat, "reached": probe.reached is not None,
            "time_s": probe.startup_s + train_s, "train_s": train_s, "startup_s": probe.startup_s,
            "calibration_s": calibration_s, "samples": samples, "eval_s": probe.eval_s,
            "best": (max if task.higher_is_better else min)(values) if values else None,
            "samples_seen": trainer.state_.samples_seen, "stop_reason": trainer.stop_reason_,
            "fit_info": probe.info, "curve": probe.curve,
            "batch_changes": batch_changes(history.steps)}


def warm_up(task: Task, data: Data, threads: int | str | None) -> None:
    """A short untimed fit, so that no contestant pays the process's one-time costs."""
    task.trainer(0, "none", threads).fit(data.x_train[:2048], data.y_train[:2048],
                                         batch_size=256, epochs=1)


def run_task(task: Task, contestants: list[Contestant], seeds: list[int],
             threads: int | str | None, repeats: int = 1) -> list[dict]:
    """Every contestant `repeats` times per seed: rounds of every seed, the order of the
    contestants rotated by one place from each seed (and round) to the next."""
    data = task.data()
    warm_up(task, data, threads)
    runs = []
    for repeat in range(repeats):
        for index, seed in enumerate(seeds):
            shift = (repeat * len(seeds) + index) % len(contestants)
            for contestant in contestants[shift:] + contestants[:shift]:
                runs.append(run_one(task, contestant, seed, data, threads, repeat))
                print(progress_line(task, runs[-1]), flush=True)
    return runs


def progress_line(task: Task, run: dict) -> str:
    sizes = [size for _, size in run["batch_changes"]] or ["-"]  # none: no step completed
    batch = (f"batch {sizes[0]}" if len(set(sizes)) == 1 else
             f"batch {sizes[0]} first, {min(sizes)}-{max(sizes)}, {sizes[-1]} last")
    outcome = (f"{run['time_s']:.1f} s, {run['samples']} samples" if run["reached"] else
               f"not reached in {run['samples_seen']} samples ({run['stop_reason'] or 'budget'})")
    calibration = f", calibration {run['calibration_s']:.2f} s" if run["calibration_s"] else ""
    return (f"  {task.name} seed {run['seed']} repeat {run['repeat']} {run['contestant']}: "
            f"{outcome}; best "
            f"{task.metric_label} {run['best']:.4f}; start-up {run['startup_s']:.2f} s"
            f"{calibration}; {batch}")


# -- command line ---------------------------------------------------------------------------------

def environment() -> dict:
    """The CPU (model name, AVX-512 and AMX flags), torch's version and threads."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or "unknown")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return {"cpu": model, "avx512": any(flag.startswith("avx512") for flag in flags),
            "amx": any(flag.startswith("amx") for flag in flags), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def integers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: grid 64,256, seed 0, easier targets, short budgets")
    parser.add_argument("--tasks", help=f"comma-separated, of {', '.join(TASKS | HELD_OUT)}; "
                                        "or all (the first six), or held-out (the others; "
                                        "default: all but cnn and rmsprop)")
    parser.add_argument("--grid", type=integers, help="fixed sizes (default 32,64,128,256,512)")
    parser.add_argument("--policies", help="batch-size specs separated by ';' (default auto)")
    parser.add_argument("--policy", action="append", default=[], help="one more policy spec")
    parser.add_argument("--seeds", type=integers, help="default 0,1 (0 with --quick)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per contestant and seed; a seed's figure is their median "
                             "(default 1)")
    parser.add_argument("--threads", type=lambda text: text if text == "auto" else int(text),
                        help="Trainer(threads=...): N or auto (default: torch's, one per core)")
    parser.add_argument("--json", type=Path, default=HERE / "batch_suite.json")
    parser.add_argument("--plot", type=Path, default=HERE / "batch_suite.png")
    args = parser.parse_args(argv)
    known = TASKS | HELD_OUT
    names = ([name for name, task in TASKS.items() if task.in_default] if args.tasks is None
             else list(TASKS) if args.tasks == "all"
             else list(HELD_OUT) if args.tasks == "held-out"
             else [name.strip() for name in args.tasks.split(",")])
    if unknown := [name for name in names if name not in known]:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(known)}, "
                     "all or held-out")
    args.tasks = [known[name].quick_version() if args.quick else known[name] for name in names]
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    args.grid = args.grid or ([64, 256] if args.quick else [32, 64, 128, 256, 512])
    args.seeds = args.seeds or ([0] if args.quick else [0, 1])
    specs = [spec.strip() for spec in (args.policies or "").split(";")] + args.policy
    # No spec at all means auto; an explicit empty --policies "" means the grid alone.
    args.policies = [spec for spec in specs if spec] or ([] if args.policies is not None
                                                         else ["auto"])
    for spec in args.policies:
        try:
            contestant = policy_contestant(spec)  # a typo fails now, not after the grid's runs
            parse_batch_size(contestant.batch_size)
            LearningRate(torch.optim.SGD([torch.zeros(1)], lr=1.0), contestant.lr_scaling)
        except BatchTrainError as error:
            parser.error(str(error))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    contestants = ([Contestant(f"fixed {size}", size, False) for size in args.grid]
                   + [policy_contestant(spec) for spec in args.policies])
    env = environment()
    print(f"CPU {env['cpu']} (avx512 {'yes' if env['avx512'] else 'no'}, amx "
          f"{'yes' if env['amx'] else 'no'}); torch {env['torch']}, {env['threads']} threads"
          f"{f' (Trainer threads={args.threads})' if args.threads else ''}")
    print(f"grid {args.grid}; policies {args.policies}; seeds {args.seeds}; "
          f"{args.repeats} run(s) per seed"
          f"{'; --quick: easier targets, shorter budgets' if args.quick else ''}", flush=True)
    runs = []
    for task in args.tasks:
        runs += run_task(task, contestants, args.seeds, args.threads, args.repeats)
    comparisons = {}
    for task in args.tasks:
        own = [run for run in runs if run["task"] == task.name]
        comparisons[task.name] = compare(own, args.seeds)
        print_task(task, own, args.seeds, comparisons[task.name])
    summary = print_summary(comparisons)
    tasks = {task.name: {item.name: getattr(task, item.name) for item in dataclasses.fields(task)
                         if item.name != "data"} for task in args.tasks}
    args.json.write_text(json.dumps(  # inf and nan are written as JSON's Infinity and NaN
        {"environment": env, "threads": args.threads, "grid": args.grid, "policies": args.policies,
         "seeds": args.seeds, "repeats": args.repeats, "quick": args.quick, "tasks": tasks,
         "runs": runs, "comparisons": comparisons, "summary": summary}, indent=1))
    plot(args.tasks, runs, args.grid, args.plot)
    print(f"\nraw results: {args.json}; plot: {args.plot}")


if __name__ == "__main__":
    main()
