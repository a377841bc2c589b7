"""What every layer says about an error it did not expect: one line, never a traceback.

A leaf of the package (it imports nothing of it), so that the wire format, the sources,
the daemon threads of ``virt`` and the supervisor all say a failure the same way.
"""

from __future__ import annotations


def one_line(e: BaseException, kind: bool = True) -> str:
    """The first line of ``e``'s text, after its type's name (``kind``: libvirt's own
    messages say what they are and go without it); the type's name alone if it has none."""
    text = str(e).strip().splitlines()
    if not text:
        return type(e).__name__
    return f"{type(e).__name__}: {text[0]}" if kind else text[0]
