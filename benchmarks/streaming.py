"""Streaming from disk: peak memory and speed on a dataset larger than the shuffle window by far.

1. Writes a synthetic regression dataset of --size-gib GiB twice, as Parquet files and as .npy
   shards (float32 features; price = a linear function + noise), deleted at the end.
2. Trains an MLP for one epoch streaming each copy, each in a fresh process, and prints its peak
   RSS (the whole process: Python, torch and the stream) and training samples/s.
3. On a subset that fits in memory, trains from in-memory arrays and from the same rows streamed
   (prefetch auto, and also thread and process; Parquet and CSV also with --cache, their rows
   kept decoded on disk after the first read), interleaved, and prints the medians and
   streamed / in-memory ratios. Then the same with torch on one thread fewer than the cores
   ("spare core"): a reader thread then has a core of its own, as on a GPU machine or a CPU with
   cores to spare, and the ratio shows how much of the reading the prefetch hides.

Goals (issue #5): peak RSS <= 1 GiB while streaming; streamed / in-memory >= 0.9.

    python benchmarks/streaming.py                   # 10 GiB, about 15-25 minutes on 2 cores
    python benchmarks/streaming.py --size-gib 1      # a quick look
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROWS_PER_CHUNK = 1 << 18          # rows generated at once (64 MiB at 64 features)
ROW_GROUP = 1 << 16


def generate(directory: Path, size_gib: float, features: int, seed: int = 0) -> int:
    """Write the dataset as npy/ shards and parquet/ files, chunk by chunk; returns its rows."""
    rows = int(size_gib * (1 << 30) // (4 * features + 4))
    (directory / "npy").mkdir(parents=True)
    (directory / "parquet").mkdir()
    weights = np.random.default_rng(seed).normal(size=features).astype(np.float32)
    names = [f"f{index}" for index in range(features)]
    for chunk, start in enumerate(range(0, rows, ROWS_PER_CHUNK)):
        count = min(ROWS_PER_CHUNK, rows - start)
        rng = np.random.default_rng(seed + 1 + chunk)
        x = rng.standard_normal((count, features), dtype=np.float32) * 3 + 1
        price = (x @ weights + rng.standard_normal(count, dtype=np.float32)).astype(np.float32)
        np.save(directory / "npy" / f"x-{chunk:05d}.npy", x)
        np.save(directory / "npy" / f"y-{chunk:05d}.npy", price)
        table = pa.table({**{name: x[:, index] for index, name in enumerate(names)}, "price": price})
        pq.write_table(table, directory / "parquet" / f"part-{chunk:05d}.parquet",
                       row_group_size=ROW_GROUP)
    return rows


def train_child(args: argparse.Namespace) -> None:
    """In a fresh process: one training run; prints a JSON line of its figures."""
    import torch
    from batchtrain import Trainer
    from batchtrain.data import open_dataset

    torch.manual_seed(0)
    trainer = Trainer("mlp", model_options={"hidden": [64, 64]}, task="regression", seed=0,
                      threads=args.threads)
    if args.source == "memory":
        x, y = load_arrays(Path(args.path))
        data = (x, y)
    else:
        target = None if args.source == "npy" else "price"
        data = (open_dataset(args.path, target, prefetch=args.prefetch, standardize=False,
                             cache=args.cache), None)
    started = time.perf_counter()
    history = trainer.fit(*data, batch_size=args.batch_size, epochs=args.epochs)
    wall = time.perf_counter() - started
    samples = sum(history.history["samples_per_s"][i] * history.history["time_s"][i]
                  for i in range(len(history)))
    train_s = sum(history.history["time_s"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"samples": round(samples), "train_s": train_s, "wall_s": wall,
                      "samples_per_s": samples / train_s, "peak_rss": peak,
                      "last_epoch_samples_per_s": history.history["samples_per_s"][-1]}))


def load_arrays(npy_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    xs = [np.load(path) for path in sorted(npy_dir.glob("x-*.npy"))]
    ys = [np.load(path) for path in sorted(npy_dir.glob("y-*.npy"))]
    return np.concatenate(xs), np.concatenate(ys)


def run_child(source: str, path: Path, args: argparse.Namespace, prefetch: str = "thread",
              epochs: int = 1, threads: int | None = None, cache: Path | None = None) -> dict:
    command = [sys.executable, __file__, "--child", source, str(path), "--prefetch", prefetch,
               "--epochs", str(epochs), "--batch-size", str(args.batch_size)]
    command += ["--threads", str(threads)] if threads else []
    command += ["--cache", str(cache)] if cache else []
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{source} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def subset(directory: Path, shards: int) -> Path:
    """The first `shards` .npy pairs and Parquet files, linked into a smaller dataset, and the
    same rows written as CSV files."""
    small = directory / f"subset-{shards}"
    shutil.rmtree(small, ignore_errors=True)
    for kind, pattern in (("npy", "[xy]-*.npy"), ("parquet", "part-*.parquet")):
        (small / kind).mkdir(parents=True)
        files = sorted((directory / kind).glob(pattern))
        keep = [f for f in files if int(f.stem.split("-")[-1]) < shards]
        for file in keep:
            (small / kind / file.name).symlink_to(file)
    (small / "csv").mkdir()  # the same rows as CSV text, for the CSV reader's figure
    for file in sorted((small / "parquet").iterdir()):
        pacsv.write_csv(pq.read_table(file), small / "csv" / f"{file.stem}.csv")
    return small


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=10.0)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--subset-shards", type=int, default=4, help="chunks of 2^18 rows in the "
                        "in-memory comparison (default 4: 1M rows, 260 MiB)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="where to write the data (default: a temp dir)")
    parser.add_argument("--reuse", type=Path, help="a dataset directory left by --keep: skip writing")
    parser.add_argument("--keep", action="store_true", help="keep the dataset (default: delete it)")
    parser.add_argument("--parts", default="12", help="which parts to run: 1, 2 or 12 (default)")
    parser.add_argument("--child", nargs=2, metavar=("SOURCE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--prefetch", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.source, args.path = args.child
        return train_child(args)

    directory = args.reuse or Path(tempfile.mkdtemp(prefix="batchtrain-stream-", dir=args.dir))
    try:
        started = time.perf_counter()
        rows = (sum(np.load(path, mmap_mode="r").shape[0] for path in (directory / "npy").glob("y-*"))
                if args.reuse else generate(directory, args.size_gib, args.features))
        sizes = {kind: sum(f.stat().st_size for f in (directory / kind).iterdir()) / (1 << 30)
                 for kind in ("npy", "parquet")}
        print(f"{'reused' if args.reuse else 'wrote'} {rows:,} rows x {args.features} float32 features: .npy {sizes['npy']:.2f} GiB, "
              f"Parquet {sizes['parquet']:.2f} GiB, in {time.perf_counter() - started:.0f}s")
        print(f"\n1. one epoch streamed, batch {args.batch_size}, MLP 64-64, prefetch auto")
        for kind in ("parquet", "npy") if "1" in args.parts else ():
            figures = run_child(kind, directory / kind, args)
            print(f"  {kind:8s} {figures['samples_per_s']:>9,.0f} samples/s  peak RSS "
                  f"{figures['peak_rss'] / (1 << 30):.2f} GiB  ({figures['samples']:,} samples in "
                  f"{figures['train_s']:.0f}s; {figures['wall_s']:.0f}s with set-up)")
        if "2" not in args.parts:
            return
        small = subset(directory, args.subset_shards)
        print(f"\n2. subset of {args.subset_shards * ROWS_PER_CHUNK:,} rows, 2 epochs (the second "
              f"timed), {args.repeats} interleaved rounds: median samples/s, and the median over "
              "rounds of the ratio to in-memory in the same round (drifts of the machine cancel)")
        spare = max((os.cpu_count() or 2) - 1, 1)
        names = ["memory", "npy", "parquet", "parquet+cache", "csv", "csv+cache", "npy/thread",
                 "parquet/thread", "npy/process", f"memory@{spare}", f"npy/thread@{spare}",
                 f"parquet/thread@{spare}"]
        runs = {name: [] for name in names}
        for _ in range(args.repeats):
            for name in runs:
                name_only, _, threads = name.partition("@")
                kind, _, prefetch = name_only.partition("/")
                kind, cached, _ = kind.partition("+cache")
                path = small / ("npy" if kind == "memory" else kind)
                figures = run_child(kind, path, args, prefetch or "auto", epochs=2,
                                    threads=int(threads) if threads else None,
                                    cache=small / "cache" if cached else None)
                runs[name].append(figures["last_epoch_samples_per_s"])
        for name, values in runs.items():
            _, _, threads = name.partition("@")
            memory = runs[f"memory@{threads}" if threads else "memory"]
            ratio = statistics.median(value / base for value, base in zip(values, memory))
            print(f"  {name:18s} {statistics.median(values):>9,.0f}  ratio to in-memory {ratio:.2f}  "
                  f"(runs: {', '.join(f'{value:,.0f}' for value in values)})")
        print(f"  (@{spare}: torch on {spare} thread(s), leaving a core to the reader thread; "
              "+cache: rows kept decoded on disk after their first read, --cache)")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
