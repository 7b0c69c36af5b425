"""Processes on one machine: `batchtrain fit --nproc N` against one process, side by side.

Trains the reference CNN on Fashion-MNIST for one epoch (no validation) with 1 process and with
N processes (DistributedDataParallel, gloo on the CPU, each process limited to cores / N torch
threads), interleaved, and prints the training samples/s (the epoch's, from history.csv) with
medians and the ratio.

    python benchmarks/ddp_scaling.py              # N = 2, 3 repeats, about 3 minutes on 2 cores
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def samples_per_s(nproc: int, run_dir: Path, batch_size: int) -> float:
    threads = max(os.cpu_count() // nproc, 1)
    command = [sys.executable, "-m", "batchtrain", "fit", "--nproc", str(nproc), "--epochs", "1",
               "--validation-split", "0", "--batch-size", str(batch_size), "--seed", "0",
               "--progress", "none", "--output", str(run_dir)]
    result = subprocess.run(command, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    if result.returncode != 0:
        raise SystemExit(f"--nproc {nproc} failed:\n{result.stderr[-3000:]}")
    with open(run_dir / "history.csv") as handle:
        return float(next(csv.DictReader(handle))["samples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs: dict[int, list[float]] = {1: [], args.nproc: []}
    with tempfile.TemporaryDirectory() as directory:
        for repeat in range(args.repeats):
            for nproc in runs:
                runs[nproc].append(samples_per_s(nproc, Path(directory) / f"{nproc}-{repeat}",
                                                 args.batch_size))
    single = statistics.median(runs[1])
    print(f"reference CNN, Fashion-MNIST, 1 epoch of 60,000 samples, global batch {args.batch_size}, "
          f"{os.cpu_count()} cores; medians of {args.repeats} interleaved runs")
    for nproc, values in runs.items():
        median = statistics.median(values)
        print(f"  --nproc {nproc}: {median:,.0f} samples/s  ratio to 1 process {median / single:.2f}  "
              f"(runs: {', '.join(f'{value:,.0f}' for value in values)})")


if __name__ == "__main__":
    main()
