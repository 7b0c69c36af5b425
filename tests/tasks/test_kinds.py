"""Tasks: which task the targets imply, how many classes they may ask for, and their prepared form."""
import re

import pytest
import torch

from batchtrain.errors import DataError
from batchtrain.tasks.kinds import FEW_CLASSES, MAX_CLASSES, infer_task, prepare_targets

LABELS = torch.tensor([0, 2, 1, 2, 0, 1])


@pytest.mark.parametrize("targets, kind, n_outputs", [
    (LABELS, "multiclass", 3),
    (LABELS.reshape(-1, 1), "multiclass", 3),                    # labels as a column
    (torch.eye(4, dtype=torch.int64)[LABELS], "multiclass", 4),  # one-hot rows
    (torch.eye(4)[LABELS], "multiclass", 4),                     # one-hot floats
    (LABELS.float(), "regression", 1),
    (LABELS.float().reshape(-1, 1), "regression", 1),            # a float column stays values
    (torch.rand(6, 3), "regression", 3),
], ids=["labels", "label-column", "one-hot-int", "one-hot-float", "float", "float-column",
        "float-rows"])
def test_the_targets_imply_the_task(targets, kind, n_outputs):
    task = infer_task(targets)
    assert (task.kind, task.n_outputs) == (kind, n_outputs)


def test_a_column_of_labels_is_prepared_as_class_indices():
    task = infer_task(LABELS.reshape(-1, 1))
    prepared = prepare_targets(task, LABELS.reshape(-1, 1))
    assert prepared.shape == (6,) and prepared.dtype == torch.int64
    assert torch.equal(prepared, LABELS)


def test_several_integers_per_sample_that_are_not_one_hot_are_refused():
    counts = torch.tensor([[0, 3], [1, 1], [2, 0]])
    with pytest.raises(DataError, match=re.escape(
            "integer targets of shape (N, 2) are neither one class label per sample nor one-hot "
            "rows; for several values per sample choose task='regression'")):
        infer_task(counts)
    assert infer_task(counts, kind="regression").n_outputs == 2  # the remedy works


@pytest.mark.parametrize("largest", [10**8, 2**62])
def test_an_absurd_label_is_refused_naming_it_and_the_fix(largest):
    labels = torch.tensor([0, 1, largest, 2])
    with pytest.raises(DataError, match=re.escape(
            f"the largest label is {largest}, which asks for {largest + 1} classes; at most "
            f"{MAX_CLASSES} are allowed; relabel the classes as 0..K-1")) as error:
        infer_task(labels)
    assert "--task regression" in str(error.value) and len(str(error.value)) < 400


def test_the_class_count_is_bounded_by_the_samples_beyond_a_few_classes():
    few = torch.tensor([0, FEW_CLASSES - 1])  # 1000 classes for 2 samples: allowed
    assert infer_task(few, samples=2).n_outputs == FEW_CLASSES
    many = torch.tensor([0, 5000])
    assert infer_task(many, samples=501).n_outputs == 5001  # 10 per sample
    with pytest.raises(DataError, match=re.escape("at most 1000 are allowed (for 20 samples)")):
        infer_task(many, samples=20)


def test_the_summary_of_a_streamed_label_column_is_classes():
    summary = torch.tensor([[0], [9]], dtype=torch.int64)  # [min, max] of an (N, 1) label column
    task = infer_task(summary)
    assert (task.kind, task.n_outputs) == ("multiclass", 10)


def test_fit_bounds_the_classes_by_its_training_samples():
    """40 samples asking for 5000 classes: refused by fit (the trainer passes the sample count),
    though 5000 alone is below MAX_CLASSES."""
    import numpy as np

    from batchtrain import Trainer

    labels = np.arange(40) % 3
    labels[7] = 4999
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    infer_task(torch.as_tensor(labels))  # no sample count: allowed
    with pytest.raises(DataError, match=r"asks for 5000 classes; at most 1000 .*for 40 samples"):
        Trainer("mlp", seed=0, device="cpu").fit(x, labels, epochs=1, batch_size=8)
