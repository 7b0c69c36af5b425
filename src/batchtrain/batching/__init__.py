"""Batch-size policies (base.py protocol; fixed, schedules), specs, memory ceiling, lr coupling."""
from batchtrain.batching.base import BatchSizePolicy, StepStats
from batchtrain.batching.coupling import LR_SCALING_RULES, LearningRate, default_lr_scaling, lr_scale
from batchtrain.batching.fixed import Fixed
from batchtrain.batching.schedule import Doubling, Piecewise, Ramp, Schedule
from batchtrain.batching.spec import parse_batch_size

__all__ = ["LR_SCALING_RULES", "BatchSizePolicy", "Doubling", "Fixed", "LearningRate", "Piecewise",
           "Ramp", "Schedule", "StepStats", "default_lr_scaling", "lr_scale", "parse_batch_size"]
