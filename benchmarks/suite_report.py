"""The report of benchmarks/batch_suite.py: per-task tables, the summary over tasks, the plot.

Runs are the suite's JSON-ready dicts (batch_suite.run_one); a task is anything with the
attributes of batch_suite.Task that are read here (name, target, max_epochs, eval_every,
metric_label, higher_is_better).
"""
import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402


# -- report ---------------------------------------------------------------------------------------

def ratio(time_s: float, reference_s: float) -> float:
    """time_s / reference_s: inf where only time_s is inf, nan where both are."""
    return math.nan if math.isinf(time_s) and math.isinf(reference_s) else time_s / reference_s


def median(values) -> float:
    return float(np.median(list(values)))  # an inf counts as the largest; a nan makes it nan


def worst(values) -> float:
    """The largest ratio, passing over n/a (nan) ones; nan when all are."""
    return max((value for value in values if not math.isnan(value)), default=math.nan)


def geometric_mean(values) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 and inf are answers, not errors
        return float(np.exp(np.mean(np.log(list(values)))))


def repeats_of(runs: list[dict], key: str) -> dict[str, dict[int, list]]:
    """{contestant: {seed: [run[key] of each of that seed's runs]}}, contestants in the order of
    the first seed's runs."""
    values: dict[str, dict[int, list]] = {}
    for run in runs:
        values.setdefault(run["contestant"], {}).setdefault(run["seed"], []).append(run[key])
    return values


def by_contestant(runs: list[dict], key: str) -> dict[str, dict[int, float]]:
    """{contestant: {seed: run[key]}}; where a seed was run more than once (--repeats), the
    median of its runs' values (None if any is None: a repeat that missed the target has no
    samples to target)."""
    return {name: {seed: None if None in repeats else median(repeats)
                   for seed, repeats in seeds.items()}
            for name, seeds in repeats_of(runs, key).items()}


def spread(runs: list[dict]) -> dict[str, float]:
    """{contestant: the median over seeds of the largest / the smallest time of a seed's repeats}:
    how much identical runs differ, the yardstick for a ratio between contestants (a shared
    machine's load, and a trajectory that crosses the target an evaluation later). Only seeds
    with two or more repeats that reached the target count; a contestant with none is left out."""
    reached = [run for run in runs if not math.isinf(run["time_s"])]
    result = {}
    for name, by_seed in repeats_of(reached, "time_s").items():
        ratios = [max(repeats) / min(repeats) for repeats in by_seed.values() if len(repeats) >= 2]
        if ratios:
            result[name] = median(ratios)
    return result


def compare(runs: list[dict], seeds: list[int]) -> dict:
    """Best and median fixed size, and each policy's ratios to them, per seed and median."""
    times = by_contestant(runs, "time_s")
    policies = list(dict.fromkeys(run["contestant"] for run in runs if run["policy"]))
    fixed = [name for name in times if name not in policies]
    if not fixed:
        return {"best_fixed": None, "policies": {}}
    best = min(fixed, key=lambda name: median(times[name].values()))
    median_fixed = {seed: median(times[name][seed] for name in fixed) for seed in seeds}
    result = {"best_fixed": best, "best_fixed_s": median(times[best].values()),
              "median_fixed_s": median(median_fixed.values()), "median_fixed_by_seed": median_fixed,
              "spread": spread(runs), "policies": {}}
    for policy in policies:
        vs_best = [ratio(times[policy][seed], times[best][seed]) for seed in seeds]
        vs_median = [ratio(times[policy][seed], median_fixed[seed]) for seed in seeds]
        result["policies"][policy] = {
            "time_s": median(times[policy].values()), "vs_best": vs_best, "vs_median": vs_median,
            "vs_best_median": median(vs_best), "vs_median_median": median(vs_median)}
    return result


def seconds(value: float) -> str:
    return "-" if math.isinf(value) else f"{value:.1f}"


def times_x(value: float) -> str:
    return "n/a" if math.isnan(value) else "inf" if math.isinf(value) else f"{value:.2f}x"


def print_task(task, runs: list[dict], seeds: list[int], comparison: dict) -> None:
    goal = ">=" if task.higher_is_better else "<="
    print(f"\n{task.name}: test {task.metric_label} {goal} {task.target} within "
          f"{task.max_epochs} epochs, evaluated every {task.eval_every} samples; a seed's figure "
          f"is the median of its repeats, a column's the median over seeds; seconds to target = "
          f"start-up + training")
    print(f"{'contestant':24} {'reached':>7} {'seconds':>8} {'start-up':>8} {'training':>8} "
          f"{'samples':>8}  seconds per seed ({', '.join(map(str, seeds))})")
    columns = {key: by_contestant(runs, key)
               for key in ("time_s", "startup_s", "train_s", "samples")}
    for name, times in columns["time_s"].items():
        samples = list(columns["samples"][name].values())
        print(f"{name:24} {sum(value is not None for value in samples):>3}/{len(samples):<3} "
              f"{seconds(median(times.values())):>8} "
              f"{median(columns['startup_s'][name].values()):8.2f} "
              f"{seconds(median(columns['train_s'][name].values())):>8} "
              f"{int(median(samples)) if None not in samples else '-':>8}  "
              f"{', '.join(seconds(times[seed]) for seed in seeds)}")
    if comparison["best_fixed"] is not None:
        print(f"best fixed: {comparison['best_fixed']} ({seconds(comparison['best_fixed_s'])} s); "
              f"median fixed: {seconds(comparison['median_fixed_s'])} s")
        if comparison["spread"]:
            print("identical runs (a seed's repeats), slowest / fastest, median over seeds: "
                  + ", ".join(f"{name} {times_x(value)}"
                              for name, value in comparison["spread"].items()))
    for policy, numbers in comparison["policies"].items():
        print(f"{policy}: {seconds(numbers['time_s'])} s; vs best fixed "
              f"{times_x(numbers['vs_best_median'])} "
              f"(seeds {', '.join(map(times_x, numbers['vs_best']))}); "
              f"vs median fixed {times_x(numbers['vs_median_median'])} "
              f"(seeds {', '.join(map(times_x, numbers['vs_median']))})")


def print_summary(comparisons: dict[str, dict]) -> dict:
    """Per policy: ratio to best fixed per task (median over seeds), worst seed, geometric mean."""
    policies = list(dict.fromkeys(policy for comparison in comparisons.values()
                                  for policy in comparison["policies"]))
    if not policies:
        return {}
    print("\npolicy time / best fixed time per task: median over seeds (worst seed); geometric "
          "mean of the medians over tasks; inf: a run missed its target")
    print(f"{'policy':24} " + " ".join(f"{task:>16}" for task in comparisons) + f" {'geomean':>8}")
    summary = {}
    for policy in policies:
        cells = [comparison["policies"][policy] for comparison in comparisons.values()
                 if policy in comparison["policies"]]
        summary[policy] = {"geomean": geometric_mean(cell["vs_best_median"] for cell in cells),
                           "worst": worst(value for cell in cells for value in cell["vs_best"])}
        row = [f"{times_x(cell['vs_best_median'])} ({times_x(worst(cell['vs_best']))})"
               for cell in cells]
        print(f"{policy:24} " + " ".join(f"{text:>16}" for text in row)
              + f" {times_x(summary[policy]['geomean']):>8}")
    spreads = [comparison.get("spread", {}).get(comparison["best_fixed"], math.nan)
               for comparison in comparisons.values()]
    if not all(math.isnan(value) for value in spreads):  # the yardstick: needs --repeats 2 or more
        print(f"{'(best fixed, run to run)':24} "
              + " ".join(f"{times_x(value):>16}" for value in spreads)
              + "  slowest / fastest of a seed's identical runs, median over seeds")
    return summary


# -- plot -----------------------------------------------------------------------------------------

def plot(tasks: list, runs: list[dict], grid: list[int], path: Path) -> None:
    """One column per task: the metric over training time (first seed), the policies' batch; the
    first repeat of each run where there are several."""
    figure, axes = plt.subplots(2, len(tasks), figsize=(4.5 * len(tasks), 7.5), squeeze=False)
    for column, task in enumerate(tasks):
        own = [run for run in runs if run["task"] == task.name and run.get("repeat", 0) == 0]
        plot_metric(axes[0][column], task, [run for run in own if run["seed"] == own[0]["seed"]])
        plot_batch_sizes(axes[1][column], [run for run in own if run["policy"]], grid)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_metric(axis, task, runs: list[dict]) -> None:
    for run in runs:  # x: the time to target's clock, start-up included
        elapsed_s = [run["startup_s"] + train_s for train_s, *_ in run["curve"]]
        axis.plot(elapsed_s, [value for _, _, value, _ in run["curve"]], label=run["contestant"],
                  linewidth=2 if run["policy"] else 1, linestyle="--" if run["policy"] else "-")
    axis.axhline(task.target, color="grey", linestyle=":")
    if not task.higher_is_better:
        axis.set_yscale("log")
    axis.set(title=f"{task.name} (seed {runs[0]['seed']})", ylabel=f"test {task.metric_label}",
             xlabel="seconds since fit() (start-up in, evaluation out)")
    axis.legend(fontsize=7)


def plot_batch_sizes(axis, runs: list[dict], grid: list[int]) -> None:
    for size in grid:
        axis.axhline(size, color="grey", linewidth=0.5)
    policies = list(dict.fromkeys(run["contestant"] for run in runs))
    seeds = sorted({run["seed"] for run in runs})
    for run in (run for run in runs if run["batch_changes"]):  # colour: policy; style: seed
        starts, sizes = zip(*run["batch_changes"])
        axis.step([*starts, run["samples_seen"]], [*sizes, sizes[-1]], where="post",
                  color=f"C{policies.index(run['contestant'])}",
                  linestyle=["-", "--", ":", "-."][seeds.index(run["seed"]) % 4],
                  label=f"{run['contestant']} seed {run['seed']}")
    axis.set_yscale("log", base=2)
    axis.yaxis.set_major_formatter(ScalarFormatter())  # 256, not 2^8
    axis.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    axis.set(xlabel="samples seen", ylabel="logical batch (policies; grid in grey)")
    if runs:
        axis.legend(fontsize=7)
