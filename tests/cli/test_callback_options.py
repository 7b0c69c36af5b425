"""`batchtrain fit --early-stopping / --reduce-lr-on-plateau / --save-best / --tensorboard`, and
`evaluate --best` / `predict --best`, end to end through cli.main on a small .npz."""
import json
import re

import numpy as np
import pytest
import yaml

from batchtrain import Trainer
from batchtrain.cli.config import FitConfig
from helpers import run_cli, tree_digest, write_blobs

pytestmark = pytest.mark.usefixtures("single_thread")


def fit_args(data, output, *extra):
    return ["fit", "--data", data, "--model", "mlp", "--hidden", "16", "--epochs", "30",
            "--batch-size", "50", "--lr", "0.05", "--seed", "0", "--progress", "none",
            "--output", output, *extra]


@pytest.fixture
def blobs(tmp_path):
    return write_blobs(tmp_path / "blobs.npz", shift=1.0)


def test_the_four_options_stop_early_keep_the_best_and_log_to_tensorboard(blobs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *fit_args(
        blobs, run_dir, "--early-stopping", "val_loss:patience=2,restore_best",
        "--reduce-lr-on-plateau", "val_loss:factor=0.5,patience=1", "--save-best", "val_accuracy",
        "--tensorboard"))
    assert code == 0, err
    epochs = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
              if r["type"] == "epoch"]
    assert len(epochs) < 30 and "EarlyStopping: early stopping after epoch" in err
    best_accuracy = max(r["val_accuracy"] for r in epochs)
    record = json.loads((run_dir / "best" / "best.json").read_text())
    assert record["monitor"] == "val_accuracy" and record["value"] == best_accuracy
    assert record["epoch"] == 1 + [r["val_accuracy"] for r in epochs].index(best_accuracy)
    assert {p.name for p in (run_dir / "best").iterdir()} == {"model.safetensors", "model.json",
                                                              "best.json"}
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["early_stopping"] == "val_loss:patience=2,restore_best"
    assert config["tensorboard"] is True and config["save_best"] == "val_accuracy"
    # the final model has the best val_loss epoch's weights (restore_best); --best the best
    # val_accuracy epoch's: evaluate --best prints what the best model scores
    data = np.load(blobs)
    expected = Trainer.load(run_dir / "best").evaluate(data["x_test"], data["y_test"])
    code, out, err = run_cli(capsys, "evaluate", run_dir, "--best")
    assert code == 0, err
    assert out.strip() == f"loss {expected['loss']:.4f} - accuracy {expected['accuracy']:.4f}"
    np.save(tmp_path / "x.npy", data["x_test"])
    code, out, err = run_cli(capsys, "predict", run_dir, "--best", "--input", tmp_path / "x.npy",
                             "--output", tmp_path / "p.npy")
    assert code == 0, err
    assert np.allclose(np.load(tmp_path / "p.npy"),
                       Trainer.load(run_dir / "best").predict(data["x_test"]))


def test_tensorboard_into_a_directory_of_ones_own_and_from_a_config_file(blobs, tmp_path, capsys):
    code, _, err = run_cli(capsys, *fit_args(blobs, tmp_path / "a", "--epochs", "1",
                                             "--tensorboard", tmp_path / "logs"))
    assert code == 0, err
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))
    assert not (tmp_path / "a" / "tensorboard").exists()
    (tmp_path / "c.yaml").write_text("tensorboard: true\n")
    code, _, err = run_cli(capsys, *fit_args(blobs, tmp_path / "b", "--epochs", "1",
                                             "--config", tmp_path / "c.yaml"))
    assert code == 0, err
    assert list((tmp_path / "b" / "tensorboard").glob("events.out.tfevents.*"))
    assert FitConfig(tensorboard=None).tensorboard is None


@pytest.mark.parametrize("flags, message", [
    (["--early-stopping", "val_loss:patiance=2"], "unknown option 'patiance'"),
    (["--early-stopping", "val_acc"], "did you mean val_accuracy"),
    (["--reduce-lr-on-plateau", "val_loss:factor=2"], r"factor must be in \(0, 1\)"),
    (["--save-best", "val_loss", "--validation-split", "0"], "no validation data"),
    (["--save-best", "val_mae"], "does not compute"),  # a classification run: checked at fit begin
    (["--reduce-lr-on-plateau", "val_loss:min_lr=-1"], "--reduce-lr-on-plateau: min_lr must be"),
])
def test_bad_specs_are_one_line_status_2_and_write_nothing(blobs, tmp_path, capsys, flags, message):
    before = tree_digest(tmp_path)
    code, out, err = run_cli(capsys, *fit_args(blobs, tmp_path / "run", *flags))
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert tree_digest(tmp_path) == before


def test_evaluate_best_without_a_best_model_names_the_fix(blobs, tmp_path, capsys):
    assert run_cli(capsys, *fit_args(blobs, tmp_path / "run", "--epochs", "1"))[0] == 0
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "run", "--best")
    assert code == 2 and "--save-best" in err and len(err.strip().splitlines()) == 1


def test_resume_keeps_the_decisions_and_only_tensorboard_may_change(blobs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    flags = ["--early-stopping", "val_loss:patience=20", "--save-best", "val_loss", "--epochs", "2",
             "--log-every-steps", "1"]
    assert run_cli(capsys, *fit_args(blobs, run_dir, *flags))[0] == 0
    code, _, err = run_cli(capsys, "fit", "--resume", run_dir, "--early-stopping", "loss")
    assert code == 2 and "--early-stopping cannot change when resuming" in err
    code, _, err = run_cli(capsys, "fit", "--resume", run_dir, "--epochs", "4", "--tensorboard")
    assert code == 0, err
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["early_stopping"] == "val_loss:patience=20" and config["tensorboard"] is True
    epochs = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
              if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    reader = EventAccumulator(str(run_dir / "tensorboard"))
    reader.Reload()
    logged = [event.step for event in reader.Scalars("batch/lr")]
    resumed_at = epochs[1]["step"]  # the epoch-end checkpoint the resumed run continued from
    assert logged == list(range(resumed_at + 1, epochs[-1]["step"] + 1))


def test_overwrite_removes_the_best_model_and_the_event_files(blobs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *fit_args(blobs, run_dir, "--epochs", "2", "--save-best", "val_loss",
                                     "--tensorboard"))[0] == 0
    code, _, err = run_cli(capsys, *fit_args(blobs, run_dir, "--epochs", "1"))
    assert code == 2 and "already holds a run" in err
    (run_dir / ".best.previous").mkdir()  # as a crash inside the best model's replacement leaves
    (run_dir / ".best.previous" / "model.json").write_text("{}")
    assert run_cli(capsys, *fit_args(blobs, run_dir, "--epochs", "1", "--overwrite"))[0] == 0
    assert not (run_dir / "best").exists() and not list(run_dir.glob("tensorboard/*"))
    assert not (run_dir / ".best.previous").exists()
    code, _, err = run_cli(capsys, "evaluate", run_dir, "--best")
    assert code == 2 and "no best model" in err  # not the overwritten run's
