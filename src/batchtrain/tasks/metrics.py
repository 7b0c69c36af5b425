"""Metrics accumulated on the device: no host synchronisation until a value is read.

Each metric keeps running sums (tensors) updated every step and turns them into a float only in
compute(), so a training step never waits for the device (no .item() per step). On the CPU, where
reading a value costs nothing and a tensor op ~5 us of dispatch, scalar sums are kept in Python
numbers instead: the same double-precision additions, so the same values bit for bit.
"""
import math
import struct
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from batchtrain.errors import ConfigError
from batchtrain.tasks.kinds import Task

CLASSIFICATION_METRICS = ("accuracy",)
REGRESSION_METRICS = ("mae", "rmse", "r2")


class MetricSet:
    """Running loss and metrics over the batches seen since the last reset().

    names: metric names valid for task.kind ("accuracy"; or "mae", "rmse", "r2").
    device: where the sums live (the training device).
    """

    def __init__(self, task: Task, names: Iterable[str], device: torch.device = torch.device("cpu")):
        self.task = task
        self.device = device
        self.names = tuple(names)
        valid = REGRESSION_METRICS if task.kind == "regression" else CLASSIFICATION_METRICS
        unknown = [name for name in self.names if name not in valid]
        if unknown:
            raise ConfigError(f"metric(s) {unknown} do not apply to {task.kind} tasks; "
                              f"choose from {list(valid)}")
        self.on_host = torch.device(device).type == "cpu"
        self._sums: dict[str, Tensor | float | int] = {}
        self.count = 0

    @property
    def sums(self) -> dict[str, Tensor]:
        """The running sums as float64 tensors on the device (for checkpoints and reductions)."""
        return {key: torch.as_tensor(value, dtype=torch.float64, device=self.device)
                for key, value in self._sums.items()}

    @sums.setter
    def sums(self, sums: dict[str, Tensor]) -> None:
        self._sums = {key: value.item() if self.on_host and value.dim() == 0 else value
                      for key, value in sums.items()}

    def reset(self) -> None:
        self._sums = {}
        self.count = 0

    def update(self, outputs: Tensor, targets: Tensor, loss: Tensor) -> None:
        """Add one batch: outputs (logits or values), prepared targets, and its mean loss."""
        outputs, targets, loss = outputs.detach(), targets.detach(), loss.detach()
        batch = len(targets)
        self._add("loss", self._loss_sum(loss, batch))
        if self.task.kind == "multiclass":
            self._add("correct", (outputs.argmax(dim=1) == targets).sum())
        elif self.task.kind == "binary":
            self._add("correct", ((outputs > 0) == (targets > 0.5)).sum())
        else:
            error = outputs.float() - targets
            self._add("abs_error", error.abs().sum(dim=0))
            self._add("sq_error", error.square().sum(dim=0))
            self._add("target_sum", targets.sum(dim=0))
            self._add("target_sq_sum", targets.square().sum(dim=0))
        self.count += batch

    def _loss_sum(self, loss: Tensor, batch: int) -> Tensor | float:
        """The batch's summed loss: its mean times `batch`, rounded to float32 on every device."""
        if not self.on_host:
            return loss.float() * batch
        # No tensor op: in place after backward the first one costs ~50 us (cold code), as much as
        # the rest of the update. The double product is exact (24-bit x < 29-bit integer), so one
        # rounding to float32 gives the float32 product bit for bit.
        return float32_rounded(loss.item() * batch)

    def _add(self, key: str, value: Tensor | float) -> None:
        if isinstance(value, Tensor) and self.on_host and value.dim() == 0:
            # Exact: float32 and int64 convert to a Python float or int without rounding, and
            # Python adds floats in double as torch adds into a float64 sum.
            value = value.item()
        if key in self._sums:
            self._sums[key] = self._sums[key] + value
        else:
            self._sums[key] = value if isinstance(value, (int, float)) else value.double()

    def compute(self, reduce: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        """Mean loss and each metric over the batches seen; reads the device once.

        reduce: sums a tensor over processes (DistributedDataParallel): every rank must call
        compute together, and gets the exact metrics of all ranks' samples.
        """
        sums, count = self.sums, self.count
        if reduce is not None:
            sums, count = self._reduced(reduce)
        if count == 0:
            return {}
        sums = {key: value.cpu() for key, value in sums.items()}
        values = {"loss": float(sums["loss"]) / count}
        for name in self.names:
            values[name] = _METRICS[name](sums, count)
        return values

    def _reduced(self, reduce: Callable[[Tensor], Tensor]) -> tuple[dict[str, Tensor], int]:
        """Sums and count over all processes, in one collective call. A rank without batches
        contributes zeros shaped as the others' (the shapes follow from the task)."""
        shapes = {"loss": (), "correct": ()} if self.task.kind != "regression" else {
            "loss": (), **{key: (self.task.n_outputs,) for key in
                           ("abs_error", "sq_error", "target_sum", "target_sq_sum")}}
        device = self.device
        flat = torch.cat([self.sums.get(key, torch.zeros(shape, dtype=torch.float64, device=device))
                          .double().reshape(-1) for key, shape in shapes.items()]
                         + [torch.tensor([float(self.count)], dtype=torch.float64, device=device)])
        total = reduce(flat)
        sums, offset = {}, 0
        for key, shape in shapes.items():
            size = int(torch.Size(shape).numel())
            sums[key] = total[offset:offset + size].reshape(shape)
            offset += size
        return sums, int(total[-1].item())


def float32_rounded(value: float) -> float:
    """value rounded to the nearest float32 (+-inf beyond its range), as float32 arithmetic does."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:  # struct refuses a finite value that rounds to inf
        return math.copysign(math.inf, value)


def _accuracy(sums: dict[str, Tensor], count: int) -> float:
    return float(sums["correct"]) / count


def _mae(sums: dict[str, Tensor], count: int) -> float:
    return float(sums["abs_error"].mean()) / count


def _rmse(sums: dict[str, Tensor], count: int) -> float:
    # Root of the mean squared error over every output value (as Keras' RootMeanSquaredError).
    return float((sums["sq_error"].mean() / count).sqrt())


def _r2(sums: dict[str, Tensor], count: int) -> float:
    # Coefficient of determination per output, averaged uniformly over outputs (scikit-learn's
    # r2_score default): 1 - SSE / SST, SST = sum(y^2) - (sum y)^2 / n.
    total = sums["target_sq_sum"] - sums["target_sum"].square() / count
    r2 = 1.0 - sums["sq_error"] / total.clamp_min(torch.finfo(torch.float64).tiny)
    return float(r2.mean())


_METRICS = {"accuracy": _accuracy, "mae": _mae, "rmse": _rmse, "r2": _r2}
