"""The learning problem: task kinds, losses and targets (kinds), and the metrics (metrics)."""
