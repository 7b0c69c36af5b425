"""Streamed sources: every row once per epoch, seeded order, exact resume, hold-outs, prefetch."""
import gc
import multiprocessing
import os
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
import torch

from batchtrain.data import from_batches, open_dataset
from batchtrain.data.iterator import BatchIterator
from batchtrain.data.stream import RunningMoments
from batchtrain.data.windows import EpochPlan
from batchtrain.distributed.ddp import Distributed
from stream_files import LAYOUTS, numbered, write_layout


def open_layout(tmp_path, layout, rows=1000, **options):
    """Open a numbered dataset written in `layout`, with small windows and pieces."""
    path = write_layout(tmp_path / layout, layout, rows)
    options = {"shuffle_window": 230, "standardize": False, **options}
    if layout.startswith("npy"):
        return open_dataset(path, block_rows=41, **options)
    return open_dataset(path, "label", **options)


def rows_of(batches) -> list[int]:
    seen = []
    for x, y in batches:
        assert torch.equal(x[:, 0].long(), y)  # features and targets stay paired
        seen += y.tolist()
    return seen


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_row_once_per_epoch(tmp_path, layout, shuffle):
    source = open_layout(tmp_path, layout)
    assert len(source) == 1000 and source.sample_shape == (3,)
    batches = BatchIterator(source, 64, shuffle=shuffle, seed=3)
    orders = [rows_of(batches.epoch(epoch)) for epoch in range(2)]
    for order in orders:
        assert sorted(order) == list(range(1000))
    assert (orders[0] == list(range(1000))) != shuffle
    assert (orders[0] != orders[1]) == shuffle  # a new order each epoch


@pytest.mark.parametrize("layout", ["npy-shards", "parquet"])
def test_same_seed_same_order(tmp_path, layout):
    source = open_layout(tmp_path, layout)

    def order(seed, epoch):
        return rows_of(BatchIterator(source, 50, True, seed).epoch(epoch))
    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(2, 0)


def test_order_is_independent_of_prefetch_and_workers(tmp_path):
    orders = {(prefetch, workers): rows_of(BatchIterator(
        open_layout(tmp_path / f"{prefetch}{workers}", "parquet", prefetch=prefetch, workers=workers),
        64, True, 5).epoch(2)) for prefetch, workers in [("none", 1), ("thread", 1), ("thread", 3)]}
    assert len({tuple(order) for order in orders.values()}) == 1


def test_auto_prefetch_reads_in_a_thread_only_with_a_core_to_spare(monkeypatch):
    from batchtrain.data.stream import resolve_prefetch
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    torch_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert resolve_prefetch("auto") == "none"          # torch's threads take every core
        assert resolve_prefetch("auto", accelerator=True) == "thread"
        torch.set_num_threads(1)
        assert resolve_prefetch("auto") == "thread"
        assert resolve_prefetch("process") == "process"
    finally:
        torch.set_num_threads(torch_threads)


def test_worker_processes_read_the_same_rows_and_last_across_epochs(tmp_path):
    before = set(multiprocessing.active_children())  # children of earlier tests are not ours

    def workers_now() -> set:
        return set(multiprocessing.active_children()) - before

    source = open_layout(tmp_path, "npy-shards", prefetch="process", workers=2)
    threaded = open_layout(tmp_path / "t", "npy-shards")

    def same_rows_as_threads(epoch: int) -> bool:
        return rows_of(BatchIterator(source, 64, True, 1).epoch(epoch)) == \
            rows_of(BatchIterator(threaded, 64, True, 1).epoch(epoch))

    assert same_rows_as_threads(0)
    first_pool, first_workers = source.processes.pool, workers_now()
    assert len(first_workers) == 2
    assert same_rows_as_threads(1)
    # started once, kept for the next epoch: the same pool, no process started or lost
    assert source.processes.pool is first_pool and workers_now() == first_workers
    # A worker that dies breaks its pool: one ends itself, and the pool reports it through the
    # future of that task (set once the pool has marked itself broken): no polling.
    death = first_pool.submit(os._exit, 1)
    assert isinstance(death.exception(timeout=60), BrokenProcessPool)
    with pytest.raises(BrokenProcessPool):
        first_pool.submit(os.getpid)
    assert same_rows_as_threads(3)  # the next epoch starts a new pool
    assert source.processes.pool is not first_pool
    for process in first_workers:  # the broken pool's survivor was stopped with it
        process.join(timeout=30)
        assert not process.is_alive()
    workers = workers_now()
    assert len(workers) == 2 and not workers & first_workers
    del source, first_pool
    gc.collect()  # the last source holding the workers is gone: they are shut down
    for process in workers:
        process.join(timeout=30)
        assert not process.is_alive()
    assert workers_now() == set()


@pytest.mark.parametrize("layout", ["npy-shards", "parquet-dir", "csv"])
def test_position_mid_epoch_restores_exactly(tmp_path, layout):
    source = open_layout(tmp_path, layout)
    full = rows_of(BatchIterator(source, 48, True, 9).epoch(1))
    for start in (0, 1, 230, 333, 999):
        assert rows_of(BatchIterator(source, 48, True, 9).epoch(1, start=start)) == full[start:]


def test_batch_size_changes_between_steps_without_skipping(tmp_path):
    source = open_layout(tmp_path, "parquet")
    sizes = iter([7, 100, 1, 333, 64] * 100)
    batches = BatchIterator(source, lambda: next(sizes), True, 2)
    seen = [len(y) for _, y in batches.epoch(0)]
    assert seen[:5] == [7, 100, 1, 333, 64] and sum(seen) == 1000
    fixed = rows_of(BatchIterator(source, 1000, True, 2).epoch(0))
    sizes = iter([7, 100, 1, 333, 64] * 100)
    assert rows_of(BatchIterator(source, lambda: next(sizes), True, 2).epoch(0)) == fixed


@pytest.mark.parametrize("layout", ["npy-shards", "parquet", "csv-dir"])
def test_validation_hold_out_by_row_ranges(tmp_path, layout):
    source = open_layout(tmp_path, layout)
    train, val = source.split_tail(800)
    assert (len(train), len(val)) == (800, 200)
    train_rows = set(rows_of(BatchIterator(train, 64, True, 0).epoch(0)))
    val_rows = rows_of(BatchIterator(val, 64, False).epoch(0))
    assert train_rows == set(range(800)) and val_rows == list(range(800, 1000))


def test_ranks_cover_a_stream_exactly_once(tmp_path):
    source = open_layout(tmp_path, "parquet-dir")
    per_rank = [rows_of(BatchIterator(source, 64, True, 4, shard=Distributed(rank, 2, rank)).epoch(0))
                for rank in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(1000))
    single = rows_of(BatchIterator(source, 64, True, 4).epoch(0))
    assert set(per_rank[0]) | set(per_rank[1]) == set(single)


def test_windows_bound_the_rows_held_and_change_every_epoch():
    ranges = [(piece, 0, 10) for piece in range(100)]
    plans = [EpochPlan.make(ranges, 95, seed=0, epoch=epoch, shuffle=True) for epoch in range(2)]
    for plan in plans:
        assert all(sum(end - first for _, first, end in window) <= 95 + 9 for window in plan.windows)
        assert plan.starts[-1] == 1000
    assert plans[0].windows != plans[1].windows
    unshuffled = EpochPlan.make(ranges, 95, 0, 0, shuffle=False)
    assert [piece for window in unshuffled.windows for piece, _, _ in window] == list(range(100))


def test_running_moments_match_numpy():
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 4)) * [1, 10, 1e3, 1e-3]
    moments = RunningMoments()
    for start in range(0, 1000, 137):
        moments.add(data[start:start + 137])
    mean, std = moments.result()
    np.testing.assert_allclose(mean.numpy(), data.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), data.std(axis=0), rtol=1e-5)


def test_standardisation_statistics_come_from_training_rows_only(tmp_path):
    path = write_layout(tmp_path, "parquet")
    train, _ = open_dataset(path, "label").split_tail(600)
    moments = train.moments()
    x, y = numbered(1000)
    np.testing.assert_allclose(moments.x_mean.numpy(), x[:600].mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(moments.y_std.numpy(), [y[:600].std()], rtol=1e-5)


def test_target_summary_infers_classes_without_reading_features(tmp_path):
    source = open_dataset(write_layout(tmp_path, "parquet"), "label")
    summary = source.targets()
    assert summary.tolist() == [0, 999] and summary.dtype == torch.int64


def test_one_hot_npy_targets_are_classes(tmp_path):
    x, labels = numbered(200)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.eye(5, dtype=np.float32)[labels % 5])
    from batchtrain.tasks.kinds import infer_task
    task = infer_task(open_dataset(tmp_path / "x.npy").targets())
    assert (task.kind, task.n_outputs) == ("multiclass", 5)


# -- your own reader: from_batches -----------------------------------------------------------------

def batches_of(rows: int, size: int):
    def make():
        for start in range(0, rows, size):
            yield numbered(min(size, rows - start), first=start)[0], np.arange(start, min(start + size, rows))
    return make


@pytest.mark.parametrize("length", [None, 1000])
def test_from_batches_every_row_once_with_any_batch_sizes(length):
    source = from_batches(batches_of(1000, 77), length, shuffle_window=256)
    assert len(source) == 1000 and source.sample_shape == (3,)
    orders = [rows_of(BatchIterator(source, 50, True, 1).epoch(epoch)) for epoch in range(2)]
    assert all(sorted(order) == list(range(1000)) for order in orders) and orders[0] != orders[1]
    assert rows_of(BatchIterator(source, 50, False).epoch(0)) == list(range(1000))


def test_from_batches_restores_a_position_and_holds_out_the_tail():
    source = from_batches(batches_of(1000, 64), shuffle_window=300)
    full = rows_of(BatchIterator(source, 32, True, 7).epoch(0))
    assert rows_of(BatchIterator(source, 32, True, 7).epoch(0, start=450)) == full[450:]
    train, val = source.split_tail(900)
    assert set(rows_of(BatchIterator(train, 32, True, 0).epoch(0))) == set(range(900))
    assert rows_of(BatchIterator(val, 32, False).epoch(0)) == list(range(900, 1000))


def test_a_used_up_generator_is_named_in_the_error():
    generator = batches_of(100, 10)()
    source = from_batches(lambda: generator, length=100)
    rows_of(BatchIterator(source, 10, False).epoch(0))
    with pytest.raises(ValueError, match="generator object can be read only once"):
        rows_of(BatchIterator(source, 10, False).epoch(1))


def test_torch_iterable_dataset_of_samples_is_streamed():
    class Samples(torch.utils.data.IterableDataset):
        def __iter__(self):
            for index in range(300):
                yield torch.tensor([float(index), 0.5]), index

    from batchtrain.data.sources import as_source
    source = as_source(Samples())
    assert len(source) == 300
    assert sorted(rows_of(BatchIterator(source, 64, True, 0).epoch(0))) == list(range(300))


def test_batches_are_writable_tensors_without_warnings(tmp_path):
    """pyarrow's zero-copy columns are read-only; a model may still write to its inputs."""
    import warnings
    import pyarrow.parquet as pq
    from stream_files import as_table
    x, y = numbered(300)
    pq.write_table(as_table(x, y.astype(np.float32)), tmp_path / "f.parquet", row_group_size=50)
    source = open_dataset(tmp_path / "f.parquet", "label", shuffle_window=1, standardize=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x, y in BatchIterator(source, 100, shuffle=False).epoch(0):
            x.add_(0)
            y.add_(0)
