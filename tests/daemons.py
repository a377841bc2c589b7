"""Starting one of the tests' private daemons (dockerd, libvirtd, containerd), or saying
why it cannot run here: a skip that CI turns into a failure (the install step is broken)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Type

import pytest


def start_or_skip(what: str, why_not: Callable[[], Optional[str]], make: Callable[[], Any],
                  unavailable: Type[Exception], ready: Callable[[Any], None] = lambda d: None):
    """``make()`` started (and ``ready(d)`` done), or the test skipped with the reason;
    the caller stops it."""
    why = why_not()
    if why:
        pytest.skip(f"{what} cannot run here: {why}")
    d = make()
    try:
        d.start()
        ready(d)
    except unavailable as e:
        d.stop()
        pytest.skip(f"{what} cannot run here: {e}")
    return d
