"""The trainer's whole state as plain data (for checkpoints), and its exact restoration.

Exact resumption needs everything that influences the next step: parameters, optimizer moments,
the learning-rate control (its reference batch), the batch-size policy, every random generator a
model may draw from (torch, CUDA, numpy, Python), the position in the epoch's order (the order
itself is recomputed from (seed, epoch)), the physical batch (it sets the accumulation, hence the
floating-point summation order), and the epoch's running metric sums and the history (so the
records of a resumed run equal those of an uninterrupted one).
"""
import random
import numpy as np
import torch
from torch import nn

from batchtrain.checkpointing.files import CheckpointError, newest_checkpoint
from batchtrain.checkpointing.saved_model import first_shape_difference
from batchtrain.state import RunState

PROGRESS_KEYS = ("epoch", "position", "step", "samples_seen", "total_samples_seen",
                 "samples_per_epoch")


def capture_state(model: nn.Module, optimizer: torch.optim.Optimizer, run: RunState,
                  epoch: int, position: int) -> dict:
    """Everything needed to continue the run at sample `position` of epoch `epoch` (0-based),
    the fit's callbacks' states included."""
    run_state = run.state_dict()
    run_state["progress"].update(epoch=epoch, position=position)
    lr_control, policy = run_state.pop("lr_control"), run_state.pop("policy")
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),  # the old key order
            "lr_control": lr_control, "policy": policy, "rng": capture_rng(), **run_state}


def restore_state(model: nn.Module, optimizer: torch.optim.Optimizer, run: RunState, state: dict,
                  device: torch.device, source: str = "the checkpoint") -> None:
    """Load a captured state into the model, optimizer and run state of the same run.

    Everything that could refuse the state is checked before anything is loaded, so a checkpoint
    of another run leaves the trainer as it was. source: how messages name the checkpoint.
    """
    check_fits(model, run.samples_per_epoch, state, source)
    model.load_state_dict(state["model"])
    try:
        optimizer.load_state_dict(state["optimizer"])
        run.load_state_dict(state, device)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise CheckpointError(f"{source} does not fit this run's optimizer, batch-size policy or precision "
                              f"({detail}); resume with the options it was trained with") from None
    restore_rng(state["rng"])


def restore_newest(location, model: nn.Module, optimizer: torch.optim.Optimizer, run: RunState,
                   device: torch.device):
    """Restore the newest valid checkpoint at `location` (a checkpoint directory, run directory
    or checkpoint file) into the run; returns the checkpoint's path."""
    state, path = newest_checkpoint(location)
    restore_state(model, optimizer, run, state, device, f"checkpoint {path}")
    return path


def check_fits(model: nn.Module, samples_per_epoch: int, state: dict, source: str) -> None:
    """Raise CheckpointError unless `state` is a checkpoint of this model and data."""
    progress = state.get("progress")
    if not isinstance(progress, dict) or not isinstance(state.get("model"), dict) or not all(
            isinstance(progress.get(key), int) for key in PROGRESS_KEYS):
        raise CheckpointError(f"{source} lacks its progress or model state; it is damaged or "
                              "from another version")
    if progress["samples_per_epoch"] != samples_per_epoch:
        raise CheckpointError(f"{source} was trained on {progress['samples_per_epoch']} samples "
                              f"per epoch but this data has {samples_per_epoch}; resume with "
                              "the same data and validation split")
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
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
