"""The event loop: one thread, one selector, a tick every second, signals as flags.

Signal handlers are installed when the loop is made, before any module starts (an eBPF
compile can take seconds), and they only set a flag and write to a wake-up socket, so a
SIGTERM during start-up is seen as soon as the start-up step in progress returns.

File descriptors are watched through ``Watch`` tokens, not by number: a module that closes
a socket and opens another gets the same number back from the kernel, and the old number's
registration must not stand for the new file.  ``watch`` replaces any registration left
on that number, and ``unwatch`` only removes its own.
"""

from __future__ import annotations

import logging
import selectors
import signal
import socket
import time
from typing import Callable, Optional

log = logging.getLogger("hsflowd")

TICK = 1.0


class Watch:
    """One registration: ``callback()`` runs when ``fd`` is readable (or has an error)."""

    __slots__ = ("fd", "callback", "active")

    def __init__(self, fd: int, callback: Callable[[], None]):
        self.fd = fd
        self.callback = callback
        self.active = True


class Loop:
    """select() over the watched descriptors, ``tick(now)`` once a second, and the flags
    that SIGHUP (reload) and SIGTERM/SIGINT (stop) raise."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.reload_requested = False
        self._next_error_log = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno())
        self._previous = {s: signal.signal(s, h) for s, h in (
            (signal.SIGHUP, self._on_hup), (signal.SIGTERM, self._on_stop),
            (signal.SIGINT, self._on_stop))}
        self._wake_watch = self.watch(self._wake_r.fileno(), self._drain_wakeups)

    # ------------------------------------------------------------ signals
    def _on_hup(self, *_args) -> None:
        self.reload_requested = True

    def _on_stop(self, *_args) -> None:
        self.stopping = True

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # ------------------------------------------------------------ descriptors
    def watch(self, fd: int, callback: Callable[[], None]) -> Watch:
        token = Watch(fd, callback)
        try:
            old = self.selector.get_key(fd).data
        except KeyError:
            old = None
        if old is not None:
            # that number was closed and reused without an unwatch: the new file wins
            old.active = False
            self.selector.unregister(fd)
        self.selector.register(fd, selectors.EVENT_READ, token)
        return token

    def unwatch(self, token: Optional[Watch]) -> None:
        if token is None or not token.active:
            return
        token.active = False
        try:
            if self.selector.get_key(token.fd).data is token:
                self.selector.unregister(token.fd)
        except (KeyError, ValueError, OSError):
            pass

    # ------------------------------------------------------------ running
    def run(self, tick: Callable[[float], None], on_reload: Callable[[], None],
            ready: Optional[Callable[[], None]] = None) -> None:
        """Until SIGTERM/SIGINT: ``tick`` once a second (the first at once), callbacks as
        their descriptors become readable, ``on_reload`` after a SIGHUP."""
        next_tick = time.monotonic()
        while not self.stopping:
            if self.reload_requested:
                self.reload_requested = False
                self._guarded("reload", on_reload)
                continue
            now = time.monotonic()
            if now >= next_tick:
                self._guarded("tick", tick, now)
                if ready is not None:
                    ready()
                    ready = None
                next_tick += TICK
                if next_tick < now:  # suspended or very late: do not catch up
                    next_tick = now + TICK
                continue
            for key, _ in self.selector.select(timeout=next_tick - now):
                token: Watch = key.data
                if token.active:
                    self._guarded("event", token.callback)
                if self.stopping or self.reload_requested:
                    break

    def _guarded(self, what: str, fn: Callable, *args) -> None:
        """The last line of defence: modules are isolated by their supervisor, and the
        agent's own handlers catch what they expect; anything else is logged (at most once
        a minute) and the loop goes on."""
        try:
            fn(*args)
        except Exception:
            now = time.monotonic()
            if now >= self._next_error_log:
                self._next_error_log = now + 60.0
                log.exception("unexpected error in the agent's %s; going on", what)

    def close(self) -> None:
        if self._wake_watch is None:
            return
        self.unwatch(self._wake_watch)
        self._wake_watch = None
        self.selector.close()
        signal.set_wakeup_fd(self._old_wakeup)
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._wake_r.close()
        self._wake_w.close()

