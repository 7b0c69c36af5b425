"""Graceful stops: Ctrl-C and SIGTERM finish the step in progress, then training stops cleanly."""
import signal
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from batchtrain.errors import BatchTrainError

if TYPE_CHECKING:
    from batchtrain.trainer import Trainer

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """fit() stopped on a signal after finishing its step (and checkpointing, where configured)."""

    def __init__(self, signal_name: str, step: int):
        super().__init__(f"training interrupted by {signal_name} after step {step}")
        self.signal_name = signal_name
        self.step = step


class NonFiniteError(BatchTrainError):
    """A step produced a NaN or infinite loss or gradient."""


def step_is_finite(loss: torch.Tensor, parameters: Iterable[torch.nn.Parameter],
                   reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> bool:
    """True if the loss and every gradient are finite: one fused norm pass over the gradients and
    one host synchronisation (a NaN or inf anywhere makes the sum non-finite). reduce (DDP): sum
    over ranks first, so every rank takes the same decision."""
    grads = [parameter.grad for parameter in parameters if parameter.grad is not None]
    total = loss + (torch.stack(torch._foreach_norm(grads)).sum() if grads else 0.0)
    if reduce is not None:
        total = reduce(total.reshape(1))
    return bool(torch.isfinite(total).all())


@contextmanager
def stop_on_signals(trainer: "Trainer"):
    """While training, record SIGINT/SIGTERM in trainer.interrupt_ instead of dying mid-step.

    A second signal gets the default behaviour (an immediate KeyboardInterrupt or termination),
    so a stuck run can still be killed. Signal handlers exist only in the main thread; elsewhere
    (e.g. a notebook's worker thread) this does nothing.
    """
    trainer.interrupt_ = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in SIGNALS}

    def request_stop(number, frame):
        trainer.interrupt_ = signal.Signals(number).name
        for restored, handler in previous.items():
            signal.signal(restored, handler)

    for number in SIGNALS:
        signal.signal(number, request_stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
