"""``tcp { }``: extended_tcp_info (2209) on the flow samples of this host's own TCP
connections: RTT, retransmits, MSS, window, from the kernel's tcp_info (hsflowd's mod_tcp).

A flow hook (``flowhooks``) sees every sampled packet.  One whose source or destination
(not both) is an address of this host belongs to a local socket: the hook keeps the sample
and asks for that socket's tcp_info; the sample goes out when the answer comes, with 2209
appended (direction: sent when the packet's source is the local end, received when its
destination is), or without it when the socket is not found (a connection just closed, or
one the packet only passed through).

The look-ups never hold up sampling: they run on a thread of their own through pyroute2's
DiagSocket (one filtered inet_diag dump each, about a millisecond), and the thread wakes
the loop through a socket pair when an answer is ready.  At most 50 look-ups start each
second; a sample over that budget goes out at once without 2209 (counted); samples of a
connection already being looked up wait for the same answer (16 at most, 256 samples held
in all).  An answer later than 0.4 s (hsflowd's deadline) is not asked for any more, and a
sample held a full second goes out without 2209 whatever happens, so none waits longer
than the spec allows.  Held samples may leave in another order than they were taken, as in
hsflowd.

Unlike hsflowd: sockets in any connected state are looked at, not only established ones;
a v4 connection on a dual-stack socket is found too; ``udp=on`` and ``tunnel=on`` are not
supported; look-ups are bounded per second.
"""

from __future__ import annotations

import collections
import queue
import socket
import threading
import time
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Optional, Tuple

from ..frames import SampledPacket, append_records
from ..sources.interfaces import local_addresses
from ..sources.tcpinfo import (DIR_RECEIVED, DIR_SENT, Connection, endpoints, open_diag_socket,
                               read_tcp_info, tcp_info_record)
from . import AgentState, Module, register

LOOKUPS_PER_SECOND = 50
PER_CONNECTION = 16           # samples waiting for one answer
MAX_HELD = 256                # samples waiting in all
DEADLINE = 0.4                # s: a look-up not started by then is not made (hsflowd's timeout)
HOLD_MAX = 1.0                # s: a sample is never held longer
LOG_INTERVAL = 60.0


class _Pending:
    __slots__ = ("since", "samples")

    def __init__(self, since: float, sample: bytes, dirn: int):
        self.since = since
        self.samples: List[Tuple[bytes, int]] = [(sample, dirn)]


@register("tcp", enabled=lambda config: config.tcp is not None)
class TcpModule(Module):
    def __init__(self, ctx, read: Callable = read_tcp_info, open_diag: Callable = open_diag_socket,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(ctx)
        self.read, self.open_diag, self.clock = read, open_diag, clock
        self.local: FrozenSet[bytes] = frozenset()
        self.pending: Dict[Connection, _Pending] = {}
        self.held = 0
        self.budget = LOOKUPS_PER_SECOND
        self.requests: "queue.SimpleQueue" = queue.SimpleQueue()
        self.results: Deque[Tuple[Connection, Any]] = collections.deque()
        self.lookups = self.annotated = self.not_found = self.over_budget = self.late = 0
        self.errors = 0
        self.last_error: Optional[str] = None
        self.next_log = 0.0
        self.wake_r, self.wake_w = socket.socketpair()
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        ctx.watch(self.wake_r.fileno(), self._answers)
        self.worker = threading.Thread(target=self._work, name="tcp-diag", daemon=True)
        self.worker.start()
        ctx.add_flow_hook(self._hook)

    def reconcile(self, state: AgentState) -> None:
        if "interfaces" in state.changed or not self.local:
            self.local = local_addresses(state.interfaces)

    # ------------------------------------------------------------ the hot path
    def _hook(self, sample: bytes, pkt: SampledPacket) -> Optional[bytes]:
        conn = endpoints(pkt)
        if conn is None:
            return sample
        version, src, dst, sport, dport = conn
        local = self.local
        if src in local:
            if dst in local:
                return sample                     # both ends here: loopback, say
            key, dirn = conn, DIR_SENT
        elif dst in local:
            key, dirn = (version, dst, src, dport, sport), DIR_RECEIVED
        else:
            return sample                         # passing through
        if self.held >= MAX_HELD:
            self.over_budget += 1
            return sample
        pending = self.pending.get(key)
        if pending is not None:
            if len(pending.samples) >= PER_CONNECTION:
                self.over_budget += 1
                return sample
            pending.samples.append((sample, dirn))
            self.held += 1
            return None
        if self.budget <= 0:
            self.over_budget += 1
            return sample
        self.budget -= 1
        now = self.clock()
        self.pending[key] = _Pending(now, sample, dirn)
        self.held += 1
        self.lookups += 1
        self.requests.put((key, now))
        return None

    # ------------------------------------------------------------ the look-up thread
    def _work(self) -> None:
        ds = None
        while True:
            item = self.requests.get()
            if item is None:
                break
            key, asked = item
            if self.clock() - asked > DEADLINE:
                answer: Any = "late"
            else:
                try:
                    if ds is None:
                        ds = self.open_diag()
                    answer = self.read(ds, key)
                except Exception as e:   # reported by the loop; the socket is made again
                    answer = e
                    if ds is not None:
                        _close(ds)
                        ds = None
            self.results.append((key, answer))
            try:
                self.wake_w.send(b"!")
            except OSError:
                pass                     # full: the loop is already woken
        if ds is not None:
            _close(ds)

    # ------------------------------------------------------------ answers, in the loop
    def _answers(self) -> None:
        try:
            while self.wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return
        while self.results:
            key, answer = self.results.popleft()
            pending = self.pending.pop(key, None)
            if pending is None:
                continue                  # already sent without it
            self.held -= len(pending.samples)
            if isinstance(answer, dict):
                for sample, dirn in pending.samples:
                    self.ctx.send(append_records(sample, tcp_info_record(answer, dirn).encode(),
                                                 1))
                self.annotated += len(pending.samples)
                continue
            if answer is None:
                self.not_found += 1
            elif answer == "late":
                self.late += 1
            else:
                self.errors += 1
                self.last_error = f"{type(answer).__name__}: {answer}"
            for sample, _ in pending.samples:
                self.ctx.send(sample)

    def tick(self, now: float) -> None:
        self.budget = LOOKUPS_PER_SECOND
        late = []
        for key, p in self.pending.items():   # in the order they were held: oldest first
            if now - p.since < HOLD_MAX:
                break
            late.append(key)
        for key in late:
            pending = self.pending.pop(key)
            self.held -= len(pending.samples)
            self.late += 1
            for sample, _ in pending.samples:
                self.ctx.send(sample)
        if self.last_error and now >= self.next_log:
            self.log.warning("tcp: inet_diag look-ups failing (%d so far): %s", self.errors,
                             self.last_error)
            self.last_error = None
            self.next_log = now + LOG_INTERVAL

    def status(self) -> Dict[str, Any]:
        return {"tcp": {"lookups": self.lookups, "annotated": self.annotated,
                        "not_found": self.not_found, "over_budget": self.over_budget,
                        "late": self.late, "errors": self.errors, "held": self.held}}

    def close(self) -> None:
        self.requests.put(None)
        self.worker.join(0.5)            # a look-up takes a millisecond; never wait long
        for pending in self.pending.values():
            for sample, _ in pending.samples:
                self.ctx.send(sample)
        self.pending.clear()
        self.held = 0
        self.wake_r.close()
        self.wake_w.close()


def _close(ds) -> None:
    try:
        ds.close()
    except Exception:
        pass
