"""The `batchtrain` command end to end, in-process through cli.main, on small generated data.

One shared seed-cnn fit on the tiny IDX dataset (conftest.fitted_run) is checked file by file;
evaluate and predict are run on it. Config-file, overwrite and .npz runs use an mlp on a small
.npz, which trains in well under a second.
"""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from batchtrain import Trainer
from batchtrain.cli.config import FIELDS
from batchtrain.data.idx import read_idx
from batchtrain.models.seed_cnn import seed_cnn
from helpers import run_cli

N_CLASSES = 10
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRAIN_SAMPLES = 192  # 240 images less the validation_split=0.2 tail
STEPS_PER_EPOCH = TRAIN_SAMPLES // 32
RUN_FILES = {"config.yaml", "metrics.jsonl", "history.csv", "model.safetensors", "model.json",
             "test.json", "loss.png", "accuracy.png", "batch_size.png", "lr.png", "checkpoints"}

pytestmark = pytest.mark.usefixtures("single_thread")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the reference fit, file by file ------------------------------------------------------------

def test_fit_succeeds_and_reports_progress_as_lines(fitted_run):
    run_dir, code, out, err = fitted_run
    assert code == 0, err
    epoch_lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split(" - ")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"]
    assert "\r" not in err  # --progress lines: no bar, no carriage returns


def test_run_dir_holds_exactly_the_documented_files(fitted_run):
    run_dir = fitted_run[0]
    assert {path.name for path in run_dir.iterdir()} == RUN_FILES  # no temporary files left


def test_config_yaml_records_every_resolved_option(fitted_run, idx_dir):
    run_dir = fitted_run[0]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert set(config) == set(FIELDS)
    assert config["seed"] == 0 and config["batch_size"] == 32 and config["epochs"] == 2
    assert config["data"] == "fashion-mnist" and config["data_dir"] == str(idx_dir)
    assert config["output"] == str(run_dir)
    assert config["log_every_steps"] == 2 and config["progress"] == "lines"
    # Options not given come out resolved to their defaults.
    assert config["model"] == "seed-cnn" and config["optimizer"] == "adam"
    assert config["validation_split"] == 0.2 and config["shuffle"] is True


def test_metrics_jsonl_has_epoch_records_and_a_step_record_every_two_steps(fitted_run):
    records = read_jsonl(fitted_run[0] / "metrics.jsonl")
    epochs = [record for record in records if record["type"] == "epoch"]
    every_step = [record for record in records if record["type"] == "step"]
    assert [record["type"] for record in records] == (
        ["fit"] + ["step"] * STEPS_PER_EPOCH + ["epoch"] + ["step"] * STEPS_PER_EPOCH + ["epoch"])
    assert [record["step"] for record in every_step] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    for record in every_step:
        assert (record["batch_size"], record["physical_batch"], record["accumulation_steps"],
                record["lr"]) == (32, 32, 1, 0.001)
    steps = [record for record in every_step if "loss" in record]  # running metrics every 2 steps

    assert [record["epoch"] for record in epochs] == [1, 2]
    for record in epochs:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert math.isfinite(record[key]), key
        assert 0.0 <= record["accuracy"] <= 1.0 and 0.0 <= record["val_accuracy"] <= 1.0
    assert [record["step"] for record in epochs] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]

    assert [record["step"] for record in steps] == list(range(2, 2 * STEPS_PER_EPOCH + 1, 2))
    assert [record["samples_seen"] for record in steps] == [32 * record["step"] for record in steps]
    assert [record["epoch"] for record in steps] == [1, 1, 1, 2, 2, 2]
    # The running loss at an epoch's last step is that epoch's training loss.
    for step_record, epoch_record in ((steps[2], epochs[0]), (steps[5], epochs[1])):
        assert step_record["loss"] == pytest.approx(epoch_record["loss"])
        assert step_record["accuracy"] == pytest.approx(epoch_record["accuracy"])


def test_history_csv_has_a_header_and_one_row_per_epoch_matching_metrics(fitted_run):
    run_dir = fitted_run[0]
    with open(run_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    epochs = [record for record in read_jsonl(run_dir / "metrics.jsonl") if record["type"] == "epoch"]
    assert len(rows) == 2
    for row, record in zip(rows, epochs):
        assert int(row["epoch"]) == record["epoch"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(row[key]) == pytest.approx(record[key])


def test_model_safetensors_holds_the_seed_cnn_state_dict(fitted_run):
    weights = load_file(str(fitted_run[0] / "model.safetensors"))
    expected = seed_cnn((1, 28, 28), N_CLASSES).state_dict()
    assert {name: tuple(t.shape) for name, t in weights.items()} == \
        {name: tuple(t.shape) for name, t in expected.items()}
    assert "0.weight" in weights  # a Sequential's names: index.parameter
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_model_json_describes_model_task_and_input(fitted_run):
    description = json.loads((fitted_run[0] / "model.json").read_text())
    assert description["model"] == {"name": "seed-cnn", "options": {}}
    assert description["task"] == {"kind": "multiclass", "n_outputs": N_CLASSES,
                                   "loss": "categorical_crossentropy"}
    assert description["input_shape"] == [1, 28, 28]
    assert description["metrics"] == ["accuracy"]


def test_test_json_shows_the_model_learned_above_chance(fitted_run):
    results = json.loads((fitted_run[0] / "test.json").read_text())
    assert math.isfinite(results["test_loss"]) and results["test_loss"] > 0
    # Chance is 1/10; the label is a bright block's position, learnable in 12 steps.
    assert results["test_accuracy"] > 0.3
    assert results["test_loss"] < math.log(N_CLASSES)


@pytest.mark.parametrize("name", ["loss.png", "accuracy.png", "batch_size.png", "lr.png"])
def test_plots_are_png_files(fitted_run, name):
    assert (fitted_run[0] / name).read_bytes()[:8] == PNG_MAGIC


# -- evaluate and predict on that run ------------------------------------------------------------

def test_evaluate_runs_on_the_run_dir_and_its_model_reproduces_test_json(fitted_run, idx_dir,
                                                                        capsys):
    run_dir = fitted_run[0]
    code, out, err = run_cli(capsys, "evaluate", run_dir)
    assert code == 0, err
    assert err == ""
    # What evaluate loads (Trainer.load) on the run's test data gives test.json's numbers.
    images = read_idx(idx_dir / "t10k-images-idx3-ubyte.gz")[:, np.newaxis] / np.float32(255)
    labels = read_idx(idx_dir / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    reloaded = Trainer.load(run_dir, device="cpu").evaluate(images, labels)
    results = json.loads((run_dir / "test.json").read_text())
    assert reloaded["loss"] == pytest.approx(results["test_loss"], rel=1e-5)
    assert reloaded["accuracy"] == results["test_accuracy"]


def test_evaluate_prints_the_test_metrics_of_the_run(fitted_run, capsys):
    run_dir = fitted_run[0]
    code, out, err = run_cli(capsys, "evaluate", run_dir)
    assert code == 0, err
    assert out.startswith("loss ")
    printed = dict(part.split() for part in out.strip().split(" - "))
    results = json.loads((run_dir / "test.json").read_text())
    assert set(printed) == {"loss", "accuracy"}
    assert float(printed["loss"]) == pytest.approx(results["test_loss"], abs=1e-4)
    assert float(printed["accuracy"]) == pytest.approx(results["test_accuracy"], abs=1e-4)


def test_predict_writes_probabilities_that_agree_with_test_accuracy(fitted_run, idx_dir, capsys,
                                                                    tmp_path):
    run_dir = fitted_run[0]
    images = read_idx(idx_dir / "t10k-images-idx3-ubyte.gz")[:, np.newaxis]  # uint8 (60, 1, 28, 28)
    labels = read_idx(idx_dir / "t10k-labels-idx1-ubyte.gz")
    np.save(tmp_path / "x.npy", images)

    code, out, err = run_cli(capsys, "predict", run_dir, "--input", tmp_path / "x.npy",
                             "--output", tmp_path / "p.npy")
    assert code == 0, err
    assert "wrote 60 predictions" in out
    probabilities = np.load(tmp_path / "p.npy")
    assert probabilities.shape == (60, N_CLASSES)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Same model, same pixel scaling as fit: the argmax accuracy is test.json's accuracy.
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    assert accuracy == pytest.approx(json.loads((run_dir / "test.json").read_text())["test_accuracy"])


# -- config files, overwrite, .npz data (mlp: fast) ----------------------------------------------

@pytest.fixture
def npz_file(tmp_path) -> Path:
    """Three separable classes of 6 features: 90 training and 30 test samples."""
    rng = np.random.default_rng(0)

    def split(size):
        labels = np.arange(size) % 3
        features = rng.normal(0.0, 0.3, (size, 6)).astype(np.float32)
        features[np.arange(size), labels] += 3.0
        return features, labels

    (x_train, y_train), (x_test, y_test) = split(90), split(30)
    path = tmp_path / "blobs.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def mlp_fit_args(npz_file: Path, output: Path, *extra) -> list:
    return ["fit", "--data", npz_file, "--model", "mlp", "--hidden", "8", "--epochs", "1",
            "--batch-size", "30", "--progress", "none", "--output", output, *extra]


CONFIG_TEXTS = {
    # Keys as option names; dashes and underscores both accepted.
    "yaml": "data: {data}\nmodel: mlp\nhidden: [8, 4]\noptimizer: sgd\nlr: 0.05\n"
            "momentum: 0.9\nepochs: 2\nbatch-size: 16\nvalidation_split: 0.25\nseed: 3\n"
            "progress: none\noutput: {output}\n",
    "toml": 'data = "{data}"\nmodel = "mlp"\nhidden = [8, 4]\noptimizer = "sgd"\nlr = 0.05\n'
            'momentum = 0.9\nepochs = 2\nbatch_size = 16\nvalidation-split = 0.25\nseed = 3\n'
            'progress = "none"\noutput = "{output}"\n',
}


@pytest.mark.parametrize("kind", sorted(CONFIG_TEXTS))
def test_config_file_sets_options_and_flags_override_it(kind, npz_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    config_path = tmp_path / f"options.{kind}"
    config_path.write_text(CONFIG_TEXTS[kind].format(data=npz_file, output=run_dir))

    code, out, err = run_cli(capsys, "fit", "--config", config_path, "--batch-size", "10",
                             "--seed", "5")
    assert code == 0, err
    assert err == ""  # progress: none
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["batch_size"] == 10 and config["seed"] == 5  # flags win
    assert config["optimizer"] == "sgd" and config["lr"] == 0.05 and config["momentum"] == 0.9
    assert config["hidden"] == [8, 4] and config["epochs"] == 2
    assert config["validation_split"] == 0.25 and config["model"] == "mlp"
    assert json.loads((run_dir / "model.json").read_text())["model"] == \
        {"name": "mlp", "options": {"hidden": [8, 4]}}
    epochs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["type"] == "epoch"]
    # floor(90 * 0.75) = 67 training samples: ceil(67 / 10) = 7 steps per epoch at the flag's
    # batch size (the file's 16 would give 5).
    assert [r["step"] for r in epochs] == [7, 14]


def test_rerun_into_the_same_output_needs_overwrite(npz_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *mlp_fit_args(npz_file, run_dir, "--seed", "1"))[0] == 0
    first = {path.relative_to(run_dir): path.read_bytes() for path in run_dir.rglob("*")
             if path.is_file()}

    code, out, err = run_cli(capsys, *mlp_fit_args(npz_file, run_dir, "--seed", "2"))
    assert code == 2
    assert len(err.splitlines()) == 1 and "already holds a run" in err and "--overwrite" in err
    assert "--resume" in err
    assert {path.relative_to(run_dir): path.read_bytes() for path in run_dir.rglob("*")
            if path.is_file()} == first

    code, out, err = run_cli(capsys, *mlp_fit_args(npz_file, run_dir, "--seed", "2", "--overwrite"))
    assert code == 0, err
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == 2
    assert {path.name for path in run_dir.iterdir()} == RUN_FILES


def test_npz_data_trains_evaluates_and_defaults_the_run_dir_under_runs(npz_file, capsys):
    code, out, err = run_cli(capsys, "fit", "--data", npz_file, "--model", "mlp", "--epochs", "3",
                             "--batch-size", "16", "--lr", "0.01", "--seed", "0",
                             "--progress", "none")
    assert code == 0, err
    [run_dir] = Path("runs").iterdir()  # cwd is the test's own directory (conftest)
    assert run_dir.name.startswith("blobs-")
    assert {path.name for path in run_dir.iterdir()} == RUN_FILES
    results = json.loads((run_dir / "test.json").read_text())
    assert results["test_accuracy"] > 0.9  # the blobs are 10 standard deviations apart

    assert run_cli(capsys, "evaluate", run_dir)[0] == 0


def test_fit_prints_the_run_dir_and_test_metrics_to_stdout(npz_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *mlp_fit_args(npz_file, run_dir))
    assert code == 0, err
    assert f"run directory: {run_dir}" in out
    results = json.loads((run_dir / "test.json").read_text())
    assert f"test accuracy {results['test_accuracy']:.4f}" in out


def test_a_fit_that_failed_on_bad_data_does_not_block_the_retry(npz_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *mlp_fit_args(tmp_path / "typo.npz", run_dir))
    assert code == 2 and "not found" in err

    code, _, err = run_cli(capsys, *mlp_fit_args(npz_file, run_dir))
    assert code == 0, err


@pytest.mark.parametrize("flags, file_text, expected", [
    (["--threads", "1"], "", 1),
    ([], "threads: auto\n", "auto"),
    ([], "", None),
], ids=["flag", "config-file", "default"])
def test_threads_option_reaches_the_trainer_and_the_run_record(
        flags, file_text, expected, npz_file, tmp_path, capsys, monkeypatch):
    from batchtrain import trainer as trainer_module
    seen = []
    original = trainer_module.thread_callbacks
    monkeypatch.setattr(trainer_module, "thread_callbacks",
                        lambda threads, device: seen.append(threads) or original(threads, device))
    config_path = tmp_path / "options.yaml"
    config_path.write_text(file_text)
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *mlp_fit_args(npz_file, run_dir, "--config", config_path,
                                                 *flags))
    assert code == 0, err
    assert seen == [expected]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["threads"] == expected


# -- the real process ----------------------------------------------------------------------------

def test_bad_input_in_a_real_process_is_one_stderr_line_and_status_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "batchtrain", "fit", "--batch-size", "0"],
                            capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ),
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["batchtrain fit: error: batch_size must be an integer >= 1, got 0"]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "runs").exists()  # rejected before anything was written
