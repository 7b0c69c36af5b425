"""TensorBoard: the event files, read back with tensorboard's own reader, hold every scalar the
callback promises, on the x axis asked for; a resumed run leaves no duplicated steps; a missing
tensorboard package is a clear error."""
import sys

import numpy as np
import pytest

from batchtrain import Checkpoint, TensorBoard, Trainer
from batchtrain.errors import ConfigError, TrainingInterrupted

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

BATCH_SCALARS = {"loss", "accuracy", "lr", "batch_size", "physical_batch", "noise_scale",
                 "samples_per_s"}
EPOCH_SCALARS = {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "batch_size",
                 "samples_per_s", "time_s"}


def data(samples=600):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 6)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    reader = event_accumulator.EventAccumulator(str(log_dir))
    reader.Reload()
    return {tag: [(event.step, event.value) for event in reader.Scalars(tag)]
            for tag in reader.Tags()["scalars"]}


@pytest.mark.parametrize("x_axis", ["step", "samples"])
def test_every_promised_scalar_is_in_the_event_files(tmp_path, x_axis):
    x, y = data()
    trainer = Trainer("mlp", seed=0)
    # a policy that measures the gradient noise (auto in one process decides by branches)
    history = trainer.fit(x, y, batch_size="adaptive:noise-scale", epochs=2, validation_split=0.2,
                          callbacks=[TensorBoard(tmp_path, every_steps=1, x_axis=x_axis)])
    found = scalars(tmp_path)
    assert {f"batch/{name}" for name in BATCH_SCALARS} <= set(found)
    assert {f"epoch/{name}" for name in EPOCH_SCALARS} <= set(found)
    steps = history.steps
    expected_x = [record["step" if x_axis == "step" else "samples_seen"] for record in steps]
    assert [x for x, _ in found["batch/lr"]] == expected_x
    assert [value for _, value in found["batch/batch_size"]] == [r["batch_size"] for r in steps]
    measured = [(record["step" if x_axis == "step" else "samples_seen"], record["noise_scale"])
                for record in steps if "noise_scale" in record]
    assert [x for x, _ in found["batch/noise_scale"]] == [x for x, _ in measured]
    assert [value for _, value in found["epoch/val_loss"]] == pytest.approx(
        [logs["val_loss"] for logs in history])


def test_a_resumed_run_purges_the_steps_after_its_checkpoint(tmp_path):
    x, y = data(300)

    class StopAt(Checkpoint):  # interrupted at step 12, after a checkpoint at step 8
        def on_batch_end(self, trainer, samples):
            super().on_batch_end(trainer, samples)
            if trainer.step_ == 12:
                raise TrainingInterrupted("SIGTERM", trainer.step_)

    arguments = dict(batch_size=30, epochs=3, validation_split=0.2)
    with pytest.raises(TrainingInterrupted):
        Trainer("mlp", seed=0).fit(x, y, **arguments, callbacks=[
            StopAt(tmp_path / "ckpt", every=240), TensorBoard(tmp_path / "tb", every_steps=1)])
    resumed = Trainer("mlp", seed=0)
    resumed.fit(x, y, **arguments, resume=tmp_path / "ckpt",
                callbacks=[TensorBoard(tmp_path / "tb", every_steps=1)])
    steps = [step for step, _ in scalars(tmp_path / "tb")["batch/lr"]]
    assert steps == list(range(1, resumed.step_ + 1))  # each step once, in order


def test_a_missing_tensorboard_package_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    x, y = data(50)
    with pytest.raises(ConfigError, match=r"pip install 'batchtrain\[tensorboard\]'"):
        Trainer("mlp", seed=0).fit(x, y, epochs=1, callbacks=[TensorBoard(tmp_path)])


@pytest.mark.parametrize("arguments, message", [
    (dict(every_steps=0), "every_steps must be an integer >= 1"),
    (dict(every_steps=2.5), "every_steps must be an integer >= 0"),
    (dict(x_axis="time"), "x_axis must be one of step, samples")])
def test_bad_arguments_are_refused(tmp_path, arguments, message):
    x, y = data(50)
    with pytest.raises(ConfigError, match=message):
        Trainer("mlp", seed=0).fit(x, y, epochs=1, callbacks=[TensorBoard(tmp_path, **arguments)])
