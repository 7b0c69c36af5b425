"""Bad input, one case at a time: the error names the problem (and, from the CLI, is one line on
stderr with exit status 2 and no traceback).

API cases call Trainer directly on tiny arrays; CLI cases call cli.main in-process. Every one
fails before any training step, so the module runs in a few seconds.
"""
import re
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from batchtrain import Trainer
from batchtrain.cli.app import main
from batchtrain.data.builtin import cache_dir

pytestmark = pytest.mark.usefixtures("single_thread")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 4)).astype(np.float32)
Y = np.arange(12) % 3  # classes 0, 1, 2


def fit(x=X, y=Y, model="mlp", trainer_options=None, **fit_options):
    """One epoch of `model` on x, y; the Trainer and fit keywords as given."""
    trainer = Trainer(model, seed=0, device="cpu", **(trainer_options or {}))
    return trainer.fit(x, y, **{"epochs": 1, "batch_size": 4, **fit_options})


def with_value(array, index, value):
    array = np.array(array, dtype=np.float32)
    array[index] = value
    return array


# -- Trainer API ---------------------------------------------------------------------------------

@pytest.mark.parametrize("x, y, message", [
    (X, Y[:-1], "x and y have different lengths: 12 samples in x, 11 in y"),
    (X[:0], Y[:0], "x is empty (0 samples)"),
    (with_value(X, (3, 1), np.nan), Y, "x contains NaN or infinite values (1 samples, first at index 3)"),
    (X, with_value(Y, 5, np.inf), "y contains NaN or infinite values (1 samples, first at index 5)"),
    (np.array([[1.0, "a"]] * 12, dtype=object), Y, "x has dtype object, not numbers"),
    (X, np.array(["cat", "dog", "owl"] * 4), "y has dtype <U3, not numbers"),
], ids=["length-mismatch", "empty-x", "nan-in-x", "inf-in-y", "object-x", "string-y"])
def test_fit_rejects_bad_arrays(x, y, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fit(x, y)


def test_fit_names_validation_data_in_its_errors():
    bad_x = with_value(X[:4], (2, 0), np.nan)
    with pytest.raises(ValueError, match=re.escape("validation x contains NaN or infinite values")):
        fit(validation_data=(bad_x, Y[:4]))


@pytest.mark.parametrize("options, message", [
    ({"validation_split": 1.5}, "validation_split must be in [0, 1), got 1.5"),
    ({"validation_split": -0.1}, "validation_split must be in [0, 1), got -0.1"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"batch_size": -3}, "batch_size must be an integer >= 1, got -3"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
], ids=lambda value: str(value) if isinstance(value, dict) else "")
def test_fit_rejects_out_of_range_arguments(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fit(**options)


@pytest.mark.parametrize("trainer_options, message", [
    ({"optimizer": "nope"}, "unknown optimizer 'nope'; choose one of"),
    ({"loss": "nope"}, "unknown loss 'nope'; choose one of"),
], ids=["optimizer", "loss"])
def test_trainer_rejects_unknown_names(trainer_options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fit(trainer_options=trainer_options)


@pytest.mark.parametrize("model, message", [
    ("nope", "unknown model 'nope'; choose one of ['mlp', 'seed-cnn'] or give an import path"),
    ("no_such_module_xyz:build", "cannot import module 'no_such_module_xyz' for model"),
    ("json:no_such_factory", "module 'json' has no callable 'no_such_factory'"),
], ids=["unknown-name", "missing-module", "missing-factory"])
def test_trainer_rejects_models_it_cannot_build(model, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fit(model=model)


def test_labels_beyond_a_user_models_outputs():
    labels = with_value(Y, 7, 5).astype(np.int64)
    with pytest.raises(ValueError, match=re.escape(
            "labels must be in [0, 3) for a model with 3 outputs, got labels from 0 to 5")):
        fit(y=labels, model=nn.Linear(4, 3))


def test_validation_labels_beyond_the_training_classes():
    val_labels = np.array([0, 1, 2, 5])
    with pytest.raises(ValueError, match=re.escape("labels must be in [0, 3) for a model with 3 "
                                                   "outputs, got labels from 0 to 5")):
        fit(validation_data=(X[:4], val_labels))


@pytest.mark.parametrize("model, y, message", [
    (nn.Linear(4, 1), RNG.normal(size=(12, 2)),
     "output shape per sample is (1,) but the regression targets need (2,)"),
    (nn.Sequential(nn.Linear(4, 1), nn.Flatten(0)), RNG.normal(size=12),
     "the model returns shape (2,); return (batch, 1) for one output"),
    (nn.Sequential(nn.Linear(4, 3), nn.Unflatten(1, (3, 1))), Y,
     "output shape per sample is (3, 1) but the multiclass targets need (3,); make the model return shape (batch, 3)"),
], ids=["too-few-columns", "regression-rank-1", "classifier-rank-3"])
def test_model_output_that_does_not_fit_the_targets(model, y, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fit(y=y, model=model)


def test_numpy_integers_are_accepted_as_batch_size_and_epochs():
    history = fit(batch_size=np.int64(4), epochs=np.int64(1))
    assert len(history) == 1


# -- the command line ----------------------------------------------------------------------------

def cli_error(capsys, *argv) -> str:
    """Run `batchtrain argv...`; check it failed as bad input should, and return its one line."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert out == ""
    return err.strip()


@pytest.fixture
def small_npz(tmp_path):
    path = tmp_path / "small.npz"
    np.savez(path, x_train=X, y_train=Y)
    return path


def test_unknown_dataset_name(capsys):
    line = cli_error(capsys, "fit", "--data", "cifar-11")
    assert "unknown data 'cifar-11': not a built-in dataset (fashion-mnist, mnist)" in line


def test_missing_npz_file(capsys, tmp_path):
    missing = tmp_path / "missing.npz"
    assert f"data file {missing} not found" in cli_error(capsys, "fit", "--data", missing)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_npz_file(capsys, small_npz, damage):
    content = small_npz.read_bytes()
    small_npz.write_bytes(b"not an archive" * 10 if damage == "garbage" else content[:len(content) // 2])
    line = cli_error(capsys, "fit", "--data", small_npz)
    assert f"cannot read data file {small_npz}" in line
    assert "not a valid .npz archive; write it with numpy.savez" in line
    assert "allow_pickle" not in line  # numpy's unsafe advice is not passed on


def test_npz_without_labels(capsys, tmp_path):
    path = tmp_path / "features-only.npz"
    np.savez(path, x_train=X)
    assert "has no array 'y_train'" in cli_error(capsys, "fit", "--data", path)


def test_dataset_not_found_without_download_names_the_searched_dirs(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = cli_error(capsys, "fit", "--data", "fashion-mnist", "--data-dir", empty, "--no-download")
    assert "dataset 'fashion-mnist' is not on disk" in line
    for directory in (empty, empty / "fashion-mnist", cache_dir("fashion-mnist")):
        assert str(directory) in line
    assert "Downloading was not attempted" in line
    assert "--data-dir DIR" in line  # one of the fixes


@pytest.mark.parametrize("name, text, message", [
    ("broken.yaml", "epochs: [1, 2\n", "is malformed"),
    ("broken.toml", "epochs = \n", "is malformed"),
    ("typo.yaml", "batch_sise: 32\n", "has unknown option(s) batch_sise; valid options: data,"),
    ("type.yaml", 'epochs: "many"\n', "epochs in config file"),
    ("type.toml", 'shuffle = "maybe"\n', "must be true or false, got 'maybe'"),
    ("list.yaml", "- epochs\n", "must hold a mapping of option: value, got list"),
    ("options.ini", "epochs = 1\n", "must end in .yaml, .yml, .toml or .json"),
    ("threads.yaml", "threads: 1.5\n", "threads in config file"),
], ids=["malformed-yaml", "malformed-toml", "unknown-key", "wrong-type-yaml", "wrong-type-toml",
        "not-a-mapping", "unknown-suffix", "threads-float"])
def test_bad_config_file(capsys, tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    assert message in cli_error(capsys, "fit", "--config", path)


def test_config_file_that_does_not_exist(capsys, tmp_path):
    missing = tmp_path / "nowhere.yaml"
    line = cli_error(capsys, "fit", "--config", missing)
    assert f"cannot read config file {missing}: No such file or directory" in line


@pytest.mark.parametrize("flags, message", [
    (["--validation-split", "1.5"], "validation_split must be in [0, 1), got 1.5"),
    (["--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
    (["--batch-size", "2.5"], "batch size '2.5' is not valid"),
    (["--batch-size", "double:64"], "expected 3 comma-separated values"),
    (["--lr-schedule", "cosine:-1"], "bad learning-rate schedule 'cosine:-1'"),
    (["--memory-budget", "lots"], "memory budget 'lots' is not a size"),
    (["--memory-budget", "1.5"], "a fractional memory budget must be in (0, 1], got 1.5"),
    (["--lr-scaling", "cubic"], "--lr-scaling must be one of auto, none, linear, sqrt"),
    (["--max-physical-batch", "0"], "max_physical_batch must be >= 1, got 0"),
    (["--keep-checkpoints", "0"], "keep_checkpoints must be >= 1, got 0"),
    (["--checkpoint-every", "2x"], "2x"),
    (["--on-nonfinite", "ignore"], "--on-nonfinite must be one of stop, skip, raise"),
    (["--epochs", "0"], "epochs must be >= 1, got 0"),
    (["--optimizer", "nope"], "--optimizer must be one of sgd, adam, adamw, rmsprop; "
                              "got 'nope'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--threads", "many"], "--threads must be an integer >= 1 or auto, got 'many'"),
    (["--threads", "0"], "threads must be 'auto' or an integer >= 1, got 0"),
    (["--threads", "100000"], "threads must be at most"),
    (["--lr", "inf"], "lr must be a number in (0, 1000], got inf"),
    (["--lr", "1e38"], "lr must be a number in (0, 1000], got 1e+38"),
    (["--lr", "nan"], "lr must be a number in (0, 1000], got nan"),
    (["--optimizer", "sgd", "--momentum", "nan"], "momentum must be in [0, 1), got nan"),
    (["--optimizer", "sgd", "--momentum", "-1"], "momentum must be in [0, 1), got -1.0"),
    (["--optimizer", "sgd", "--nesterov"], "nesterov needs momentum > 0, e.g. --momentum 0.9"),
    (["--momentum", "0.9"], "momentum applies to sgd and rmsprop, not adam"),
], ids=["validation-split", "batch-size-0", "batch-size-float", "batch-schedule", "lr-schedule",
        "budget-word", "budget-fraction", "lr-scaling", "physical-batch", "keep-checkpoints",
        "checkpoint-every", "on-nonfinite", "epochs-0", "optimizer", "unknown-flag",
        "threads-word", "threads-0", "threads-100000", "lr-inf", "lr-1e38", "lr-nan",
        "momentum-nan", "momentum-negative", "nesterov-alone", "momentum-adam"])
def test_bad_fit_flags(capsys, flags, message):
    assert message in cli_error(capsys, "fit", *flags)
    assert not Path("runs").exists()  # refused before anything was written


@pytest.mark.parametrize("name, content, message", [
    ("both.yaml", b"batch_size: 16\nbatch-size: 32\n", "sets batch_size twice"),
    ("twice.json", b'{"epochs": 1, "epochs": 2}', "sets 'epochs' twice; keep one"),
    ("laughs.yaml", b'a: &a ["lol","lol"]\nb: [*a,*a]\n', "uses a YAML anchor or alias ('a', line 1)"),
    ("latin1.yaml", "data: caf\xe9.npz\n".encode("latin-1"), "is not UTF-8 text (byte 9); save it "
                                                               "as UTF-8"),
    ("long.yaml", b"loss: '" + b"x" * 1_000_000 + b"'\n", "is 1000000 characters long"),
    ("lr.json", b'{"lr": NaN}', "lr must be a number in (0, 1000], got nan"),
], ids=["two-spellings", "json-key-twice", "alias", "not-utf8", "long-value", "json-nan"])
def test_bad_config_file_content(capsys, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    line = cli_error(capsys, "fit", "--config", path)
    assert message in line and len(line) < 1000


def test_seed_out_of_range_is_named(capsys, small_npz, tmp_path):
    line = cli_error(capsys, "fit", "--data", small_npz, "--model", "mlp", "--seed", 2**64,
                     "--output", tmp_path / "run", "--progress", "none")
    assert "seed must be in [0, 2**63)" in line


@pytest.mark.parametrize("exists", [True, False], ids=["empty-dir", "missing-dir"])
def test_evaluate_on_a_directory_that_is_not_a_run(capsys, tmp_path, exists):
    run_dir = tmp_path / "not-a-run"
    if exists:
        run_dir.mkdir()
    line = cli_error(capsys, "evaluate", run_dir)
    assert f"{run_dir} is not a batchtrain run directory" in line


def test_predict_with_a_missing_input_file(capsys, fitted_run, tmp_path):
    missing, output = tmp_path / "missing.npy", tmp_path / "p.npy"
    line = cli_error(capsys, "predict", fitted_run[0], "--input", missing, "--output", output)
    assert f"input file {missing} not found" in line
    assert not output.exists()


def test_predict_with_an_unreadable_input_file(capsys, fitted_run, tmp_path):
    garbage = tmp_path / "x.npy"
    garbage.write_bytes(b"definitely not numpy")
    line = cli_error(capsys, "predict", fitted_run[0], "--input", garbage, "--output", tmp_path / "p.npy")
    assert f"cannot read input file {garbage}" in line


def test_predict_with_samples_of_the_wrong_shape(capsys, fitted_run, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 28, 28), dtype=np.uint8))  # no channel axis
    line = cli_error(capsys, "predict", fitted_run[0], "--input", tmp_path / "x.npy",
                     "--output", tmp_path / "p.npy")
    assert "samples have shape (28, 28) but the model was built for (1, 28, 28)" in line
