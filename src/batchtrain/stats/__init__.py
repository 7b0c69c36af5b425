"""Gradient-noise statistics for adaptive batch sizes: estimators (noise.py), their smoothing over
steps (tracker.py), their measurement during gradient accumulation (collector.py), in an
adaptive optimizer's geometry (precondition.py)."""
from batchtrain.stats.collector import MicroBatchGradients, split_for_stats
from batchtrain.stats.noise import (adascale_gain, grad_sq_estimate, noise_scale, norm_test_batch,
                                    step_estimates, trace_estimate)
from batchtrain.stats.precondition import Preconditioner
from batchtrain.stats.tracker import NoiseEstimate, NoiseScaleTracker

__all__ = ["MicroBatchGradients", "NoiseEstimate", "NoiseScaleTracker", "Preconditioner",
           "adascale_gain",
           "grad_sq_estimate", "noise_scale", "norm_test_batch", "split_for_stats",
           "step_estimates", "trace_estimate"]
