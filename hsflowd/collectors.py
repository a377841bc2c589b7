"""Sending datagrams to collectors: one UDP socket per collector, never blocking the agent.

A collector that is down, unreachable or not resolvable yet costs a counted error and a log
line at a rate a person can read; the others keep receiving.  Names are resolved on a
worker thread, so a resolver that does not answer never holds up the agent's loop.  ``dev=`` pins the route to an
interface with IP_UNICAST_IF (as hsflowd, no privilege needed); ``namespace=`` creates the
socket inside that network namespace, from a short-lived thread so the agent's own thread
never leaves its namespace.
"""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Callable, Iterable, List, Optional, Tuple

log = logging.getLogger("hsflowd.collectors")

SEND_BUFFER = 2_000_000      # as hsflowd
ERROR_LOG_INTERVAL = 60.0    # seconds between error reports for one collector
RESOLVE_RETRY = 30.0         # seconds between attempts to resolve a name that failed
RESOLVE_WAIT = 0.5           # at start, how long to wait for names before the first datagram
IP_UNICAST_IF = 50
IPV6_UNICAST_IF = 76


@dataclass
class CollectorStats:
    sent: int = 0
    errors: int = 0
    last_error: str = ""


@dataclass
class Destination:
    """One configured collector and the socket that reaches it."""

    host: str
    port: int
    dev: Optional[str] = None
    namespace: Optional[str] = None
    where: str = ""                 # "FILE:LINE" of its config block, for messages
    address: Optional[Tuple] = None  # sockaddr once resolved
    sock: Optional[socket.socket] = None
    stats: CollectorStats = field(default_factory=CollectorStats)
    pending: Optional[concurrent.futures.Future] = None  # a name being resolved
    next_resolve: float = 0.0
    next_report: float = 0.0
    unreported: int = 0

    @property
    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in (("dev", self.dev), ("namespace", self.namespace)) if v)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}{extra}"


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


def _open_socket(family: int, dev: Optional[str], namespace: Optional[str]) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
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

    return _in_namespace(namespace, make) if namespace else make()


class Collectors:
    """Every configured collector; ``send`` hands a datagram to each of them."""

    _resolver: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def __init__(self, destinations: Iterable[Destination], clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.destinations = list(destinations)
        for d in self.destinations:
            self._connect(d)
        pending = [d.pending for d in self.destinations if d.pending is not None]
        if pending:  # names usually resolve at once: let the first datagram reach them
            concurrent.futures.wait(pending, timeout=RESOLVE_WAIT)
            self.tick()

    @classmethod
    def resolver(cls) -> concurrent.futures.ThreadPoolExecutor:
        if cls._resolver is None:
            cls._resolver = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="resolver")
        return cls._resolver

    def _connect(self, d: Destination) -> None:
        """Open d's socket, or start resolving its name (finished by tick())."""
        literal = _literal(d.host, d.port)
        if literal is None:
            d.pending = self.resolver().submit(_resolve, d.host, d.port)
            return
        self._open(d, *literal)

    def _open(self, d: Destination, family: int, address: Tuple) -> None:
        try:
            d.sock = _open_socket(family, d.dev, d.namespace)
        except (OSError, UnicodeError) as e:
            self._failed(d, e)
            return
        d.address = address
        log.info("collector %s -> %s", d.label, address[0])

    def _failed(self, d: Destination, e: BaseException) -> None:
        d.address, d.sock = None, None
        d.next_resolve = self.clock() + RESOLVE_RETRY
        self._report(d, f"cannot reach collector yet ({_reason(e)}); will try again")

    def send(self, datagram: bytes) -> None:
        for d in self.destinations:
            sock = d.sock
            if sock is None:
                continue
            try:
                sock.sendto(datagram, d.address)
                d.stats.sent += 1
            except OSError as e:
                d.stats.errors += 1
                d.stats.last_error = _reason(e)
                self._report(d, f"send failed: {d.stats.last_error}")

    def tick(self) -> None:
        """Once a second: finish resolved names; retry those that failed."""
        now = self.clock()
        for d in self.destinations:
            if d.pending is not None:
                if not d.pending.done():
                    continue
                future, d.pending = d.pending, None
                try:
                    self._open(d, *future.result())
                except (OSError, UnicodeError) as e:
                    self._failed(d, e)
            elif d.sock is None and now >= d.next_resolve:
                self._connect(d)

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

    def close(self) -> None:
        for d in self.destinations:
            if d.sock is not None:
                d.sock.close()
                d.sock = None


def _reason(e: BaseException) -> str:
    if isinstance(e, socket.gaierror):
        return f"name does not resolve: {e.strerror or e}"
    if isinstance(e, OSError) and e.errno:
        return f"{errno.errorcode.get(e.errno, e.errno)} {e.strerror}"
    return str(e)
