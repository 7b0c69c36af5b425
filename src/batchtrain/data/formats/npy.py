"""Memory-mapped .npy files: one pair x.npy/y.npy, or a directory of shards paired by name.

Pairing: a file whose name starts with "x" pairs with the file named the same with "y" first
(x.npy with y.npy, x_train.npy with y_train.npy, x-00003.npy with y-00003.npy). Shards are read
in name order. Pieces are blocks of block_rows rows, so a shuffled epoch can visit a large shard
in many places; reading a block from a memory map copies only those rows.

Memory: pages of a memory-mapped file that the process has touched count in its resident set
until they are unmapped, so a plain np.load(mmap_mode="r") of a 10 GiB file grows RSS towards
10 GiB over an epoch (the kernel can reclaim them, but RSS limits and OOM killers see them).
Each block's pages are released with madvise(MADV_DONTNEED) once its rows are copied: RSS stays
at a few blocks. The page cache keeps the data, so a re-read is still fast.
"""
import mmap
from pathlib import Path

import numpy as np

from batchtrain.data.formats.base import (as_feature_array, as_target_array, default_window_rows,
                                          split_rows)
from batchtrain.errors import DataError


class NpyTable:
    """Pairs of memory-mapped x/y .npy shards, read in blocks of block_rows rows."""

    def __init__(self, path: str | Path, block_rows: int | None = None):
        self.name = str(path)
        self.pairs = find_pairs(Path(path))
        self.block_rows = block_rows
        self.feature_names = None
        self._open_all()

    def _open_all(self) -> None:
        arrays = [(_open(x_path), _open(y_path)) for x_path, y_path in self.pairs]
        _check_shards(self.pairs, arrays)
        self.feature_shape = tuple(arrays[0][0].shape[1:])
        self._arrays = arrays
        if self.block_rows is None:  # a sixteenth of the default shuffle window
            self.block_rows = max(default_window_rows(self.feature_shape) // 16, 256)
        self.blocks = [(shard, start, stop) for shard, (x, _) in enumerate(arrays)
                       for start, stop in split_rows(len(x), self.block_rows)]
        self.piece_rows = [stop - start for _, start, stop in self.blocks]

    def read(self, piece: int) -> tuple[np.ndarray, np.ndarray]:
        shard, start, stop = self.blocks[piece]
        x, y = self._arrays[shard]
        where = self.where(piece)
        return (as_feature_array(x.rows(start, stop), where),
                as_target_array(y.rows(start, stop), where))

    def read_targets(self, piece: int) -> np.ndarray:
        shard, start, stop = self.blocks[piece]
        return as_target_array(self._arrays[shard][1].rows(start, stop), self.where(piece))

    def where(self, piece: int) -> tuple[str, int]:
        shard, start, _ = self.blocks[piece]
        return self.pairs[shard][0].name, start

    def __getstate__(self) -> dict:  # worker processes reopen the memory maps
        return {key: value for key, value in self.__dict__.items() if key != "_arrays"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._arrays = [(_open(x_path), _open(y_path)) for x_path, y_path in self.pairs]


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
        raise DataError(f"data path {path} not found; check the path")
    pairs = []
    for x_file in x_files:
        y_file = x_file.with_name("y" + x_file.name[1:])
        if not y_file.is_file():
            raise DataError(f"{x_file} has no targets file {y_file.name} beside it; save the "
                            f"targets of {x_file.name} as {y_file.name}")
        pairs.append((x_file, y_file))
    return pairs


class MappedArray:
    """A memory-mapped .npy array whose rows are copied out and their pages released."""

    def __init__(self, path: Path):
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            shape, fortran_order, dtype = _read_header(handle, version)
            offset = handle.tell()
            size = handle.seek(0, 2)
            if fortran_order:
                raise DataError(f"{path} is stored in Fortran order; save it with "
                                "numpy.save(path, numpy.ascontiguousarray(array))")
            expected = offset + int(np.prod(shape)) * dtype.itemsize
            if size < expected:
                raise ValueError(f"the file has {size} bytes, its header promises {expected}")
            self.map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.shape, self.dtype, self.offset = tuple(shape), dtype, offset
        self.row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        self.array = np.ndarray(self.shape, dtype, buffer=self.map, offset=offset) \
            if self.map is not None and len(shape) else np.empty(shape, dtype)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """A copy of rows [start, stop); their pages leave this process's resident set."""
        rows = np.array(self.array[start:stop])
        if self.map is not None and hasattr(mmap, "MADV_DONTNEED") and self.row_bytes:
            first = (self.offset + start * self.row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
            end = self.offset + stop * self.row_bytes
            self.map.madvise(mmap.MADV_DONTNEED, first, end - first)
        return rows


def _read_header(handle, version: tuple[int, int]) -> tuple:
    """(shape, fortran_order, dtype) from numpy's public header readers."""
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)


def _open(path: Path) -> MappedArray:
    try:
        array = MappedArray(path)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"cannot read {path}: not a complete .npy file ({str(error).splitlines()[0]}); "
                        "the file may be truncated: write it again with numpy.save") from None
    if array.ndim == 0:
        raise DataError(f"{path} holds a single number; save one row per sample")
    if array.dtype.kind not in "iubf":
        raise DataError(f"{path} has dtype {array.dtype}, not numbers; save numeric arrays")
    return array


def _check_shards(pairs: list[tuple[Path, Path]], arrays: list[tuple[np.ndarray, np.ndarray]]) -> None:
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
    if sum(len(x) for x, _ in arrays) == 0:
        raise DataError(f"the .npy shards {[x.name for x, _ in pairs]} hold no rows")


def _listing(path: Path) -> str:
    names = sorted(entry.name for entry in path.iterdir())
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "") if names else "nothing: it is empty"
