"""Graceful stops: Ctrl-C and SIGTERM finish the step in progress, then training stops cleanly."""
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    """The signal received while training (its name, "SIGINT" or "SIGTERM"), else None."""

    received: str | None = None


@contextmanager
def stop_on_signals():
    """While training, record SIGINT/SIGTERM in the StopRequest it yields instead of dying
    mid-step; the trainer reads it after each step.

    A second signal gets the default behaviour (an immediate KeyboardInterrupt or termination),
    so a stuck run can still be killed. Signal handlers exist only in the main thread; elsewhere
    (e.g. a notebook's worker thread) this does nothing.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.getsignal(number) for number in SIGNALS}

    def request_stop(number, frame):
        request.received = signal.Signals(number).name
        for restored, handler in previous.items():
            signal.signal(restored, handler)

    for number in SIGNALS:
        signal.signal(number, request_stop)
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
