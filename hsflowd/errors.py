"""What every layer says about an error it did not expect: one line, never a traceback.

A leaf of the package (it imports nothing of it), so that the wire format, the sources,
the daemon threads of ``virt`` and the supervisor all say a failure the same way.
"""

from __future__ import annotations

import traceback


def one_line(e: BaseException, kind: bool = True) -> str:
    """The first line of ``e``'s text, after its type's name (``kind``: libvirt's own
    messages say what they are and go without it); the type's name alone if it has none."""
    text = str(e).strip().splitlines()
    if not text:
        return type(e).__name__
    return f"{type(e).__name__}: {text[0]}" if kind else text[0]


def let_go(e: BaseException) -> None:
    """Clear the frames ``e`` and its causes hold, once it has been said.  A client
    library's exception keeps the frames of the failed call, and with them what the call
    had opened (the socket docker-py could not connect while dockerd restarts); the
    exception and its frames form a cycle that only the garbage collector frees, and an
    idle agent may not run it for hours: one descriptor left open for each failed try."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)   # a frame still running is left as it is
        e = e.__cause__ or e.__context__
