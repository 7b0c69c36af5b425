"""Turning user arrays (numpy arrays, torch tensors, array-likes) into checked tensors."""
from typing import Any

import numpy as np
import torch
from torch import Tensor

from batchtrain.errors import DataError


def as_tensor(values: Any, name: str) -> Tensor:
    """A CPU tensor from an array-like: float64 -> float32, bool -> int64; refuses object arrays.

    name: what the values are called in error messages ("x", "y", "validation x" ...).
    """
    if isinstance(values, Tensor):
        tensor = values.detach().cpu()
    else:
        array = np.asarray(values)
        if array.dtype == object or array.dtype.kind in "USV":
            raise DataError(f"{name} has dtype {array.dtype}, not numbers; convert it to a numeric "
                            "array (e.g. np.asarray(values, dtype=np.float32))")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.dtype == torch.float64:
        tensor = tensor.float()
    elif tensor.dtype == torch.bool:
        tensor = tensor.long()
    if tensor.dim() == 0:
        raise DataError(f"{name} is a single number; pass one row per sample")
    return tensor


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
    if len(x) != len(y):
        raise DataError(f"{prefix}x and {prefix}y have different lengths: {len(x)} samples in x, "
                        f"{len(y)} in y; pass exactly one target per sample")
    check_finite(x, f"{prefix}x")
    check_finite(y, f"{prefix}y")


def check_finite(tensor: Tensor, name: str) -> None:
    """Raise DataError naming the first sample with a NaN or infinite value."""
    if not tensor.is_floating_point():
        return
    bad = ~torch.isfinite(tensor.reshape(len(tensor), -1)).all(dim=1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise DataError(f"{name} contains NaN or infinite values ({int(bad.sum())} samples, first "
                        f"at index {first}); remove or impute them before training")
