"""IDX files: the format of MNIST and Fashion-MNIST, gzipped or raw.

Layout (LeCun's MNIST page): a 4-byte magic `00 00 <dtype code> <ndim>`, then `ndim` big-endian
uint32 sizes, then the values, big-endian and row-major. The payload must hold exactly
prod(sizes) values: anything else means a truncated download or a file of another kind.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from batchtrain.errors import DataError

# IDX type code -> big-endian numpy dtype.
_DTYPE_BY_CODE = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# "u1", "f4", ... (kind and size, byte order ignored) -> IDX type code, for writing.
_CODE_BY_KIND = {f"{dtype.kind}{dtype.itemsize}": code for code, dtype in _DTYPE_BY_CODE.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_REFETCH_HINT = "delete it and download again"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file into an array of its stored shape and dtype (native byte order).

    Args:
        path: the file. Gzip compression is detected from the content, not the name,
            so `train-images-idx3-ubyte` and `train-images-idx3-ubyte.gz` both work.

    Raises:
        DataError: the file is unreadable, not IDX, or its payload length disagrees with
            its header; the message names the file, the problem and the fix.
    """
    path = Path(path)
    content = _read_bytes(path)
    dtype, dims, header_bytes = _parse_header(content, path)
    expected_bytes = math.prod(dims) * dtype.itemsize
    payload_bytes = len(content) - header_bytes
    if payload_bytes != expected_bytes:
        problem = "truncated" if payload_bytes < expected_bytes else "longer than its header says"
        raise DataError(
            f"{path}: IDX payload is {problem}: header dims {dims} of {dtype.name} need "
            f"{expected_bytes} bytes after the {header_bytes}-byte header, the file has "
            f"{payload_bytes}; {_REFETCH_HINT}"
        )
    values = np.frombuffer(content, dtype=dtype, offset=header_bytes).reshape(dims)
    # astype copies into native byte order, which also makes the result writable.
    return values.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzip-compressed when `path` ends in `.gz`.

    Args:
        path: destination file; overwritten if present.
        array: uint8, int8, int16, int32, float32 or float64 values, 1 to 255 dimensions.
            The gzip header's timestamp is zeroed so equal arrays give equal bytes.

    Raises:
        DataError: the dtype or shape cannot be stored in IDX.
    """
    array = np.asarray(array)
    code = _CODE_BY_KIND.get(f"{array.dtype.kind}{array.dtype.itemsize}")
    if code is None:
        raise DataError(
            f"cannot write {array.dtype} to IDX {path}: IDX holds uint8, int8, int16, int32, "
            f"float32 or float64; convert first, e.g. array.astype(np.int32)"
        )
    if not 1 <= array.ndim <= 255 or max(array.shape) >= 2**32:
        raise DataError(
            f"cannot write shape {array.shape} to IDX {path}: IDX needs 1 to 255 dimensions, "
            f"each under 2**32"
        )
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    content = header + array.astype(_DTYPE_BY_CODE[code]).tobytes(order="C")
    if str(path).endswith(".gz"):
        content = gzip.compress(content, compresslevel=6, mtime=0)
    Path(path).write_bytes(content)


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed if it starts with the gzip magic."""
    try:
        content = path.read_bytes()
        if content[:2] == _GZIP_MAGIC:
            content = gzip.decompress(content)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        # EOFError: the gzip stream ends early, the usual sign of an interrupted download.
        raise DataError(f"{path}: corrupt or truncated gzip data ({err}); {_REFETCH_HINT}") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror or err})") from err
    return content


def _parse_header(content: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, dims, header length in bytes) from an IDX file's first bytes."""
    if len(content) < 4 or content[:2] != b"\0\0" or content[2] not in _DTYPE_BY_CODE:
        raise DataError(
            f"{path}: not an IDX file: magic bytes {content[:4].hex(' ') or '(empty)'}, expected "
            f"00 00 <type 08/09/0b/0c/0d/0e> <ndim>; {_REFETCH_HINT}"
        )
    dtype, ndim = _DTYPE_BY_CODE[content[2]], content[3]
    header_bytes = 4 + 4 * ndim
    if ndim == 0 or len(content) < header_bytes:
        raise DataError(
            f"{path}: IDX header is truncated or invalid: {ndim} dimensions need a "
            f"{header_bytes}-byte header, the file has {len(content)} bytes; {_REFETCH_HINT}"
        )
    dims = struct.unpack(f">{ndim}I", content[4:header_bytes])
    return dtype, dims, header_bytes
