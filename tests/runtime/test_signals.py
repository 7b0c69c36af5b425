"""Graceful stops (runtime/signals.py): stop_on_signals records the first SIGINT or SIGTERM in its
StopRequest, hands a second one to the handlers from before, restores them on exit, and does
nothing outside the main thread.

SIGINT is ignored (SIG_IGN) when the suite runs as a background job; like
tests/checkpointing/test_resume.py these tests compare with whatever handler was there before,
and `known_handlers` installs recording handlers so that a second signal lands somewhere known.
"""
import os
import signal
import threading

import pytest

from batchtrain.runtime.signals import SIGNALS, StopRequest, stop_on_signals

NUMBERS = [signal.SIGINT, signal.SIGTERM]
IDS = ["SIGINT", "SIGTERM"]


@pytest.fixture
def known_handlers():
    """Recording handlers for SIGINT and SIGTERM during the test (the originals restored after);
    returns the list of signal numbers they received."""
    received = []

    def record(number, frame):
        received.append(number)

    original = {number: signal.getsignal(number) for number in NUMBERS}
    try:
        for number in NUMBERS:
            signal.signal(number, record)
        yield received
    finally:
        for number, handler in original.items():
            signal.signal(number, handler)


def handlers():
    return {number: signal.getsignal(number) for number in NUMBERS}


def test_the_signals_are_sigint_and_sigterm():
    assert set(SIGNALS) == {signal.SIGINT, signal.SIGTERM}


@pytest.mark.parametrize("number", NUMBERS, ids=IDS)
def test_the_first_signal_is_recorded_and_a_second_goes_to_the_previous_handler(known_handlers, number):
    before = handlers()
    with stop_on_signals() as request:
        assert isinstance(request, StopRequest) and request.received is None
        assert all(signal.getsignal(n) is not before[n] for n in NUMBERS)  # ours installed
        os.kill(os.getpid(), number)
        assert request.received == signal.Signals(number).name
        assert known_handlers == []  # the previous handler did not see the first one
        assert handlers() == before  # restored at once, for both signals
        os.kill(os.getpid(), number)  # a second signal: the previous behaviour
        assert known_handlers == [number]
        assert request.received == signal.Signals(number).name
    assert handlers() == before


def test_a_different_second_signal_also_goes_to_the_previous_handler(known_handlers):
    with stop_on_signals() as request:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert request.received == "SIGTERM" and known_handlers == [signal.SIGINT]


def test_the_handlers_are_restored_on_exit_without_a_signal_and_after_an_error(known_handlers):
    before = handlers()
    with stop_on_signals() as request:
        assert handlers() != before
    assert handlers() == before and request.received is None
    with pytest.raises(RuntimeError, match="inside"):
        with stop_on_signals():
            raise RuntimeError("inside")
    assert handlers() == before and known_handlers == []


@pytest.mark.parametrize("number", NUMBERS, ids=IDS)
def test_whatever_handler_was_there_is_restored(number):
    before = signal.getsignal(number)  # SIG_IGN for SIGINT in a background job (nohup, &)
    with stop_on_signals() as request:
        os.kill(os.getpid(), number)
    assert request.received == signal.Signals(number).name
    assert signal.getsignal(number) == before


def test_outside_the_main_thread_it_does_nothing(known_handlers):
    before, seen = handlers(), {}

    def worker():
        try:
            with stop_on_signals() as request:
                seen["inside"] = handlers()
            seen["request"] = request
        except BaseException as error:  # signal.signal here raises ValueError: not the main thread
            seen["error"] = error

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert "error" not in seen, seen.get("error")
    assert seen["inside"] == before and handlers() == before
    assert isinstance(seen["request"], StopRequest) and seen["request"].received is None
    assert known_handlers == []
