"""Whose is a local socket: the cgroup of the process that made it, as the kernel's
inet_diag tells it (INET_DIAG_CGROUP_ID, Linux 5.7 and later: the id of a cgroup v2 group,
which is the inode number of its directory).  markTraffic of ``systemd {}`` finds a sampled
packet's service this way, as hsflowd's mod_systemd does.

One look-up is one dump filtered by the kernel on the local port (two for IPv4, whose
connections a dual-stack IPv6 socket may hold as ::ffff:a.b.c.d): the socket that listens
on (TCP) or is bound to (UDP) that port, on the packet's local address or on every address,
if there is one (a connection it accepted belongs to the same cgroup, and the answer serves
the port's every packet), else the connected socket with the packet's remote end (a
client's).  pyroute2 0.7 does not know the attribute, so it is read from the raw message.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple, Optional, Tuple

from .interfaces import raw_attr
from .tcpinfo import CONNECTED, dump_sockets

INET_DIAG_MSG_LEN = 72          # struct inet_diag_msg, before its attributes
INET_DIAG_CGROUP_ID = 21
TCP_LISTEN = 10
TCP_STATES = CONNECTED | (1 << TCP_LISTEN)
EVERY_STATE = 0xFFFF            # UDP: unconnected sockets are TCP_CLOSE, connected ESTABLISHED

# (ip protocol, local address, local port, remote address, remote port); addresses packed
Endpoints = Tuple[int, bytes, int, bytes, int]


class Owner(NamedTuple):
    """The socket found: its cgroup id (0: the kernel did not say), and for a listening or
    unconnected socket the address it is bound to (b"": every address); None for a
    connected one, which only the packet's own connection matches."""

    cgroup_id: int
    bound: Optional[bytes]


def cgroup_id_of(msg) -> int:
    raw = raw_attr(msg, INET_DIAG_MSG_LEN, INET_DIAG_CGROUP_ID)
    return struct.unpack("=Q", raw)[0] if raw is not None and len(raw) == 8 else 0


def find_owner(ds, endpoints: Endpoints) -> Optional[Owner]:
    """The socket of this host that ``endpoints`` (a packet's, local end first) belong to,
    or None."""
    protocol, local, lport, remote, rport = endpoints
    v4 = len(local) == 4
    family = socket.AF_INET if v4 else socket.AF_INET6
    here, there = socket.inet_ntop(family, local), socket.inet_ntop(family, remote)
    tries = [(family, here, there, "0.0.0.0" if v4 else "::")]
    if v4:
        tries.append((socket.AF_INET6, f"::ffff:{here}", f"::ffff:{there}", "::"))
    states = TCP_STATES if protocol == socket.IPPROTO_TCP else EVERY_STATE
    connected: Optional[Owner] = None
    for fam, mine, theirs, every in tries:
        for msg in dump_sockets(ds, fam, lport, 0, protocol, states, ext=0):
            src, dport = msg["idiag_src"], msg["idiag_dport"]
            if dport == 0 and src in (mine, every):
                return Owner(cgroup_id_of(msg), local if src == mine else b"")
            if dport == rport and src == mine and msg["idiag_dst"] == theirs:
                connected = connected or Owner(cgroup_id_of(msg), None)
    return connected


__all__ = ["Endpoints", "Owner", "cgroup_id_of", "find_owner"]
