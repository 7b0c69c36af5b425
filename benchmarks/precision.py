"""Training speed per precision (32, bf16-mixed, 16-mixed), side by side in one run.

Trains the reference CNN (seed-cnn) on Fashion-MNIST images (seeded random images of the same
shape when the dataset is not installed) with batchtrain's Trainer in each precision, one epoch of
--samples samples per timed pass, the passes of all precisions interleaved (--repeats rounds) so a
busy machine slows them alike. Prints the median samples/s per precision and batch size, the ratio
to float32, and whether this machine computes bfloat16 natively (runtime/precision.py):

    .venv/bin/python benchmarks/precision.py --batches 128,512 --samples 4096 --repeats 5
"""
import argparse
import platform
import statistics
import time

import torch

from batchtrain import Trainer
from batchtrain.runtime.precision import CPU_BF16_FLAGS, cpu_flags, native_bf16
from images import fashion_mnist_images  # benchmarks/images.py, beside this script

PRECISIONS = ("32", "bf16-mixed", "16-mixed")


def timed_pass(x, y, batch: int, precision: str, device: str) -> float:
    """Samples per second of one epoch (the model is built and warmed up first, off the clock)."""
    trainer = Trainer("seed-cnn", seed=0, max_physical_batch=batch, precision=precision,
                      device=device)
    trainer.fit(x[:2 * batch], y[:2 * batch], batch_size=batch, epochs=1)  # warm-up
    started = time.perf_counter()
    trainer.fit(x, y, batch_size=batch, epochs=1)
    return len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="128,512", help="comma-separated batch sizes")
    parser.add_argument("--samples", type=int, default=4096, help="samples per timed pass")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    args = parser.parse_args()
    device = torch.device(args.device)
    x, y, data = fashion_mnist_images(args.samples)
    if device.type == "cuda":
        unit = f"{torch.cuda.get_device_name(device)}, native bf16: {native_bf16(device)}"
    else:
        flags = sorted(set(CPU_BF16_FLAGS) & cpu_flags()) or ["none"]
        unit = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                f"bf16 flags: {', '.join(flags)}")
    print(f"seed-cnn on {len(x)} {data} images; torch {torch.__version__}; {device}: {unit}")
    precisions = args.precisions.split(",")
    for batch in (int(size) for size in args.batches.split(",")):
        speeds: dict[str, list[float]] = {name: [] for name in precisions}
        for _ in range(args.repeats):
            for name in precisions:
                speeds[name].append(timed_pass(x, y, batch, name, args.device))
        base = statistics.median(speeds[precisions[0]])
        for name in precisions:
            median = statistics.median(speeds[name])
            print(f"batch {batch:4d}  {name:>10}: median {median:8.0f} samples/s "
                  f"(min {min(speeds[name]):.0f}, max {max(speeds[name]):.0f}), "
                  f"{median / base:.2f}x {precisions[0]}")


if __name__ == "__main__":
    main()
