"""markTraffic: which guests a sampled packet is between, as extended_entities (2210).

A guest is found by the bridge port the packet crossed (the host side of a container's
veth, which the bridge model puts in the sample's input and output), else by the IP
addresses in its header, else by its MACs; hsflowd looks by IP, then MAC.  The tables are
the module's to rebuild when its guests change; the lookup is a few dict reads per sample.
"""

from __future__ import annotations

from typing import Dict, Iterable, Tuple

from ..frames import SampledPacket, append_records
from ..sflow.flows import ExtendedEntities
from .dsindex import DS_CLASS

# one guest: (ds_index, host-side ports, IP addresses packed, MACs)
GuestAddresses = Tuple[int, Iterable[int], Iterable[bytes], Iterable[bytes]]


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
        record = ExtendedEntities(src_dsClass=DS_CLASS if src else 0, src_dsIndex=src,
                                  dst_dsClass=DS_CLASS if dst else 0, dst_dsIndex=dst)
        return append_records(sample, record.encode(), 1)
