"""`batchtrain probe`'s pick against the grid of the batch-size suite, task by task.

    python benchmarks/probe_suite.py                         # against benchmarks/batch_suite.json
    python benchmarks/probe_suite.py --suite /tmp/suite.json --tasks mlp,sgd --seeds 0,1

For every task and seed of a finished `batch_suite.py` run (its JSON: the grid's measured times to
target), the probe (cli/probe.py) measures that task's training data with that task's model,
optimizer, lr and seed, at the grid's sizes, and recommends a batch. Each pick is scored by the
suite's own measurement: the time to target of that fixed size with that seed over the best fixed
size's (the grid size with the lowest median time), and the same for the noise scale's goodput
pick, which the probe recommended before it branched. The probe's lr recommendation is its given
lr, as the grid's runs keep theirs. Prints a table, writes --json.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

from batch_suite import TASKS, environment, integers  # benchmarks/batch_suite.py
from suite_report import by_contestant  # benchmarks/suite_report.py
from batchtrain.cli.probe import probe

HERE = Path(__file__).parent


def fixed_times(suite: dict, task: str) -> dict[int, dict[int, float]]:
    """{size: {seed: seconds to target}} of the suite's grid runs of `task` (inf: not reached; the
    median where a seed was repeated)."""
    runs = [dict(run, contestant=int(run["contestant"].split()[-1]),
                 time_s=run["time_s"] if run["reached"] else float("inf"))
            for run in suite["runs"] if run["task"] == task and not run["policy"]]
    return by_contestant(runs, "time_s")  # the median of a seed's repeats


def score(times: dict[int, dict[int, float]], size: int, seed: int, best: int) -> float:
    """The pick's time with this seed over the best fixed size's with this seed."""
    if size not in times or seed not in times[size]:
        return float("nan")
    return times[size][seed] / times[best][seed]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=HERE / "batch_suite.json")
    parser.add_argument("--tasks", help="comma-separated (default: the suite's tasks)")
    parser.add_argument("--seeds", type=integers, help="default: the suite's seeds")
    parser.add_argument("--warmup", type=int, default=3200, help="probe warm-up samples")
    parser.add_argument("--repeats", type=int, default=3, help="probe timed steps per size")
    parser.add_argument("--json", type=Path, default=HERE / "probe_suite.json")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    suite = json.loads(args.suite.read_text())
    tasks = args.tasks.split(",") if args.tasks else list(suite["comparisons"])
    seeds = args.seeds or suite["seeds"]
    env = environment()
    print(f"CPU {env['cpu']} (avx512 {'yes' if env['avx512'] else 'no'}); torch {env['torch']}, "
          f"{env['threads']} threads; grid {suite['grid']} from {args.suite}")
    rows = []
    for name in tasks:
        task, times = TASKS[name], fixed_times(suite, name)
        best = min(times, key=lambda size: statistics.median(times[size].values()))
        data = task.data()
        for seed in seeds:
            trainer = task.trainer(seed, "none", None)
            started = time.perf_counter()
            result = probe(trainer, data.x_train, data.y_train, sorted(times), args.warmup,
                           args.repeats)
            rows.append({"task": name, "seed": seed, "best_fixed": best,
                         "pick": result.recommended_batch, "by": result.lr_rule,
                         "noise_pick": result.goodput_batch,
                         "pick_vs_best": score(times, result.recommended_batch, seed, best),
                         "noise_pick_vs_best": score(times, result.goodput_batch, seed, best),
                         "probe_s": time.perf_counter() - started})
            row = rows[-1]
            print(f"  {name} seed {seed}: probe {row['pick']} ({row['by']}) "
                  f"{row['pick_vs_best']:.2f}x the best fixed ({best}); noise-scale goodput "
                  f"{row['noise_pick']} {row['noise_pick_vs_best']:.2f}x; probe took "
                  f"{row['probe_s']:.1f} s", flush=True)
    print("\n| task | best fixed | probe's picks (seeds) | probe / best, median | "
          "noise-scale picks | noise / best, median |\n|---|---|---|---|---|---|")
    for name in tasks:
        own = [row for row in rows if row["task"] == name]
        print(f"| {name} | {own[0]['best_fixed']} | {', '.join(str(r['pick']) for r in own)} | "
              f"{statistics.median(r['pick_vs_best'] for r in own):.2f}x | "
              f"{', '.join(str(r['noise_pick']) for r in own)} | "
              f"{statistics.median(r['noise_pick_vs_best'] for r in own):.2f}x |")
    args.json.write_text(json.dumps({"environment": env, "suite": str(args.suite),
                                     "rows": rows}, indent=1))
    print(f"\nraw results: {args.json}")


if __name__ == "__main__":
    main()
