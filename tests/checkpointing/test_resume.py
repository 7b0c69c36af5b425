"""Exact resume: a run resumed from any checkpoint ends bitwise equal to an uninterrupted one."""
import os
import signal

import pytest
import torch
from torch import nn

from batchtrain import Callback, Checkpoint, Doubling, Trainer
from batchtrain.checkpointing.files import list_checkpoints, load_checkpoint
from batchtrain.errors import NonFiniteError, TrainingInterrupted

SAMPLES = 120


def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 8, generator=generator)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def model():
    torch.manual_seed(1)
    # dropout draws from the global torch RNG: resume must restore it exactly
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))


def trainer():
    return Trainer(model(), optimizer="adam", lr=3e-3, lr_schedule="warmup:0.5e+cosine",
                   max_physical_batch=12, seed=5)  # batches above 12 accumulate


FIT = dict(batch_size=Doubling(8, "1e", 32), epochs=3, validation_split=0.25)


def without_timing(history):
    return [{key: value for key, value in logs.items() if key not in ("time_s", "samples_per_s")}
            for logs in history]


def parameters(trained):
    return [p.detach().clone() for p in trained.model_.parameters()]


def test_resume_from_every_checkpoint_is_bitwise_identical(tmp_path):
    x, y = data()
    reference = trainer()
    reference_history = reference.fit(x, y, **FIT, callbacks=[
        Checkpoint(tmp_path, every=20, keep=100)])
    checkpoints = list_checkpoints(tmp_path)
    positions = {(load_checkpoint(p)["progress"]["epoch"], load_checkpoint(p)["progress"]["position"] > 0)
                 for p in checkpoints}
    assert {True, False} <= {mid for _, mid in positions}  # mid-epoch and epoch-end checkpoints
    for path in checkpoints[:-1]:
        resumed = trainer()
        history = resumed.fit(x, y, **FIT, resume=path)
        for ours, theirs in zip(parameters(resumed), parameters(reference)):
            assert torch.equal(ours, theirs), path.name
        assert without_timing(history) == without_timing(reference_history)
        assert history.steps == reference_history.steps


class RaiseSignal(Callback):
    def __init__(self, at_step, number):
        self.at_step, self.number = at_step, number

    def on_batch_end(self, trainer, batch_size):
        if trainer.step_ == self.at_step:
            os.kill(os.getpid(), self.number)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_the_step_checkpoints_and_resumes_exactly(tmp_path, number):
    x, y = data()
    reference = trainer()
    reference.fit(x, y, **FIT)
    interrupted = trainer()
    handler_before = signal.getsignal(number)  # SIG_IGN for SIGINT in a background job (nohup, &)
    with pytest.raises(TrainingInterrupted, match=f"{signal.Signals(number).name} after step 7"):
        interrupted.fit(x, y, **FIT, callbacks=[RaiseSignal(7, number), Checkpoint(tmp_path)])
    [path] = list_checkpoints(tmp_path)  # written on the interrupt, mid-epoch
    assert load_checkpoint(path)["progress"]["step"] == 7
    assert signal.getsignal(number) == handler_before  # restored
    resumed = trainer()
    resumed.fit(x, y, **FIT, resume=tmp_path)
    for ours, theirs in zip(parameters(resumed), parameters(reference)):
        assert torch.equal(ours, theirs)


class PoisonAt(nn.Module):
    """Returns NaN outputs on the `at`-th training forward pass."""

    def __init__(self, at):
        super().__init__()
        self.linear, self.at, self.calls = nn.Linear(8, 3), at, 0

    def forward(self, x):
        self.calls += self.training
        out = self.linear(x)
        return out * float("nan") if self.training and self.calls == self.at else out


def test_nonfinite_stop_names_the_step_and_keeps_the_last_good_state(tmp_path):
    x, y = data()
    poisoned = PoisonAt(at=5)
    trainer_ = Trainer(poisoned, optimizer="sgd", lr=0.1, seed=0, max_physical_batch=64)
    before = None

    class Snapshot(Callback):
        def on_batch_end(self, trainer, batch_size):
            nonlocal before
            before = [p.detach().clone() for p in trainer.model_.parameters()]

    with pytest.warns(UserWarning, match="non-finite loss or gradients at step 5 .*stopped"):
        history = trainer_.fit(x, y, batch_size=10, epochs=2, callbacks=[Snapshot(), Checkpoint(tmp_path, every=10)])
    assert "step 5" in trainer_.stop_reason_ and len(history.steps) == 4 and len(history) == 0
    for ours, good in zip(trainer_.model_.parameters(), before):
        assert torch.equal(ours, good) and torch.isfinite(ours).all()
    newest = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert newest["progress"]["step"] == 4


def test_nonfinite_skip_and_raise():
    x, y = data()
    skipping = Trainer(PoisonAt(at=3), optimizer="sgd", lr=0.1, seed=0, on_nonfinite="skip",
                       max_physical_batch=64)
    with pytest.warns(UserWarning, match="step 3 .*skipped"):
        history = skipping.fit(x, y, batch_size=10, epochs=1)
    assert [s.get("skipped", False) for s in history.steps[:4]] == [False, False, True, False]
    assert torch.isfinite(skipping.model_.linear.weight).all() and len(history) == 1
    raising = Trainer(PoisonAt(at=2), optimizer="sgd", lr=0.1, seed=0, on_nonfinite="raise",
                      max_physical_batch=64)
    with pytest.raises(NonFiniteError, match="at step 2"):
        raising.fit(x, y, batch_size=10, epochs=1)
    with pytest.raises(ValueError, match="on_nonfinite must be one of stop, skip, raise"):
        Trainer(model(), on_nonfinite="ignore").fit(x, y, epochs=1)


def test_resume_with_other_data_is_refused(tmp_path):
    x, y = data()
    first = trainer()
    first.fit(x, y, **FIT, callbacks=[Checkpoint(tmp_path)])
    with pytest.raises(ValueError, match="trained on 90 samples per epoch but this data has 75"):
        trainer().fit(x[:100], y[:100], **FIT, resume=tmp_path)


def test_adaptive_noise_scale_run_resumes_exactly(tmp_path):
    """The noise tracker and the adaptive policy are in the checkpoint (the goodput rule also
    reads wall-clock step times, so only timing-free rules can be bitwise reproducible)."""
    from batchtrain.batching.adaptive import Adaptive

    def run(**extra):
        policy = Adaptive(rule="noise-scale", min_batch=8, initial=8, update_every=30)
        fitted = Trainer(model(), optimizer="sgd", lr=0.05, max_physical_batch=12, seed=2)
        fitted.fit(x, y, batch_size=policy, epochs=3, **extra)
        return fitted

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1200, 8, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    reference = run(callbacks=[Checkpoint(tmp_path, every=200, keep=100)])
    assert len({step["batch_size"] for step in reference.history_.steps}) > 1
    middle = list_checkpoints(tmp_path)[len(list_checkpoints(tmp_path)) // 2]
    resumed = run(resume=middle)
    for ours, theirs in zip(parameters(resumed), parameters(reference)):
        assert torch.equal(ours, theirs)
    assert resumed.history_.steps == reference.history_.steps
