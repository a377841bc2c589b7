"""``python3 -m hsflowd``: the same as the hsflowd command."""

import sys

from .cli import run

sys.exit(run())
