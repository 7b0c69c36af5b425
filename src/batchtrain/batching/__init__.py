"""Batch-size policies, memory ceiling and learning-rate coupling."""
