"""Records built from the interface table: interface samples (0:ifIndex) and the host's
adapter and network-I/O selections.  Pure functions of ``Interface`` and ``LinkStats``.

Interface sample: if_counters (1), ethernet_counters (2), then port_name (1005).  hsflowd
sends port_name first; it goes last here because Wireshark 4.0 cannot skip an unknown
counter record (it reads the next record from inside its body: a wrong ifIndex and garbage
octets), and knows 1 and 2 but not 1005.  Every decoder finds records by tag, so the order
carries no meaning.

if_counters from IFLA_STATS64 (32-bit fields wrap mod 2^32, as counters do):
  ifInUcastPkts = rx_packets - multicast (the kernel counts received multicast, not
  broadcast, so broadcasts stay inside "unicast", as in hsflowd without ethtool names);
  ifInBroadcastPkts, ifInUnknownProtos, ifOutMulticastPkts, ifOutBroadcastPkts unknown;
  ifOutUcastPkts = tx_packets; discards/errors = rx/tx_dropped, rx/tx_errors;
  ifType 6 and ifPromiscuousMode 1/0 as hsflowd sends them.

ethernet_counters: only where include/uapi/linux/if_link.h documents an IEEE 802.3
equivalence, everything else unknown (all ones):
  dot3StatsAlignmentErrors      rx_frame_errors     (aAlignmentErrors)
  dot3StatsFCSErrors            rx_crc_errors       (aFrameCheckSequenceErrors)
  dot3StatsSQETestErrors        tx_heartbeat_errors (aSQETestErrors)
  dot3StatsLateCollisions       tx_window_errors    (aLateCollisions)
  dot3StatsExcessiveCollisions  tx_aborted_errors   (aFramesAbortedDueToXSColls)
  dot3StatsCarrierSenseErrors   tx_carrier_errors   (aCarrierSenseErrors)
``collisions`` is a total that cannot be split into single/multiple-collision frames, and
rx_length_errors is the sum of in-range, out-of-range and too-long errors, so neither is
sent as FrameTooLongs: a counter that over-reports is worse than an unknown one.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

from ..sflow.counters import UNKNOWN32, EthernetCounters, HostAdapter, IfCounters, PortName
from ..sflow.tlv import Record
from .interfaces import Interface, LinkStats

MAX_HOST_ADAPTERS = 32      # hsflowd caps host_adapters at 32 entries
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_DIRECTION = {"full": 1, "half": 2}


def interface_counters(iface: Interface, stats: LinkStats,
                       name: Optional[str] = None) -> List[Record]:
    """[IfCounters, EthernetCounters, PortName] for one interface sample: the records
    Wireshark 4.0 knows first, the one it cannot skip last.  ``name`` replaces the device's
    name in PortName (a module's name for the port)."""
    status = (1 if iface.admin_up else 0) | (2 if iface.oper_up else 0)
    generic = IfCounters(
        ifIndex=iface.ifindex,
        ifType=6,
        ifSpeed=iface.speed & _M64,
        ifDirection=_DIRECTION.get(iface.duplex, 0),
        ifStatus=status,
        ifInOctets=stats.rx_bytes & _M64,
        ifInUcastPkts=(stats.rx_packets - stats.multicast) & _M32,
        ifInMulticastPkts=stats.multicast & _M32,
        ifInBroadcastPkts=UNKNOWN32,
        ifInDiscards=stats.rx_dropped & _M32,
        ifInErrors=stats.rx_errors & _M32,
        ifInUnknownProtos=UNKNOWN32,
        ifOutOctets=stats.tx_bytes & _M64,
        ifOutUcastPkts=stats.tx_packets & _M32,
        ifOutMulticastPkts=UNKNOWN32,
        ifOutBroadcastPkts=UNKNOWN32,
        ifOutDiscards=stats.tx_dropped & _M32,
        ifOutErrors=stats.tx_errors & _M32,
        ifPromiscuousMode=1 if iface.promisc else 0,
    )
    ethernet = EthernetCounters(
        dot3StatsAlignmentErrors=stats.rx_frame_errors & _M32,
        dot3StatsFCSErrors=stats.rx_crc_errors & _M32,
        dot3StatsSingleCollisionFrames=UNKNOWN32,
        dot3StatsMultipleCollisionFrames=UNKNOWN32,
        dot3StatsSQETestErrors=stats.tx_heartbeat_errors & _M32,
        dot3StatsDeferredTransmissions=UNKNOWN32,
        dot3StatsLateCollisions=stats.tx_window_errors & _M32,
        dot3StatsExcessiveCollisions=stats.tx_aborted_errors & _M32,
        dot3StatsInternalMacTransmitErrors=UNKNOWN32,
        dot3StatsCarrierSenseErrors=stats.tx_carrier_errors & _M32,
        dot3StatsFrameTooLongs=UNKNOWN32,
        dot3StatsInternalMacReceiveErrors=UNKNOWN32,
        dot3StatsSymbolErrors=UNKNOWN32,
    )
    return [generic, ethernet, PortName(name=name or iface.name)]


def host_adapters(table: Iterable[Interface]) -> List[HostAdapter]:
    """The host's own adapters for host_adapters (2001), lowest ifIndex first.

    As hsflowd: devices that are up with a non-zero MAC, leaving out loopback and every
    veth.  hsflowd drops adaptors whose ethtool peer_ifindex is non-zero, and every veth
    has a peer (deleting one end deletes both), wherever that peer lives.
    """
    adapters = []
    for iface in sorted(table, key=lambda i: i.ifindex):
        if (iface.admin_up and not iface.loopback and not iface.is_veth
                and len(iface.mac) == 6 and any(iface.mac)):
            adapters.append(HostAdapter(ifIndex=iface.ifindex, mac_addresses=[iface.mac]))
            if len(adapters) == MAX_HOST_ADAPTERS:
                break
    return adapters


def nio_interfaces(table: Iterable[Interface]) -> List[str]:
    """Names of the devices hsflowd sums into host_net_io (2006): up, and not loopback,
    a VLAN sub-interface or a bond master (their traffic is counted on the lower devices)."""
    return [iface.name for iface in sorted(table, key=lambda i: i.ifindex)
            if iface.admin_up and not iface.loopback and not iface.is_vlan
            and not iface.is_bond_master]
