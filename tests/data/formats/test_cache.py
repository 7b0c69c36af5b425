"""The decoded-rows cache of Parquet and CSV streams: read instead of decoding, never stale."""
import errno

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from batchtrain.data import open_dataset
from batchtrain.data.formats import cache as cache_module
from batchtrain.data.iterator import BatchIterator
from batchtrain.errors import ConfigError
from helpers import run_cli
from stream_files import as_table, numbered, write_layout


def batches_of(source, epoch, seed=2):
    return [(x.clone(), y.clone()) for x, y in BatchIterator(source, 64, True, seed).epoch(epoch)]


def same_batches(first, second) -> bool:
    return len(first) == len(second) and all(
        torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(first, second))


def refuse_decoding(source):
    def decode(*args):
        raise AssertionError("decoded although the cache holds the piece")
    source.table.table.read_into = source.table.table.read = decode
    source.table.table.read_targets = decode


@pytest.mark.parametrize("layout", ["parquet", "parquet-dir", "csv-dir"])
def test_later_epochs_read_the_cache_and_give_the_same_batches(tmp_path, layout):
    path = write_layout(tmp_path / "data", layout, 1000)
    plain = open_dataset(path, "label", shuffle_window=230, standardize=False)
    cached = open_dataset(path, "label", shuffle_window=230, standardize=False,
                          cache=tmp_path / "cache")
    first = batches_of(cached, 0)
    assert same_batches(first, batches_of(plain, 0))
    pieces = list(cached.table.directory.glob("piece-*.bin"))
    assert len(pieces) == len(cached.table.piece_rows)
    refuse_decoding(cached)
    assert same_batches(batches_of(cached, 1), batches_of(plain, 1))
    assert torch.equal(cached.targets(), plain.targets())


def test_a_hold_out_inside_a_piece_reads_both_parts_from_the_cache(tmp_path):
    path = write_layout(tmp_path / "data", "parquet", 1000)  # row groups of 97 rows
    source = open_dataset(path, "label", standardize=False, cache=tmp_path / "cache")
    head, tail = source.split_tail(800)  # 800 = 8 * 97 + 24: inside the ninth row group
    rows = {name: sorted(int(v) for _, y in BatchIterator(part, 50, True, 0).epoch(0) for v in y)
            for name, part in (("tail", tail), ("head", head))}
    assert rows == {"head": list(range(800)), "tail": list(range(800, 1000))}
    refuse_decoding(source)
    again = sorted(int(v) for _, y in BatchIterator(head, 50, True, 0).epoch(1) for v in y)
    assert again == list(range(800))


def test_an_edited_file_gets_a_new_cache_and_never_stale_rows(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(as_table(*numbered(300)), path, row_group_size=100)
    first = open_dataset(path, "label", standardize=False, cache=tmp_path / "cache")
    batches_of(first, 0)
    x, y = numbered(300, first=1000)
    pq.write_table(as_table(x, y), path, row_group_size=100)
    second = open_dataset(path, "label", standardize=False, cache=tmp_path / "cache")
    assert second.table.directory != first.table.directory
    seen = sorted(int(v) for _, y in batches_of(second, 0) for v in y)
    assert seen == list(range(1000, 1300))


def test_a_piece_file_of_the_wrong_size_is_decoded_again(tmp_path):
    path = write_layout(tmp_path / "data", "parquet", 300)
    source = open_dataset(path, "label", standardize=False, cache=tmp_path / "cache")
    batches_of(source, 0)
    broken = source.table.directory / "piece-000001.bin"
    broken.write_bytes(broken.read_bytes()[:-5])  # as a crash between write and rename cannot
    seen = sorted(int(v) for _, y in batches_of(source, 1) for v in y)
    assert seen == list(range(300))
    assert broken.stat().st_size == 97 * (3 * 4 + 8)  # written whole again


def test_a_full_disk_warns_once_and_training_goes_on_uncached(tmp_path, monkeypatch):
    path = write_layout(tmp_path / "data", "parquet", 300)
    source = open_dataset(path, "label", standardize=False, cache=tmp_path / "cache")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cache_module.np, "ascontiguousarray", full)
    with pytest.warns(RuntimeWarning, match="No space left on device.*decoding the data every epoch"):
        seen = sorted(int(v) for _, y in batches_of(source, 0) for v in y)
    assert seen == list(range(300))
    assert not list(source.table.directory.iterdir())  # no piece, no temporary file left


def test_a_cache_directory_that_cannot_be_made_is_a_clear_error(tmp_path):
    path = write_layout(tmp_path / "data", "parquet", 100)
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create the cache directory .*choose another"):
        open_dataset(path, "label", cache=tmp_path / "file" / "cache")


def test_npy_is_read_as_is(tmp_path):
    path = write_layout(tmp_path / "data", "npy-shards", 300)
    source = open_dataset(path, cache=tmp_path / "cache")
    batches_of(source, 0)
    assert not (tmp_path / "cache").exists()


def test_cli_cache_option(capsys, tmp_path):
    x, y = numbered(400)
    table = as_table(x, (x[:, 1] * 2.0).astype(np.float32))
    pq.write_table(table, tmp_path / "data.parquet", row_group_size=64)
    pq.write_table(table.slice(0, 100), tmp_path / "test.parquet")
    code, _, err = run_cli(capsys, "fit", "--data", tmp_path / "data.parquet", "--target", "label",
                           "--task", "regression", "--model", "mlp", "--epochs", "2",
                           "--test-data", tmp_path / "test.parquet", "--cache", tmp_path / "cache",
                           "--output", tmp_path / "run", "--progress", "none")
    assert code == 0, err
    assert len(list((tmp_path / "cache").glob("*/piece-*.bin"))) == 7  # training data only
    code, _, err = run_cli(capsys, "fit", "--data", tmp_path / "missing.npz", "--cache",
                           tmp_path / "cache", "--output", tmp_path / "run2")
    assert code == 2 and "--cache applies to data streamed from disk" in err


def test_worker_processes_write_and_read_the_cache(tmp_path):
    path = write_layout(tmp_path / "data", "parquet-dir", 300)
    plain = open_dataset(path, "label", shuffle_window=60, standardize=False)
    cached = open_dataset(path, "label", shuffle_window=60, standardize=False, prefetch="process",
                          cache=tmp_path / "cache")
    assert same_batches(batches_of(cached, 0), batches_of(plain, 0))
    assert len(list(cached.table.directory.glob("piece-*.bin"))) == len(cached.table.piece_rows)
    assert same_batches(batches_of(cached, 1), batches_of(plain, 1))
