"""Fingerprints of seeded fits, to show a refactor left training bit for bit unchanged.

Runs a few small, seeded fits through the public API, each exercising a different part of the
step (the reference CNN at batch 128; gradient accumulation; an adaptive batch size driven by the
noise measurement, with Adam and with SGD; a batch-size schedule with an lr schedule; a resumed
run) and prints, per fit, every epoch's loss in float hex and a SHA-256 of the final weights and
the per-step records. Run it before and after a change and diff the outputs:

    .venv/bin/python benchmarks/bitwise_reference.py > before.txt
    ... change ...
    .venv/bin/python benchmarks/bitwise_reference.py > after.txt && diff before.txt after.txt

Data: 3,000 Fashion-MNIST training images when the dataset is installed, else seeded synthetic
images of the same shape (the output says which). Bit-identity holds on one machine and thread
count; torch's threads are pinned to 1 here so the figures do not depend on the core count.
"""
import argparse
import hashlib
import json
import sys
import tempfile

import numpy as np
import torch

import batchtrain
from batchtrain import Trainer

SAMPLES = 3000


def load_images() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        splits = batchtrain.load_dataset("fashion-mnist", download=False)
        return splits.x_train[:SAMPLES], splits.y_train[:SAMPLES], "fashion-mnist"
    except batchtrain.BatchTrainError:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 10, SAMPLES)
        x = rng.random((SAMPLES, 1, 28, 28), dtype=np.float32) * 0.5 + y[:, None, None, None] / 20
        return x.astype(np.float32), y, "synthetic"


def fingerprint(trainer: Trainer, history) -> dict:
    weights = hashlib.sha256()
    for name, tensor in sorted(trainer.model_.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    steps = json.dumps(history.steps, sort_keys=True, default=float).encode()
    return {"loss": [float(epoch["loss"]).hex() for epoch in history],
            "val_loss": [float(epoch["val_loss"]).hex() for epoch in history if "val_loss" in epoch],
            "steps": len(history.steps), "steps_sha256": hashlib.sha256(steps).hexdigest()[:16],
            "weights_sha256": weights.hexdigest()[:16]}


def run_all(x: np.ndarray, y: np.ndarray) -> dict:
    flat = x.reshape(len(x), -1)
    jobs = {
        "seed-cnn adam 128": lambda: _fit(Trainer("seed-cnn", seed=0), x, y, batch_size=128,
                                          epochs=2, validation_split=0.2),
        "mlp accumulation 128 over 32": lambda: _fit(
            Trainer("mlp", seed=1, max_physical_batch=32), flat, y, batch_size=128, epochs=2),
        "mlp adaptive adam": lambda: _fit(Trainer("mlp", seed=2), flat, y, batch_size="adaptive:noise-scale",
                                          epochs=2),
        "mlp adaptive sgd": lambda: _fit(Trainer("mlp", optimizer="sgd", lr=0.05, seed=3), flat, y,
                                         batch_size="adaptive:noise-scale", epochs=2),
        "mlp auto norm-test": lambda: _fit(Trainer("mlp", seed=7), flat, y,
                                           batch_size="adaptive:norm-test", epochs=2),
        "mlp auto": lambda: _fit(Trainer("mlp", seed=8), flat, y, batch_size="auto", epochs=1),
        "mlp schedule + lr schedule": lambda: _fit(
            Trainer("mlp", seed=4, lr_schedule="warmup:0.2e+cosine"), flat, y,
            batch_size="double:32,0.5e,256", epochs=2),
        "mlp regression rmsprop": lambda: _fit(
            Trainer("mlp", optimizer="rmsprop", task="regression", seed=5), flat,
            y.astype(np.float32), batch_size=64, epochs=2),
        "mlp resumed": lambda: _resumed(flat, y),
    }
    return {name: job() for name, job in jobs.items()}


def _fit(trainer: Trainer, x, y, **options) -> dict:
    history = trainer.fit(x, y, **options)
    return fingerprint(trainer, history)


def _resumed(x, y) -> dict:
    """Two epochs, checkpointed every 700 samples; a new trainer resumes from the first epoch's
    mid-point checkpoint and runs to the end."""
    with tempfile.TemporaryDirectory() as folder:
        Trainer("mlp", seed=6).fit(x, y, batch_size=100, epochs=1, callbacks=[
            batchtrain.Checkpoint(folder, every="700s")])
        trainer = Trainer("mlp", seed=6)
        history = trainer.fit(x, y, batch_size=100, epochs=2, resume=folder)
        return fingerprint(trainer, history)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    x, y, data = load_images()
    print(f"data: {data}, {len(x)} samples; torch {torch.__version__}, 1 thread")
    for name, result in run_all(x, y).items():
        print(f"{name}: {json.dumps(result)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
