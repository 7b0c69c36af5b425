"""torch.compile against eager training, side by side: the compile's cost and what it saves.

For each model (the reference CNN, seed-cnn, and an MLP on flat Fashion-MNIST pixels), trains one
epoch of --samples samples with Trainer(compile=False) and Trainer(compile=True): the first fit of
a new trainer includes the compile (reported separately), then --repeats further one-epoch fits
of each, interleaved, time the steady state. Prints the compile time, the median samples/s of
each, their ratio, and after how many samples the compile would pay for itself:

    .venv/bin/python benchmarks/compile.py --samples 4096 --repeats 5
"""
import argparse
import platform
import statistics
import time

import torch

from batchtrain import Trainer
from images import fashion_mnist_images  # benchmarks/images.py, beside this script


def timed(trainer: Trainer, x, y, batch: int) -> float:
    started = time.perf_counter()
    trainer.fit(x, y, batch_size=batch, epochs=1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    x, y, data = fashion_mnist_images(args.samples)
    print(f"{len(x)} {data} images, batch {args.batch}; torch {torch.__version__}; "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    for model, inputs in (("seed-cnn", x), ("mlp", x.reshape(len(x), -1))):
        trainers = {flag: Trainer(model, seed=0, compile=flag, max_physical_batch=args.batch)
                    for flag in (False, True)}
        first = {flag: timed(trainer, inputs, y, args.batch) for flag, trainer in trainers.items()}
        steady: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for flag, trainer in trainers.items():
                steady[flag].append(timed(trainer, inputs, y, args.batch))
        eager_s, compiled_s = (statistics.median(steady[flag]) for flag in (False, True))
        compile_s = first[True] - compiled_s  # the first fit minus a steady epoch
        saved_per_sample = (eager_s - compiled_s) / len(inputs)
        pays_off = (f"after {compile_s / saved_per_sample:,.0f} samples" if saved_per_sample > 0
                    else "never (slower once compiled)")
        print(f"{model:>9}: compile {compile_s:5.1f} s; eager {len(inputs) / eager_s:7.0f} samples/s, "
              f"compiled {len(inputs) / compiled_s:7.0f} samples/s "
              f"({eager_s / compiled_s:.2f}x); the compile pays off {pays_off}")


if __name__ == "__main__":
    main()
