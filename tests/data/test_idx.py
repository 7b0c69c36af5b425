"""read_idx / write_idx: round trips, the byte layout, and every malformed-file message."""

import gzip

import numpy as np
import pytest

from batchtrain.data.idx import read_idx, write_idx
from batchtrain.errors import DataError


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("filename", ["values.idx", "values.idx.gz"])
def test_round_trip_keeps_values_shape_and_dtype(tmp_path, dtype, filename):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((5, 4, 3)) * 100).astype(dtype)
    write_idx(tmp_path / filename, array)
    loaded = read_idx(tmp_path / filename)
    assert loaded.dtype == np.dtype(dtype)
    assert loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)


def test_raw_layout_matches_the_idx_spec(tmp_path):
    # LeCun's MNIST page: 00 00 <type> <ndim>, big-endian uint32 sizes, then the values.
    write_idx(tmp_path / "a.idx", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int16))
    expected = bytes.fromhex("0000 0b02 00000002 00000003 0001 0002 0003 0004 0005 0006")
    assert (tmp_path / "a.idx").read_bytes() == expected


def test_gzip_is_written_for_gz_names_and_detected_by_content(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "a.gz", array)
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    # A gzip file without the .gz suffix still reads: detection is by magic, not by name.
    (tmp_path / "renamed").write_bytes((tmp_path / "a.gz").read_bytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "renamed"), array)


def test_result_is_writable(tmp_path):
    write_idx(tmp_path / "a.idx", np.zeros(3, dtype=np.uint8))
    loaded = read_idx(tmp_path / "a.idx")
    loaded[0] = 7  # raises if the array were a view of immutable bytes
    assert loaded[0] == 7


def _idx_bytes(array):
    """Raw IDX bytes of `array`, to corrupt by hand."""
    return b"\0\0\x08" + bytes([array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"<html>404 Not Found</html>", "not an IDX file"),
        (b"\0\0\x07\x01\0\0\0\x01\0", "not an IDX file"),  # type code 07 does not exist
        (b"", "not an IDX file"),
        (b"\0\0\x08\x03\0\0\0\x02", "header is truncated"),  # 3 dims announced, 1 given
        (_idx_bytes(np.zeros((4, 3), np.uint8))[:-1], "payload is truncated"),
        (_idx_bytes(np.zeros((4, 3), np.uint8)) + b"\0", "longer than its header says"),
    ],
)
def test_malformed_file_names_the_file_problem_and_fix(tmp_path, content, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)
    assert "delete it and download again" in str(excinfo.value)


def test_dims_that_disagree_with_payload_report_both_sizes(tmp_path):
    content = bytearray(_idx_bytes(np.zeros((4, 3), np.uint8)))
    content[4:8] = (5).to_bytes(4, "big")  # header now claims 5 rows, payload holds 4
    (tmp_path / "a.idx").write_bytes(bytes(content))
    with pytest.raises(DataError, match=r"dims \(5, 3\) of uint8 need 15 bytes .* the file has 12"):
        read_idx(tmp_path / "a.idx")


def test_truncated_gzip_is_a_data_error(tmp_path):
    compressed = gzip.compress(_idx_bytes(np.arange(1000, dtype=np.uint8) % 251))
    path = tmp_path / "labels.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


def test_missing_file_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match="cannot read the file") as excinfo:
        read_idx(tmp_path / "absent.gz")
    assert "absent.gz" in str(excinfo.value)


@pytest.mark.parametrize("array", [np.zeros(3, np.int64), np.zeros(3, bool), np.float32(1.0)])
def test_write_rejects_what_idx_cannot_hold(tmp_path, array):
    with pytest.raises(DataError, match="cannot write"):
        write_idx(tmp_path / "a.idx", array)
