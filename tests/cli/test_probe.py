"""`batchtrain probe`: measures, recommends, writes its report."""
import re

import numpy as np

from helpers import run_cli


def test_probe_writes_a_report_and_recommends_a_measured_size(capsys, tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(1200) % 3
    features = rng.normal(0.0, 1.0, (1200, 6)).astype(np.float32)
    features[np.arange(1200), labels] += 1.0
    data = tmp_path / "blobs.npz"
    np.savez(data, x_train=features, y_train=labels)
    code, out, err = run_cli(capsys, "probe", "--data", data, "--model", "mlp", "--hidden", "16",
                             "--sizes", "16,64,256", "--warmup", "256", "--repeats", "2",
                             "--output", tmp_path / "probe")
    assert code == 0, err
    recommended = int(re.search(r"--batch-size (\d+)", out).group(1))
    assert recommended in (16, 64, 256)
    report = (tmp_path / "probe" / "probe.md").read_text()
    assert f"Recommendation: batch {recommended}" in report
    assert report.count("\n| ") == 4  # header + three measured sizes
    assert "at initialisation: B_simple =" in report and "after 256 samples of warm-up" in report
    assert (tmp_path / "probe" / "probe.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_rejects_bad_sizes(capsys, tmp_path):
    code, _, err = run_cli(capsys, "probe", "--sizes", "0,16")
    assert code == 2 and "--sizes must be positive integers" in err


def test_probe_recommends_the_branches_choice_at_the_given_lr(tmp_path):
    from batchtrain import Trainer
    from batchtrain.batching.branched import BranchDecisions
    from batchtrain.cli.probe import probe, write_report

    rng = np.random.default_rng(1)
    labels = np.arange(4000) % 3
    features = rng.normal(0.0, 1.0, (4000, 6)).astype(np.float32)
    features[np.arange(4000), labels] += 1.0
    trainer = Trainer("mlp", optimizer="adam", lr=3e-3, seed=0, model_options={"hidden": [16]})
    result = probe(trainer, features, labels, [16, 64, 256], warmup_samples=256, repeats=1)
    assert result.branches is not None and result.branches.sizes == [16, 64, 256]
    assert result.lr_rule == "branched"
    assert result.recommended_batch == BranchDecisions().first(result.branches)
    assert result.recommended_lr == 3e-3  # what the branches trained at, as the suite's grid
    assert result.goodput_batch in (16, 64, 256)  # the noise scale's pick, kept for comparison
    report = write_report(result, tmp_path).read_text()
    assert "branch: loss decrease per s" in report and "noise scale's goodput" in report
