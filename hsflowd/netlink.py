"""What pyroute2 needs around it here, shared by everything that talks netlink through it
(the eBPF sampler's tc filters, the tunnels' tables; the interface table and the bridge
port map read rtnetlink themselves, sources/rtnetlink.py)."""

from __future__ import annotations


def discard_stray_replies(ipr) -> None:
    """Empty pyroute2's queue of unsolicited messages.

    pyroute2 0.8 and later send a single-object request ("get") with NLM_F_ACK and return
    after the reply, so the kernel's ACK lands in the queue meant for broadcast messages,
    which nothing here reads: 70 bytes and about 1 KB of heap per request, for ever.  An
    IPRoute that subscribes to no group has only such ACKs in that queue.  0.7 has no
    such queue."""
    queue = getattr(getattr(getattr(ipr, "asyncore", None), "msg_queue", None), "root", None)
    if queue is None:
        return
    while not queue.empty():
        queue.get_nowait()
        queue.task_done()
