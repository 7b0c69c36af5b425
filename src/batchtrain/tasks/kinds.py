"""Tasks: what the targets mean, which loss fits them, and how outputs become predictions.

Three kinds: "multiclass" (integer or one-hot labels, logits out, softmax folded into the loss),
"binary" (0/1 labels, one logit out, sigmoid folded into the loss) and "regression" (float targets).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from batchtrain.errors import ConfigError, DataError

TASK_KINDS = ("multiclass", "binary", "regression")

# Loss names (Keras' and torch's spellings) and the task each implies.
LOSS_TASKS = {
    "categorical_crossentropy": "multiclass", "sparse_categorical_crossentropy": "multiclass",
    "cross_entropy": "multiclass", "binary_crossentropy": "binary", "bce": "binary",
    "mse": "regression", "mean_squared_error": "regression",
    "mae": "regression", "mean_absolute_error": "regression", "huber": "regression",
}
DEFAULT_LOSS = {"multiclass": "categorical_crossentropy", "binary": "binary_crossentropy",
                "regression": "mse"}
DEFAULT_METRICS = {"multiclass": ("accuracy",), "binary": ("accuracy",),
                   "regression": ("mae", "rmse", "r2")}
# Bounds on the classes integer labels imply (the largest label + 1): the output layer and its
# optimizer state grow with them (10^8 classes asked an MLP for 25 GB). Up to FEW_CLASSES always
# pass; beyond that at most CLASSES_PER_SAMPLE per sample, and never more than MAX_CLASSES.
FEW_CLASSES = 1000
CLASSES_PER_SAMPLE = 10
MAX_CLASSES = 1_000_000


@dataclass(frozen=True)
class Task:
    """kind: one of TASK_KINDS; n_outputs: output units the model needs; loss: a LOSS_TASKS name."""

    kind: str
    n_outputs: int
    loss: str

    def loss_fn(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean loss over the batch (targets as prepare_targets returns them)."""
        if self.kind == "multiclass":
            return F.cross_entropy(outputs, targets)
        if self.kind == "binary":
            return F.binary_cross_entropy_with_logits(outputs, targets)
        if self.loss in ("mae", "mean_absolute_error"):
            return F.l1_loss(outputs, targets)
        if self.loss == "huber":
            return F.huber_loss(outputs, targets)
        return F.mse_loss(outputs, targets)

    def predictions(self, outputs: Tensor) -> Tensor:
        """Class probabilities for classification (as Keras' softmax/sigmoid output), values otherwise."""
        if self.kind == "multiclass":
            return torch.softmax(outputs, dim=1)
        if self.kind == "binary":
            return torch.sigmoid(outputs)
        return outputs

    def to_dict(self) -> dict:
        return {"kind": self.kind, "n_outputs": self.n_outputs, "loss": self.loss}


def infer_task(y: Tensor, loss: str | None = None, kind: str | None = None,
               samples: int | None = None) -> Task:
    """Choose the task from the targets y, an optional loss name and optional kind.

    y: every target, or a summary of them with the same dtype, range and per-sample shape (as
    streamed sources give). samples: how many samples there are (default: unknown, and then
    only MAX_CLASSES bounds the classes).
    """
    if loss is not None and loss not in LOSS_TASKS:
        raise ConfigError(f"unknown loss {loss!r}; choose one of {sorted(LOSS_TASKS)}")
    if kind is not None and kind not in TASK_KINDS:
        raise ConfigError(f"unknown task {kind!r}; choose one of {list(TASK_KINDS)}")
    if kind is not None and loss is not None and LOSS_TASKS[loss] != kind:
        raise ConfigError(f"loss {loss!r} is for {LOSS_TASKS[loss]} tasks, not {kind}; "
                          "drop one of loss/task or make them agree")
    kind = kind or (LOSS_TASKS[loss] if loss else _kind_from_targets(y))
    n_outputs = _n_outputs(kind, y)
    if kind == "multiclass" and not _is_one_hot(y):
        _check_class_count(n_outputs, samples)
    return Task(kind=kind, n_outputs=n_outputs, loss=loss or DEFAULT_LOSS[kind])


def _kind_from_targets(y: Tensor) -> str:
    if _is_one_hot(y) or _is_label_per_sample(y):
        return "multiclass"
    if _is_integer(y) and y.dim() > 1:
        # Several integers per sample, not one-hot: multi-label 0/1 rows, counts... A guess
        # would train the wrong task silently.
        raise DataError(f"integer targets of shape (N, {', '.join(map(str, y.shape[1:]))}) are "
                        "neither one class label per sample nor one-hot rows; for several values "
                        "per sample choose task='regression' (--task regression), for classes "
                        "pass one label per sample")
    return "regression"


def _check_class_count(n_classes: int, samples: int | None) -> None:
    limit = MAX_CLASSES if samples is None else min(
        MAX_CLASSES, max(FEW_CLASSES, CLASSES_PER_SAMPLE * samples))
    if n_classes > limit:
        per_sample = "" if samples is None else f" (for {samples} samples)"
        raise DataError(f"the largest label is {n_classes - 1}, which asks for {n_classes} classes; "
                        f"at most {limit} are allowed{per_sample}; relabel the classes as 0..K-1 "
                        "(e.g. numpy.unique(y, return_inverse=True)), or choose task='regression' "
                        "(--task regression) if the targets are values")


def _n_outputs(kind: str, y: Tensor) -> int:
    if kind == "binary":
        return 1
    if kind == "multiclass":
        if _is_one_hot(y):
            return y.shape[1]
        return max(int(y.max()) + 1, 2) if y.numel() else 2
    return 1 if y.dim() == 1 else int(y[0].numel())


def prepare_targets(task: Task, y: Tensor) -> Tensor:
    """Targets in the form task.loss_fn expects: int64 class indices, (N, 1) floats, or (N, k) floats."""
    if task.kind == "multiclass":
        if _is_one_hot(y):
            y = y.argmax(dim=1)
        elif y.dim() > 1 and math.prod(y.shape[1:]) == 1:  # labels as a column, (N, 1)
            y = y.reshape(len(y))
        if y.dim() != 1 or (y.is_floating_point() and not torch.equal(y, y.round())):
            raise DataError(f"multiclass labels must be integers (shape (N,)) or one-hot rows "
                            f"(shape (N, classes)); got shape {tuple(y.shape)}, dtype {y.dtype}")
        y = y.long()
        _check_label_range(y, task.n_outputs)
        return y
    if task.kind == "binary":
        y = y.reshape(len(y), -1).float()
        if y.shape[1] != 1 or not torch.all((y == 0) | (y == 1)):
            raise DataError("binary labels must be 0 or 1, one per sample; for more classes use "
                            "task='multiclass'")
        return y
    return y.reshape(len(y), -1).float()


def _check_label_range(y: Tensor, n_classes: int) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise DataError(f"labels must be in [0, {n_classes}) for a model with {n_classes} outputs, "
                        f"got labels from {int(y.min())} to {int(y.max())}; relabel the classes as "
                        f"0..{n_classes - 1} or give the model more outputs")


def probe_outputs(model: torch.nn.Module, x: Tensor) -> Tensor:
    """The model's outputs for a few samples, in eval mode without gradients; a model that cannot
    take such samples fails here, with a DataError, before any training."""
    was_training = model.training
    try:
        with torch.no_grad():
            outputs = model.eval()(x)
    except RuntimeError as error:
        raise DataError(f"the model cannot take samples of shape {tuple(x.shape[1:])}: "
                        f"{str(error).splitlines()[0]}; make its first layer fit the data") from None
    finally:
        model.train(was_training)
    if not isinstance(outputs, Tensor):
        raise DataError(f"the model returned {type(outputs).__name__}, not a tensor; return "
                        "the outputs (logits or values) as one tensor")
    return outputs


def check_outputs(task: Task, outputs: Tensor) -> None:
    """Raise if the model's outputs (a batch) cannot be compared with this task's targets."""
    expected = (task.n_outputs,)
    got = tuple(outputs.shape[1:])
    if outputs.dim() == 1 and task.kind != "multiclass" and task.n_outputs == 1:
        raise DataError(f"the model returns shape {tuple(outputs.shape)}; return (batch, 1) "
                        "for one output, e.g. end with nn.Linear(..., 1)")
    if got != expected:
        raise DataError(f"the model's output shape per sample is {got} but the {task.kind} targets "
                        f"need {expected}; make the model return shape (batch, {task.n_outputs})")


def _is_integer(y: Tensor) -> bool:
    return not y.is_floating_point() and not y.is_complex()


def _is_label_per_sample(y: Tensor) -> bool:
    """Integers, one per sample: shape (N,), or (N, 1) (a column)."""
    return _is_integer(y) and y.dim() >= 1 and math.prod(y.shape[1:]) == 1


def _is_one_hot(y: Tensor) -> bool:
    if y.dim() != 2 or y.shape[1] < 2 or y.numel() == 0:
        return False
    return bool(torch.all((y == 0) | (y == 1)) and torch.all(y.sum(dim=1) == 1))
