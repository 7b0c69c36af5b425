"""Whole-dataset files for the CLI: built-in dataset names and .npz archives, as train/test splits,
and the samples `predict` reads (.npy, .npz). Every array is checked when it is loaded, test
arrays included, so that bad data is refused before any training step rather than after it."""
import math
import os
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from torch import Tensor

from batchtrain.data.arrays import as_features, as_tensor, check_finite
from batchtrain.data.builtin import DATASETS, Splits, load_dataset
from batchtrain.data.formats.base import check_regular_file
from batchtrain.data.formats.npy import check_npy_header, read_npy_header
from batchtrain.errors import DataError

TRAIN_KEYS = ("x_train", "y_train")
TEST_KEYS = ("x_test", "y_test")
PREDICT_KEYS = ("x_test", "x")  # the samples predict takes from a .npz, in this order
# What numpy and zipfile raise for a damaged file (zlib.error is not an OSError).
UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def load_splits(data: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Splits:
    """A built-in dataset by name, or a .npz file with x_train, y_train (x_test, y_test optional;
    or just x, y). Missing test arrays come back as None. uint8 features are taken as pixels and
    scaled to [0, 1], as for the built-in datasets."""
    if data in DATASETS:  # checked structurally as they load (IDX headers, counts, labels)
        return load_dataset(data, data_dir=data_dir, download=download)
    path = Path(data)
    if path.suffix != ".npz":
        raise DataError(f"unknown data {data!r}: not a built-in dataset ({', '.join(DATASETS)}) "
                        "and not a .npz file; pass one of those")
    return check_splits(load_npz(path), path)


def load_npz(path: Path) -> Splits:
    """Splits from a .npz archive (keys x_train/y_train[/x_test/y_test], or x/y)."""
    with open_npz(path) as archive:
        keys = list(archive.files)
        roles = {"x_train": "x", "y_train": "y"} if "x" in keys and "x_train" not in keys else {}
        roles.update({key: key for key in (*TRAIN_KEYS, *TEST_KEYS) if key in keys})
        for role in TRAIN_KEYS:
            if role not in roles:
                raise DataError(f"data file {path} has no array {role!r} (it has {_listing(keys)}); "
                                "save it with numpy.savez(path, x_train=..., y_train=...)")
        if ("x_test" in roles) != ("y_test" in roles):
            raise DataError(f"data file {path} must hold both x_test and y_test, or neither")
        arrays = {role: read_member(archive, key, path) for role, key in roles.items()}
    return Splits(scale_pixels(arrays["x_train"]), arrays["y_train"],
                  scale_pixels(arrays.get("x_test")), arrays.get("y_test"))


def load_inputs(path: Path) -> np.ndarray:
    """The samples to predict on: a .npy file, or from a .npz its x_test, else x, else its only
    array; uint8 pixels scaled to [0, 1] as for training."""
    if path.suffix == ".npz":
        with open_npz(path, role="input file", example="x=...") as archive:
            keys = list(archive.files)
            key = next((key for key in PREDICT_KEYS if key in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise DataError(f"input file {path} holds {_listing(keys)}; predict reads "
                                f"{' or '.join(PREDICT_KEYS)} (or a file's only array): save the "
                                "samples under one of those names")
            return scale_pixels(read_member(archive, key, path))
    check_regular_file(path)
    try:
        with open(path, "rb") as handle:
            shape, dtype = _shape_and_dtype(handle)
            check_npy_header(path, shape, dtype)
            _check_size(str(path), shape, dtype, handle.tell(), os.fstat(handle.fileno()).st_size)
            handle.seek(0)
            return scale_pixels(np.load(handle, allow_pickle=False))
    except FileNotFoundError:
        raise DataError(f"input file {path} not found; check the path") from None
    except DataError:
        raise
    except UNREADABLE as error:
        raise DataError(f"cannot read input file {path}: {str(error).splitlines()[0][:200]}; pass "
                        "a .npy file written by numpy.save, or a .npz by numpy.savez") from None


@contextmanager
def open_npz(path: Path, role: str = "data file", example: str = "x_train=..., y_train=..."):
    """np.load's archive of a .npz file; every error while it is open becomes a DataError.

    role: what the file is called in messages; example: numpy.savez's arguments in the fix."""
    check_regular_file(path)
    try:
        # Our own handle: np.load leaves its file open when the archive is truncated.
        with open(path, "rb") as handle:
            archive = np.load(handle, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy file named .npz
                raise ValueError("a single array, not an archive")
            with archive:
                yield archive
    except FileNotFoundError:
        raise DataError(f"{role} {path} not found; check the path") from None
    except DataError:
        raise
    except UNREADABLE:
        # numpy's own message for a non-archive suggests allow_pickle=True: unsafe advice, so not shown.
        raise DataError(f"cannot read {role} {path}: not a valid .npz archive; write it with "
                        f"numpy.savez(path, {example})") from None


def read_member(archive, key: str, path: Path) -> np.ndarray:
    """One array of an open .npz archive, its header checked before its data is read (an
    object array would otherwise be reported as a damaged archive)."""
    name = key if key in archive.zip.namelist() else f"{key}.npy"
    what = f"array {key!r} of {path}"
    with archive.zip.open(name) as member:
        try:
            shape, dtype = _shape_and_dtype(member)
        except ValueError:  # numpy's: no .npy magic or header (zip damage is for open_npz)
            raise DataError(f"{what} is not a .npy array; save arrays with "
                            "numpy.savez(path, x_train=..., y_train=...)") from None
        data_start = member.tell()
    check_npy_header(what, shape, dtype)
    _check_size(what, shape, dtype, data_start, archive.zip.getinfo(name).file_size)
    return archive[key]


def _check_size(what: str, shape: tuple, dtype: np.dtype, data_start: int, held: int) -> None:
    """Raise DataError if the data a .npy header promises is not there, before numpy allocates
    it (a header claiming 10**12 rows was a MemoryError)."""
    promised = data_start + math.prod(shape) * dtype.itemsize
    if held < promised:
        raise DataError(f"{what} is damaged: its header promises {promised} bytes, the file "
                        f"holds {held}; write it again with numpy.save or numpy.savez")


def check_splits(splits: Splits, path: Path) -> Splits:
    """The splits, after checking each array and that the test arrays fit the training ones:
    numeric, one target per sample, finite, with samples of the same shape."""
    x_train, y_train = _checked_pair(splits.x_train, splits.y_train, TRAIN_KEYS, path)
    if splits.x_test is None:
        return splits
    x_test, y_test = _checked_pair(splits.x_test, splits.y_test, TEST_KEYS, path)
    if x_test.shape[1:] != x_train.shape[1:]:
        raise DataError(f"{path}: x_test has samples of shape {tuple(x_test.shape[1:])} but "
                        f"x_train {tuple(x_train.shape[1:])}; save test samples shaped like the "
                        "training samples")
    if not _targets_compatible(y_train, y_test):
        raise DataError(f"{path}: y_test has targets of shape {tuple(y_test.shape[1:])} per sample "
                        f"but y_train {tuple(y_train.shape[1:])}; save test targets shaped like "
                        "the training targets")
    return splits


def _checked_pair(x: np.ndarray, y: np.ndarray, keys: tuple[str, str], path: Path) -> tuple:
    features, targets = as_features(x, f"{path}: {keys[0]}"), as_tensor(y, f"{path}: {keys[1]}")
    if len(features) == 0:
        raise DataError(f"{path}: {keys[0]} is empty (0 samples); save at least one sample")
    if features[0].numel() == 0:
        raise DataError(f"{path}: {keys[0]} has samples of shape {tuple(features.shape[1:])}: no "
                        "features; save at least one feature per sample")
    if len(features) != len(targets):
        raise DataError(f"{path}: {keys[0]} has {len(features)} samples but {keys[1]} has "
                        f"{len(targets)}; save exactly one target per sample")
    check_finite(features, f"{path}: {keys[0]}")
    check_finite(targets, f"{path}: {keys[1]}")
    return features, targets


def _targets_compatible(y_train: Tensor, y_test: Tensor) -> bool:
    """As many values per sample; or labels (one per sample) against one-hot rows."""
    train_values, test_values = math.prod(y_train.shape[1:]), math.prod(y_test.shape[1:])
    if train_values == test_values:
        return True
    rows = y_train if train_values > test_values else y_test
    if min(train_values, test_values) != 1 or rows.dim() != 2:
        return False
    return bool(((rows == 0) | (rows == 1)).all() and (rows.sum(dim=1) == 1).all())


def _shape_and_dtype(handle) -> tuple[tuple, np.dtype]:
    shape, _, dtype = read_npy_header(handle)
    return shape, dtype


def _listing(keys: list[str]) -> str:
    if not keys:
        return "no arrays"
    return "the arrays " + ", ".join(repr(key) for key in keys[:8]) + (" ..." if len(keys) > 8 else "")


def scale_pixels(x: np.ndarray | None) -> np.ndarray | None:
    """uint8 arrays are pixels: float32 in [0, 1]. Other arrays are returned as they are."""
    if x is not None and x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return x
