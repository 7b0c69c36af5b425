"""Malformed streamed data: each error names the file, row or column, and the fix."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchtrain.data import open_dataset
from batchtrain.data.dataset import check_test_data
from batchtrain.data.iterator import BatchIterator
from batchtrain.errors import DataError
from stream_files import as_table, numbered, write_layout


def read_everything(source):
    for _ in BatchIterator(source, 64, False).epoch(0):
        pass


def test_missing_target_column_lists_the_columns(tmp_path):
    path = write_layout(tmp_path, "parquet")
    with pytest.raises(DataError, match=r"column 'price' not found in data.parquet; its columns are "
                                        r"'f0', 'f1', 'f2', 'label'"):
        open_dataset(path, "price")


def test_no_target_named_for_a_table(tmp_path):
    with pytest.raises(DataError, match="name the target column with --target"):
        open_dataset(write_layout(tmp_path, "csv"))


def test_non_numeric_column_is_named(tmp_path):
    table = as_table(*numbered(10)).append_column("city", pa.array(["x"] * 10))
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(DataError, match="column 'city' in t.parquet holds string, not numbers; "
                                        "choose the feature columns with --features"):
        open_dataset(tmp_path / "t.parquet", "label")
    source = open_dataset(tmp_path / "t.parquet", "label", features=["f0", "f1"])
    assert source.sample_shape == (2,)


def test_non_numeric_value_deep_in_a_csv_names_row_and_column(tmp_path):
    lines = ["f0,f1,label"] + [f"{i},{i * 2},{i % 3}" for i in range(3000)]
    lines[2501] = "2500,abc,1"
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"d.csv row 2500: column 'f1' holds 'abc', not a number"):
        read_everything(open_dataset(tmp_path / "d.csv", "label", standardize=False))
    # past the first MiB, where column types are inferred: found when its piece is read
    lines = ["f0,f1,label"] + [f"{i},{i * 2},{i % 3}" for i in range(200_000)]
    lines[150_001] = "150000,abc,1"
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    source = open_dataset(tmp_path / "big.csv", "label", standardize=False)
    with pytest.raises(DataError, match=r"big.csv row 150000: column 'f1' holds 'abc', not a number"):
        read_everything(source)


def test_ragged_csv_names_the_row(tmp_path):
    lines = ["f0,f1,label"] + [f"{i},{i},{i % 2}" for i in range(100)]
    lines[41] = "40,1"
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"r.csv row 40: 2 fields where the header has 3; the file is "
                                        "ragged or truncated"):
        read_everything(open_dataset(tmp_path / "r.csv", "label", standardize=False))


def test_truncated_csv_names_its_last_row(tmp_path):
    path = write_layout(tmp_path, "csv", rows=200)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 12])  # cut inside the last row
    with pytest.raises(DataError, match=r"data.csv row 199: \d fields where the header has 4"):
        read_everything(open_dataset(path, "label", standardize=False))


def test_truncated_npy_file(tmp_path):
    path = write_layout(tmp_path, "npy")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read .*x.npy: not a complete .npy file.*truncated"):
        open_dataset(path)


def test_npy_file_cut_after_opening_names_the_rows(tmp_path):
    path = write_layout(tmp_path, "npy", rows=200)
    source = open_dataset(path, standardize=False)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 10 * 4 * 3])  # the last ten rows of 3 features go
    with pytest.raises(DataError, match=r"x.npy ended while reading rows \d+-200; the file was "
                                        "truncated after opening"):
        read_everything(source)


def test_truncated_parquet_file(tmp_path):
    path = write_layout(tmp_path, "parquet")
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match=r"cannot read .*data.parquet as Parquet: .* truncated or not "
                                        "Parquet"):
        open_dataset(path, "label")


def test_npy_shards_with_mismatched_shapes(tmp_path):
    write_layout(tmp_path, "npy-shards")
    np.save(tmp_path / "x-00001.npy", np.zeros((10, 4), np.float32))
    np.save(tmp_path / "y-00001.npy", np.zeros(10, np.int64))
    with pytest.raises(DataError, match=r"shards have mismatched x arrays: x-00001.npy is float32 "
                                        r"with rows of shape \(4,\), x-00000.npy is float32 with "
                                        r"rows of shape \(3,\)"):
        open_dataset(tmp_path)


def test_npy_shards_with_mismatched_dtypes(tmp_path):
    write_layout(tmp_path, "npy-shards")
    np.save(tmp_path / "y-00002.npy", np.load(tmp_path / "y-00002.npy").astype(np.float32))
    with pytest.raises(DataError, match="mismatched y arrays: y-00002.npy is float32"):
        open_dataset(tmp_path)


def test_parquet_files_with_mismatched_types(tmp_path):
    write_layout(tmp_path, "parquet-dir")
    x, y = numbered(10)
    pq.write_table(as_table(x, y.astype(np.float64)), tmp_path / "part-9.parquet")
    with pytest.raises(DataError, match="column 'label' is double in part-9.parquet but int64 in "
                                        "part-0.parquet"):
        open_dataset(tmp_path, "label")


def test_npy_rows_and_targets_disagree(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 2), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(9, np.int64))
    with pytest.raises(DataError, match="x.npy has 10 rows but y.npy has 9"):
        open_dataset(tmp_path)


def test_nan_feature_names_file_row_and_column(tmp_path):
    x, y = numbered(500)
    x[321, 2] = np.nan
    pq.write_table(as_table(x, y), tmp_path / "n.parquet", row_group_size=100)
    source = open_dataset(tmp_path / "n.parquet", "label", standardize=False)
    with pytest.raises(DataError, match=r"n.parquet row 321: a feature is NaN or infinite in column "
                                        "'f2'"):
        read_everything(source)


def test_nan_in_npy_features_names_the_row(tmp_path):
    x, y = numbered(300)
    x[123, 1] = np.inf
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(DataError, match=r"x.npy row 123: a feature is NaN or infinite"):
        read_everything(open_dataset(tmp_path / "x.npy", block_rows=50))


def test_missing_value_names_row_and_column(tmp_path):
    x, y = numbered(50)
    labels = pa.array([None if i == 17 else int(i) for i in y], pa.int64())
    table = pa.table({"f0": x[:, 0], "label": labels})
    pq.write_table(table, tmp_path / "m.parquet")
    with pytest.raises(DataError, match=r"m.parquet row 17: column 'label' is empty \(null"):
        open_dataset(tmp_path / "m.parquet", "label").targets()


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no .npy, .parquet or .csv files \(it is empty\)"):
        open_dataset(tmp_path / "empty")


def test_directory_mixing_formats(tmp_path):
    write_layout(tmp_path, "parquet")
    write_layout(tmp_path, "csv")
    with pytest.raises(DataError, match="mixes csv and parquet files; keep one format"):
        open_dataset(tmp_path, "label")


def test_features_without_targets_file(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 2), np.float32))
    with pytest.raises(DataError, match="x.npy has no targets file y.npy beside it"):
        open_dataset(tmp_path / "x.npy")


def test_missing_path_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="not found; check the path"):
        open_dataset(tmp_path / "nope.parquet", "label")
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(DataError, match="unknown data format '.json'"):
        open_dataset(tmp_path / "data.json")


def test_header_only_csv(tmp_path):
    (tmp_path / "h.csv").write_text("f0,label\n")
    with pytest.raises(DataError, match="holds a header but no rows"):
        open_dataset(tmp_path / "h.csv", "label")


def test_bad_options_are_config_errors(tmp_path):
    path = write_layout(tmp_path, "parquet")
    with pytest.raises(ValueError, match="prefetch must be one of auto, thread, process, none"):
        open_dataset(path, "label", prefetch="fast")
    with pytest.raises(ValueError, match="shuffle window must be >= 1 rows"):
        open_dataset(path, "label", shuffle_window=0)
    with pytest.raises(ValueError, match="target and features name columns of Parquet or CSV"):
        open_dataset(write_layout(tmp_path / "n", "npy"), "label")


# -- inputs that crashed or misled (issue 14) ------------------------------------------------------

def write_csv(path, header: str, rows: int = 30, encoding: str = "utf-8") -> None:
    lines = [header] + [f"{i},{i * 0.5},{i % 3}" for i in range(rows)]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))


def test_duplicate_csv_columns_are_named(tmp_path):
    write_csv(tmp_path / "d.csv", "f0,f0,label")
    with pytest.raises(DataError, match="d.csv has 2 columns named 'f0'; give every column its own name"):
        open_dataset(tmp_path / "d.csv", "label")


def test_duplicate_parquet_columns_are_named_in_any_file(tmp_path):
    x, y = numbered(10)
    doubled = pa.Table.from_arrays([pa.array(x[:, 0]), pa.array(x[:, 1]), pa.array(y)],
                                   names=["f0", "f0", "label"])
    pq.write_table(doubled, tmp_path / "d.parquet")
    with pytest.raises(DataError, match="d.parquet has 2 columns named 'f0'"):
        open_dataset(tmp_path / "d.parquet", "label")
    directory = tmp_path / "parts"
    directory.mkdir()
    pq.write_table(as_table(x[:, :2], y), directory / "part-0.parquet")
    pq.write_table(doubled, directory / "part-1.parquet")
    with pytest.raises(DataError, match="part-1.parquet has 2 columns named 'f0'"):
        open_dataset(directory, "label")


def test_a_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    write_csv(tmp_path / "bom.csv", "f0,f1,label", encoding="utf-8-sig")
    write_csv(tmp_path / "plain.csv", "f0,f1,label")
    with_mark = open_dataset(tmp_path / "bom.csv", "label", standardize=False)
    assert with_mark.table.feature_names == ["f0", "f1"]
    (x, y), (x_plain, y_plain) = (with_mark.table.read(0),
                                  open_dataset(tmp_path / "plain.csv", "label").table.read(0))
    np.testing.assert_array_equal(x, x_plain)
    np.testing.assert_array_equal(y, y_plain)


def test_a_csv_header_that_is_not_utf8_names_the_file_and_the_fix(tmp_path):
    write_csv(tmp_path / "latin.csv", "f0,fé,label", encoding="latin-1")
    with pytest.raises(DataError, match=r"latin.csv: the header is not UTF-8 text \(byte 0xe9 at "
                                        r"position 4\); save the file as UTF-8"):
        open_dataset(tmp_path / "latin.csv", "label")


@pytest.mark.parametrize("quoted_row", [3, 2500])
def test_a_line_break_inside_quotes_is_named_as_unsupported(tmp_path, quoted_row):
    lines = ["f0,note,label"] + [f"{i},plain,{i % 3}" for i in range(3000)]
    lines[quoted_row + 1] = f'{quoted_row},"two\nlines",1'
    (tmp_path / "q.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"q.csv row {quoted_row}: a quoted value holds a line break, "
                                        "which batchtrain's CSV reader does not support"):
        read_everything(open_dataset(tmp_path / "q.csv", "label", ["f0"], standardize=False))


def test_a_uint64_parquet_target_beyond_int64_is_named(tmp_path):
    labels = np.arange(10, dtype=np.uint64)
    labels[6] = 2**63 + 1
    pq.write_table(pa.table({"f0": np.zeros(10, np.float32), "label": labels}), tmp_path / "u.parquet")
    with pytest.raises(DataError, match=rf"u.parquet row 6: the target in column 'label' is "
                                        rf"{2**63 + 1}, beyond the int64 range"):
        open_dataset(tmp_path / "u.parquet", "label").targets()


def test_an_object_y_npy_is_not_called_truncated(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((100, 2), np.float32))
    np.save(tmp_path / "y.npy", np.array([None] * 100, dtype=object))  # pickled: fewer bytes
    with pytest.raises(DataError, match=r"y.npy holds pickled Python objects \(dtype object\)") as error:
        open_dataset(tmp_path / "x.npy")
    assert "truncated" not in str(error.value)


def test_a_negative_npy_shape_is_a_damaged_header(tmp_path):
    write_layout(tmp_path, "npy", rows=20)
    path = tmp_path / "x.npy"
    path.write_bytes(path.read_bytes().replace(b"(20, 3)", b"(-1, 3)"))
    with pytest.raises(DataError, match=r"x.npy has a damaged header: shape \(-1, 3\) has a "
                                        "negative size"):
        open_dataset(path)


def test_complex_npy_features_are_refused_with_the_fix(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 2), np.complex64))
    np.save(tmp_path / "y.npy", np.zeros(10, np.int64))
    with pytest.raises(DataError, match="x.npy has dtype complex64: complex values are not "
                                        "supported; store the real and imaginary parts"):
        open_dataset(tmp_path / "x.npy")


def test_test_data_with_other_columns_or_shapes_is_refused_at_open(tmp_path):
    train = open_dataset(write_layout(tmp_path / "train", "csv"), "label")
    (tmp_path / "renamed.csv").write_text("f0,g1,f2,label\n1,2,3,0\n")
    with pytest.raises(DataError, match=r"renamed.csv lacks 'f1', unlike the training data's "
                                        r"'f0', 'f1', 'f2'; give the test data the same columns"):
        check_test_data(open_dataset(tmp_path / "renamed.csv", "label"), train)
    check_test_data(open_dataset(write_layout(tmp_path / "test", "csv", rows=20), "label"), train)
    np.save(tmp_path / "x.npy", np.zeros((5, 4), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(5, np.int64))
    with pytest.raises(DataError, match=r"x.npy has samples of shape \(4,\), the training data \(3,\)"):
        check_test_data(open_dataset(tmp_path / "x.npy"),
                        open_dataset(write_layout(tmp_path / "npy", "npy")))


def test_a_npy_header_that_python_cannot_parse_is_named(tmp_path):
    np.save(tmp_path / "y.npy", np.zeros(12, np.int64))
    header = "{'descr': '<f4', 'shape': (12, 4"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                                     + header.encode() + bytes(12 * 4 * 4))
    with pytest.raises(DataError, match=r"cannot read .*x.npy: not a complete .npy file \(the header "
                                        "is not a valid .npy header"):
        open_dataset(tmp_path / "x.npy")


@pytest.mark.parametrize("link, opened, target", [
    ("x.npy", "x.npy", None), ("y.npy", "x.npy", None), ("t.parquet", "t.parquet", "label"),
    ("d.csv", "d.csv", "label")])
def test_a_link_to_a_device_is_named_not_read(tmp_path, link, opened, target):
    write_layout(tmp_path, "npy", rows=20)
    (tmp_path / link).unlink(missing_ok=True)
    (tmp_path / link).symlink_to("/dev/zero")
    with pytest.raises(DataError, match=f"{link} is not a regular file"):
        open_dataset(tmp_path / opened, target)


def test_a_csv_whose_first_row_is_longer_than_the_inferred_head_is_read(tmp_path):
    long_value = "9" * 2_000_000  # one row longer than the first MiB, where types are inferred
    (tmp_path / "long.csv").write_text(f"f0,f1,label\n1.5,{long_value},0\n2.5,3.0,1\n")
    with pytest.raises(DataError, match="long.csv row 0: a feature is NaN or infinite in column 'f1'"):
        read_everything(open_dataset(tmp_path / "long.csv", "label", standardize=False))


def test_a_value_that_is_not_utf8_names_the_encoding(tmp_path):
    lines = [b"f0,f1,label"] + [f"{i},{i},0".encode() for i in range(20)]
    lines[8] = "7,caf\xe9,0".encode("latin-1")
    (tmp_path / "latin.csv").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match="latin.csv row 7: column 'f1' holds bytes that are not UTF-8 "
                                        "text; save the file as UTF-8"):
        read_everything(open_dataset(tmp_path / "latin.csv", "label", standardize=False))
