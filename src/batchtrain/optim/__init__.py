"""Optimizers by name (optimizers) and sample-keyed learning-rate schedules (schedules)."""
from batchtrain.optim.optimizers import OptimizerLike, make_optimizer

__all__ = ["OptimizerLike", "make_optimizer"]
