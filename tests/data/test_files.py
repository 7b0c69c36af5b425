"""Whole-dataset files (.npz) and predict's inputs: every array checked as it is loaded."""
import io
import re
import zipfile

import numpy as np
import pytest

from batchtrain.data.files import load_inputs, load_splits
from batchtrain.errors import DataError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(10, 4)).astype(np.float32)
Y = np.arange(10) % 3


def npz(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_an_object_array_is_named_as_such_not_as_a_broken_archive(tmp_path):
    path = npz(tmp_path, x_train=X, y_train=np.array([None, "a"] * 5, dtype=object))
    with pytest.raises(DataError, match=re.escape(
            f"array 'y_train' of {path} holds pickled Python objects (dtype object), which "
            "batchtrain never loads")) as error:
        load_splits(str(path))
    assert "not a valid .npz archive" not in str(error.value)


def test_an_array_with_a_negative_size_in_its_header_is_named(tmp_path):
    member = io.BytesIO()
    np.save(member, X)
    path = npz(tmp_path, y_train=Y)
    with zipfile.ZipFile(path, "a") as archive:  # a hand-made header: numpy would not write it
        archive.writestr("x_train.npy", member.getvalue().replace(b"(10, 4)", b"(-1, 4)"))
    with pytest.raises(DataError, match=re.escape(
            f"array 'x_train' of {path} has a damaged header: shape (-1, 4) has a negative size")):
        load_splits(str(path))


def test_float16_features_load_and_complex_ones_are_refused(tmp_path):
    splits = load_splits(str(npz(tmp_path, x_train=X.astype(np.float16), y_train=Y)))
    assert splits.x_train.shape == X.shape
    path = npz(tmp_path, "complex.npz", x_train=X.astype(np.complex64), y_train=Y)
    with pytest.raises(DataError, match=re.escape(
            f"array 'x_train' of {path} has dtype complex64: complex values are not supported; "
            "store the real and imaginary parts as separate real features")):
        load_splits(str(path))


@pytest.mark.parametrize("x_test, y_test, message", [
    (X[:5], Y[:4], "x_test has 5 samples but y_test has 4; save exactly one target per sample"),
    (np.where(np.arange(20).reshape(5, 4) == 6, np.nan, X[:5]), Y[:5],
     "x_test contains NaN or infinite values (1 samples, first at index 1)"),
    (X[:5, :3], Y[:5], "x_test has samples of shape (3,) but x_train (4,); save test samples "
                       "shaped like the training samples"),
    (X[:5], RNG.normal(size=(5, 2)), "y_test has targets of shape (2,) per sample but y_train ()"),
    (X[:0], Y[:0], "x_test is empty (0 samples)"),
], ids=["length-mismatch", "nan", "feature-shape", "target-shape", "empty"])
def test_bad_test_arrays_are_refused_at_load_time(tmp_path, x_test, y_test, message):
    path = npz(tmp_path, x_train=X, y_train=Y, x_test=x_test, y_test=y_test)
    with pytest.raises(DataError, match=re.escape(f"{path}: {message}")):
        load_splits(str(path))


def test_bad_training_arrays_are_refused_at_load_time(tmp_path):
    path = npz(tmp_path, x_train=X, y_train=Y[:9])
    with pytest.raises(DataError, match=re.escape(f"{path}: x_train has 10 samples but y_train has 9")):
        load_splits(str(path))


def test_good_test_arrays_load_with_labels_or_one_hot_rows(tmp_path):
    path = npz(tmp_path, x_train=X, y_train=Y, x_test=X[:3], y_test=np.eye(3)[Y[:3]])
    splits = load_splits(str(path))
    assert splits.x_test.shape == (3, 4) and splits.y_test.shape == (3, 3)


@pytest.mark.parametrize("arrays, expected", [
    ({"x_train": X, "y_train": Y, "x_test": X[:3], "y_test": Y[:3]}, X[:3]),
    ({"x": X[:4]}, X[:4]),
    ({"samples": X[:2]}, X[:2]),
], ids=["x_test", "x", "only-array"])
def test_predict_inputs_from_a_npz(tmp_path, arrays, expected):
    np.testing.assert_array_equal(load_inputs(npz(tmp_path, **arrays)), expected)


def test_predict_inputs_from_a_npz_without_a_known_key_are_refused(tmp_path):
    path = npz(tmp_path, a=X, b=X)
    with pytest.raises(DataError, match=re.escape(
            f"input file {path} holds the arrays 'a', 'b'; predict reads x_test or x (or a file's "
            "only array): save the samples under one of those names")):
        load_inputs(path)


def test_predict_inputs_scale_pixels_and_refuse_objects(tmp_path):
    pixels = np.full((2, 3), 255, dtype=np.uint8)
    np.save(tmp_path / "x.npy", pixels)
    np.testing.assert_array_equal(load_inputs(tmp_path / "x.npy"), np.ones((2, 3), np.float32))
    np.save(tmp_path / "o.npy", np.array([None] * 3, dtype=object))
    with pytest.raises(DataError, match="holds pickled Python objects"):
        load_inputs(tmp_path / "o.npy")


def test_samples_without_features_are_refused(tmp_path):
    path = npz(tmp_path, x_train=np.zeros((10, 0), np.float32), y_train=Y)
    with pytest.raises(DataError, match=re.escape(
            f"{path}: x_train has samples of shape (0,): no features; save at least one feature")):
        load_splits(str(path))


def test_a_member_claiming_more_data_than_it_holds_is_refused_before_allocating(tmp_path):
    member = io.BytesIO()
    np.save(member, X)
    path = npz(tmp_path, y_train=Y)
    with zipfile.ZipFile(path, "a") as archive:  # 10**12 rows claimed, 10 held
        archive.writestr("x_train.npy", member.getvalue().replace(b"(10, 4)", b"(1000000000000, 4)"))
    with pytest.raises(DataError, match=re.escape(
            f"array 'x_train' of {path} is damaged: its header promises 16000000000128 bytes, the "
            "file holds ") + r"\d{3}; write it again"):
        load_splits(str(path))


def test_a_link_to_a_device_is_named_not_read(tmp_path):
    for name, load in (("data.npz", lambda path: load_splits(str(path))), ("x.npy", load_inputs)):
        (tmp_path / name).symlink_to("/dev/zero")
        with pytest.raises(DataError, match=re.escape(f"{tmp_path / name} is not a regular file")):
            load(tmp_path / name)


def test_predict_inputs_claiming_more_rows_than_held_are_refused(tmp_path):
    member = io.BytesIO()
    np.save(member, X)
    (tmp_path / "x.npy").write_bytes(member.getvalue().replace(b"(10, 4)", b"(1000000000000, 4)"))
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'x.npy'} is damaged: its header "
                                                  "promises 16000000000128 bytes")):
        load_inputs(tmp_path / "x.npy")
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(DataError, match="empty.npz holds no arrays; predict reads x_test or x"):
        load_inputs(tmp_path / "empty.npz")
