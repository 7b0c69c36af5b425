"""Plotter (callbacks/plots.py): one PNG per metric that has values; driven with conftest.py's
fake trainer."""
from batchtrain import Plotter


def test_plotter_writes_one_png_per_metric(tmp_path, FakeTrainer, drive):
    drive(Plotter(tmp_path), FakeTrainer())
    for name in ("loss.png", "accuracy.png", "batch_size.png", "lr.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "val_loss.png").exists()
