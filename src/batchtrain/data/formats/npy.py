""".npy files: one pair x.npy/y.npy, or a directory of shards paired by name.

Pairing: a file whose name starts with "x" pairs with the file named the same with "y" first
(x.npy with y.npy, x_train.npy with y_train.npy, x-00003.npy with y-00003.npy). Shards are read
in name order. Pieces are blocks of block_rows rows, so a shuffled epoch can visit a large shard
in many places.

Reading: only the header is parsed at open; a block's rows are read with plain reads straight
into the shuffle window's buffer (one copy, from the page cache). Memory maps were used before
and cost more: every touched page faults once, counts in the resident set until released, and
the rows are then copied again (measured on 2 cores, 64 float32 features: 0.39 us/row through a
map, 0.06 us/row read into place). The page cache keeps the data, so a re-read is still fast.
"""
import math
import tokenize
from pathlib import Path

import numpy as np

from batchtrain.data.formats.base import (as_feature_array, as_target_array, check_regular_file,
                                          check_rows_finite, default_window_rows, read_rows,
                                          split_rows)
from batchtrain.errors import DataError


class NpyTable:
    """Pairs of x/y .npy shards, read in blocks of block_rows rows."""

    def __init__(self, path: str | Path, block_rows: int | None = None):
        self.name = str(path)
        self.pairs = find_pairs(Path(path))
        arrays = [(_open(x_path), _open(y_path)) for x_path, y_path in self.pairs]
        _check_shards(self.pairs, arrays)
        self._arrays = arrays
        self.feature_names = None
        self.feature_shape = arrays[0][0].shape[1:]
        self.target_shape = arrays[0][1].shape[1:]
        self.target_dtype = np.dtype(np.int64 if arrays[0][1].dtype.kind in "iub" else np.float32)
        if block_rows is None:  # a sixteenth of the default shuffle window
            block_rows = max(default_window_rows(self.feature_shape) // 16, 256)
        self.block_rows = block_rows
        self.blocks = [(shard, start, stop) for shard, (x, _) in enumerate(arrays)
                       for start, stop in split_rows(len(x), block_rows)]
        self.piece_rows = [stop - start for _, start, stop in self.blocks]

    def read(self, piece: int) -> tuple[np.ndarray, np.ndarray]:
        return read_rows(self, piece)

    def read_into(self, piece: int, first: int, end: int, x_out: np.ndarray, y_out: np.ndarray) -> None:
        shard, start, _ = self.blocks[piece]
        x, y = self._arrays[shard]
        where = self.where(piece)
        where = (where[0], where[1] + first)
        if x.dtype == np.float32:  # the common case: straight into the window, checked there
            x.rows(start + first, start + end, out=x_out)
            check_rows_finite(x_out, where, "a feature")
        else:
            x_out[...] = as_feature_array(x.rows(start + first, start + end), where)
        y_out[...] = as_target_array(y.rows(start + first, start + end), where)

    def read_targets(self, piece: int) -> np.ndarray:
        shard, start, stop = self.blocks[piece]
        return as_target_array(self._arrays[shard][1].rows(start, stop), self.where(piece))

    def where(self, piece: int) -> tuple[str, int]:
        shard, start, _ = self.blocks[piece]
        return self.pairs[shard][0].name, start


def find_pairs(path: Path) -> list[tuple[Path, Path]]:
    """(x, y) file pairs at `path`: a directory of shards, or one x file with its y sibling."""
    if path.is_dir():
        x_files = sorted(file for file in path.glob("x*.npy"))
        if not x_files:
            raise DataError(f"{path} holds no x*.npy files (found {_listing(path)}); write "
                            "features as x.npy or x-00000.npy ... and targets as y.npy or y-00000.npy")
    elif path.is_file():
        if not path.name.startswith("x"):
            raise DataError(f"{path}: name the features file x*.npy (e.g. x.npy) and put the targets "
                            "beside it as y*.npy (y.npy), or pass the directory")
        x_files = [path]
    else:
        check_regular_file(path)
        raise DataError(f"data path {path} not found; check the path")
    pairs = []
    for x_file in x_files:
        y_file = x_file.with_name("y" + x_file.name[1:])
        check_regular_file(x_file)
        check_regular_file(y_file)
        if not y_file.is_file():
            raise DataError(f"{x_file} has no targets file {y_file.name} beside it; save the "
                            f"targets of {x_file.name} as {y_file.name}")
        pairs.append((x_file, y_file))
    return pairs


class NpyFile:
    """A .npy file's header (shape, dtype, where the data starts); rows read on demand."""

    def __init__(self, path: Path):
        with open(path, "rb") as handle:
            shape, fortran_order, dtype = read_npy_header(handle)
            offset = handle.tell()
            size = handle.seek(0, 2)
        if fortran_order:
            raise DataError(f"{path} is stored in Fortran order; save it with "
                            "numpy.save(path, numpy.ascontiguousarray(array))")
        # Before the size check: a pickled (object) array is shorter than its header's count.
        check_npy_header(path, shape, dtype)
        expected = offset + int(np.prod(shape)) * dtype.itemsize
        if size < expected:
            raise ValueError(f"the file has {size} bytes, its header promises {expected}")
        self.path, self.shape, self.dtype, self.offset = path, tuple(shape), dtype, offset
        self.row_bytes = int(np.prod(shape[1:])) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows [start, stop) in the file's dtype, read into `out` (C-contiguous) when given."""
        if out is None:
            out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        view = memoryview(out).cast("B")
        with open(self.path, "rb", buffering=0) as handle:
            handle.seek(self.offset + start * self.row_bytes)
            done = 0
            while done < len(view):
                count = handle.readinto(view[done:])
                if not count:
                    raise DataError(f"{self.path} ended while reading rows {start}-{stop}; the "
                                    "file was truncated after opening: write it again")
                done += count
        return out


def read_npy_header(handle) -> tuple:
    """(shape, fortran_order, dtype) of the .npy data at a file's position, from numpy's public
    header readers; the handle is left where the data starts."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        read = np.lib.format.read_array_header_1_0
    else:
        read = np.lib.format.read_array_header_2_0
    try:
        return read(handle)
    except (SyntaxError, tokenize.TokenError) as error:  # numpy parses the header as Python
        raise ValueError(f"the header is not a valid .npy header ({error})") from None


def check_npy_header(path: Path | str, shape: tuple, dtype: np.dtype) -> None:
    """Raise DataError for a header no numeric sample array has: pickled objects, text,
    complex numbers, no rows, or negative sizes (a damaged or hand-made header)."""
    if dtype.hasobject:
        raise DataError(f"{path} holds pickled Python objects (dtype object), which batchtrain "
                        "never loads (unpickling can run code); save numeric arrays instead, "
                        "e.g. numpy.asarray(values, dtype=numpy.float32)")
    if dtype.kind == "c":
        raise DataError(f"{path} has dtype {dtype}: complex values are not supported; store the "
                        "real and imaginary parts as separate real features")
    if dtype.kind not in "iubf":
        raise DataError(f"{path} has dtype {dtype}, not numbers; save numeric arrays")
    if len(shape) == 0:
        raise DataError(f"{path} holds a single number; save one row per sample")
    if any(size < 0 for size in shape):
        raise DataError(f"{path} has a damaged header: shape {tuple(shape)} has a negative size; "
                        "write the file again with numpy.save")


def _open(path: Path) -> NpyFile:
    try:
        return NpyFile(path)
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"cannot read {path}: not a complete .npy file ({str(error).splitlines()[0]}); "
                        "the file may be truncated: write it again with numpy.save") from None


def _check_shards(pairs: list[tuple[Path, Path]], arrays: list[tuple[NpyFile, NpyFile]]) -> None:
    """Every pair has one target per sample; every shard has the first shard's shapes and dtypes."""
    first_x, first_y = arrays[0]
    for (x_path, y_path), (x, y) in zip(pairs, arrays):
        if len(x) != len(y):
            raise DataError(f"{x_path.name} has {len(x)} rows but {y_path.name} has {len(y)}; "
                            "each features shard needs exactly one target per row")
        for name, path, array, first in (("x", x_path, x, first_x), ("y", y_path, y, first_y)):
            if array.shape[1:] != first.shape[1:] or array.dtype != first.dtype:
                raise DataError(
                    f"shards have mismatched {name} arrays: {path.name} is {array.dtype} with rows "
                    f"of shape {array.shape[1:]}, {pairs[0][0 if name == 'x' else 1].name} is "
                    f"{first.dtype} with rows of shape {first.shape[1:]}; write every shard alike")
    if math.prod(first_x.shape[1:]) == 0:
        raise DataError(f"{pairs[0][0].name} has samples of shape {first_x.shape[1:]}: no features; "
                        "save at least one feature per sample")
    if sum(len(x) for x, _ in arrays) == 0:
        raise DataError(f"the .npy shards {[x.name for x, _ in pairs]} hold no rows")


def _listing(path: Path) -> str:
    names = sorted(entry.name for entry in path.iterdir())
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "") if names else "nothing: it is empty"
