"""MetricsLogger (callbacks/logs.py): metrics.jsonl's fit, step and epoch lines and history.csv;
driven with conftest.py's fake trainer."""
import json

from batchtrain import MetricsLogger


def test_metrics_logger_writes_epoch_and_step_lines(tmp_path, FakeTrainer, drive):
    trainer = FakeTrainer()
    drive(MetricsLogger(tmp_path, every_steps=3), trainer)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 9))  # every step, host values only
    assert [r["step"] for r in steps if "loss" in r] == [3, 6]  # running metrics at the interval
    assert steps[0]["batch_size"] == 10 and steps[0]["lr"] == 0.001
    assert records[0]["type"] == "fit" and records[0]["batch_policy"] == "Fixed(10)"
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and epochs[1]["samples_seen"] == 80
    assert (tmp_path / "history.csv").read_text().splitlines()[0].startswith("epoch,loss,accuracy")
