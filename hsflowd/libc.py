"""The C library, for the few calls Python's os module lacks here (setns, capset, prctl,
malloc_trim)."""

from __future__ import annotations

import ctypes
import functools


@functools.lru_cache(maxsize=None)
def libc() -> ctypes.CDLL:
    """The symbols already loaded into this process, opened once (``find_library`` would run
    ldconfig in a subprocess at every call)."""
    return ctypes.CDLL(None, use_errno=True)
