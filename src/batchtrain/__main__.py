"""`python -m batchtrain` runs the CLI (also how torchrun launches it)."""
from batchtrain.cli.app import console

console()
