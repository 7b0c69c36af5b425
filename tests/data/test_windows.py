"""Window buffers: reused across windows and epochs, never while a batch may still read them."""
import numpy as np
import pytest
import torch

from batchtrain.data import open_dataset
from batchtrain.data.iterator import BatchIterator
from batchtrain.data.windows import WindowBuffers
from stream_files import write_layout

SHAPES = ((3,), (), np.dtype(np.int64))


def test_a_given_back_pair_is_taken_again():
    buffers = WindowBuffers()
    x, y = buffers.take(100, *SHAPES)
    assert x.shape == (100, 3) and y.shape == (100,) and y.dtype == np.int64
    buffers.give_back(x, y)
    again_x, again_y = buffers.take(90, *SHAPES)
    assert again_x.shape == (90, 3)
    assert np.shares_memory(again_x, x) and np.shares_memory(again_y, y)


def test_arrays_grow_to_the_largest_window_and_smaller_ones_are_dropped():
    buffers = WindowBuffers()
    small = buffers.take(100, *SHAPES)
    large = buffers.take(120, *SHAPES)  # every array from now on holds 120 rows
    buffers.give_back(*small)           # too small for what windows need: not kept
    buffers.give_back(*large)
    assert [len(x) for x, _ in buffers.free] == [120]
    x, _ = buffers.take(100, *SHAPES)
    assert np.shares_memory(x, large[0])
    fresh, _ = buffers.take(100, *SHAPES)
    assert fresh.base.shape[0] == 120 and not np.shares_memory(fresh, large[0])


def test_at_most_keep_pairs_are_held_and_other_shapes_get_new_arrays():
    buffers = WindowBuffers(keep=2)
    pairs = [buffers.take(10, *SHAPES) for _ in range(3)]
    for pair in pairs:
        buffers.give_back(*pair)
    assert len(buffers.free) == 2
    x, y = buffers.take(10, (4,), (), np.dtype(np.float32))
    assert x.shape == (10, 4) and y.dtype == np.float32 and len(buffers.free) == 2


@pytest.mark.parametrize("shuffle", [True, False])
def test_epochs_reuse_two_windows_and_batches_survive_reuse(tmp_path, shuffle):
    """Every batch is a copy: kept past the reuse of its window's arrays, it still holds its
    rows (the unshuffled order would otherwise hand out views of the window)."""
    path = write_layout(tmp_path / "data", "npy-shards", 1000)
    source = open_dataset(path, block_rows=41, shuffle_window=230, standardize=False,
                          prefetch="none")
    taken = []
    take = source.buffers.take
    source.buffers.take = lambda *args: taken.append(take(*args)) or taken[-1]
    batches = BatchIterator(source, 64, shuffle=shuffle, seed=1)
    kept = [(x.clone(), y.clone(), x, y) for epoch in range(3) for x, y in batches.epoch(epoch)]
    for copy_x, copy_y, x, y in kept:
        assert torch.equal(copy_x, x) and torch.equal(copy_y, y)
        assert torch.equal(x[:, 0].long(), y)
    windows = len(source.order(1, 0, shuffle).windows)
    assert len(taken) == 3 * windows >= 12
    sizes = [len(x) for x, _ in taken]
    growths = sum(size > max(sizes[:index], default=0) for index, size in enumerate(sizes))
    new_arrays = len({id(x.base) for x, _ in taken})  # taken keeps them alive: ids are unique
    assert new_arrays <= 2 * growths < len(taken)  # two pairs in use, new ones only to grow
