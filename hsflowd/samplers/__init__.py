"""Packet samplers: each turns 1-in-N packets of some interfaces into flow samples.

Every sampler offers the same small surface to the agent (``Sampler`` below): the agent
tells it which interfaces to sample (``update``), selects on its file descriptors, calls
``read`` when one is ready, and ``tick`` once a second with the interfaces' counters (for
the sample pool).  Samplers emit encoded flow samples; they never see datagrams.

- ``cbpf``: AF_PACKET + classic BPF random filter, memory-mapped ring (``pcap {}``)
- ``ebpf``: tc programs through bcc, direction from the kernel (``epcap {}``)
- ``nflog``: iptables statistic + NFLOG, read from netlink (``nflog {}``)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Protocol


@dataclass(frozen=True)
class Tap:
    """One interface to sample, and how."""

    ifindex: int
    name: str
    sampling_rate: int
    header_bytes: int
    promisc: bool = False
    bridge: bool = False


class Sampler(Protocol):
    tapped: Dict[int, object]
    """The interfaces it samples now, by ifindex (their counters feed the sample pools)."""

    def update(self, taps: Dict[int, Tap]) -> None:
        """Sample exactly these interfaces from now on (open, re-open or close)."""

    def fds(self) -> List[int]:
        """File descriptors the agent should select on."""

    def read(self, fd: int) -> int:
        """Handle what is ready on ``fd``; returns the number of samples emitted."""

    def tick(self, stats: Dict) -> None:
        """Once a second: interface counters (ifindex -> LinkStats) for the sample pools."""

    def close(self) -> None:
        """Release everything (sockets, programs, rules)."""
