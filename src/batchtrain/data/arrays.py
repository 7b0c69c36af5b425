"""Turning user arrays (numpy arrays, torch tensors, array-likes) into checked tensors."""
from typing import Any

import numpy as np
import torch
from torch import Tensor

from batchtrain.errors import DataError


INT64_MAX = np.iinfo(np.int64).max
# Unsigned integers wider than a byte: torch lacks most operations on them (max, comparisons),
# so they become int64; uint8 stays (pixels, small labels), and torch handles it fully.
WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def as_tensor(values: Any, name: str) -> Tensor:
    """A CPU tensor from an array-like: float64, float16, bfloat16 -> float32; bool and unsigned
    integers wider than uint8 -> int64; refuses object, text and complex arrays.

    name: what the values are called in error messages ("x", "y", "validation x" ...).
    """
    if isinstance(values, Tensor):
        tensor = values.detach().cpu()
    else:
        array = np.asarray(values)
        if array.dtype.kind not in "biufc":  # objects, text, bytes, dates, records
            raise DataError(f"{name} has dtype {array.dtype}, not numbers; convert it to a numeric "
                            "array (e.g. np.asarray(values, dtype=np.float32))")
        if array.dtype.kind == "f" and array.dtype.itemsize > 8:  # long double: torch has none
            array = array.astype(np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.is_complex():
        raise DataError(f"{name} has dtype {str(tensor.dtype).removeprefix('torch.')}: complex "
                        "values are not supported (the imaginary part would be lost); split them "
                        "into real features, e.g. np.concatenate([x.real, x.imag], axis=1)")
    if tensor.is_floating_point() and tensor.dtype != torch.float32:
        tensor = tensor.float()
    elif tensor.dtype == torch.bool:
        tensor = tensor.long()
    elif tensor.dtype in WIDE_UNSIGNED:
        tensor = unsigned_as_int64(tensor, name)
    if tensor.dim() == 0:
        raise DataError(f"{name} is a single number; pass one row per sample")
    return tensor


def unsigned_as_int64(tensor: Tensor, name: str) -> Tensor:
    """An unsigned integer tensor as int64; values beyond int64's range are refused."""
    if tensor.dtype == torch.uint64 and tensor.numel():
        largest = int(tensor.numpy().max())  # through numpy: torch has no max for uint64
        if largest > INT64_MAX:
            raise DataError(f"{name} holds {largest}, beyond the int64 range batchtrain computes "
                            f"in (largest {INT64_MAX}); relabel the values (e.g. as 0..K-1)")
    return tensor.to(torch.int64)


def as_features(values: Any, name: str = "x") -> Tensor:
    """Model inputs as a float tensor of shape (N, ...); 1-D inputs become one feature per sample."""
    tensor = as_tensor(values, name)
    if not tensor.is_floating_point():
        tensor = tensor.float()
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(1)
    return tensor


def check_pair(x: Tensor, y: Tensor, prefix: str = "") -> None:
    """Raise DataError if x and y are empty, of different lengths, or hold NaN or inf."""
    if len(x) == 0:
        raise DataError(f"{prefix}x is empty (0 samples); pass at least one sample")
    if x[0].numel() == 0:
        raise DataError(f"{prefix}x has samples of shape {tuple(x.shape[1:])}: no features; "
                        "pass at least one feature per sample")
    if len(x) != len(y):
        raise DataError(f"{prefix}x and {prefix}y have different lengths: {len(x)} samples in x, "
                        f"{len(y)} in y; pass exactly one target per sample")
    check_finite(x, f"{prefix}x")
    check_finite(y, f"{prefix}y")


def check_finite(tensor: Tensor, name: str) -> None:
    """Raise DataError naming the first sample with a NaN or infinite value."""
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
        return  # a NaN or inf anywhere makes the sum NaN or inf: one fast pass over clean data
    # (elementwise isfinite is ~20x slower than a sum on the CPU); an overflowing sum lands here too
    bad = ~torch.isfinite(tensor.reshape(len(tensor), -1)).all(dim=1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise DataError(f"{name} contains NaN or infinite values ({int(bad.sum())} samples, first "
                        f"at index {first}); remove or impute them before training")
