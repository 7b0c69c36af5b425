"""User arrays as tensors: dtypes converted where it is safe, refused where it is not."""
import re

import numpy as np
import pytest
import torch

from batchtrain import Trainer
from batchtrain.data.arrays import as_features, as_tensor, check_finite
from batchtrain.errors import DataError

pytestmark = pytest.mark.usefixtures("single_thread")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 4)).astype(np.float32)
LABELS = np.arange(12) % 3


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
def test_wide_unsigned_labels_become_int64(dtype):
    for values in (LABELS.astype(dtype), torch.from_numpy(LABELS.astype(dtype))):
        tensor = as_tensor(values, "y")
        assert tensor.dtype == torch.int64 and tensor.tolist() == LABELS.tolist()


@pytest.mark.parametrize("dtype", [np.uint16, np.uint64])
def test_fit_trains_on_unsigned_labels(dtype):
    trainer = Trainer("mlp", seed=0, device="cpu")
    trainer.fit(X, LABELS.astype(dtype), epochs=1, batch_size=4)
    assert (trainer.task_.kind, trainer.task_.n_outputs) == ("multiclass", 3)


def test_uint64_values_beyond_int64_are_refused():
    labels = LABELS.astype(np.uint64)
    labels[5] = 2**63 + 7
    with pytest.raises(DataError, match=re.escape(
            f"y holds {2**63 + 7}, beyond the int64 range batchtrain computes in")):
        as_tensor(labels, "y")


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_features_are_refused_naming_the_dtype_and_the_fix(dtype):
    with pytest.raises(DataError, match=re.escape(
            f"x has dtype {np.dtype(dtype).name}: complex values are not supported (the imaginary "
            "part would be lost); split them into real features")):
        as_features(X.astype(dtype) * 1j, "x")


def test_fit_refuses_complex_features():
    with pytest.raises(DataError, match="complex values are not supported"):
        Trainer("mlp", seed=0, device="cpu").fit(X.astype(np.complex64), LABELS, epochs=1)


@pytest.mark.parametrize("values", [X.astype(np.float16), torch.from_numpy(X).bfloat16()],
                         ids=["float16", "bfloat16"])
def test_half_precision_features_become_float32(values):
    features = as_features(values)
    assert features.dtype == torch.float32
    np.testing.assert_allclose(features.numpy(), X, atol=0.02)


def test_fit_trains_on_float16_features():
    trainer = Trainer("mlp", seed=0, device="cpu")
    history = trainer.fit(X.astype(np.float16), LABELS, epochs=1, batch_size=4)
    assert np.isfinite(history[-1]["loss"])


def test_fit_refuses_samples_without_features():
    with pytest.raises(DataError, match=re.escape("x has samples of shape (0,): no features")):
        Trainer("mlp", seed=0, device="cpu").fit(np.zeros((12, 0), np.float32), LABELS, epochs=1)


def test_long_double_features_become_float32_and_dates_are_refused():
    assert as_features(X.astype(np.longdouble)).dtype == torch.float32
    with pytest.raises(DataError, match=re.escape("x has dtype datetime64[s], not numbers")):
        as_features(np.zeros((3, 2), "datetime64[s]"), "x")


def test_the_finite_check_sees_every_bad_value_and_passes_finite_data_whose_sum_overflows():
    huge = torch.full((64, 8), 3e38)  # finite, but their float32 sum is inf: the slow path passes
    assert not torch.isfinite(huge.sum())
    check_finite(huge, "x")
    for value, index in [(float("nan"), 5), (float("inf"), 0), (-float("inf"), 63)]:
        bad = torch.zeros(64, 8)
        bad[index, 3] = value
        with pytest.raises(DataError, match=f"1 samples, first at index {index}"):
            check_finite(bad, "x")
    both = torch.zeros(64, 8)
    both[2, 0], both[9, 1] = float("inf"), -float("inf")  # they sum to NaN, still caught
    with pytest.raises(DataError, match="2 samples, first at index 2"):
        check_finite(both, "x")
