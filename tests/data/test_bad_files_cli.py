"""Bad data files through the command line (issue 14): each is refused with exit status 2 and one
line on stderr naming the file and the fix, without a traceback and without changing any file
already on disk; the valid inputs among them train or predict."""
import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import run_cli

pytestmark = pytest.mark.usefixtures("single_thread")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(24, 4)).astype(np.float32)
Y = np.arange(24) % 3
FIT = ("--model", "mlp", "--epochs", "1", "--batch-size", "8", "--progress", "none", "--seed", "0")


def hashes(root):
    return {path: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def refused(capsys, root, *argv) -> str:
    """Run `batchtrain argv...`; check it failed as bad input should, files under root unchanged."""
    before = hashes(root)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    after = hashes(root)
    assert all(after.get(path) == digest for path, digest in before.items())
    return err.strip()


def fit_refused(capsys, tmp_path, data, *flags) -> str:
    return refused(capsys, tmp_path, "fit", "--data", data, "--output", tmp_path / "run", *FIT, *flags)


def npz(tmp_path, **arrays):
    np.savez(tmp_path / "data.npz", **arrays)
    return tmp_path / "data.npz"


def test_unsigned_labels_in_a_column_train_as_classes(capsys, tmp_path):
    path = npz(tmp_path, x_train=X.astype(np.float16), y_train=Y.astype(np.uint16).reshape(-1, 1))
    code, _, err = run_cli(capsys, "fit", "--data", path, "--output", tmp_path / "run", *FIT)
    assert code == 0, err
    task = json.loads((tmp_path / "run" / "model.json").read_text())["task"]
    assert (task["kind"], task["n_outputs"]) == ("multiclass", 3)


@pytest.mark.parametrize("make, flags, message", [
    (lambda d: npz(d, x_train=X, y_train=np.where(Y == 2, 10**8, Y)), (),
     "the largest label is 100000000, which asks for 100000001 classes"),
    (lambda d: npz(d, x_train=X.astype(np.complex64), y_train=Y), (),
     "data.npz has dtype complex64: complex values are not supported"),
    (lambda d: npz(d, x_train=X, y_train=Y.astype(object)), (),
     "data.npz holds pickled Python objects (dtype object)"),
    (lambda d: npz(d, x_train=X, y_train=Y, x_test=X[:5], y_test=Y[:4]), (),
     "data.npz: x_test has 5 samples but y_test has 4"),
    (lambda d: npz(d, x_train=X, y_train=Y, x_test=X[:5, :2], y_test=Y[:5]), (),
     "data.npz: x_test has samples of shape (2,) but x_train (4,)"),
    (lambda d: npz(d, x_train=X, y_train=Y, x_test=np.full((5, 4), np.nan), y_test=Y[:5]), (),
     "data.npz: x_test contains NaN or infinite values"),
], ids=["label-1e8", "complex", "object", "test-length", "test-shape", "test-nan"])
def test_bad_npz_data(capsys, tmp_path, make, flags, message):
    assert message in fit_refused(capsys, tmp_path, make(tmp_path), *flags)


def test_bad_test_data_is_refused_before_a_run_directory_is_made(capsys, tmp_path):
    path = npz(tmp_path, x_train=X, y_train=Y, x_test=X[:5], y_test=Y[:4])
    fit_refused(capsys, tmp_path, path)
    assert not (tmp_path / "run").exists()


def write_table(path, columns, names=None):
    arrays = [pa.array(values) for values in columns]
    pq.write_table(pa.Table.from_arrays(arrays, names=names or [f"c{i}" for i in range(len(arrays))]),
                   path)
    return path


def csv_text(header, rows=24):
    return header + "\n" + "".join(f"{X[i, 0]},{X[i, 1]},{Y[i]}\n" for i in range(rows))


@pytest.mark.parametrize("name, write, message", [
    ("big.parquet", lambda p: write_table(p, [X[:, 0], np.where(Y == 2, 2**62, Y)], ["f0", "label"]),
     f"the largest label is {2**62}"),
    ("dup.parquet", lambda p: write_table(p, [X[:, 0], X[:, 1], Y], ["f0", "f0", "label"]),
     "dup.parquet has 2 columns named 'f0'; give every column its own name"),
    ("dup.csv", lambda p: p.write_text(csv_text("f0,f0,label")),
     "dup.csv has 2 columns named 'f0'; give every column its own name"),
    ("latin.csv", lambda p: p.write_bytes(csv_text("f0,fé,label").encode("latin-1")),
     "latin.csv: the header is not UTF-8 text (byte 0xe9 at position 4); save the file as UTF-8"),
    ("quoted.csv", lambda p: p.write_text(csv_text("f0,f1,label").replace(f"{X[3, 1]},", f'"{X[3, 1]}\n",')),
     "quoted.csv row 3: a quoted value holds a line break"),
], ids=["label-2**62", "duplicate-parquet", "duplicate-csv", "not-utf8", "quoted-line-break"])
def test_bad_tables(capsys, tmp_path, name, write, message):
    write(tmp_path / name)
    assert message in fit_refused(capsys, tmp_path, tmp_path / name, "--target", "label")


def test_a_csv_with_a_byte_order_mark_trains(capsys, tmp_path):
    (tmp_path / "bom.csv").write_text(csv_text("f0,f1,label"), encoding="utf-8-sig")
    code, _, err = run_cli(capsys, "fit", "--data", tmp_path / "bom.csv", "--target", "label",
                           "--output", tmp_path / "run", *FIT)
    assert code == 0, err


def test_a_negative_npy_shape_is_named(capsys, tmp_path):
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    (tmp_path / "x.npy").write_bytes((tmp_path / "x.npy").read_bytes().replace(b"(24, 4)", b"(-1, 4)"))
    line = fit_refused(capsys, tmp_path, tmp_path / "x.npy")
    assert "x.npy has a damaged header: shape (-1, 4) has a negative size" in line


def test_predict_reads_a_npz(capsys, fitted_run, tmp_path):
    images = RNG.integers(0, 255, (3, 1, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "inputs.npz", x=images)
    code, _, err = run_cli(capsys, "predict", fitted_run[0], "--input", tmp_path / "inputs.npz",
                           "--output", tmp_path / "p.npy")
    assert code == 0, err
    assert np.load(tmp_path / "p.npy").shape == (3, 10)


def test_predict_refuses_a_npz_without_known_keys(capsys, fitted_run, tmp_path):
    np.savez(tmp_path / "inputs.npz", a=X, b=X)
    line = refused(capsys, tmp_path, "predict", fitted_run[0], "--input", tmp_path / "inputs.npz",
                   "--output", tmp_path / "p.npy")
    assert "holds the arrays 'a', 'b'; predict reads x_test or x" in line
    assert not (tmp_path / "p.npy").exists()


def test_streamed_test_data_is_read_by_column_name_and_checked_before_training(capsys, tmp_path):
    """--test-data with its columns in another order evaluates right; one lacking a training
    column is refused before anything is written."""
    train = write_table(tmp_path / "train.parquet", [X[:, 0], X[:, 1], Y], ["f0", "f1", "label"])
    reordered = write_table(tmp_path / "reordered.parquet", [Y, X[:, 1], X[:, 0]],
                            ["label", "f1", "f0"])
    lacking = write_table(tmp_path / "lacking.parquet", [X[:, 0], Y], ["f0", "label"])
    message = fit_refused(capsys, tmp_path, train, "--target", "label", "--test-data", lacking)
    assert "lacking.parquet" in message and "f1" in message
    assert not (tmp_path / "run").exists()
    runs = {}
    for name, test in (("same", train), ("reordered", reordered)):
        code, _, err = run_cli(capsys, "fit", "--data", train, "--target", "label", "--test-data",
                               test, "--output", tmp_path / name, *FIT)
        assert code == 0, err
        runs[name] = json.loads((tmp_path / name / "test.json").read_text())
    assert runs["same"]["test_loss"] == runs["reordered"]["test_loss"]
