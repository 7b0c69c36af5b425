"""Whole-dataset files for the CLI: built-in dataset names and .npz archives, as train/test splits."""
import os
import zipfile
from pathlib import Path

import numpy as np

from batchtrain.data.builtin import DATASETS, Splits, load_dataset
from batchtrain.errors import DataError


def load_splits(data: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Splits:
    """A built-in dataset by name, or a .npz file with x_train, y_train (x_test, y_test optional;
    or just x, y). Missing test arrays come back as None. uint8 features are taken as pixels and
    scaled to [0, 1], as for the built-in datasets."""
    if data in DATASETS:
        return load_dataset(data, data_dir=data_dir, download=download)
    path = Path(data)
    if path.suffix != ".npz":
        raise DataError(f"unknown data {data!r}: not a built-in dataset ({', '.join(DATASETS)}) "
                        "and not a .npz file; pass one of those")
    return load_npz(path)


def load_npz(path: Path) -> Splits:
    """Splits from a .npz archive (keys x_train/y_train[/x_test/y_test], or x/y)."""
    try:
        # Our own handle: np.load leaves its file open when the archive is truncated.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise DataError(f"data file {path} not found; check the path") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        # numpy's own message for a non-archive suggests allow_pickle=True: unsafe advice, so not shown.
        raise DataError(f"cannot read data file {path}: not a valid .npz archive; write it with "
                        "numpy.savez(path, x_train=..., y_train=...)") from None
    if "x" in arrays and "x_train" not in arrays:
        arrays["x_train"], arrays["y_train"] = arrays.pop("x"), arrays.pop("y", None)
    for key in ("x_train", "y_train"):
        if arrays.get(key) is None:
            raise DataError(f"data file {path} has no array {key!r} (it has {sorted(arrays)}); "
                            "save it with numpy.savez(path, x_train=..., y_train=...)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"data file {path} must hold both x_test and y_test, or neither")
    return Splits(scale_pixels(arrays["x_train"]), arrays["y_train"],
                  scale_pixels(arrays.get("x_test")), arrays.get("y_test"))


def scale_pixels(x: np.ndarray | None) -> np.ndarray | None:
    """uint8 arrays are pixels: float32 in [0, 1]. Other arrays are returned as they are."""
    if x is not None and x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return x
