"""benchmarks/suite_report.py and probe_suite.py: a seed's figure is the median of its repeats."""
import importlib.util
import math
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # the benchmarks import each other by module name
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def run(contestant: str, seed: int, repeat: int, time_s: float, policy: bool = False) -> dict:
    reached = not math.isinf(time_s)
    return {"task": "t", "contestant": contestant, "policy": policy, "seed": seed,
            "repeat": repeat, "reached": reached, "time_s": time_s,
            "samples": 1000 * repeat if reached else None}


def test_a_seed_s_time_is_the_median_of_its_repeats_and_the_ratios_pair_those():
    report = load("suite_report")
    runs = [run("fixed 64", 0, 0, 4.0), run("fixed 64", 0, 1, 9.0), run("fixed 64", 0, 2, 5.0),
            run("fixed 128", 0, 0, 6.0), run("fixed 128", 0, 1, 6.5), run("fixed 128", 0, 2, 7.0),
            run("auto", 0, 0, 5.5, True), run("auto", 0, 1, 20.0, True),
            run("auto", 0, 2, 6.0, True)]
    assert report.by_contestant(runs, "time_s")["fixed 64"] == {0: 5.0}
    assert report.by_contestant(runs, "samples")["auto"] == {0: 1000.0}
    comparison = report.compare(runs, [0])
    assert comparison["best_fixed"] == "fixed 64"  # 5.0 beats 6.5, though 9.0 does not
    assert comparison["policies"]["auto"]["vs_best"] == [6.0 / 5.0]
    missed = runs + [run("fixed 32", 0, 0, math.inf), run("fixed 32", 0, 1, 3.0)]
    assert report.by_contestant(missed, "samples")["fixed 32"] == {0: None}  # one repeat missed


def test_probe_suite_scores_against_the_median_of_the_grid_s_repeats():
    probe_suite = load("probe_suite")
    suite = {"runs": [run("fixed 64", 1, 0, 4.0), run("fixed 64", 1, 1, 8.0),
                      run("fixed 64", 1, 2, 5.0), run("fixed 256", 1, 0, math.inf),
                      run("auto", 1, 0, 1.0, True)]}
    assert probe_suite.fixed_times(suite, "t") == {64: {1: 5.0}, 256: {1: math.inf}}


def test_the_spread_of_identical_runs_is_slowest_over_fastest_of_a_seed_s_repeats():
    report = load("suite_report")
    runs = [run("fixed 64", 0, 0, 4.0), run("fixed 64", 0, 1, 6.0), run("fixed 64", 0, 2, 5.0),
            run("fixed 64", 1, 0, 2.0), run("fixed 64", 1, 1, 2.2),
            run("fixed 128", 0, 0, 3.0), run("fixed 128", 0, 1, math.inf),
            run("auto", 0, 0, 5.0, True)]
    spread = report.spread(runs)
    assert spread["fixed 64"] == (6.0 / 4.0 + 2.2 / 2.0) / 2  # the median of two seeds' ratios
    assert "fixed 128" not in spread  # one run reached the target: nothing to compare
    assert "auto" not in spread  # a single run
    assert report.compare(runs, [0])["spread"] == spread


def test_the_held_out_tasks_are_chosen_apart_from_the_suite_and_their_data_is_seeded():
    suite = load("batch_suite")
    held_out = [task.name for task in suite.parse_args(["--tasks", "held-out"]).tasks]
    assert held_out == ["blobs", "tiny-data", "deep-regression", "plain-sgd", "adamw-cnn"]
    everything = [task.name for task in suite.parse_args(["--tasks", "all"]).tasks]
    assert not set(held_out) & set(everything)  # never in the suite's own runs
    assert [task.name for task in suite.parse_args(["--tasks", "blobs,mlp"]).tasks] == [
        "blobs", "mlp"]
    first, again = suite.blobs(train=300, test=100), suite.blobs(train=300, test=100)
    assert first.x_train.shape == (300, 32) and first.x_test.shape == (100, 32)
    assert (first.x_train == again.x_train).all() and set(first.y_train) <= set(range(8))
    assert len(set(first.y_train)) == 8
