"""ProgressBar (callbacks/progress.py): plain lines off a terminal, interval lines within long
epochs, and tqdm's bar on a terminal; driven with conftest.py's fake trainer."""
import io

from batchtrain import ProgressBar


def test_progress_lines_off_terminal_have_no_carriage_returns(FakeTrainer, drive):
    stream = io.StringIO()
    trainer = FakeTrainer()
    drive(ProgressBar(stream=stream, terminal=False, interval_s=3600), trainer)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines == ["batch size Fixed(10); memory ceiling: 99 samples; lr scaling sqrt",
                     "epoch 1/2 - 2.0s - 20 samples/s - loss 1.0000 - accuracy 0.5000 - "
                     "val_loss 1.2000 - val_accuracy 0.4000",
                     "epoch 2/2 - 2.0s - 20 samples/s - loss 0.5000 - accuracy 0.6000 - "
                     "val_loss 1.2000 - val_accuracy 0.4000"]
    assert trainer.reads == 0  # no device read between intervals


def test_progress_lines_within_long_epochs_at_the_interval(FakeTrainer, drive):
    stream = io.StringIO()
    drive(ProgressBar(stream=stream, terminal=False, interval_s=0.0), FakeTrainer())
    assert "epoch 1/2 10/40 samples - loss 0.5000 - accuracy 0.7500" in stream.getvalue()


def test_progress_bar_on_terminal_uses_tqdm(FakeTrainer, drive):
    stream = io.StringIO()
    drive(ProgressBar(stream=stream, terminal=True, refresh_s=0.0), FakeTrainer())
    output = stream.getvalue()
    assert "\r" in output and "epoch 1/2" in output and "sample/s" in output


def test_the_epoch_count_follows_the_runs_position(FakeTrainer, drive):
    """An epoch can begin past its start (resumed mid-epoch, or after auto's kept start branch)
    and pass samples no step reported (a kept branch during training): the count is the run's
    position in the epoch."""
    class Run:  # 5 samples in at the epoch's start; 10 more skipped after the second step
        def __init__(self, trainer):
            self.trainer = trainer

        @property
        def position(self):
            seen = self.trainer.samples_seen_
            return 5 + seen + (10 if seen >= 20 else 0)

    for terminal in (False, True):
        trainer = FakeTrainer()
        trainer.state_ = Run(trainer)
        stream = io.StringIO()
        progress = ProgressBar(stream=stream, terminal=terminal, interval_s=0.0, refresh_s=0.0)
        drive(progress, trainer, epochs=1, steps=2)
        assert progress.epoch_samples_ == 35  # what the bar was updated to, on a terminal
        if terminal:
            assert "5.00/40.0" in stream.getvalue()  # tqdm's first draw, unit-scaled
        else:
            assert "epoch 1/2 15/40 samples" in stream.getvalue()
            assert "epoch 1/2 35/40 samples" in stream.getvalue()
