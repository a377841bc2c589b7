"""markTraffic: which guests a sampled packet is between, as extended_entities (2210).

``Marks`` (docker {}): a container is found by the bridge port the packet crossed (the host
side of its veth, which the bridge model puts in the sample's input and output), else by
the IP addresses in its header, else by its MACs; hsflowd looks by IP, then MAC.  The
tables are the module's to rebuild when its guests change; the lookup is a few dict reads
per sample.

``SocketMarks`` (systemd {}): a service shares the host's addresses, so a packet is its
when the local socket it belongs to is: the socket's cgroup (``sources.sockowner``) is the
service's.  Asking the kernel is I/O, which a flow hook must not do: the hook reads a
cache of sockets and their cgroups, and a packet it does not find there goes without 2210
while its socket is looked up on a thread of its own, for the packets after it.  At most
LOOKUPS_PER_SECOND look-ups start each second, and one at a time per local port (a server's
answer serves all its clients).  An answer is kept for CACHE_SECONDS (sockets close, ports
are used again), and dropped sooner when its cgroup's service stops (started again, it has
a new group and new sockets).  A listening or unbound socket's answer serves every packet
to or from its port.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Iterable, Optional, Set, Tuple

from ..frames import TCP, UDP, SampledPacket, append_records
from ..sflow.flows import ExtendedEntities
from ..sources.sockowner import Endpoints, Owner, find_owner
from ..sources.tcpinfo import open_diag_socket
from .dsindex import DS_CLASS
from .handover import Handover, Worker

# one guest: (ds_index, host-side ports, IP addresses packed, MACs)
GuestAddresses = Tuple[int, Iterable[int], Iterable[bytes], Iterable[bytes]]

LOOKUPS_PER_SECOND = 50
MAX_ASKED = 256               # look-ups waiting for the thread
CACHE_SECONDS = 60.0
CACHE_MAX = 8192              # answers kept, of each kind


def append_entities(sample: bytes, src: int, dst: int) -> bytes:
    """``sample`` with extended_entities naming the guests 3:``src`` and 3:``dst`` (0: none)."""
    record = ExtendedEntities(src_dsClass=DS_CLASS if src else 0, src_dsIndex=src,
                              dst_dsClass=DS_CLASS if dst else 0, dst_dsIndex=dst)
    return append_records(sample, record.encode(), 1)


class Marks:
    """The guests' ports, addresses and MACs, and the hook that looks packets up."""

    def __init__(self):
        self.by_port: Dict[int, int] = {}
        self.by_ip: Dict[bytes, int] = {}
        self.by_mac: Dict[bytes, int] = {}

    def rebuild(self, guests: Iterable[GuestAddresses]) -> None:
        self.by_port, self.by_ip, self.by_mac = {}, {}, {}
        for ds_index, ports, ips, macs in guests:
            for port in ports:
                self.by_port[port] = ds_index
            for ip in ips:
                self.by_ip[ip] = ds_index
            for mac in macs:
                self.by_mac[mac] = ds_index

    @property
    def empty(self) -> bool:
        """No guest to find: the hook would add nothing."""
        return not (self.by_mac or self.by_port or self.by_ip)

    def mark(self, sample: bytes, pkt: SampledPacket) -> bytes:
        """``sample`` with extended_entities appended when either end is a guest."""
        src = self.by_port.get(pkt.input, 0)
        dst = self.by_port.get(pkt.output, 0) if pkt.output_format == 0 else 0
        if not (src and dst):
            if pkt.ip_version:
                src = src or self.by_ip.get(pkt.src_ip, 0)
                dst = dst or self.by_ip.get(pkt.dst_ip, 0)
            l2 = pkt.l2
            if l2 >= 0:
                src = src or self.by_mac.get(sample[l2 + 6:l2 + 12], 0)
                dst = dst or self.by_mac.get(sample[l2:l2 + 6], 0)
        if not (src or dst):
            return sample
        return append_entities(sample, src, dst)


@dataclass(frozen=True)
class Answer:
    """What the look-up thread found for one packet's sockets."""

    endpoints: Endpoints
    owner: Optional[Owner]
    error: str = ""


class SocketMarks:
    """The services' sockets: the flow hook (``mark``), its caches, and the look-up thread,
    there while there is a service to find.  ``watch(fd, callback)`` and ``unwatch`` are the
    module's (``Context``)."""

    def __init__(self, watch: Callable, unwatch: Callable, find: Callable = find_owner,
                 open_diag: Callable = open_diag_socket, clock: Callable[[], float] = time.monotonic):
        self.watch, self.unwatch = watch, unwatch
        self.find, self.open_diag, self.clock = find, open_diag, clock
        self.by_cgroup: Dict[int, int] = {}          # service cgroup id -> its ds index
        self.local: FrozenSet[bytes] = frozenset()   # this host's addresses
        # the sockets found: -> (cgroup id, 0 if none was found; when)
        self.connected: Dict[Endpoints, Tuple[int, float]] = {}
        self.bound: Dict[Tuple[int, bytes, int], Tuple[int, float]] = {}
        self.asked: Set[Tuple[int, bytes, int]] = set()     # local ends being looked up
        self.budget = LOOKUPS_PER_SECOND
        self.handover: Optional[Handover] = None
        self.worker: Optional[Worker] = None
        self.token: Any = None
        self._ds = None                              # the thread's DiagSocket
        self.lookups = self.marked = self.over_budget = self.errors = 0
        self.last_error = ""

    def set_services(self, by_cgroup: Dict[int, int]) -> None:
        """The services' cgroup ids now; the sockets of those that stopped are forgotten.
        The look-up thread is made with the first service (never in the hook)."""
        if by_cgroup and self.worker is None:
            self.handover = Handover()
            self.worker = Worker("systemd-sockets", self.handover).start()
            self.token = self.watch(self.handover.fileno(), self.answers)
        if by_cgroup == self.by_cgroup:
            return
        gone = set(self.by_cgroup) - set(by_cgroup)
        self.by_cgroup = dict(by_cgroup)
        for cache in (self.connected, self.bound) if gone else ():
            for key in [key for key, (cgroup_id, _) in cache.items() if cgroup_id in gone]:
                del cache[key]

    # ------------------------------------------------------------ the hot path
    def mark(self, sample: bytes, pkt: SampledPacket) -> bytes:
        """``sample`` with extended_entities when a local end is a service's socket."""
        proto = pkt.ip_protocol
        if (proto != TCP and proto != UDP) or pkt.l4 < 0 or pkt.l4 + 4 > pkt.end:
            return sample
        local = self.local
        src = dst = 0
        if pkt.src_ip in local:
            src = self._owner((proto, pkt.src_ip, pkt.src_port, pkt.dst_ip, pkt.dst_port))
        if pkt.dst_ip in local:
            dst = self._owner((proto, pkt.dst_ip, pkt.dst_port, pkt.src_ip, pkt.src_port))
        if not (src or dst):
            return sample
        self.marked += 1
        return append_entities(sample, src, dst)

    def _owner(self, key: Endpoints) -> int:
        found = self.connected.get(key)
        if found is None:
            found = self.bound.get(key[:3]) or self.bound.get((key[0], b"", key[2]))
            if found is None:
                self._ask(key)
                return 0
        return self.by_cgroup.get(found[0], 0)

    def _ask(self, key: Endpoints) -> None:
        if key[:3] in self.asked:
            return
        if self.budget <= 0 or len(self.asked) >= MAX_ASKED:
            self.over_budget += 1
            return
        self.budget -= 1
        self.asked.add(key[:3])
        self.lookups += 1
        self.worker.submit("lookup", lambda: self._lookup(key))

    # ------------------------------------------------------------ the look-up thread
    def _lookup(self, key: Endpoints) -> Answer:
        try:
            if self._ds is None:
                self._ds = self.open_diag()
            return Answer(key, self.find(self._ds, key))
        except Exception as e:   # handed to the loop; the socket is made again
            self._close_diag()
            return Answer(key, None, f"{type(e).__name__}: {e}")

    def _close_diag(self) -> None:
        if self._ds is not None:
            try:
                self._ds.close()
            except Exception:
                pass
            self._ds = None

    # ------------------------------------------------------------ in the loop
    def answers(self) -> None:
        now = self.clock()
        for answer in self.handover.drain():
            key, owner = answer.endpoints, answer.owner
            self.asked.discard(key[:3])
            if answer.error:
                self.errors += 1
                self.last_error = answer.error
                continue
            cgroup_id = owner.cgroup_id if owner is not None else 0
            if owner is None or owner.bound is None:
                _put(self.connected, key, (cgroup_id, now))
            else:
                _put(self.bound, (key[0], owner.bound, key[2]), (cgroup_id, now))

    def tick(self, now: float) -> None:
        self.budget = LOOKUPS_PER_SECOND
        for cache in (self.connected, self.bound):
            while cache:
                oldest = next(iter(cache))
                if now - cache[oldest][1] < CACHE_SECONDS:
                    break
                del cache[oldest]

    def status(self) -> Dict[str, int]:
        return {"lookups": self.lookups, "marked": self.marked,
                "over_budget": self.over_budget, "errors": self.errors,
                "cached": len(self.connected) + len(self.bound)}

    def close(self) -> None:
        if self.worker is not None:
            self.worker.submit("close", self._close_diag)
            self.worker.close()
            self.unwatch(self.token)
            self.handover.close()
            self.worker = self.handover = self.token = None
        self.asked.clear()
        self.by_cgroup = {}


def _put(cache: Dict, key, value) -> None:
    if len(cache) >= CACHE_MAX:
        del cache[next(iter(cache))]
    cache[key] = value
