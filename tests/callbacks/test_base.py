"""The callback protocol (callbacks/base.py): Callback's no-op defaults, CallbackList calling every
callback's hook in order and refusing anything else, and for_this_rank under DDP."""
from types import SimpleNamespace

import pytest
import torch

from batchtrain import Callback, Trainer
from batchtrain.callbacks import CallbackList, FitInfo
from batchtrain.callbacks.base import for_this_rank
from batchtrain.errors import ConfigError

INFO = FitInfo(epochs=1, steps_per_epoch=2, num_samples=20, batch_size=10, validation_samples=0)
HOOKS = [("on_fit_begin", (INFO,)), ("on_epoch_begin", (0,)), ("on_batch_end", (10,)),
         ("on_epoch_end", (0, {"loss": 1.0})), ("on_fit_end", ("history",))]


def test_non_callback_is_refused():
    with pytest.raises(ValueError, match="Callback instances"):
        Trainer("mlp").fit(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), callbacks=[print])


def test_callback_hooks_do_nothing_by_default_and_run_on_every_rank():
    callback, trainer = Callback(), SimpleNamespace()
    for hook, arguments in HOOKS:
        assert getattr(callback, hook)(trainer, *arguments) is None
    assert vars(trainer) == {} and vars(callback) == {}
    assert Callback.main_process_only is False


class Log(Callback):
    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def on_fit_begin(self, trainer, info):
        self.calls.append((self.name, "fit_begin", trainer, info))

    def on_epoch_begin(self, trainer, epoch):
        self.calls.append((self.name, "epoch_begin", trainer, epoch))

    def on_batch_end(self, trainer, samples):
        self.calls.append((self.name, "batch_end", trainer, samples))

    def on_epoch_end(self, trainer, epoch, logs):
        self.calls.append((self.name, "epoch_end", trainer, epoch, logs))

    def on_fit_end(self, trainer, history):
        self.calls.append((self.name, "fit_end", trainer, history))


def test_callback_list_calls_each_hook_of_every_callback_in_order():
    calls, trainer = [], object()
    hooks = CallbackList(Log(name, calls) for name in ("a", "b", "c"))  # any iterable
    for hook, arguments in HOOKS:
        getattr(hooks, hook)(trainer, *arguments)
    events = ["fit_begin", "epoch_begin", "batch_end", "epoch_end", "fit_end"]
    assert [(name, event) for name, event, *_ in calls] == [
        (name, event) for event in events for name in ("a", "b", "c")]
    assert all(call[2] is trainer for call in calls)
    assert calls[0][3] is INFO and calls[6][3] == 10 and calls[9][3:] == (0, {"loss": 1.0})
    assert calls[-1][3] == "history"


def test_callback_list_of_nothing_is_fine_and_a_non_callback_is_named():
    empty = CallbackList([])
    for hook, arguments in HOOKS:
        getattr(empty, hook)(object(), *arguments)
    with pytest.raises(ConfigError, match="Callback instances, got function$"):
        CallbackList([Callback(), lambda trainer: None])


class RankZero(Callback):
    main_process_only = True


class Duck:  # no main_process_only attribute: runs everywhere
    pass


@pytest.mark.parametrize("group, kept", [
    (None, ["every", "rank0", "duck"]),
    (SimpleNamespace(is_main=True), ["every", "rank0", "duck"]),
    (SimpleNamespace(is_main=False), ["every", "duck"]),
], ids=["one-process", "rank-0", "other-rank"])
def test_for_this_rank_keeps_rank_zero_only_callbacks_on_rank_zero(group, kept):
    callbacks = {"every": Callback(), "rank0": RankZero(), "duck": Duck()}
    chosen = for_this_rank(iter(callbacks.values()), group)
    assert chosen == [callbacks[name] for name in kept]  # the very objects, in order
