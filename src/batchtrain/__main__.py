"""`python -m batchtrain` runs the CLI (also how torchrun launches it)."""
import sys

from batchtrain.cli import main

sys.exit(main())
