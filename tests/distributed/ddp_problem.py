"""The problem both test_ddp.py (one process) and ddp_worker.py (two ranks) train."""
import torch
from torch import nn

from batchtrain import Doubling, Trainer
from batchtrain.batching.adaptive import Adaptive


def problem():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(600, 10, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.8).long()
    return x, y


def make_trainer(mode: str) -> Trainer:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 3))
    # a physical cap of 12 makes the larger batches accumulate (per rank: 24 / 2 ranks = 12)
    # "adaptive-adam": the noise is measured on Adam-preconditioned gradients (stats/precondition.py)
    # "schedule-bf16": the schedule in bf16-mixed precision (autocast under DDP)
    optimizer, lr = ("adam", 0.01) if mode == "adaptive-adam" else ("sgd", 0.05)
    return Trainer(model, optimizer=optimizer, lr=lr, seed=7,
                   max_physical_batch=12 if mode.startswith("schedule") else 64,
                   precision="bf16-mixed" if mode.endswith("-bf16") else "32")


def run_fit(trainer: Trainer, mode: str, x, y):
    policy = (Doubling(8, "1e", 48) if mode.startswith("schedule")
              else Adaptive(rule="noise-scale", min_batch=8, initial=16, update_every=60))
    return trainer.fit(x, y, batch_size=policy, epochs=3, validation_split=0.25)
