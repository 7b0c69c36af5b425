"""Native aborts at exit: count them over many fresh `batchtrain` processes, optionally under load.

Two paths aborted at exit with "terminate called without an active exception" (SIGABRT, exit
134) before they were fixed: a CSV data error, after its one-line message (more often with the
cores busy), and a 2-rank gloo fit (`--nproc 2`), after training had finished. This runs each
many times in fresh processes and counts exit codes and aborts (exit 134 / -6, or "terminate
called" / SIGABRT in stderr):

    python benchmarks/stress_exit.py                     # 50 CSV errors, 30 2-rank fits, idle
    python benchmarks/stress_exit.py --load 2            # with 2 busy-loop processes running
    python benchmarks/stress_exit.py --csv-runs 0        # the 2-rank fits only

The CSV runs cycle through malformed files (';' separator, NUL bytes, a ragged row, text far
down a numeric column) and --prefetch kinds. Exit status 1 if any run aborted.
"""
import argparse
import collections
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ABORT_CODES = (134, -6)  # SIGABRT through a shell, and as subprocess reports it
ABORT_TEXT = ("terminate called", "SIGABRT")


def write_malformed_csvs(directory: Path, rows: int = 300) -> dict[str, Path]:
    """CSV files that `fit` must refuse with exit 2, by kind."""
    rng = np.random.default_rng(0)
    values = [(f"{a:.6f}", f"{b:.6f}", str(label)) for a, b, label in
              zip(rng.random(rows), rng.random(rows), np.arange(rows) % 2)]
    lines = {
        "semicolon": ["a;b;label", *(";".join(row) for row in values)],
        "nul-bytes": ["a,b,label", *(",".join(row) for row in values[:100]), "0.5\0\0,0.1,1",
                      *(",".join(row) for row in values[100:])],
        "ragged": ["a,b,label", *(",".join(row) for row in values[:150]), "0.5,0.1,1,7",
                   *(",".join(row) for row in values[150:])],
        "text-far-down": ["a,b,label", *(",".join(row) for row in values[:-10]), "0.5,oops,1",
                          *(",".join(row) for row in values[-9:])],
    }
    paths = {}
    for kind, text in lines.items():
        paths[kind] = directory / f"{kind}.csv"
        paths[kind].write_text("\n".join(text) + "\n")
    return paths


def write_blobs(path: Path, samples: int = 200) -> Path:
    """A tiny .npz of three Gaussian blobs (6 features): a 2-rank epoch takes a few steps."""
    rng = np.random.default_rng(0)
    labels = np.arange(samples) % 3
    features = rng.normal(0.0, 1.0, (samples, 6)).astype(np.float32)
    features[np.arange(samples), labels] += 1.5
    np.savez(path, x_train=features, y_train=labels)
    return path


def run(command: list[str], timeout_s: float) -> tuple[int | str, str]:
    """(exit code, or "timeout"; stderr) of a fresh process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired as expired:
        return "timeout", expired.stderr.decode(errors="replace") if expired.stderr else ""
    return result.returncode, result.stderr


class Tally:
    """Exit codes and aborts of one scenario; the stderr of the first abort, for diagnosis."""

    def __init__(self, name: str, expected: int):
        self.name, self.codes, self.aborts, self.first_abort = name, collections.Counter(), 0, None
        self.expected, self.first_unexpected = expected, None

    def add(self, code: int | str, stderr: str) -> None:
        self.codes[code] += 1
        if code in ABORT_CODES or any(text in stderr for text in ABORT_TEXT):
            self.aborts += 1
            self.first_abort = self.first_abort or stderr[-2000:]
        elif code != self.expected:
            self.first_unexpected = self.first_unexpected or f"exit {code}: {stderr[-2000:]}"

    def report(self) -> str:
        codes = ", ".join(f"{code}: {count}" for code, count in sorted(self.codes.items(), key=str))
        return f"{self.name}: {sum(self.codes.values())} runs, exit codes {{{codes}}}, aborts {self.aborts}"


def stress_csv(runs: int, directory: Path, prefetch_kinds: list[str], timeout_s: float) -> Tally:
    tally = Tally("CSV error path (expect exit 2)", 2)
    files = list(write_malformed_csvs(directory).items())
    for index in range(runs):
        kind, path = files[index % len(files)]
        prefetch = prefetch_kinds[(index // len(files)) % len(prefetch_kinds)]
        code, stderr = run([sys.executable, "-m", "batchtrain", "fit", "--data", str(path),
                            "--target", "label", "--threads", "1", "--epochs", "1",
                            "--prefetch", prefetch, "--output", str(directory / f"csv-{index}")],
                           timeout_s)
        tally.add(code, stderr)
        lines = stderr.strip().splitlines()
        if code == 2 and len(lines) != 1:
            tally.codes[f"2 with {len(lines)} stderr lines ({kind})"] += 1
    return tally


def stress_ddp(runs: int, directory: Path, timeout_s: float) -> Tally:
    tally = Tally("2-rank gloo fit (expect exit 0)", 0)
    data = write_blobs(directory / "blobs.npz")
    for index in range(runs):
        code, stderr = run([sys.executable, "-m", "batchtrain", "fit", "--nproc", "2",
                            "--data", str(data), "--model", "mlp", "--hidden", "16", "--epochs", "1",
                            "--batch-size", "50", "--max-physical-batch", "64", "--seed", str(index),
                            "--validation-split", "0", "--progress", "none",
                            "--output", str(directory / f"ddp-{index}")], timeout_s)
        tally.add(code, stderr)
    return tally


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores"


def start_load(processes: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]


def stop_load(busy: list[subprocess.Popen]) -> None:
    for process in busy:
        process.kill()
    for process in busy:
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv-runs", type=int, default=50, help="CSV error runs (default 50)")
    parser.add_argument("--ddp-runs", type=int, default=30, help="2-rank fits (default 30)")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="busy-loop processes running meanwhile (default 0)")
    parser.add_argument("--prefetch", default="thread,process,none",
                        help="--prefetch kinds the CSV runs cycle through (default thread,process,none)")
    parser.add_argument("--timeout-s", type=float, default=300, help="per run (default 300 s)")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; load: {args.load} busy-loop processes; "
          f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    busy = start_load(args.load)
    try:
        with tempfile.TemporaryDirectory() as directory:
            tallies = []
            if args.csv_runs:
                tallies.append(stress_csv(args.csv_runs, Path(directory), args.prefetch.split(","),
                                          args.timeout_s))
                print(tallies[-1].report(), flush=True)
            if args.ddp_runs:
                tallies.append(stress_ddp(args.ddp_runs, Path(directory), args.timeout_s))
                print(tallies[-1].report(), flush=True)
    finally:
        stop_load(busy)
    for tally in tallies:
        if tally.first_abort:
            print(f"\nfirst abort of {tally.name}, stderr's end:\n{tally.first_abort}")
        if tally.first_unexpected:
            print(f"\nfirst unexpected exit of {tally.name}, stderr's end:\n{tally.first_unexpected}")
    return 1 if any(tally.aborts or tally.first_unexpected for tally in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
