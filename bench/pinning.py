"""One core for the in-process benchmarks: figures that do not depend on the scheduler moving
the process between CPUs."""

from __future__ import annotations

import os


def pin_one_core() -> str:
    """Pin this process to its first allowed CPU; says what was done, for the header line."""
    try:
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity)"
