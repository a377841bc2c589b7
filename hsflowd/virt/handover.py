"""Threads that talk to a daemon (dockerd, libvirtd) on the agent's behalf, and the way
their results reach the agent's single-threaded loop.

``Handover``: messages from any thread, queued, with one byte written to a socketpair
whose read end the loop watches (``ctx.watch``); the loop drains them in order.

``Link``: what every daemon connection (``dockerapi``, ``libvirtapi``, ``containerdapi``,
``systemdapi``) offers the guest modules of the loop: its handover's descriptor to watch
and its messages to drain.

``Worker``: one thread that makes the calls it is given, one at a time, and hands each
answer over (``submit``), or lets the loop wait for one answer for a bounded time
(``call``: the loop never waits longer than that on a daemon, and does not wait at all
while an earlier call is still out).
"""

from __future__ import annotations

import collections
import queue
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional

from ..errors import let_go, one_line


# what a connection's threads hand over besides a call's answer (both daemons alike)
@dataclass(frozen=True)
class Connected:
    version: str              # the daemon's API or library version, for the log


@dataclass(frozen=True)
class Lost:
    reason: str


@dataclass(frozen=True)
class CallFailed:
    what: str
    reason: str
    ticket: Optional[int] = None       # the caller's, handed back (which list failed)


def lost(e: BaseException, kind: bool = True) -> Lost:
    """``Lost`` for the exception that ended a connection, said in one line, its frames let
    go (``errors.let_go``: a connection that failed must not hold a descriptor until the
    garbage collector runs)."""
    reason = one_line(e, kind)
    let_go(e)
    return Lost(reason)


def call_failed(what: str, e: BaseException, ticket: Optional[int] = None,
                kind: bool = True) -> CallFailed:
    """``CallFailed`` for the exception a call raised, as ``lost`` does."""
    reason = one_line(e, kind)
    let_go(e)
    return CallFailed(what, reason, ticket)


class Handover:
    def __init__(self):
        self._messages: Deque[Any] = collections.deque()
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self.closed = threading.Event()

    def fileno(self) -> int:
        return self._r.fileno()

    def post(self, message: Any) -> None:
        if self.closed.is_set():
            return
        self._messages.append(message)
        try:
            self._w.send(b"x")
        except OSError:
            pass      # full (a wake-up is pending anyway) or closed under us

    def drain(self) -> List[Any]:
        try:
            while self._r.recv(4096):
                pass
        except OSError:
            pass
        out = []
        while self._messages:
            out.append(self._messages.popleft())
        return out

    def close(self) -> None:
        self.closed.set()
        self._r.close()
        self._w.close()


class Link:
    """A connection to a daemon whose threads hand their messages to the loop: the loop
    watches ``fileno()`` and, when it is readable, ``drain()``s them.  A subclass makes
    ``self.handover`` and its threads, and ``start()`` starts them."""

    handover: Handover

    def fileno(self) -> int:
        return self.handover.fileno()

    def drain(self) -> List[Any]:
        """Every message handed over so far, oldest first."""
        return self.handover.drain()


class Busy(Exception):
    """The worker is still making an earlier call."""


class Worker:
    """A thread making calls: ``submit(fn)`` hands ``fn()``'s answer (unless None) to
    ``handover``; ``call(fn, timeout)`` waits for it."""

    def __init__(self, name: str, handover: Handover,
                 failed: Callable[[str, BaseException], Any] = lambda what, e: None):
        self.handover = handover
        self.failed = failed       # the message to hand over when a submitted call raises
        self._queue: "queue.Queue[Optional[tuple]]" = queue.Queue()
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> "Worker":
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def submit(self, what: str, fn: Callable[[], Any]) -> None:
        self._queue.put((what, fn, None))

    def call(self, fn: Callable[[], Any], timeout: float) -> Any:
        """``fn()`` on the worker's thread; Busy if an earlier call is still out or this
        one takes longer than ``timeout`` (its answer is then dropped)."""
        if self._busy.is_set() or not self._queue.empty():
            raise Busy("an earlier call is still out")
        box: list = []
        done = threading.Event()
        self._queue.put(("call", fn, (box, done)))
        if not done.wait(timeout):
            raise Busy(f"no answer within {timeout} s")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def close(self, wait: float = 0.3) -> None:
        self._queue.put(None)
        if self._started and self._thread is not threading.current_thread():
            self._thread.join(wait)

    def _run(self) -> None:
        while not self.handover.closed.is_set():
            item = self._queue.get()
            if item is None:
                return
            what, fn, waiter = item
            self._busy.set()
            try:
                answer = fn()
            except BaseException as e:   # handed to whoever asked
                answer = e
            finally:
                self._busy.clear()
            if waiter is not None:
                box, done = waiter
                box.append(answer)
                done.set()
            elif isinstance(answer, BaseException):
                message = self.failed(what, answer)
                if message is not None:
                    self.handover.post(message)
            elif answer is not None:
                self.handover.post(answer)
