"""Pure parsers for the /proc text the agent still reads itself (style habit 2: read, then
parse), and the one reader of them that is not the host source's (``read_udp_ports``).

psutil gives the host source everything else (cpu times, memory, swap, disk I/O, mounts,
uptime); these three files hold values it has no call for:

- /proc/loadavg: the runnable and total scheduling-entity counts (proc_run, proc_total);
  psutil.getloadavg() returns the three loads only.
- /proc/vmstat: pgpgin/pgpgout, and pswpin/pswpout as page counts (psutil's swap_memory()
  turns the latter into bytes assuming 4 KiB pages, and has no pgpg* at all).
- /proc/net/snmp: the mib2 ip, icmp, tcp and udp groups.
- /proc/net/udp, /proc/net/udp6: the local ports of UDP sockets, the kernel's own too (a
  VXLAN device's socket, which stays in the namespace the device was made in when the
  device is moved to another: Docker's overlay networks); psutil finds only those of
  processes, by walking every process's descriptors.

Every ``parse_*`` takes the text of one file and returns plain values; none does I/O, so the
tests feed them literal captures.  A counter the file lacks is absent from the result and
the caller decides what sFlow sends for it (unknown counter, zero gauge).
Numbers are returned at their full width; wrapping to 32 bits is the record builder's
business.
"""

from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Set

__all__ = ["Loadavg", "parse_loadavg", "parse_vmstat", "parse_net_snmp", "parse_udp_ports",
           "read_udp_ports"]


# ---------------------------------------------------------------- processes

class Loadavg(NamedTuple):
    one: float
    five: float
    fifteen: float
    running: int
    total: int


def parse_loadavg(text: str) -> Loadavg:
    """``0.07 0.04 0.02 1/86 6749``: three loads, runnable/total scheduling entities."""
    parts = text.split()
    if len(parts) < 4 or "/" not in parts[3]:
        raise ValueError(f"/proc/loadavg: cannot parse {text[:60]!r}")
    running, _, total = parts[3].partition("/")
    return Loadavg(float(parts[0]), float(parts[1]), float(parts[2]), int(running), int(total))


# ---------------------------------------------------------------- paging

_VMSTAT_KEYS = ("pgpgin", "pgpgout", "pswpin", "pswpout")


def parse_vmstat(text: str) -> Dict[str, int]:
    """The page and swap activity counters of /proc/vmstat, by name (others are skipped)."""
    out: Dict[str, int] = {}
    for line in text.split("\n"):
        if line.startswith(("pgpg", "pswp")):
            name, _, value = line.partition(" ")
            if name in _VMSTAT_KEYS:
                out[name] = int(value)
    return out


# ---------------------------------------------------------------- network stack

def parse_net_snmp(text: str) -> Dict[str, Dict[str, int]]:
    """/proc/net/snmp: each protocol prints a header line of names then a line of values.

    Returns {"Ip": {"Forwarding": 2, ...}, "Icmp": {...}, ...}, matched by name: kernels
    insert columns over time (Icmp InCsumErrors in 3.10, OutRateLimit* in 6.x), so the
    position of a counter is not stable.  Values may be negative (Tcp MaxConn is -1)."""
    out: Dict[str, Dict[str, int]] = {}
    pending: Dict[str, List[str]] = {}
    for line in text.split("\n"):
        proto, sep, rest = line.partition(":")
        if not sep:
            continue
        fields = rest.split()
        if proto not in pending:
            pending[proto] = fields
            continue
        names = pending.pop(proto)
        try:
            out[proto] = dict(zip(names, map(int, fields)))
        except ValueError:
            raise ValueError(f"/proc/net/snmp: {proto} values are not numbers") from None
    return out


# ---------------------------------------------------------------- sockets

def parse_udp_ports(text: str) -> Set[int]:
    """The local ports in /proc/net/udp or udp6 ("sl local_address rem_address ...",
    addresses as HEX:PORT)."""
    ports: Set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 1 and ":" in fields[1]:
            try:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
            except ValueError:
                continue
    return ports


def read_udp_ports(procfs: str = "/proc") -> Set[int]:
    """The local ports of this network namespace's UDP sockets, IPv4 and IPv6."""
    ports: Set[int] = set()
    for name in ("udp", "udp6"):
        try:
            with open(os.path.join(procfs, "net", name)) as f:
                ports |= parse_udp_ports(f.read())
        except OSError:
            continue
    return ports
