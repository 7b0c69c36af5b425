"""`python -m batchtrain` runs the CLI (also how torchrun launches it)."""
from batchtrain.cli import console

console()
