"""The callback protocol: five hooks, each a no-op unless overridden, and the state a callback
keeps across a resumed run.

Every hook receives the Trainer running the fit (not imported here: the trainer imports the
callbacks); the run's counters and records are trainer.state_ (state.py RunState). A callback
whose decisions depend on the epochs it has seen (EarlyStopping's patience, the best value so far)
returns that state from state_dict(); checkpoints save it, and a resumed fit loads it back after
on_fit_begin, so the resumed run decides as the uninterrupted one would have.
"""
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from batchtrain.errors import ConfigError


@dataclass(frozen=True)
class FitInfo:
    """What a fit() will do. epochs: count; steps_per_epoch: batches at the first batch size;
    num_samples: per epoch; batch_size: the first logical batch; policy, memory, lr: one-line
    descriptions of the batch-size policy, the memory ceiling and the learning-rate control;
    resumed_from: the checkpoint a resumed fit continues from ("" for a fit from the start);
    calibration: what the policy's start-up calibration measured and cost ("" without one)."""

    epochs: int
    steps_per_epoch: int
    num_samples: int
    batch_size: int
    validation_samples: int
    policy: str = ""
    memory: str = ""
    lr: str = ""
    resumed_from: str = ""
    calibration: str = ""


class Callback:
    """Override any of these. Read live values from the trainer (trainer.running_logs() reads the
    device, so call it at intervals, not every batch). Under DDP a callback runs on every rank,
    unless its class sets main_process_only = True (logs, plots, checkpoints: rank 0 only)."""

    main_process_only = False

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        """Before the first epoch. Reset per-run state here, so the callback can be reused."""

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        """Before epoch `epoch` (0-based)."""

    def on_batch_end(self, trainer, samples: int) -> None:
        """After each optimizer step of `samples` samples (over all ranks: the logical batch, fewer
        at an epoch's end); trainer.last_step_ holds the step's record (batch size, physical
        batch, accumulation steps, lr, samples seen). Setting trainer.stop_training =
        True here ends fit() after this step (the partial epoch is still recorded)."""

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        """After epoch `epoch` and its validation; logs is the epoch's History record.
        Set trainer.stop_training = True to end fit() after this epoch."""

    def on_fit_end(self, trainer, history) -> None:
        """After the last epoch (also after an early stop)."""

    def state_dict(self) -> dict | None:
        """What a resumed run needs to decide as this one would (tensors, numbers, strings, lists
        and dicts only: checkpoints load without unpickling); None for a stateless callback."""
        return None

    def load_state_dict(self, state: dict) -> bool | None:
        """Restore what state_dict() returned; called after on_fit_begin of a resumed fit. True:
        this callback had stopped the run the state was saved from (EarlyStopping), so the
        resumed fit stops at once, where the uninterrupted one ended."""


class CallbackList(Callback):
    """Calls each callback's hook in order; callbacks that save the run's state (Checkpoint:
    saves_run_state) come last, so what they save includes the other callbacks' decisions of
    the same step or epoch (Lightning moves its ModelCheckpoint callbacks last for this reason).
    """

    def __init__(self, callbacks: Iterable[Callback]):
        callbacks = list(callbacks)
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise ConfigError(f"callbacks must be batchtrain Callback instances, got "
                                f"{type(callback).__name__}")
        saving = [callback for callback in callbacks if getattr(callback, "saves_run_state", False)]
        self.callbacks = [callback for callback in callbacks if callback not in saving] + saving

    def on_fit_begin(self, trainer, info):
        for callback in self.callbacks:
            callback.on_fit_begin(trainer, info)

    def on_epoch_begin(self, trainer, epoch):
        for callback in self.callbacks:
            callback.on_epoch_begin(trainer, epoch)

    def on_batch_end(self, trainer, samples):
        for callback in self.callbacks:
            callback.on_batch_end(trainer, samples)

    def on_epoch_end(self, trainer, epoch, logs):
        for callback in self.callbacks:
            callback.on_epoch_end(trainer, epoch, logs)

    def on_fit_end(self, trainer, history):
        for callback in self.callbacks:
            callback.on_fit_end(trainer, history)

    def state_dict(self) -> dict:
        """{key: state} of every callback with state; the key is the class name, with "-2", "-3"
        for later callbacks of the same class (the same on every rank of a DDP run)."""
        states = {key: callback.state_dict() for key, callback in self._keyed()}
        for key, state in states.items():
            check_plain(state, f"{key}.state_dict()")  # now, not when a resume cannot load it
        return {key: state for key, state in states.items() if state is not None}

    def load_state_dict(self, state: dict) -> bool:
        """Load each callback's saved state; True if one of them had stopped the run."""
        stopped = False
        for key, callback in self._keyed():
            if key in state:
                stopped |= bool(callback.load_state_dict(state[key]))
        return stopped

    def _keyed(self) -> list[tuple[str, Callback]]:
        seen: dict[str, int] = {}
        keyed = []
        for callback in self.callbacks:
            name = type(callback).__name__
            seen[name] = seen.get(name, 0) + 1
            keyed.append((name if seen[name] == 1 else f"{name}-{seen[name]}", callback))
        return keyed


def for_this_rank(callbacks: Iterable[Callback], group) -> list[Callback]:
    """The callbacks that run in this process: under DDP one with main_process_only (logs,
    plots, checkpoints) runs on rank 0 only. group: the process group, None in one process."""
    return [callback for callback in callbacks if group is None or group.is_main
            or not getattr(callback, "main_process_only", False)]


def is_main_process(trainer) -> bool:
    """Whether this process prints and writes for the run: rank 0 under DDP, else always."""
    group = getattr(trainer, "dist_", None)
    return group is None or group.is_main


PLAIN = (str, int, float, bool, type(None))  # with tensors: what torch.load(weights_only=True) reads


def check_plain(value, where: str, path: str = "") -> None:
    """ConfigError unless value is tensors, numbers, strings, None, and lists, tuples and dicts
    of them (numpy scalars are not: they would need unpickling)."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_plain(key, where, path)
            check_plain(item, where, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_plain(item, where, f"{path}[{index}]")
    elif type(value) not in PLAIN and not isinstance(value, torch.Tensor):  # numpy's float64 is a
        # float subclass, and not plain
        raise ConfigError(f"{where} returned a {type(value).__module__}.{type(value).__name__} at "
                          f"{path or 'the top'}: a checkpoint holds only tensors, numbers, strings, "
                          "lists and dicts (convert it: float(x), x.tolist())")
