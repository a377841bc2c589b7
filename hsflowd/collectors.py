"""Sending datagrams to collectors over UDP, never blocking the agent.

Collectors share sockets: one per (address family, ``dev=``, ``namespace=``), so ten thousand
collectors cost two file descriptors, not ten thousand.  ``dev=`` pins the route to an
interface with IP_UNICAST_IF (as hsflowd, no privilege needed); ``namespace=`` makes the
socket inside that network namespace, from a short-lived thread, so the agent's own thread
never leaves its namespace.

A collector that is down, unreachable or not resolvable yet costs a counted error and a log
line at a rate a person can read; the others keep receiving.  Send errors of all the
collectors together make one line at most per tick (``ErrorLog``), so ten thousand
collectors on a host that refuses them cost a line a minute, not ten thousand.  Names are
resolved on a worker thread, so a resolver that does not answer never holds up the
agent's loop; an address written as one never goes there.

Errors the network sends back (ICMP port or host unreachable, e.g. a collector on a local
port where nothing listens) arrive on the socket's error queue (IP_RECVERR), each with the
destination it concerns, and are counted against that collector.  Linux also raises such an
error on the next send from the same socket, whatever its destination: that send is retried
once after the queue is read, so one collector's trouble never costs another a datagram.
"""

from __future__ import annotations

import concurrent.futures
import errno
import functools
import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from .config.values import canonical_ipv4

log = logging.getLogger("hsflowd.collectors")

SEND_BUFFER = 2_000_000      # as hsflowd
ERROR_LOG_INTERVAL = 60.0    # seconds between error reports for one collector, and
                             # between summaries of the same collectors' send errors
NAMED = 3                    # collectors named in a summary line, per kind of error
RESOLVE_RETRY_MIN, RESOLVE_RETRY_MAX = 1.0, 60.0   # a failed name is tried again after
                                                  # 1, 2, 4 ... 60 s
RESOLVE_WAIT = 0.5           # at start, how long to wait for names before the first datagram
IP_UNICAST_IF = 50
IPV6_UNICAST_IF = 76
IP_RECVERR = 11
IPV6_RECVERR = 25
MSG_ERRQUEUE = 0x2000
_ERRQUEUE_NOW = MSG_ERRQUEUE | int(socket.MSG_DONTWAIT)   # an int: flags of enums cost
_EXTENDED_ERR = struct.Struct("=IBBBBII")   # struct sock_extended_err


@dataclass
class CollectorStats:
    sent: int = 0
    errors: int = 0
    last_error: str = ""


@dataclass(eq=False)
class Destination:
    """One configured collector (equal only to itself: it has figures of its own)."""

    host: str
    port: int
    dev: Optional[str] = None
    namespace: Optional[str] = None
    where: str = ""                 # "FILE:LINE" of its config block, for messages
    address: Optional[Tuple] = None  # sockaddr once resolved
    family: int = 0
    stats: CollectorStats = field(default_factory=CollectorStats)
    pending: Optional[concurrent.futures.Future] = None  # a name being resolved
    next_resolve: float = 0.0
    resolve_delay: float = RESOLVE_RETRY_MIN
    next_report: float = 0.0
    unreported: int = 0
    told_until: float = 0.0         # its send errors were in a summary; until then counted only
    echoes: bool = True             # its datagrams come back refused during the send itself
                                    # (see Collectors._echo; assumed until its first is not)
    sender: Optional["Sender"] = None

    @property
    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in (("dev", self.dev), ("namespace", self.namespace)) if v)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}{extra}"

    @property
    def sock(self) -> Optional[socket.socket]:
        """The socket datagrams to this collector leave from (None until it is reachable)."""
        return self.sender.sock if self.sender is not None and self.address is not None else None


def _literal(host: str, port: int) -> Optional[Tuple[int, Tuple]]:
    """(family, sockaddr) for an address written as one, else None (a name)."""
    ipv4 = canonical_ipv4(host)   # ten thousand collectors start in the same tick
    if ipv4 is not None:
        return socket.AF_INET, (ipv4, port)
    try:
        ip = ip_address(host.strip("[]"))
    except ValueError:
        return None
    if ip.version == 4:
        return socket.AF_INET, (str(ip), port)
    return socket.AF_INET6, (str(ip), port, 0, 0)


def _resolve(host: str, port: int) -> Tuple[int, Tuple]:
    """(family, sockaddr) of a name: the first answer, IPv4 preferred.  Blocks: run it on
    the resolver thread."""
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    answers.sort(key=lambda a: a[0] != socket.AF_INET)
    family, _, _, _, sockaddr = answers[0]
    return family, sockaddr


def _in_namespace(namespace: str, make: Callable[[], socket.socket]) -> socket.socket:
    """Run ``make`` in a thread that has joined ``namespace`` (/var/run/netns/NAME)."""
    from pyroute2 import netns  # setns() for Pythons before 3.12

    result: List = []

    def worker():
        try:
            netns.setns(namespace, flags=0)  # join only: pyroute2 would create a missing one
            result.append(make())
        except Exception as e:  # reported to the caller below
            result.append(e)

    t = threading.Thread(target=worker, name=f"netns-{namespace}")
    t.start()
    t.join()
    if isinstance(result[0], Exception):
        raise result[0]
    return result[0]


SenderKey = Tuple[int, Optional[str], Optional[str]]   # family, dev, namespace


class Sender:
    """One non-blocking UDP socket, shared by every collector with the same key."""

    def __init__(self, key: SenderKey):
        family, dev, namespace = key
        self.key = key

        def make() -> socket.socket:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                if family == socket.AF_INET:
                    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
                if dev:
                    ifindex = socket.if_nametoindex(dev)
                    if family == socket.AF_INET:
                        # IPv4 takes the index in network byte order, IPv6 in host order
                        sock.setsockopt(socket.IPPROTO_IP, IP_UNICAST_IF, struct.pack("!I", ifindex))
                    else:
                        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_UNICAST_IF, ifindex)
            except OSError:
                sock.close()
                raise
            return sock

        self.sock = _in_namespace(namespace, make) if namespace else make()
        self.routes: Dict[Tuple[str, int], Destination] = {}  # whom an error concerns

    def error(self) -> Optional[Tuple[Optional[Tuple], int]]:
        """The oldest error the network sent back, (destination sockaddr, errno), or None
        if there is none.  Reading the last one clears the error the next send would get."""
        try:
            _, ancdata, _, address = self.sock.recvmsg(1, 512, _ERRQUEUE_NOW)
        except OSError:        # BlockingIOError: none queued
            return None
        code = 0
        for _level, _type, data in ancdata:
            if len(data) >= _EXTENDED_ERR.size:
                code = _EXTENDED_ERR.unpack_from(data)[0]
        return address, code

    def errors(self) -> Iterable[Tuple[Optional[Tuple], int]]:
        """Every error queued, oldest first."""
        while True:
            error = self.error()
            if error is None:
                return
            yield error

    def close(self) -> None:
        self.sock.close()


def _key(sockaddr: Tuple) -> Tuple[str, int]:
    """What names a destination in a sockaddr: host and port (IPv6 flow info aside)."""
    return sockaddr[0], sockaddr[1]


ErrorKind = Tuple[str, str]     # what happened, why: ("send failed", "ENETUNREACH ...")


class ErrorLog:
    """The send errors of all the collectors, told in one line at most per tick.

    Every error is counted against its collector at once (``hsflowd status``); the log is
    for a person.  A line is written at the end of a tick when a collector has errors and
    is not in a line of the last ERROR_LOG_INTERVAL (something new: told within a
    second), or when that interval has passed since the last line and there were errors
    since: then the line covers every collector with errors since the last one, and each
    of them counts as told for another interval.  So a steady state, however many
    collectors it has, is one line a minute; collectors that fail one after another add
    a line a tick at most, and only until each has been told once.  (A line per
    collector, or a line whenever the set of failing collectors changes, would be
    thousands of lines a minute when the network answers only some datagrams, as ICMP
    rate limits make it.)
    """

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.pending: Dict[Destination, List] = {}    # [errors, ErrorKind] since the last line
        self.since = 0.0                               # when the first of them came
        self.next_line = 0.0

    def add(self, d: Destination, kind: ErrorKind) -> None:
        entry = self.pending.get(d)
        if entry is not None:
            entry[0] += 1
            entry[1] = kind
            return
        if not self.pending:
            self.since = self.clock()
        self.pending[d] = [1, kind]

    def flush(self, now: float, total: int) -> Optional[str]:
        """The line to write now, if one is due."""
        pending = self.pending
        if not pending:
            return None
        if now < self.next_line and all(now < d.told_until for d in pending):
            return None
        line = summary(pending, total, max(1, round(now - self.since)))
        for d in pending:
            d.told_until = now + ERROR_LOG_INTERVAL
        self.pending = {}
        self.next_line = now + ERROR_LOG_INTERVAL
        return line


def summary(pending: Dict[Destination, List], total: int, seconds: int) -> str:
    """"N of M collectors had errors ...", then per kind of error a few of them by name."""
    groups: Dict[ErrorKind, List[Destination]] = {}
    errors = 0
    for d, (count, kind) in pending.items():
        groups.setdefault(kind, []).append(d)
        errors += count
    parts = []
    for (what, why), ds in sorted(groups.items(), key=lambda g: -len(g[1])):
        names = ", ".join(f"{d.label} ({d.where})" if d.where else d.label for d in ds[:NAMED])
        more = f" and {len(ds) - NAMED} more" if len(ds) > NAMED else ""
        parts.append(f"{what}: {why}: {names}{more}")
    return (f"{len(pending)} of {total} collectors had errors in the last {seconds} s "
            f"({errors} in all; each collector's are in hsflowd status); " + "; ".join(parts))


class Collectors:
    """Every configured collector; ``send`` hands a datagram to each of them."""

    _resolver: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def __init__(self, destinations: Iterable[Destination], clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.destinations = list(destinations)
        self.senders: Dict[SenderKey, Sender] = {}
        self._routes: Tuple = ()
        self._stale = False
        self.error_log = ErrorLog(clock)
        for d in self.destinations:
            self._connect(d)
        self._reroute()
        pending = [d.pending for d in self.destinations if d.pending is not None]
        if pending:  # names usually resolve at once: let the first datagram reach them
            concurrent.futures.wait(pending, timeout=RESOLVE_WAIT)
            self.tick()

    @classmethod
    def resolver(cls) -> concurrent.futures.ThreadPoolExecutor:
        if cls._resolver is None:
            cls._resolver = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="resolver")
        return cls._resolver

    @property
    def targets(self) -> Tuple[Tuple[str, int], ...]:
        """(address, port) of every collector that is resolved, reached without dev= or
        namespace= (as Open vSwitch, which sends from its own stack, can reach them)."""
        return tuple((d.address[0], d.port) for d in self.destinations
                     if d.address is not None and d.namespace is None)

    def _connect(self, d: Destination) -> None:
        """Find d's socket, or start resolving its name (finished by tick())."""
        literal = _literal(d.host, d.port)
        if literal is None:
            d.pending = self.resolver().submit(_resolve, d.host, d.port)
            return
        self._open(d, *literal)

    def _open(self, d: Destination, family: int, address: Tuple, named: bool = False) -> None:
        key = (family, d.dev, d.namespace)
        sender = self.senders.get(key)
        if sender is None:
            try:
                sender = self.senders[key] = Sender(key)
            except (OSError, UnicodeError) as e:
                self._failed(d, e)
                return
        d.sender, d.family, d.address = sender, family, address
        d.resolve_delay = RESOLVE_RETRY_MIN
        self._stale = True
        if named:     # an address written as one is in the config already: no line for it
            log.info("collector %s -> %s", d.label, address[0])

    def _failed(self, d: Destination, e: BaseException) -> None:
        d.address, d.sender = None, None
        self._stale = True
        d.next_resolve = self.clock() + d.resolve_delay
        d.resolve_delay = min(RESOLVE_RETRY_MAX, d.resolve_delay * 2)
        self._report(d, f"cannot reach collector yet ({_reason(e)}); will try again")

    def _reroute(self) -> None:
        """The collectors that can be sent to now, each with its socket's sendto: what
        ``send`` walks for every datagram (made again once a collector's socket or address
        has changed: at the end of start-up or of the tick that changed it, never per
        datagram, nor per collector: ten thousand of them would cost a hundred million)."""
        self._routes = tuple((d.sender.sock.sendto, d.address, d) for d in self.destinations
                             if d.sender is not None and d.address is not None)
        for sender in self.senders.values():
            sender.routes = {}
        for _, address, d in self._routes:   # the first of two that share an address
            d.sender.routes.setdefault(_key(address), d)
        self._stale = False

    def send(self, datagram: bytes) -> None:
        for sendto, address, d in self._routes:
            try:
                sendto(datagram, address)
            except OSError:
                self._send_again(d, datagram)
                continue
            d.stats.sent += 1
            if d.echoes:
                self._echo(d)

    def _echo(self, d: Destination) -> None:
        """d's last datagram came back refused while it was being sent (a local port where
        nothing listens: the kernel answers within the send): this one's answer is queued
        already.  Read it now, or the next send, whoever it is for, fails for it and costs
        a read of the queue and a second send (two calls here instead of four)."""
        error = d.sender.error()
        if error is None:
            d.echoes = False   # not at once: a remote collector, or one that listens now
            return
        self._count(d.sender, *error)

    def _send_again(self, d: Destination, datagram: bytes) -> None:
        """Maybe an error the network sent back for some destination of this socket: read
        the queue (it says which), then this send goes again."""
        sender = d.sender
        if sender is None or d.address is None:
            return                      # dropped meanwhile (its dev= went away)
        self._read_errors(sender)
        try:
            sender.sock.sendto(datagram, d.address)
            d.stats.sent += 1
        except OSError as e:
            self._send_failed(d, e)
            if e.errno == errno.ENODEV and sender.key[1]:
                self._drop(sender)

    def _drop(self, sender: Sender) -> None:
        """Close a socket pinned to a dev= interface that is gone (made again, it has a new
        ifindex: the old pin fails for good); tick() opens another once the name is back."""
        self.senders.pop(sender.key, None)
        now = self.clock()
        for d in self.destinations:
            if d.sender is sender:
                d.sender, d.next_resolve = None, now
        self._reroute()
        sender.close()

    def _send_failed(self, d: Destination, e: OSError) -> None:
        d.stats.errors += 1
        d.stats.last_error = _reason(e)
        self.error_log.add(d, ("send failed", d.stats.last_error))

    def _read_errors(self, sender: Sender) -> None:
        for address, code in sender.errors():
            self._count(sender, address, code)

    def _count(self, sender: Sender, address: Optional[Tuple], code: int) -> None:
        """An error the network sent back, against the collector it concerns."""
        d = sender.routes.get(_key(address)) if address else None
        if d is None:
            return        # a collector no longer sent to from this socket
        d.stats.errors += 1
        d.stats.last_error, kind = _refused(code)
        d.echoes = True
        self.error_log.add(d, kind)

    def tick(self) -> bool:
        """Once a second: read errors sent back, finish resolved names, retry those that
        failed.  True if a collector's resolved address changed."""
        for sender in list(self.senders.values()):
            self._read_errors(sender)
        now = self.clock()
        changed = False
        for d in self.destinations:
            if d.pending is not None:
                if not d.pending.done():
                    continue
                future, d.pending = d.pending, None
                had = d.address
                try:
                    self._open(d, *future.result(), named=True)
                    changed = changed or d.address != had
                except (OSError, UnicodeError) as e:
                    if had is None:
                        self._failed(d, e)
                    else:     # a name looked up again (reload) keeps its address meanwhile
                        self._report(d, f"looking its name up again failed ({_reason(e)}); "
                                        f"still sending to {had[0]}")
            elif d.sender is None and now >= d.next_resolve:
                had = d.address
                self._connect(d)
                changed = changed or d.address != had
        if self._stale:
            self._reroute()
        line = self.error_log.flush(now, len(self.destinations))
        if line is not None:
            log.warning("%s", line)
        return changed

    def resolve_again(self) -> None:
        """Look every collector given by name up again (a reload, as hsflowd reads its
        config): what it resolves to now is used from the next tick; meanwhile, and if the
        name no longer resolves, datagrams go where they went."""
        for d in self.destinations:
            if d.pending is None and d.address is not None and _literal(d.host, d.port) is None:
                d.pending = self.resolver().submit(_resolve, d.host, d.port)

    def _report(self, d: Destination, message: str) -> None:
        now = self.clock()
        if now < d.next_report:
            d.unreported += 1
            return
        more = f" ({d.unreported} more since last report)" if d.unreported else ""
        prefix = f"{d.where}: " if d.where else ""
        log.warning("%scollector %s: %s%s", prefix, d.label, message, more)
        d.unreported = 0
        d.next_report = now + ERROR_LOG_INTERVAL

    def status(self) -> List[dict]:
        return [{"address": d.host, "port": d.port, "datagrams": d.stats.sent,
                 "errors": d.stats.errors, "last_error": d.stats.last_error or None}
                for d in self.destinations]

    def close(self) -> None:
        for d in self.destinations:
            if d.pending is not None:
                d.pending.cancel()
                d.pending = None
            d.sender = None
        self._routes = ()
        for sender in self.senders.values():
            sender.close()
        self.senders.clear()


@functools.lru_cache(maxsize=None)
def _refused(code: int) -> Tuple[str, ErrorKind]:
    """(last_error, kind) of an errno the network sent back, made once per errno."""
    text = _reason(OSError(code, os.strerror(code)))
    hint = " (nothing listens on the port?)" if code == errno.ECONNREFUSED else ""
    return text, ("the network refused datagrams", text + hint)


def _reason(e: BaseException) -> str:
    if isinstance(e, socket.gaierror):
        return f"name does not resolve: {e.strerror or e}"
    if isinstance(e, OSError) and e.errno:
        return f"{errno.errorcode.get(e.errno, e.errno)} {e.strerror}"
    return str(e)
