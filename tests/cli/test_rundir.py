"""The run directory from the command line: a refused fit changes nothing on disk, an attempt
that saved nothing does not block its retry, a resumed run keeps its record, the model is saved
before the test evaluation, and failed writes name the path and the fix.

Every refusal is checked the same way: exit status 2, one line on stderr, no traceback, and the
files already on disk byte for byte as before (helpers.tree_digest).
"""
import errno
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from batchtrain.checkpointing import saved_model as saving
from batchtrain.callbacks import logs
from batchtrain.errors import DataError
from batchtrain.trainer import Trainer
from helpers import run_cli, tree_digest, write_blobs

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def blobs(tmp_path):
    return write_blobs(tmp_path / "blobs.npz", samples=120, train=90)


def fit_args(data, output, *extra):
    return ["fit", "--data", data, "--model", "mlp", "--hidden", "8", "--epochs", "1",
            "--batch-size", "30", "--seed", "0", "--progress", "none", "--output", output, *extra]


def refused(capsys, *argv, unchanged) -> str:
    """Run the command; check it failed as bad input should and left `unchanged` as it was."""
    before = tree_digest(unchanged)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert tree_digest(unchanged) == before
    return err.strip()


def npz(path, x, y):
    np.savez(path, x_train=np.asarray(x, dtype=np.float32), y_train=np.asarray(y))
    return path


def bad_data(tmp_path, kind):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    if kind == "negative-labels":
        return ["--data", npz(tmp_path / "negative.npz", x, np.arange(40) % 3 - 1)]
    if kind == "one-sample":
        return ["--data", npz(tmp_path / "one.npz", x[:1], [0])]
    x[30, 1] = np.nan
    path = tmp_path / "nan.parquet"
    pq.write_table(pa.table({**{f"f{i}": x[:, i] for i in range(6)}, "label": np.arange(40) % 3}),
                   path)
    return ["--data", path, "--target", "label"]


# -- a refused fit leaves nothing behind, and the corrected retry needs no --overwrite ----------

@pytest.mark.parametrize("bad", [
    ["--optimizer", "sgd", "--momentum", "-1"], ["--optimizer", "sgd", "--nesterov"],
    "negative-labels", "one-sample", "nan-in-parquet",
], ids=["momentum-negative", "nesterov-alone", "negative-labels", "one-sample", "nan-in-parquet"])
def test_a_refused_fit_leaves_no_directory_and_the_retry_needs_no_overwrite(capsys, blobs,
                                                                           tmp_path, bad):
    run_dir = tmp_path / "run"
    extra = bad if isinstance(bad, list) else bad_data(tmp_path, bad)
    refused(capsys, *fit_args(blobs, run_dir), *extra, unchanged=tmp_path)
    assert not run_dir.exists()
    code, out, err = run_cli(capsys, *fit_args(blobs, run_dir))
    assert code == 0, err
    assert (run_dir / "model.safetensors").exists()


def test_a_refused_fit_into_an_existing_directory_changes_nothing_there(capsys, blobs, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    refused(capsys, *fit_args(blobs, run_dir), *bad_data(tmp_path, "negative-labels"),
            unchanged=run_dir)
    assert [path.name for path in run_dir.iterdir()] == ["notes.txt"]


def test_records_of_an_attempt_that_saved_nothing_are_replaced_and_nothing_else(capsys, blobs,
                                                                                tmp_path):
    run_dir = tmp_path / "run"  # as an attempt killed before its first checkpoint leaves it
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 99\n")
    (run_dir / "metrics.jsonl").write_text('{"type": "fit"}\n')
    (run_dir / "notes.txt").write_text("mine")
    code, out, err = run_cli(capsys, *fit_args(blobs, run_dir))
    assert code == 0, err
    assert "replaced config.yaml, metrics.jsonl of an earlier attempt" in out
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["type"] for record in records].count("fit") == 1
    assert (run_dir / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("kept", ["checkpoint", "model"])
def test_a_directory_with_a_checkpoint_or_a_model_is_still_a_run(capsys, blobs, tmp_path, kept):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 99\n")
    if kept == "checkpoint":
        (run_dir / "checkpoints" / "ckpt-00000000000030.pt").write_bytes(b"state")
    else:
        (run_dir / "model.safetensors").write_bytes(b"weights")
    line = refused(capsys, *fit_args(blobs, run_dir), unchanged=run_dir)
    assert "already holds a run" in line and "--overwrite" in line


# -- --resume ------------------------------------------------------------------------------------

@pytest.fixture
def finished_run(capsys, blobs, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *fit_args(blobs, run_dir))
    assert code == 0, err
    return run_dir


@pytest.mark.parametrize("override", [["--hidden", "128"], ["--lr", "0.01"], ["--seed", "7"],
                                      ["--batch-size", "10"], ["--data", "mnist"]],
                         ids=["hidden", "lr", "seed", "batch-size", "data"])
def test_resume_refuses_an_override_its_checkpoint_would_ignore_and_keeps_the_run(
        capsys, finished_run, override):
    line = refused(capsys, "fit", "--resume", finished_run, *override, unchanged=finished_run)
    assert f"{override[0]} cannot change when resuming {finished_run}" in line
    assert "only these may change: --epochs" in line
    code, _, err = run_cli(capsys, "fit", "--resume", finished_run, "--epochs", "2")
    assert code == 0, err  # the run can still be resumed
    assert yaml.safe_load((finished_run / "config.yaml").read_text())["epochs"] == 2


def test_resume_with_fewer_epochs_than_trained_is_refused(capsys, finished_run):
    assert run_cli(capsys, "fit", "--resume", finished_run, "--epochs", "2")[0] == 0
    line = refused(capsys, "fit", "--resume", finished_run, "--epochs", "1", unchanged=finished_run)
    assert f"--epochs 1 is fewer than the 2 epochs {finished_run} has trained; give --epochs 2" in line


def test_resume_of_a_file_says_it_takes_a_run_directory(capsys, finished_run):
    checkpoint = sorted((finished_run / "checkpoints").glob("ckpt-*.pt"))[-1]
    line = refused(capsys, "fit", "--resume", checkpoint, unchanged=finished_run)
    assert f"--resume takes a run directory, not the file {checkpoint}" in line
    assert "damaged" not in line


@pytest.mark.parametrize("text, message", [
    ("a: &x 1\nb: *x\n", "uses a YAML anchor or alias"),
    ("epochs: 1\nepochs: 2\n", "sets 'epochs' twice"),
    ("nonsense: 1\n", "has unknown option(s) nonsense"),
], ids=["alias", "twice", "unknown"])
def test_resume_of_a_damaged_config_yaml(capsys, finished_run, text, message):
    (finished_run / "config.yaml").write_text(text)
    line = refused(capsys, "fit", "--resume", finished_run, unchanged=finished_run)
    assert message in line and "the run directory is damaged" in line


# -- work lost late ------------------------------------------------------------------------------

def test_the_model_is_saved_before_the_test_evaluation(capsys, blobs, tmp_path, monkeypatch):
    def failing_evaluate(self, *args, **kwargs):
        raise DataError("test data is broken")

    monkeypatch.setattr(Trainer, "evaluate", failing_evaluate)
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *fit_args(blobs, run_dir))
    assert code == 2 and "test data is broken" in err
    assert (run_dir / "model.safetensors").exists() and (run_dir / "model.json").exists()


# -- failed writes -------------------------------------------------------------------------------

def raise_enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_saving_the_model_names_the_file_and_the_checkpoint(capsys, blobs,
                                                                            tmp_path, monkeypatch):
    monkeypatch.setattr(saving, "save_file", raise_enospc)
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *fit_args(blobs, run_dir))
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert (f"cannot write {run_dir / 'model.safetensors'}: No space left on device; free space "
            "or choose another --output") in err
    assert f"batchtrain fit --resume {run_dir} saves the model" in err


def test_disk_full_while_logging_names_the_file(capsys, blobs, tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "open", raise_enospc, raising=False)  # the logger's open() only
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *fit_args(blobs, run_dir))
    assert code == 2 and len(err.splitlines()) == 1
    assert f"cannot write {run_dir / 'metrics.jsonl'}: No space left on device; free space" in err


def test_an_output_name_too_long_is_named_with_the_fix(capsys, blobs, tmp_path):
    line = refused(capsys, *fit_args(blobs, tmp_path / ("o" * 300)), unchanged=tmp_path)
    assert "File name too long; choose a shorter path" in line


def test_an_output_under_a_file_is_refused(capsys, blobs, tmp_path):
    line = refused(capsys, *fit_args(blobs, blobs / "run"), unchanged=tmp_path)
    assert f"cannot create run directory {blobs / 'run'}: Not a directory" in line


@pytest.mark.parametrize("output, message", [
    ("a-directory", "--output {output} is a directory; give a file path, e.g. "
                    "{output}/predictions.npy"),
    ("p" * 300 + ".npy", "File name too long; choose a shorter path"),
    ("blobs.npz/p.npy", "a part of the path is a file: choose another path"),
    ("x.npy", "--output {output} is the --input file; write the predictions to another file"),
    ("run/model.safetensors", "would overwrite the run's model.safetensors"),
    ("run/checkpoints/../config.yaml", "would overwrite the run's config.yaml"),
], ids=["directory", "name-too-long", "under-a-file", "the-input", "the-weights", "the-config"])
def test_predict_output_that_cannot_be_written(capsys, finished_run, tmp_path, output, message):
    (tmp_path / "a-directory").mkdir()
    np.save(tmp_path / "x.npy", np.zeros((3, 6), dtype=np.float32))
    output = tmp_path / output
    line = refused(capsys, "predict", finished_run, "--input", tmp_path / "x.npy",
                   "--output", output, unchanged=tmp_path)
    assert message.format(output=output) in line


def test_evaluate_refuses_an_empty_config_yaml(capsys, finished_run):
    (finished_run / "config.yaml").write_text("")
    line = refused(capsys, "evaluate", finished_run, unchanged=finished_run)
    assert f"{finished_run / 'config.yaml'} is empty; the run directory is damaged" in line
