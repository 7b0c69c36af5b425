"""batchtrain against the seed's Keras script, side by side in one run, in fp32 and in bf16.

    python3 -m venv .venv-keras && .venv-keras/bin/pip install -r benchmarks/requirements-keras.txt
    .venv/bin/python benchmarks/keras_side_by_side.py                 # 3 rounds of 2 epochs
    .venv/bin/python benchmarks/keras_side_by_side.py --busy-core     # with one core kept busy
    .venv/bin/python benchmarks/keras_side_by_side.py --threads auto --contestants batchtrain-32,keras-float32

Four contestants, each a whole process on the design document's job (Fashion-MNIST from its IDX
files, batch 128, validation 0.2, Adam, seed 0): Keras 3 on TensorFlow (benchmarks/keras_seed.py,
in the Keras venv) with the `float32` and the `mixed_bfloat16` policy, and `batchtrain fit` with
`--precision 32` and `--precision bf16-mixed`. Each round runs every contestant once, the order
rotating from round to round, so a change of load on a shared machine spreads over all of them.

Reported per contestant (medians over rounds): the whole process's wall time (interpreter start,
imports, data, every epoch with its validation, the test evaluation), and training samples/s over
the epochs after the first (the first epoch carries Keras' graph tracing and oneDNN's first-call
set-up: a warm-up, reported separately), validation off the clock for both. Ratios are medians of
per-round ratios (paired within a round). --busy-core runs a spinning process beside every
contestant (os.sched_setaffinity to one core where the OS allows), the user's machine doing
something else. The last lines say how busy the machine was.
"""
import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA_DIR = "/usr/share/datasets/fashion-mnist"
CONTESTANTS = ("keras-float32", "keras-mixed_bfloat16", "batchtrain-32", "batchtrain-bf16-mixed")


def command(name: str, args, output: Path) -> list[str]:
    """The command line of contestant `name`."""
    tool, setting = name.split("-", 1)
    if tool == "keras":
        return [args.keras_python, str(HERE / "keras_seed.py"), "--epochs", str(args.epochs),
                "--policy", setting, "--data-dir", args.data_dir]
    line = [sys.executable, "-m", "batchtrain", "fit", "--epochs", str(args.epochs), "--seed", "0",
            "--precision", setting, "--data-dir", args.data_dir, "--no-download",
            "--progress", "none", "--output", str(output)]
    return line + (["--threads", args.threads] if args.threads else [])


def run_one(name: str, args, scratch: Path) -> dict:
    """Runs one contestant; its wall time, per-epoch training seconds and test accuracy."""
    output = scratch / f"{name}-{time.monotonic_ns()}"
    started = time.perf_counter()
    done = subprocess.run(command(name, args, output), capture_output=True, text=True,
                          cwd=ROOT, check=False)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    if name.startswith("keras"):
        result = json.loads(done.stdout.strip().splitlines()[-1])
        epochs, accuracy = result["epoch_train_s"], result["test_accuracy"]
        samples = result["train_samples"]
    else:
        records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
        epoch_records = [r for r in records if r.get("type") == "epoch"]
        epochs = [r["time_s"] for r in epoch_records]
        samples = round(epoch_records[0]["samples_per_s"] * epoch_records[0]["time_s"])
        accuracy = json.loads((output / "test.json").read_text())["test_accuracy"]
    later = epochs[1:] or epochs
    return {"wall_s": wall_s, "first_epoch_s": epochs[0], "samples": samples,
            "samples_per_s": samples / statistics.median(later), "test_accuracy": accuracy}


def spinner() -> subprocess.Popen:
    """A process that keeps one core busy until killed (pinned to the last core where it can be)."""
    code = ("import os\n"
            "try: os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})\n"
            "except (AttributeError, OSError): pass\n"
            "while True: pass\n")
    return subprocess.Popen([sys.executable, "-c", code])


def busy_cores(before: list[int], after: list[int], seconds: float) -> float:
    """Cores busy on average between two /proc/stat 'cpu' lines."""
    ticks = os.sysconf("SC_CLK_TCK")
    idle = (after[3] + after[4]) - (before[3] + before[4])
    return ((sum(after[:8]) - sum(before[:8])) - idle) / ticks / seconds


def cpu_ticks() -> list[int] | None:
    try:
        with open("/proc/stat") as stat:
            return [int(value) for value in stat.readline().split()[1:]]
    except OSError:
        return None


def report(results: dict[str, list[dict]], names: list[str]) -> None:
    print(f"\n{'contestant':<22} {'wall s':>7} {'1st epoch s':>11} {'samples/s':>9} {'test acc':>8}")
    for name in names:
        rows = results[name]
        median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(f"{name:<22} {median['wall_s']:>7.1f} {median['first_epoch_s']:>11.1f} "
              f"{median['samples_per_s']:>9.0f} {median['test_accuracy']:>8.4f}")
    print("\nratios (median of per-round ratios; samples/s over the epochs after the first, and "
          "whole-process wall time):")
    for ours, theirs in itertools.product(names, names):
        if ours == theirs or not ours.startswith("batchtrain"):
            continue
        speed = statistics.median(a["samples_per_s"] / b["samples_per_s"]
                                  for a, b in zip(results[ours], results[theirs]))
        wall = statistics.median(b["wall_s"] / a["wall_s"]
                                 for a, b in zip(results[ours], results[theirs]))
        print(f"  {ours} / {theirs}: samples/s {speed:.2f}x, wall time {wall:.2f}x faster")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="each contestant once per round")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (>= 2: the first "
                        "is reported apart as the warm-up)")
    parser.add_argument("--contestants", default=",".join(CONTESTANTS),
                        help=f"comma-separated, of {', '.join(CONTESTANTS)}")
    parser.add_argument("--keras-python", default=str(ROOT / ".venv-keras" / "bin" / "python"),
                        help="the Python of the venv holding benchmarks/requirements-keras.txt")
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--threads", default=None, help="batchtrain's --threads (default: its own)")
    parser.add_argument("--busy-core", action="store_true",
                        help="keep one core busy with a spinning process during every run")
    args = parser.parse_args(argv)
    names = args.contestants.split(",")
    unknown = [name for name in names if name not in CONTESTANTS]
    if unknown:
        parser.error(f"unknown contestant {', '.join(unknown)}; use {', '.join(CONTESTANTS)}")
    if any(name.startswith("keras") for name in names) and not Path(args.keras_python).exists():
        parser.error(f"no Keras venv at {args.keras_python}: create it with the command in "
                     "benchmarks/requirements-keras.txt, or pass --keras-python")
    print(f"{args.rounds} rounds x {len(names)} contestants, {args.epochs} epochs each"
          f"{', one core kept busy' if args.busy_core else ''}; batchtrain --threads "
          f"{args.threads or 'default'}", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in names}
    ticks_before, clock_before = cpu_ticks(), time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                busy = spinner() if args.busy_core else None
                try:
                    result = run_one(name, args, Path(scratch))
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                results[name].append(result)
                print(f"round {round_index + 1} {name}: wall {result['wall_s']:.1f} s, "
                      f"{result['samples_per_s']:.0f} samples/s after epoch 1, test accuracy "
                      f"{result['test_accuracy']:.4f}", flush=True)
    report(results, names)
    ticks_after = cpu_ticks()
    if ticks_before and ticks_after:
        seconds = time.monotonic() - clock_before
        print(f"the machine: {busy_cores(ticks_before, ticks_after, seconds):.2f} of "
              f"{os.cpu_count()} cores busy on average (contestants{' and spinner' if args.busy_core else ''} included)")


if __name__ == "__main__":
    sys.exit(main())
