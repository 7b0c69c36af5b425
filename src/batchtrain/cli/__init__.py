"""The command line: argument parsing (app), option files and config (configfiles, config), the
CLI's jobs (runner) and the probe."""
from batchtrain.cli.app import console, main

__all__ = ["console", "main"]
