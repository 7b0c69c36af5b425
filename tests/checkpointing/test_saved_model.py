"""Saved models are data: model.json and model.safetensors read as untrusted input.

An import path in a run file is code and is followed only when the user names it or trusts the run;
every field of model.json is checked before use; weights must be finite and fit the model.
"""
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from batchtrain import Trainer
from batchtrain.cli.app import main
from batchtrain.errors import ConfigError
from batchtrain.models.spec import UntrustedModelError, check_trusted, is_import_path
from helpers import run_cli, write_blobs

pytestmark = pytest.mark.usefixtures("single_thread")

# A model factory that leaves a marker file beside itself when its module is imported: the proof
# that a run file made us import code.
FACTORY_MODULE = '''
import pathlib
from torch import nn
pathlib.Path(__file__).with_name("imported.marker").touch()
def tiny(input_shape, n_outputs, width=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], width), nn.ReLU(),
                         nn.Linear(width, n_outputs))
'''
FACTORY = "trust_probe_models:tiny"


def snapshot(root) -> dict:
    """SHA-256 of every file under root, by relative path."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def factory_dir(tmp_path, monkeypatch):
    """A directory on sys.path holding FACTORY's module; forgets the module afterwards."""
    directory = tmp_path / "code"
    directory.mkdir()
    (directory / "trust_probe_models.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(directory))
    yield directory
    sys.modules.pop("trust_probe_models", None)


def forget_factory(factory_dir) -> None:
    sys.modules.pop("trust_probe_models", None)
    (factory_dir / "imported.marker").unlink(missing_ok=True)


@pytest.fixture
def custom_run(tmp_path, factory_dir, capsys):
    """A finished 1-epoch run of FACTORY (an import path) on blobs; the module forgotten after."""
    data = write_blobs(tmp_path / "blobs.npz", samples=120, train=90)
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "fit", "--data", data, "--model", FACTORY, "--epochs", "1",
                           "--batch-size", "30", "--progress", "none", "--output", run_dir,
                           "--seed", "0", "--device", "cpu")
    assert code == 0, err
    forget_factory(factory_dir)
    return run_dir, data


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_run_naming_an_import_path_is_not_imported_without_trust(custom_run, factory_dir,
                                                                   tmp_path, capsys, command):
    run_dir, data = custom_run
    extra = ["--input", tmp_path / "x.npy", "--output", tmp_path / "p.npy"] if command == "predict" else []
    np.save(tmp_path / "x.npy", np.zeros((3, 6), np.float32))
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, command, run_dir, "--device", "cpu", *extra)
    line = one_error_line(err)
    assert code == 2
    assert FACTORY in line and "--trust-model-code" in line and f"--model {FACTORY}" in line
    assert not (factory_dir / "imported.marker").exists()
    assert "trust_probe_models" not in sys.modules
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("remedy", [["--trust-model-code"], ["--model", FACTORY]])
def test_naming_the_factory_or_trusting_the_run_rebuilds_it(custom_run, factory_dir, capsys, remedy):
    run_dir, _ = custom_run
    code, out, err = run_cli(capsys, "evaluate", run_dir, "--device", "cpu", *remedy)
    assert code == 0, err
    assert "accuracy" in out and (factory_dir / "imported.marker").exists()


def test_the_issue_reproduction_creates_no_file(fitted_mlp_run, tmp_path, capsys):
    """model.json naming subprocess:run with a command as its input shape (issue 14)."""
    marker = tmp_path / "pwned"
    description = json.loads((fitted_mlp_run / "model.json").read_text())
    description["model"] = {"name": "subprocess:run", "options": {}}
    for shape in (["touch", str(marker)], [3]):  # a bad field, then a valid one: both refused
        description["input_shape"] = shape
        (fitted_mlp_run / "model.json").write_text(json.dumps(description))
        for command in (["evaluate", fitted_mlp_run],
                        ["predict", fitted_mlp_run, "--input", tmp_path / "in.npy",
                         "--output", tmp_path / "out.npy"]):
            code, _, err = run_cli(capsys, *command, "--device", "cpu")
            one_error_line(err)
            assert code == 2 and not marker.exists()


def test_resume_does_not_follow_an_import_path_from_config_yaml(custom_run, factory_dir,
                                                                tmp_path, capsys):
    run_dir, _ = custom_run
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "fit", "--resume", run_dir, "--epochs", "2", "--progress", "none")
    line = one_error_line(err)
    assert code == 2 and "config.yaml" in line and FACTORY in line
    assert not (factory_dir / "imported.marker").exists()
    assert snapshot(tmp_path) == before
    code, _, err = run_cli(capsys, "fit", "--resume", run_dir, "--epochs", "2", "--progress",
                           "none", "--trust-model-code")
    assert code == 0, err
    assert (factory_dir / "imported.marker").exists()


def test_trainer_load_needs_the_factory_named_or_trust(custom_run, factory_dir):
    run_dir, data = custom_run
    with pytest.raises(UntrustedModelError, match="trust_model_code=True"):
        Trainer.load(run_dir, device="cpu")
    assert not (factory_dir / "imported.marker").exists()
    x = np.load(data)["x_test"]
    by_name = Trainer.load(run_dir, model=FACTORY, device="cpu").predict(x)
    trusted = Trainer.load(run_dir, device="cpu", trust_model_code=True).predict(x)
    np.testing.assert_array_equal(by_name, trusted)


def test_check_trusted_follows_builtin_names_and_trusted_paths():
    assert not is_import_path("mlp") and is_import_path("os:system")
    check_trusted("mlp", "model.json", trusted=False)
    check_trusted("os:system", "model.json", trusted=True)
    with pytest.raises(ConfigError, match="'os:system'"):
        check_trusted("os:system", "model.json", trusted=False)


# -- model.json fields -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp_run_template(tmp_path_factory):
    """One finished 1-epoch mlp run, copied by fitted_mlp_run for each test to damage."""
    root = tmp_path_factory.mktemp("mlp-template")
    data = write_blobs(root / "blobs.npz", samples=120, train=90)
    code = main(["fit", "--data", str(data), "--model", "mlp", "--hidden", "8", "--epochs", "1",
                 "--batch-size", "30", "--progress", "none", "--output", str(root / "run"),
                 "--seed", "0", "--device", "cpu"])
    assert code == 0
    return root / "run", np.load(data)["x_test"]


@pytest.fixture
def fitted_mlp_run(mlp_run_template, tmp_path):
    template, x_test = mlp_run_template
    np.save(tmp_path / "in.npy", x_test)
    return Path(shutil.copytree(template, tmp_path / "mlp-run"))


def edited(description: dict, field: str, value) -> dict:
    changed = json.loads(json.dumps(description))
    if value is DROP:
        del changed[field]
    else:
        changed[field] = value
    return changed


DROP = object()
BAD_FIELDS = [
    ("input_shape", [-1], "input_shape"),
    ("input_shape", [0], "input_shape"),
    ("input_shape", "6", "input_shape"),
    ("input_shape", [6.0], "input_shape"),
    ("input_shape", [True], "input_shape"),
    ("input_shape", [], "input_shape"),
    ("input_shape", [1 << 20, 1 << 20], "input_shape"),
    ("input_shape", DROP, "input_shape"),
    ("task", DROP, "task"),
    ("task", {"kind": "ranking", "n_outputs": 3, "loss": "mse"}, "task"),
    ("task", {"kind": "multiclass", "n_outputs": 0, "loss": "cross_entropy"}, "task"),
    ("task", {"kind": "multiclass", "n_outputs": 10 ** 9, "loss": "cross_entropy"}, "task"),
    ("task", {"kind": "multiclass", "n_outputs": 3, "loss": "mse"}, "task"),
    ("task", {"kind": "binary", "n_outputs": 3, "loss": "bce"}, "task"),
    ("task", [1, 2], "task"),
    ("model", {"name": "mlp", "options": {"hidden": {"__class__": "x"}}}, "model"),
    ("model", {"name": "mlp", "options": ["hidden"]}, "model"),
    ("model", {"name": "", "options": {}}, "model"),
    ("model", {"name": 7}, "model"),
    ("model", "mlp", "model"),
    ("metrics", ["mae"], "metrics"),
    ("metrics", "accuracy", "metrics"),
    ("standardized", {"targets": "yes"}, "standardized"),
]


@pytest.mark.parametrize("field, value, named", BAD_FIELDS,
                         ids=[f"{field}-{index}" for index, (field, _, _) in enumerate(BAD_FIELDS)])
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_every_model_json_field_is_checked(fitted_mlp_run, tmp_path, capsys, field, value, named,
                                           command):
    path = fitted_mlp_run / "model.json"
    path.write_text(json.dumps(edited(json.loads(path.read_text()), field, value)))
    before = snapshot(tmp_path)
    extra = ["--input", tmp_path / "in.npy", "--output", tmp_path / "out.npy"] if command == "predict" else []
    code, _, err = run_cli(capsys, command, fitted_mlp_run, "--device", "cpu", *extra)
    line = one_error_line(err)
    assert code == 2 and "model.json" in line and repr(named) in line, line
    assert len(line) < 500
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"{" + b" " * (2 << 20) + b"}", "larger than"),
    (b"[1, 2]", "not a batchtrain model description"),
    (b'{"format": 1, "model"', "cannot read"),
], ids=["non-utf8", "huge", "a-list", "truncated"])
def test_unreadable_model_json_is_refused(fitted_mlp_run, capsys, content, message):
    (fitted_mlp_run / "model.json").write_bytes(content)
    code, _, err = run_cli(capsys, "evaluate", fitted_mlp_run, "--device", "cpu")
    assert code == 2 and message in one_error_line(err)


def test_model_json_that_is_not_a_regular_file_is_refused(fitted_mlp_run, capsys):
    (fitted_mlp_run / "model.json").unlink()
    (fitted_mlp_run / "model.json").symlink_to("/dev/zero")
    code, _, err = run_cli(capsys, "evaluate", fitted_mlp_run, "--device", "cpu")
    assert code == 2 and "not a regular file" in one_error_line(err)


def test_a_huge_input_shape_is_refused_before_any_allocation(fitted_mlp_run, capsys):
    """mlp with 10^8 inputs would allocate ~25 GB; the weights' shapes are compared first, on
    the meta device."""
    path = fitted_mlp_run / "model.json"
    path.write_text(json.dumps(edited(json.loads(path.read_text()), "input_shape", [100_000_000])))
    code, _, err = run_cli(capsys, "evaluate", fitted_mlp_run, "--device", "cpu")
    line = one_error_line(err)
    assert code == 2 and "do not fit the model" in line


# -- weights -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_evaluate_and_predict(fitted_mlp_run, tmp_path, capsys, bad):
    weights = fitted_mlp_run / "model.safetensors"
    state = load_file(str(weights))
    name = next(key for key, tensor in state.items() if tensor.is_floating_point())
    state[name].view(-1)[0] = bad
    save_file(state, str(weights))
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "evaluate", fitted_mlp_run, "--device", "cpu")
    assert code == 2 and "NaN or infinite" in one_error_line(err)
    code, _, err = run_cli(capsys, "predict", fitted_mlp_run, "--input", tmp_path / "in.npy",
                           "--output", tmp_path / "out.npy", "--device", "cpu")
    assert code == 2 and "NaN or infinite" in one_error_line(err)
    assert not (tmp_path / "out.npy").exists() and snapshot(tmp_path) == before


def test_weights_of_another_shape_are_refused(fitted_mlp_run, capsys):
    weights = fitted_mlp_run / "model.safetensors"
    state = load_file(str(weights))
    name = next(iter(state))
    state[name] = torch.zeros(*state[name].shape[:-1], state[name].shape[-1] + 1)
    save_file(state, str(weights))
    code, _, err = run_cli(capsys, "evaluate", fitted_mlp_run, "--device", "cpu")
    assert code == 2 and "do not fit the model" in one_error_line(err)


def test_weights_that_are_a_device_are_refused(fitted_mlp_run, capsys):
    weights = fitted_mlp_run / "model.safetensors"
    weights.unlink()
    weights.symlink_to("/dev/zero")
    code, _, err = run_cli(capsys, "evaluate", fitted_mlp_run, "--device", "cpu")
    assert code == 2 and "not a regular file" in one_error_line(err)
