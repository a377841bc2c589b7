"""Host sFlow agent for Linux: a drop-in replacement for hsflowd, in Python."""

__version__ = "0.1.0"
