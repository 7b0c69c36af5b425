"""Saving and restoring: checkpoint files, exact resume, saved models, run directories and the
bounded, atomic file I/O beneath them."""
