"""Which measurement predicts the batch size that trains fastest? The raw gradient noise scale, the
preconditioned (Adam-geometry) one, and the branched measurement (Merrill et al. 2025), at a few
points of a run, against the grid of fixed sizes that benchmarks/batch_suite.py timed.

    python benchmarks/critical_batch.py                          # mlp, regression, small-data, sgd
    python benchmarks/critical_batch.py --tasks mlp --seeds 0 --json out.json

For each task and seed: a run at fixed batch 128 (the task's lr, no coupling: the grid's setting)
is stopped at 0 %, 10 % and 30 % of the samples the fixed-128 run of batch_suite.json needed to
reach the target, and from the weights there:
- raw and preconditioned B_simple: |g_B|^2 against 1 / B at sizes 32..512 on disjoint slices of
  the training data (training/calibrate.py noise_from_norms); preconditioned: each gradient times
  Adam's (or RMSprop's) 1 / (sqrt(v_hat) + eps) first (stats/precondition.py); SGD has none;
- the branched measurement (training/branch.py): from a snapshot, the grid's sizes train on the
  same samples (2 draws of 8,192, improvements averaged), the loss on 4,096 other training
  samples before and after (small data: a quarter of it probes, the draws split the rest); its critical batch (the line of 1 / improvement against B) and its
  fastest size (improvement per second).
Each B_crit is turned into a pick the way a goodput rule would: the size maximising
throughput(B) / (1 + B / B_crit) (throughput from the branches' own step times). A pick is
scored by the time to target of that fixed size in batch_suite.json, over the best fixed size's
(1.00 = it picked the fastest); the last column is the grid's best size.
"""
import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from batch_suite import TASKS, environment  # noqa: E402 (benchmarks/ on the path)

from batchtrain import Callback  # noqa: E402
from batchtrain.stats.precondition import Preconditioner  # noqa: E402
from batchtrain.tasks.kinds import prepare_targets  # noqa: E402
from batchtrain.training.branch import Branches, branch, critical_batch  # noqa: E402
from batchtrain.training.calibrate import noise_from_norms  # noqa: E402

SIZES = [32, 64, 128, 256, 512]
POINTS = (0.0, 0.1, 0.3)  # of the fixed-128 run's samples to target
BRANCH_SAMPLES, DRAWS, PROBE = 8192, 2, 4096
NORM_REPEATS = 8  # gradient norms per size for B_simple


class MeasureAt(Callback):
    """Measures (measure()) when the run's samples first reach each goal, then stops it; the
    measurements put the model and optimizer back, so the run goes on as it would have."""

    def __init__(self, goals: list[int], measure):
        self.goals, self.measure, self.results = sorted(goals), measure, []

    def on_fit_begin(self, trainer, info):
        if self.goals and self.goals[0] == 0:
            self.results.append((0, self.measure(trainer)))
            self.goals.pop(0)

    def on_batch_end(self, trainer, samples):
        while self.goals and trainer.samples_seen_ >= self.goals[0]:
            self.results.append((trainer.samples_seen_, self.measure(trainer)))
            self.goals.pop(0)
        trainer.stop_training = not self.goals


def gradient_norms(model, loss_fn, x, y, factors, parameters) -> list[tuple[int, float]]:
    """(B, |g_B|^2) at each size, NORM_REPEATS disjoint slices per size (factors: the
    preconditioner's, or None for raw gradients)."""
    norms, offset = [], 0
    model.train()
    for size in SIZES:
        for _ in range(NORM_REPEATS):
            xs, ys = x[offset:offset + size], y[offset:offset + size]
            offset = (offset + size) % max(1, len(x) - max(SIZES))
            for parameter in parameters:
                parameter.grad = None
            loss_fn(model(xs), ys).backward()
            grads = [p.grad if factors is None else p.grad * f for p, f in
                     zip(parameters, factors or [None] * len(parameters))]
            norms.append((size, float(sum(g.float().pow(2).sum() for g in grads))))
    for parameter in parameters:
        parameter.grad = None
    return norms


def goodput_pick(b_crit: float | None, throughput: dict[int, float]) -> int | None:
    if b_crit is None:
        return None
    if math.isinf(b_crit):
        return max(throughput, key=throughput.get)
    return max(throughput, key=lambda size: throughput[size] / (1 + size / max(b_crit, 1e-9)))


def measure(trainer, x, y, rng) -> dict:
    model, optimizer = trainer.model_, trainer.optimizer_
    loss_fn, parameters = trainer.task_.loss_fn, [p for p in trainer.model_.parameters()]
    order = torch.from_numpy(rng.permutation(len(x)))
    probe_size = min(PROBE, len(x) // 4)  # small data: a quarter probes, the rest trains
    branch_samples = min(BRANCH_SAMPLES, (len(x) - probe_size) // DRAWS)
    probe = order[:probe_size]
    rest = order[probe_size:]
    raw = noise_from_norms(gradient_norms(model, loss_fn, x[rest], y[rest], None, parameters),
                           len(x))
    factors = Preconditioner(optimizer).factors(parameters)
    precond = (noise_from_norms(gradient_norms(model, loss_fn, x[rest], y[rest],
                                               [f.clone() for f in factors], parameters), len(x))
               if factors is not None else None)
    gains, seconds = {size: [] for size in SIZES}, {size: [] for size in SIZES}
    for draw in range(DRAWS):
        chosen = rest[draw * branch_samples:(draw + 1) * branch_samples]
        measured = branch(model, loss_fn, optimizer, x[chosen], y[chosen], x[probe], y[probe],
                          SIZES, seed=draw)
        for size in SIZES:
            gains[size].append(measured.improvement[size])
            seconds[size].append(measured.seconds[size])
    improvement = {size: statistics.fmean(values) for size, values in gains.items()}
    throughput = {size: branch_samples / statistics.median(values) for size, values in seconds.items()}
    fastest = Branches(SIZES, 0.0, improvement, {size: statistics.median(values) for size, values
                                                 in seconds.items()}, branch_samples, 0.0).fastest
    b_branched = critical_batch(improvement)
    return {"raw": raw and raw["noise_scale"], "preconditioned": precond and precond["noise_scale"],
            "branched": b_branched, "improvement": improvement, "throughput": throughput,
            "picks": {"raw": goodput_pick(raw and raw["noise_scale"], throughput),
                      "preconditioned": goodput_pick(precond and precond["noise_scale"], throughput),
                      "branched": goodput_pick(b_branched, throughput),
                      "branched-fastest": fastest}}


def grid_times(suite: dict, task: str, seed: int) -> dict[int, float]:
    return {int(run["contestant"].split()[1]): run["time_s"] for run in suite["runs"]
            if run["task"] == task and run["seed"] == seed and not run["policy"]}


def grid_samples(suite: dict, task: str, seed: int, size: int) -> int:
    [run] = [run for run in suite["runs"] if run["task"] == task and run["seed"] == seed
             and run["contestant"] == f"fixed {size}"]
    return run["samples"]


def run_task(name: str, seed: int, suite: dict) -> list[dict]:
    task = TASKS[name]
    data = task.data()
    trainer = task.trainer(seed, "none", None)
    x = torch.from_numpy(np.ascontiguousarray(data.x_train))
    trainer.prepare(data.x_train[:16], data.y_train[:16])
    y = prepare_targets(trainer.task_, torch.from_numpy(np.asarray(data.y_train)))
    to_target = grid_samples(suite, name, seed, 128)
    times = grid_times(suite, name, seed)
    best = min(times, key=times.get)
    rng, rows = np.random.default_rng(seed), []
    measuring = MeasureAt([int(point * to_target) for point in POINTS],
                          lambda trainer: measure(trainer, x, y, rng))
    trainer.fit(data.x_train, data.y_train, batch_size=128, epochs=task.max_epochs,
                callbacks=[measuring])
    for point, (trained, result) in zip(POINTS, measuring.results):
        scores = {kind: (times[pick] / times[best] if pick in times else None)
                  for kind, pick in result["picks"].items()}
        rows.append({"task": name, "seed": seed, "point": point, "samples": trained,
                     "best_fixed": best, "scores": scores, **result})
        print(f"{name:>10} seed {seed} at {point:4.0%} ({trained:>7} samples): "
              f"B_simple raw {fmt(result['raw'])}, preconditioned {fmt(result['preconditioned'])}, "
              f"branched B_crit {fmt(result['branched'])}; picks " + ", ".join(
                  f"{kind} {pick} ({fmt_score(scores[kind])})" for kind, pick in result["picks"].items())
              + f"; grid best {best}", flush=True)
    return rows


def fmt(value) -> str:
    return "n/a" if value is None else "inf" if math.isinf(value) else f"{value:.0f}"


def fmt_score(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mlp,regression,small-data,sgd")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--suite", default=str(HERE / "batch_suite.json"),
                        help="batch_suite.py's JSON with the grid's times (default: the committed one)")
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args(argv)
    suite = json.loads(Path(args.suite).read_text())
    print(f"environment: {environment()}")
    rows = [row for name in args.tasks.split(",") for seed in map(int, args.seeds.split(","))
            for row in run_task(name, seed, suite)]
    print("\nmedian score of each predictor's pick (time of its fixed size / best fixed), per point:")
    for point in POINTS:
        at = [row for row in rows if row["point"] == point]
        line = ", ".join(f"{kind} {fmt_score(statistics.median(scores))}" for kind in at[0]["scores"]
                         if (scores := [row["scores"][kind] for row in at
                                        if row["scores"][kind] is not None]))
        print(f"  at {point:4.0%}: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": environment(), "rows": rows},
                                              indent=1, default=str))


if __name__ == "__main__":
    main()
