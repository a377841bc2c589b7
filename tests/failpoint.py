"""Run the agent (``hsflowd.cli``) with one function of it made to fail once, on demand.

    python failpoint.py MODULE:QUALNAME TRIGGER_FILE -- [hsflowd arguments]

While TRIGGER_FILE exists, the next call of MODULE.QUALNAME raises RuntimeError and removes
the file: the test says when, the agent is a real process, and nothing in the agent's own
code exists for the test's sake.  Patched before the agent starts, so a method the agent
binds later (a flow hook) is the failing one.
"""

from __future__ import annotations

import importlib
import os
import sys


def arm(target: str, trigger: str) -> None:
    module_name, _, qualname = target.partition(":")
    owner = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    def failing(*args, **kwargs):
        if os.path.exists(trigger):
            os.unlink(trigger)
            raise RuntimeError(f"failpoint: {target} made to fail once by the test")
        return original(*args, **kwargs)

    setattr(owner, name, failing)


def main(argv) -> int:
    target, trigger, separator, *rest = argv
    if separator != "--":
        raise SystemExit("usage: failpoint.py MODULE:QUALNAME TRIGGER -- ARGS")
    arm(target, trigger)
    from hsflowd.cli import run
    return run(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
