"""The life of a tap, shared by classic BPF (``pcap {}``) and eBPF (``epcap {}``).

``TapSampler.update(taps)`` brings the open taps in line with the wanted ones: a tap whose
settings changed is retuned in place where the kernel allows it (a new filter, a new
promiscuous membership: sequence numbers and the sample pool go on), else closed and opened
again; a tap that cannot be opened is logged once per reason and tried again with back-off
(1, 2, 4 ... 60 s) from ``tick``; an interface no longer wanted is closed.  Subclasses say
how to open, retune and close one tap and what to do once a second.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Dict, Iterable, List, Optional

from . import Tap, Watcher, NO_WATCHER
from .flow import FlowSampleBuilder
from .ports import PortMap

log = logging.getLogger("hsflowd.samplers")

RETRY_MIN, RETRY_MAX = 1.0, 60.0


class Tapped:
    """One open tap: what was asked, its sample builder, and the backend's handle."""

    __slots__ = ("tap", "builder", "handle", "watch", "ethernet")

    def __init__(self, tap: Tap, builder: FlowSampleBuilder, handle=None, ethernet: bool = True):
        self.tap, self.builder, self.handle, self.ethernet = tap, builder, handle, ethernet
        self.watch = None


class _Failure:
    __slots__ = ("tap", "why", "retry_at", "delay")

    def __init__(self, tap: Tap, why: str, retry_at: float, delay: float):
        self.tap, self.why, self.retry_at, self.delay = tap, why, retry_at, delay


def why_failed(e: BaseException) -> str:
    """One line: the errno's text where there is one (pyroute2's NetlinkError has .code)."""
    code = getattr(e, "code", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


class TapSampler:
    """Taps on interfaces, one flow-sample builder each, MAC tables for the port models."""

    label = "taps"
    # whether tick() wants the interfaces' packet counts for its sample pools (eBPF counts
    # the packets itself: no sysfs reads for it)
    wants_counts = True

    def __init__(self, emit: Callable[[bytes], None], interfaces: Callable[[], Iterable],
                 ports: Optional[PortMap] = None, watcher: Watcher = NO_WATCHER,
                 clock: Callable[[], float] = time.monotonic,
                 writer: Callable[[], Optional[object]] = lambda: None):
        self.emit = emit
        self.writer = writer              # the open datagram (samplers.flow's fast lane)
        self.interfaces = interfaces      # the current interface table, for the MAC tables
        self.ports = ports or PortMap()
        self.watcher = watcher
        self.clock = clock
        self.tapped: Dict[int, Tapped] = {}
        self.failed: Dict[int, _Failure] = {}

    # ------------------------------------------------------------ what subclasses say
    def _open(self, tap: Tap) -> Tapped:
        raise NotImplementedError

    def _retune(self, t: Tapped, tap: Tap) -> bool:
        """Apply ``tap``'s settings to the open tap ``t``; False if it must be re-opened."""
        return False

    def _close(self, t: Tapped) -> None:
        raise NotImplementedError

    def _tick(self, counts: Dict[int, int]) -> None:
        """Once a second: sample pools (``counts``: ifindex -> rx+tx packets) and drops."""

    # ------------------------------------------------------------ the life cycle
    def update(self, taps: Dict[int, Tap]) -> None:
        """Sample exactly these interfaces from now on."""
        for ifindex, t in list(self.tapped.items()):
            new = taps.get(ifindex)
            if new is not None and new.sampling_rate > 0 and (new == t.tap or self._retune(t, new)):
                if new != t.tap:
                    log.info("%s: sampling %s 1-in-%d, %d header bytes%s now", self.label,
                             new.name, new.sampling_rate, new.header_bytes,
                             ", promiscuous" if new.promisc else "")
                    t.tap = new
                continue
            self._stop(ifindex)
        for ifindex, tap in taps.items():
            if ifindex not in self.tapped and tap.sampling_rate > 0:
                failure = self.failed.get(ifindex)
                if failure is not None and failure.tap == tap and self.clock() < failure.retry_at:
                    continue  # the same thing failed a moment ago: wait for the retry
                self._start(tap)
        for ifindex in [i for i in self.failed if i not in taps or i in self.tapped]:
            del self.failed[ifindex]
        self.ports.interfaces_changed(self.interfaces(), (t.tap for t in self.tapped.values()))

    def _start(self, tap: Tap) -> None:
        try:
            t = self._open(tap)
        except Exception as e:  # this interface only: the others go on
            why = why_failed(e)
            old = self.failed.get(tap.ifindex)
            delay = min(RETRY_MAX, old.delay * 2) if old is not None else RETRY_MIN
            if old is None or old.why != why:
                log.warning("%s: cannot sample %s: %s; will try again", self.label, tap.name, why)
            self.failed[tap.ifindex] = _Failure(tap, why, self.clock() + delay, delay)
            return
        self.failed.pop(tap.ifindex, None)
        self.tapped[tap.ifindex] = t
        log.info("%s: sampling %s 1-in-%d, %d header bytes%s", self.label, tap.name,
                 tap.sampling_rate, tap.header_bytes, ", promiscuous" if tap.promisc else "")

    def _stop(self, ifindex: int) -> None:
        t = self.tapped.pop(ifindex, None)
        if t is not None:
            self.watcher.unwatch(t.watch)
            t.watch = None
            self._close(t)
            log.info("%s: stopped sampling %s", self.label, t.tap.name)

    def restart(self, ifindex: int, why: str) -> None:
        """A tap broke (a read error): close it and open it again at once."""
        t = self.tapped.get(ifindex)
        if t is None:
            return
        log.warning("%s: %s failed (%s); re-opening it", self.label, t.tap.name, why)
        self._stop(ifindex)
        self._start(t.tap)
        self.ports.interfaces_changed(self.interfaces(), (x.tap for x in self.tapped.values()))

    def tick(self, counts: Dict[int, int]) -> None:
        now = self.clock()
        retried = False
        for ifindex, failure in list(self.failed.items()):
            if now >= failure.retry_at and ifindex not in self.tapped:
                self._start(failure.tap)
                retried = True
        if retried:
            self.ports.interfaces_changed(self.interfaces(), (t.tap for t in self.tapped.values()))
        self._tick(counts)
        if self.tapped or self.ports.stale:
            self.ports.tick(self.interfaces())

    def status(self) -> List[dict]:
        return [{"ifname": t.tap.name, "sampling_rate": t.builder.sampling_rate,
                 "samples": t.builder.sequence_number, "drops": t.builder.drops}
                for t in self.tapped.values()]

    def close(self) -> None:
        for ifindex in list(self.tapped):
            self._stop(ifindex)
        self.failed.clear()
        self.ports.close()
