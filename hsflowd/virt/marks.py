"""markTraffic: which guests a sampled packet is between, as extended_entities (2210).

A guest is found by the bridge port the packet crossed (the host side of a container's
veth, which the bridge model puts in the sample's input and output), else by the IP
addresses in its header, else by its MACs; hsflowd looks by IP, then MAC.  The tables are
the module's to rebuild when its guests change; the lookup is a few dict reads per sample.
"""

from __future__ import annotations

import struct
from typing import Dict, Iterable, Optional, Tuple

from ..modules.flowhooks import append_records, view
from ..sflow.flows import ExtendedEntities
from .dsindex import DS_CLASS

_ETH = struct.Struct(">H")
VLAN_TYPES = (0x8100, 0x88A8)

# one guest: (ds_index, host-side ports, IP addresses packed, MACs)
GuestAddresses = Tuple[int, Iterable[int], Iterable[bytes], Iterable[bytes]]


def ip_pair(header: bytes) -> Optional[Tuple[bytes, bytes]]:
    """The source and destination address of an Ethernet frame's IPv4 or IPv6 packet
    (after up to two VLAN tags); None for anything else."""
    off = 12
    ethertype = _ETH.unpack_from(header, off)[0]
    for _ in range(2):
        if ethertype not in VLAN_TYPES or len(header) < off + 6:
            break
        off += 4
        ethertype = _ETH.unpack_from(header, off)[0]
    ip = off + 2
    if ethertype == 0x0800 and len(header) >= ip + 20:
        return header[ip + 12:ip + 16], header[ip + 16:ip + 20]
    if ethertype == 0x86DD and len(header) >= ip + 40:
        return header[ip + 8:ip + 24], header[ip + 24:ip + 40]
    return None


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

    def mark(self, sample: bytes) -> bytes:
        """``sample`` with extended_entities appended when either end is a guest."""
        if not (self.by_mac or self.by_port or self.by_ip):
            return sample
        v = view(sample)
        if v is None:
            return sample
        src = self.by_port.get(v.input, 0)
        dst = self.by_port.get(v.output, 0) if v.output_format == 0 else 0
        if not (src and dst) and v.header_protocol == 1 and len(v.header) >= 14:
            ips = ip_pair(v.header)
            if ips is not None:
                src = src or self.by_ip.get(ips[0], 0)
                dst = dst or self.by_ip.get(ips[1], 0)
            src = src or self.by_mac.get(v.header[6:12], 0)
            dst = dst or self.by_mac.get(v.header[0:6], 0)
        if not (src or dst):
            return sample
        record = ExtendedEntities(src_dsClass=DS_CLASS if src else 0, src_dsIndex=src,
                                  dst_dsClass=DS_CLASS if dst else 0, dst_dsIndex=dst)
        return append_records(sample, record.encode(), 1)
