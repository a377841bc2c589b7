"""Packet samplers: each turns 1-in-N packets of some interfaces into flow samples.

Every sampler offers the same small surface (``Sampler`` below): it is told which
interfaces to sample (``update``), registers the descriptors it reads with the ``Watcher``
it was given (the agent's loop; tests may instead select on ``fds()`` and call
``read(fd)``), and ``tick`` runs once a second with the interfaces' counters (for the
sample pool).  Samplers emit encoded flow samples; they never see datagrams.  The modules
in ``hsflowd.modules`` plug them into the agent.

- ``cbpf``: AF_PACKET + classic BPF random filter, memory-mapped ring (``pcap {}``)
- ``ebpf``: tc programs through bcc, direction from the kernel (``epcap {}``)
- ``nflog``: iptables statistic + NFLOG, read from netlink (``nflog {}``)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Protocol


@dataclass(frozen=True)
class Tap:
    """One interface to sample, and how."""

    ifindex: int
    name: str
    sampling_rate: int
    header_bytes: int
    promisc: bool = False
    bridge: bool = False


class Watcher(Protocol):
    """Where a sampler registers the descriptors it reads (the agent loop, via its module)."""

    def watch(self, fd: int, callback: Callable[[], Any]) -> Any:
        """Call ``callback()`` whenever ``fd`` is readable; a token for ``unwatch``."""

    def unwatch(self, token: Any) -> None:
        """Stop watching (a None token is ignored)."""


class _NoWatcher:
    """For a sampler driven by hand (tests, benchmarks): they select on ``fds()``."""

    def watch(self, fd, callback):
        return None

    def unwatch(self, token):
        pass


NO_WATCHER = _NoWatcher()


class Sampler(Protocol):
    tapped: Dict[int, object]
    """The interfaces it samples now, by ifindex (their counters feed the sample pools)."""

    def update(self, taps: Dict[int, Tap]) -> None:
        """Sample exactly these interfaces from now on (open, re-open or close)."""

    def fds(self) -> List[int]:
        """File descriptors the agent should select on."""

    def read(self, fd: int) -> int:
        """Handle what is ready on ``fd``; returns the number of samples emitted."""

    def tick(self, counts: Dict[int, int]) -> None:
        """Once a second: the interfaces' packet counts (ifindex -> rx+tx) for the pools."""

    def close(self) -> None:
        """Release everything (sockets, programs, rules)."""
