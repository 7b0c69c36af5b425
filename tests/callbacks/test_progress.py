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


def test_an_epoch_that_begins_past_its_start_counts_from_there(FakeTrainer, drive):
    """Resumed mid-epoch, or after auto's kept start branch: the epoch's count starts at the
    run's position, so it ends at the epoch's size."""
    class Run:
        position = 15

    trainer = FakeTrainer()
    trainer.state_ = Run()
    stream = io.StringIO()
    drive(ProgressBar(stream=stream, terminal=False, interval_s=0.0), trainer, epochs=1)
    assert "epoch 1/2 25/40 samples" in stream.getvalue()
    terminal = io.StringIO()
    drive(ProgressBar(stream=terminal, terminal=True, refresh_s=0.0), trainer, epochs=1)
    assert "15.0/40.0" in terminal.getvalue()  # tqdm with unit_scale
