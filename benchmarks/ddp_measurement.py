"""What measuring the gradient noise costs under DDP: 2 gloo ranks training at a fixed batch,
plain (DDP's bucketed all-reduce overlapped with backward on every step) against `auto`'s
measurement pinned at the same batch (Adaptive(initial=B, min_batch=B, max_batch=B): the batch
never moves, but every 4th step is measured: each rank's local gradient norm, taken bucket by
bucket in DDP's communication hook before the bucket's all-reduce (DDP's overlap kept), and a tiny
all-gather of the norms after backward; distributed/ddp.py LocalNorms, training/measure.py).

    python benchmarks/ddp_measurement.py                  # MLP 256-128, batch 256, 1 epoch, 3 rounds
    python benchmarks/ddp_measurement.py --batch-size 128 --rounds 5

Each round runs both contestants, in alternating order, as whole `torch.distributed.run`
processes (2 ranks, one torch thread each); the samples/s is the epoch's (History), rank 0's.
It prints every round, the medians and the ratio measured / plain.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(contestant: str, batch_size: int, epochs: int, out: Path) -> None:
    """One rank of one run (under torch.distributed.run)."""
    import torch

    from batchtrain import Trainer, load_dataset
    from batchtrain.batching.adaptive import Adaptive

    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist", download=False)
    policy = (batch_size if contestant == "plain" else
              Adaptive(initial=batch_size, min_batch=batch_size, max_batch=batch_size))
    trainer = Trainer("mlp", seed=0, model_options={"hidden": [256, 128]}, lr_scaling="none")
    history = trainer.fit(data.x_train, data.y_train, batch_size=policy, epochs=epochs)
    if trainer.dist_.is_main:
        measured = trainer.state_.noise.updates if trainer.state_.noise is not None else 0
        out.write_text(json.dumps({"samples_per_s": history[-1]["samples_per_s"],
                                   "steps": len(history.steps), "measured_steps": measured,
                                   "world": trainer.dist_.world_size}))
    torch.distributed.destroy_process_group()


def run(contestant: str, batch_size: int, epochs: int, directory: Path) -> dict:
    out = directory / f"{contestant}.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(HERE), "--worker", contestant, "--batch-size", str(batch_size), "--epochs",
               str(epochs), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"{contestant} failed:\n{result.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.batch_size, args.epochs, args.out)
    rates: dict[str, list[float]] = {"plain": [], "measured": []}
    with tempfile.TemporaryDirectory() as directory:
        for round_number in range(args.rounds):
            order = ["plain", "measured"] if round_number % 2 == 0 else ["measured", "plain"]
            for contestant in order:
                result = run(contestant, args.batch_size, args.epochs, Path(directory))
                rates[contestant].append(result["samples_per_s"])
                print(f"round {round_number + 1} {contestant:>8}: {result['samples_per_s']:8.0f} "
                      f"samples/s ({result['measured_steps']} of {result['steps']} steps measured, "
                      f"{result['world']} ranks)", flush=True)
    plain, measured = statistics.median(rates["plain"]), statistics.median(rates["measured"])
    print(f"median samples/s: plain {plain:.0f}, measured {measured:.0f}; "
          f"measured / plain {measured / plain:.3f} (step time +{(plain / measured - 1) * 100:.1f} %)")


if __name__ == "__main__":
    main()
