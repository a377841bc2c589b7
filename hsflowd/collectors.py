"""Sending datagrams to collectors over UDP, never blocking the agent.

Collectors share sockets: one per (address family, ``dev=``, ``namespace=``), so ten thousand
collectors cost two file descriptors, not ten thousand.  ``dev=`` pins the route to an
interface with IP_UNICAST_IF (as hsflowd, no privilege needed); ``namespace=`` makes the
socket inside that network namespace, from a short-lived thread, so the agent's own thread
never leaves its namespace.

A collector that is down, unreachable or not resolvable yet costs a counted error and a log
line at a rate a person can read; the others keep receiving.  Names are resolved on a
worker thread, so a resolver that does not answer never holds up the agent's loop.

Errors the network sends back (ICMP port or host unreachable, e.g. a collector on a local
port where nothing listens) arrive on the socket's error queue (IP_RECVERR), each with the
destination it concerns, and are counted against that collector.  Linux also raises such an
error on the next send from the same socket, whatever its destination: that send is retried
once after the queue is read, so one collector's trouble never costs another a datagram.
"""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Callable, Dict, Iterable, List, Optional, Tuple

log = logging.getLogger("hsflowd.collectors")

SEND_BUFFER = 2_000_000      # as hsflowd
ERROR_LOG_INTERVAL = 60.0    # seconds between error reports for one collector
RESOLVE_RETRY_MIN, RESOLVE_RETRY_MAX = 1.0, 60.0   # a failed name is tried again after
                                                  # 1, 2, 4 ... 60 s
RESOLVE_WAIT = 0.5           # at start, how long to wait for names before the first datagram
IP_UNICAST_IF = 50
IPV6_UNICAST_IF = 76
IP_RECVERR = 11
IPV6_RECVERR = 25
MSG_ERRQUEUE = 0x2000
_EXTENDED_ERR = struct.Struct("=IBBBBII")   # struct sock_extended_err


@dataclass
class CollectorStats:
    sent: int = 0
    errors: int = 0
    last_error: str = ""


@dataclass
class Destination:
    """One configured collector."""

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

    def errors(self) -> Iterable[Tuple[Tuple, int]]:
        """(destination sockaddr, errno) for each error the network sent back, oldest first."""
        while True:
            try:
                _, ancdata, _, address = self.sock.recvmsg(1, 512, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            code = 0
            for _level, _type, data in ancdata:
                if len(data) >= _EXTENDED_ERR.size:
                    code = _EXTENDED_ERR.unpack_from(data)[0]
            if address:
                yield address, code

    def close(self) -> None:
        self.sock.close()


def _same(a: Tuple, b: Tuple) -> bool:
    """Two sockaddrs name the same destination (host and port; IPv6 flow info aside)."""
    return a[0] == b[0] and a[1] == b[1]


class Collectors:
    """Every configured collector; ``send`` hands a datagram to each of them."""

    _resolver: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def __init__(self, destinations: Iterable[Destination], clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.destinations = list(destinations)
        self.senders: Dict[SenderKey, Sender] = {}
        self._routes: Tuple = ()
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

    def _open(self, d: Destination, family: int, address: Tuple) -> None:
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
        self._reroute()
        log.info("collector %s -> %s", d.label, address[0])

    def _failed(self, d: Destination, e: BaseException) -> None:
        d.address, d.sender = None, None
        self._reroute()
        d.next_resolve = self.clock() + d.resolve_delay
        d.resolve_delay = min(RESOLVE_RETRY_MAX, d.resolve_delay * 2)
        self._report(d, f"cannot reach collector yet ({_reason(e)}); will try again")

    def _reroute(self) -> None:
        """The collectors that can be sent to now, each with its socket's sendto: what
        ``send`` walks for every datagram (made again when a collector's socket or address
        changes, never per datagram)."""
        self._routes = tuple((d.sender.sock.sendto, d.address, d) for d in self.destinations
                             if d.sender is not None and d.address is not None)

    def send(self, datagram: bytes) -> None:
        for sendto, address, d in self._routes:
            try:
                sendto(datagram, address)
            except OSError:
                self._send_again(d, datagram)
                continue
            d.stats.sent += 1

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
        self._report(d, f"send failed: {d.stats.last_error}")

    def _read_errors(self, sender: Sender) -> None:
        for address, code in sender.errors():
            for d in self.destinations:
                if d.sender is sender and d.address is not None and _same(d.address, address):
                    d.stats.errors += 1
                    d.stats.last_error = _reason(OSError(code, os.strerror(code)))
                    why = " (nothing listens on that port?)" if code == errno.ECONNREFUSED else ""
                    self._report(d, f"the network refused a datagram: {d.stats.last_error}{why}")
                    break

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
                    self._open(d, *future.result())
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


def _reason(e: BaseException) -> str:
    if isinstance(e, socket.gaierror):
        return f"name does not resolve: {e.strerror or e}"
    if isinstance(e, OSError) and e.errno:
        return f"{errno.errorcode.get(e.errno, e.errno)} {e.strerror}"
    return str(e)
