"""The learning problem: task kinds, losses and targets (kinds), and the metrics (metrics)."""
from batchtrain.tasks.kinds import Task, infer_task, prepare_targets
from batchtrain.tasks.metrics import MetricSet

__all__ = ["MetricSet", "Task", "infer_task", "prepare_targets"]
