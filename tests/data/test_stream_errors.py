"""Malformed streamed data: each error names the file, row or column, and the fix."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchtrain.data import open_dataset
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
