"""The trainer's whole state as plain data (for checkpoints), and its exact restoration.

Exact resumption needs everything that influences the next step: parameters, optimizer moments,
the learning-rate control (its reference batch), the batch-size policy, every random generator a
model may draw from (torch, CUDA, numpy, Python), the position in the epoch's order (the order
itself is recomputed from (seed, epoch)), the physical batch (it sets the accumulation, hence the
floating-point summation order), and the epoch's running metric sums and the history (so the
records of a resumed run equal those of an uninterrupted one).
"""
import random
from typing import TYPE_CHECKING

import numpy as np
import torch

from batchtrain.checkpoint import CheckpointError
from batchtrain.saving import first_shape_difference

PROGRESS_KEYS = ("epoch", "position", "step", "samples_seen", "total_samples_seen",
                 "samples_per_epoch")

if TYPE_CHECKING:
    from batchtrain.trainer import Trainer


def capture_state(trainer: "Trainer", epoch: int, position: int) -> dict:
    """Everything needed to continue at sample `position` of epoch `epoch` (0-based)."""
    return {
        "model": trainer.model_.state_dict(),
        "optimizer": trainer.optimizer_.state_dict(),
        "lr_control": trainer.lr_control_.state_dict(),
        "policy": trainer.policy_.state_dict(),
        "rng": capture_rng(),
        "progress": {"epoch": epoch, "position": position, "step": trainer.step_,
                     "samples_seen": trainer.run_samples_,
                     "total_samples_seen": trainer.samples_seen_,
                     "samples_per_epoch": trainer.samples_per_epoch_},
        "metrics": {"sums": dict(trainer.train_metrics_.sums), "count": trainer.train_metrics_.count},
        "history": {"epochs": trainer.history_.to_list(), "steps": list(trainer.history_.steps)},
        "max_physical_batch": trainer.max_physical_batch_,
        "seed": trainer.seed_,
        "noise": trainer.noise_.state_dict() if trainer.noise_ is not None else None,
    }


def restore_state(trainer: "Trainer", state: dict, source: str = "the checkpoint") -> tuple[int, int]:
    """Load a captured state into a trainer set up for the same run; returns (epoch, position).

    Everything that could refuse the state is checked before anything is loaded, so a checkpoint
    of another run leaves the trainer as it was. source: how messages name the checkpoint.
    """
    check_fits(trainer, state, source)
    progress = state["progress"]
    trainer.model_.load_state_dict(state["model"])
    try:
        trainer.optimizer_.load_state_dict(state["optimizer"])
        trainer.lr_control_.load_state_dict(state["lr_control"])
        trainer.policy_.load_state_dict(state["policy"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise CheckpointError(f"{source} does not fit this run's optimizer or batch-size policy "
                              f"({detail}); resume with the options it was trained with") from None
    trainer.step_, trainer.run_samples_ = progress["step"], progress["samples_seen"]
    trainer.samples_seen_ = progress["total_samples_seen"]
    trainer.train_metrics_.sums = {key: value.to(trainer.device_)
                                   for key, value in state["metrics"]["sums"].items()}
    trainer.train_metrics_.count = state["metrics"]["count"]
    trainer.history_.epochs = list(state["history"]["epochs"])
    trainer.history_.steps = list(state["history"]["steps"])
    trainer.last_step_ = trainer.history_.steps[-1] if trainer.history_.steps else None
    trainer.max_physical_batch_ = state["max_physical_batch"]
    trainer.seed_ = state["seed"]
    if trainer.noise_ is not None and state["noise"] is not None:
        trainer.noise_.load_state_dict(state["noise"])
    restore_rng(state["rng"])
    return progress["epoch"], progress["position"]


def check_fits(trainer: "Trainer", state: dict, source: str) -> None:
    """Raise CheckpointError unless `state` is a checkpoint of this trainer's model and data."""
    progress = state.get("progress")
    if not isinstance(progress, dict) or not isinstance(state.get("model"), dict) or not all(
            isinstance(progress.get(key), int) for key in PROGRESS_KEYS):
        raise CheckpointError(f"{source} lacks its progress or model state; it is damaged or "
                              "from another version")
    if progress["samples_per_epoch"] != trainer.samples_per_epoch_:
        raise CheckpointError(f"{source} was trained on {progress['samples_per_epoch']} samples "
                              f"per epoch but this data has {trainer.samples_per_epoch_}; resume with "
                              "the same data and validation split")
    expected = {name: tuple(tensor.shape) for name, tensor in trainer.model_.state_dict().items()}
    found = {name: tuple(getattr(tensor, "shape", ())) for name, tensor in state["model"].items()}
    different = first_shape_difference(expected, found)
    if different is not None:
        raise CheckpointError(f"{source} holds another model's weights (first difference: "
                              f"{different}); resume with the model and options it was trained "
                              "with")


def capture_rng() -> dict:
    """torch, CUDA, numpy and Python generator states, as tensors and plain numbers."""
    numpy_name, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": numpy_name, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]),
                     python_state["gauss_next"]))
