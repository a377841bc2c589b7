"""tcp { }: which of this host's TCP connections a sampled packet belongs to, the kernel's
tcp_info for it (inet_diag), and that as extended_tcp_info (2209), as hsflowd's mod_tcp.

``endpoints`` takes the addresses and ports from the walk every flow hook shares
(``frames``): it runs for every sampled packet.  ``read_tcp_info`` asks the
kernel through pyroute2's DiagSocket; two things its defaults get wrong for this (the
family is AF_UNIX, and no extension is asked for, so no INET_DIAG_INFO comes back), so the
request is made here: family AF_INET or AF_INET6, the INET_DIAG_INFO extension, connected
states, and the two ports, by which the kernel filters its dump.  A v4 connection not
found among AF_INET sockets is looked for among AF_INET6 ones (a dual-stack socket sees
it as ::ffff:a.b.c.d).  ``tcp_info_record`` is pure.
"""

from __future__ import annotations

import socket
from typing import Dict, Mapping, Optional, Tuple

from ..frames import TCP, SampledPacket
from ..sflow import ExtendedTcpInfo

DIR_UNKNOWN, DIR_RECEIVED, DIR_SENT = 0, 1, 2

# connected states: TCP_ESTABLISHED 1, SYN_SENT 2, FIN_WAIT1 4, FIN_WAIT2 5, CLOSE_WAIT 8,
# LAST_ACK 9, CLOSING 11 (hsflowd asks for ESTABLISHED alone)
CONNECTED = sum(1 << s for s in (1, 2, 4, 5, 8, 9, 11))
INET_DIAG_INFO_EXT = 1 << (2 - 1)        # idiag_ext bit for INET_DIAG_INFO (2)
SOCK_DIAG_BY_FAMILY = 20

# (field of extended_tcp_info, field of struct tcp_info); retrans is the total, as hsflowd
TCP_INFO_FIELDS = (("snd_mss", "tcpi_snd_mss"), ("rcv_mss", "tcpi_rcv_mss"),
                   ("unacked", "tcpi_unacked"), ("lost", "tcpi_lost"),
                   ("retrans", "tcpi_total_retrans"), ("pmtu", "tcpi_pmtu"),
                   ("rtt", "tcpi_rtt"), ("rttvar", "tcpi_rttvar"),
                   ("snd_cwnd", "tcpi_snd_cwnd"), ("reordering", "tcpi_reordering"),
                   ("min_rtt", "tcpi_min_rtt"))

# (ip version, local address, remote address, local port, remote port); addresses packed
Connection = Tuple[int, bytes, bytes, int, int]


def endpoints(pkt: SampledPacket) -> Optional[Tuple[int, bytes, bytes, int, int]]:
    """(ip version, source, destination, source port, destination port) of the TCP packet
    a walked flow sample's header holds; None for anything else (not TCP, a later fragment,
    a header cut short)."""
    if pkt.ip_protocol != TCP or pkt.l4 < 0 or pkt.l4 + 4 > pkt.end:
        return None
    return pkt.ip_version, pkt.src_ip, pkt.dst_ip, pkt.src_port, pkt.dst_port


def tcp_info_record(info: Mapping[str, int], dirn: int) -> ExtendedTcpInfo:
    """extended_tcp_info from tcp_info's fields (those a kernel does not have are 0)."""
    return ExtendedTcpInfo(dirn=dirn, **{name: info.get(name, 0) & 0xFFFFFFFF
                                         for name, _ in TCP_INFO_FIELDS})


# ---------------------------------------------------------------- the kernel

def open_diag_socket():
    """A bound pyroute2 DiagSocket (NETLINK_SOCK_DIAG; needs no privilege)."""
    from pyroute2 import DiagSocket
    ds = DiagSocket()
    ds.bind()
    return ds


def dump_sockets(ds, family: int, lport: int, rport: int = 0, protocol: int = socket.IPPROTO_TCP,
                 states: int = CONNECTED, ext: int = INET_DIAG_INFO_EXT):
    """The kernel's inet_diag messages for the sockets of ``family`` and ``protocol`` in
    ``states`` with local port ``lport`` (and remote port ``rport`` unless 0: the kernel
    filters its dump by both)."""
    from pyroute2.netlink import NLM_F_MATCH, NLM_F_REQUEST, NLM_F_ROOT
    from pyroute2.netlink.diag import inet_diag_req
    req = inet_diag_req()
    req["sdiag_family"] = family
    req["sdiag_protocol"] = protocol
    req["idiag_states"] = states
    req["idiag_ext"] = ext
    req["idiag_sport"] = lport
    req["idiag_dport"] = rport
    return list(ds.nlm_request(req, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_ROOT | NLM_F_MATCH))


def _fields(msg) -> Optional[Dict[str, int]]:
    info = msg.get_attr("INET_DIAG_INFO")
    if info is None:
        return None
    out = {}
    for name, kernel_name in TCP_INFO_FIELDS:
        value = info.get(kernel_name)
        out[name] = value if isinstance(value, int) else 0
    return out


def read_tcp_info(ds, conn: Connection) -> Optional[Dict[str, int]]:
    """extended_tcp_info's fields for the local socket of ``conn``, or None if there is
    no such connected socket.  One filtered dump (two for a v4 connection on a
    dual-stack socket)."""
    version, local, remote, lport, rport = conn
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    want = (socket.inet_ntop(family, local), socket.inet_ntop(family, remote))
    for msg in dump_sockets(ds, family, lport, rport):
        if (msg["idiag_src"], msg["idiag_dst"]) == want:
            return _fields(msg)
    if version == 4:
        mapped = tuple(f"::ffff:{a}" for a in want)
        for msg in dump_sockets(ds, socket.AF_INET6, lport, rport):
            if (msg["idiag_src"], msg["idiag_dst"]) == mapped:
                return _fields(msg)
    return None


__all__ = ["CONNECTED", "Connection", "DIR_RECEIVED", "DIR_SENT", "DIR_UNKNOWN",
           "dump_sockets", "endpoints", "open_diag_socket", "read_tcp_info", "tcp_info_record"]
