"""The contract of every callback: in fit a callback sees every hook, in order, and can stop
training, and a reused callback starts afresh in the next fit; its state (if any) is plain data a
checkpoint loads without unpickling; under DDP the shipped callbacks that write run on rank 0
only, and those that decide (a stop, the lr) on every rank."""
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from batchtrain import (Callback, Checkpoint, EarlyStopping, MetricsLogger, ModelCheckpoint,
                        Plotter, ProgressBar, ReduceLROnPlateau, TensorBoard, Trainer)
from batchtrain.callbacks.base import for_this_rank


class Recorder(Callback):
    def on_fit_begin(self, trainer, info):
        self.calls = [("fit_begin", info.epochs, info.steps_per_epoch, info.num_samples)]

    def on_epoch_begin(self, trainer, epoch):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, trainer, batch_size):
        self.calls.append(("batch", batch_size))

    def on_epoch_end(self, trainer, epoch, logs):
        self.calls.append(("epoch_end", epoch, sorted(logs)))
        trainer.stop_training = epoch == 1

    def on_fit_end(self, trainer, history):
        self.calls.append(("fit_end", len(history)))


def test_trainer_calls_every_hook_in_order_and_honours_stop_training():
    x, y = np.random.default_rng(0).normal(size=(25, 3)).astype(np.float32), np.arange(25) % 2
    recorder = Recorder()
    Trainer("mlp", seed=0).fit(x, y, batch_size=10, epochs=5, callbacks=[recorder])
    keys = sorted(["epoch", "loss", "accuracy", "batch_size", "lr", "time_s", "samples_per_s"])
    expected = [("fit_begin", 5, 3, 25)]
    for epoch in range(2):
        expected += [("epoch_begin", epoch), ("batch", 10), ("batch", 10), ("batch", 5),
                     ("epoch_end", epoch, keys)]
    assert recorder.calls == expected + [("fit_end", 2)]
    # reused in a second fit, the callback starts afresh
    Trainer("mlp", seed=0).fit(x, y, batch_size=25, epochs=1, callbacks=[recorder])
    assert recorder.calls[0] == ("fit_begin", 1, 1, 25) and len(recorder.calls) == 5


def test_every_shipped_callback_writes_from_rank_zero_only(tmp_path):
    shipped = [ProgressBar(stream=io.StringIO()), MetricsLogger(tmp_path), Plotter(tmp_path),
               Checkpoint(tmp_path), ModelCheckpoint(tmp_path), TensorBoard(tmp_path)]
    assert all(callback.main_process_only is True for callback in shipped)
    assert for_this_rank(shipped, SimpleNamespace(is_main=False)) == []
    assert for_this_rank(shipped, SimpleNamespace(is_main=True)) == shipped
    # what decides for the run (a stop, the lr) must decide alike on every rank
    deciding = [EarlyStopping(), ReduceLROnPlateau()]
    assert for_this_rank(deciding, SimpleNamespace(is_main=False)) == deciding


SHIPPED = {
    "progress": lambda path: ProgressBar(stream=io.StringIO()),
    "metrics-logger": lambda path: MetricsLogger(path),
    "plotter": lambda path: Plotter(path),
    "checkpoint": lambda path: Checkpoint(path / "ckpt"),
    "early-stopping": lambda path: EarlyStopping(patience=1, restore_best_weights=True,
                                                 verbose=False),
    "plateau": lambda path: ReduceLROnPlateau(factor=0.5, patience=1, verbose=False),
    "model-checkpoint": lambda path: ModelCheckpoint(path / "best"),
    "tensorboard": lambda path: TensorBoard(path / "tb", every_steps=2),
}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_callback_in_fits_reused_and_its_state_loads_without_pickle(tmp_path, name):
    if name == "tensorboard":
        pytest.importorskip("torch.utils.tensorboard")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    callback, every_loss = SHIPPED[name](tmp_path), []
    for seed in (0, 1):  # a second fit reuses the callback: it must start afresh
        trainer = Trainer("mlp", seed=seed, lr=0.2)
        history = trainer.fit(x, y, batch_size=10, epochs=4, validation_split=0.2,
                              callbacks=[callback])
        every_loss += [logs["val_loss"] for logs in history]
        state = callback.state_dict()
        if state is not None:
            torch.save(state, tmp_path / "state.pt")
            loaded = torch.load(tmp_path / "state.pt", weights_only=True)  # no pickled objects
            callback.load_state_dict(loaded)
            assert callback.state_dict().keys() == state.keys()
        if name in ("early-stopping", "plateau"):
            losses = [logs["val_loss"] for logs in history]
            assert state["best"] == min(losses)  # this fit's best, not an earlier fit's
        if name == "model-checkpoint":  # as in Keras, the best so far over the fits: the model
            assert state["best"] == min(every_loss)  # on disk is not replaced by a worse one
