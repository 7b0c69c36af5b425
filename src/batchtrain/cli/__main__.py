"""`python -m batchtrain.cli` runs the CLI, as `python -m batchtrain` does."""
from batchtrain.cli.app import console

console()
