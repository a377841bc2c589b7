"""Flow records (flow_data, enterprise 0): what a flow or discard sample says about one packet.

Field names are the specification's own (sflow_version_5.txt, sflow_tunnels.txt,
sflow_drops.txt, sflow_host.txt).
"""

from __future__ import annotations

import dataclasses
from enum import IntEnum
from typing import Annotated

from .tlv import FLOWS, Record
from .xdr import address, ipv4, ipv6, layout_of, mac, opaque, string, u32, u64, xdr_struct


class HeaderProtocol(IntEnum):
    """sampled_header.header_protocol."""

    ETHERNET_ISO8023 = 1
    ISO88024_TOKENBUS = 2
    ISO88025_TOKENRING = 3
    FDDI = 4
    FRAME_RELAY = 5
    X25 = 6
    PPP = 7
    SMDS = 8
    AAL5 = 9
    AAL5_IP = 10
    IPV4 = 11
    IPV6 = 12
    MPLS = 13
    POS = 14
    IEEE80211_MAC = 15
    IEEE80211_AMPDU = 16
    IEEE80211_AMSDU_SUBFRAME = 17
    INFINIBAND = 18


@FLOWS.register(1, "sampled_header")
class SampledHeader(Record):
    """The first bytes of the packet.  frame_length counts the FCS; ``stripped`` at least it."""

    header_protocol: u32 = HeaderProtocol.ETHERNET_ISO8023
    frame_length: u32
    stripped: u32 = 4
    header: opaque()

    def annotations(self) -> dict:
        return {"header_length": len(self.header)}


@FLOWS.register(2, "sampled_ethernet")
class SampledEthernet(Record):
    length: u32
    src_mac: mac
    dst_mac: mac
    type: u32


@FLOWS.register(3, "sampled_ipv4")
class SampledIPv4(Record):
    length: u32
    protocol: u32
    src_ip: ipv4
    dst_ip: ipv4
    src_port: u32
    dst_port: u32
    tcp_flags: u32
    tos: u32


@FLOWS.register(4, "sampled_ipv6")
class SampledIPv6(Record):
    length: u32
    protocol: u32
    src_ip: ipv6
    dst_ip: ipv6
    src_port: u32
    dst_port: u32
    tcp_flags: u32
    priority: u32


UNKNOWN_VLAN = 0xFFFFFFFF  # extended_switch: unknown VLAN or priority (errata)


@FLOWS.register(1001, "extended_switch")
class ExtendedSwitch(Record):
    src_vlan: u32
    src_priority: u32
    dst_vlan: u32
    dst_priority: u32


@FLOWS.register(1002, "extended_router")
class ExtendedRouter(Record):
    nexthop: address
    src_mask_len: u32
    dst_mask_len: u32


# sflow_tunnels.txt: the outer headers of a tunnelled packet reuse the sampled_* bodies.
@FLOWS.register(1021, "extended_L2_tunnel_egress")
class ExtendedL2TunnelEgress(SampledEthernet):
    pass


@FLOWS.register(1022, "extended_L2_tunnel_ingress")
class ExtendedL2TunnelIngress(SampledEthernet):
    pass


@FLOWS.register(1023, "extended_ipv4_tunnel_egress")
class ExtendedIPv4TunnelEgress(SampledIPv4):
    pass


@FLOWS.register(1024, "extended_ipv4_tunnel_ingress")
class ExtendedIPv4TunnelIngress(SampledIPv4):
    pass


@FLOWS.register(1025, "extended_ipv6_tunnel_egress")
class ExtendedIPv6TunnelEgress(SampledIPv6):
    pass


@FLOWS.register(1026, "extended_ipv6_tunnel_ingress")
class ExtendedIPv6TunnelIngress(SampledIPv6):
    pass


@FLOWS.register(1027, "extended_decapsulate_egress")
class ExtendedDecapsulateEgress(Record):
    inner_header_offset: u32


@FLOWS.register(1028, "extended_decapsulate_ingress")
class ExtendedDecapsulateIngress(Record):
    inner_header_offset: u32


@FLOWS.register(1029, "extended_vni_egress")
class ExtendedVniEgress(Record):
    vni: u32


@FLOWS.register(1030, "extended_vni_ingress")
class ExtendedVniIngress(Record):
    vni: u32


@FLOWS.register(1042, "extended_linux_reason")
class ExtendedLinuxReason(Record):
    """The kernel's own name for why it dropped the packet (drop_monitor)."""

    reason: string()


@FLOWS.register(1043, "extended_timestamp")
class ExtendedTimestamp(Record):
    """When the packet was sampled, in nanoseconds since the Unix epoch (hsflowd 2.1 sends it)."""

    nanoseconds: u64


@FLOWS.register(2100, "extended_socket_ipv4")
class ExtendedSocketIPv4(Record):
    """The local socket a sampled packet or transaction belongs to (sflow_host.txt)."""

    protocol: u32
    local_ip: ipv4
    remote_ip: ipv4
    local_port: u32
    remote_port: u32


@FLOWS.register(2101, "extended_socket_ipv6")
class ExtendedSocketIPv6(Record):
    protocol: u32
    local_ip: ipv6
    remote_ip: ipv6
    local_port: u32
    remote_port: u32


@FLOWS.register(2102, "extended_proxy_socket_ipv4")
class ExtendedProxySocketIPv4(ExtendedSocketIPv4):
    """The back-end socket of a proxied connection."""


@FLOWS.register(2103, "extended_proxy_socket_ipv6")
class ExtendedProxySocketIPv6(ExtendedSocketIPv6):
    pass


# ---------------------------------------------------------------- sflow_application.txt

class AppStatus(IntEnum):
    """app_operation.status; the counters of app_operations (2202) follow this order."""

    SUCCESS = 0
    OTHER = 1
    TIMEOUT = 2
    INTERNAL_ERROR = 3
    BAD_REQUEST = 4
    FORBIDDEN = 5
    TOO_LARGE = 6
    NOT_IMPLEMENTED = 7
    NOT_FOUND = 8
    UNAVAILABLE = 9
    UNAUTHORIZED = 10


# app_operations' (2202) counter fields, in AppStatus order: a transaction of status s counts
# in APP_STATUS_FIELDS[s]
APP_STATUS_FIELDS = tuple(s.name.lower() for s in AppStatus)


@xdr_struct
class AppContext:
    """What an operation was: application, operation, attributes (e.g. "payment",
    "get.balance", "cc=visa").  Longer strings are clipped, as hsflowd does."""

    application: string(32)
    operation: string(32)
    attributes: string(255)


_CONTEXT = Annotated[AppContext, layout_of(AppContext)]


@FLOWS.register(2202, "app_operation")
class AppOperation(Record):
    """One sampled application transaction.  uS: its duration in microseconds."""

    context: _CONTEXT = dataclasses.field(default_factory=AppContext)
    status_descr: string(32)
    req_bytes: u64
    resp_bytes: u64
    uS: u32
    status: u32 = AppStatus.SUCCESS


@FLOWS.register(2203, "app_parent_context")
class AppParentContext(Record):
    """The operation this transaction was made for (a server's enclosing operation)."""

    context: _CONTEXT = dataclasses.field(default_factory=AppContext)


@FLOWS.register(2204, "app_initiator")
class AppInitiator(Record):
    """Who asked for the operation (e.g. a customer id)."""

    actor: string(64)


@FLOWS.register(2205, "app_target")
class AppTarget(Record):
    """Who the operation was for."""

    actor: string(64)


@FLOWS.register(2209, "extended_tcp_info")
class ExtendedTcpInfo(Record):
    """The kernel's tcp_info for the local socket a sampled TCP packet belongs to (mod_tcp).
    dirn: 0 unknown, 1 received, 2 sent.  Times in microseconds."""

    dirn: u32
    snd_mss: u32
    rcv_mss: u32
    unacked: u32
    lost: u32
    retrans: u32
    pmtu: u32
    rtt: u32
    rttvar: u32
    snd_cwnd: u32
    reordering: u32
    min_rtt: u32


@FLOWS.register(2210, "extended_entities")
class ExtendedEntities(Record):
    """The data sources (containers, VMs: 3:N) a sampled packet came from and went to;
    class and index 0 where the end is not one of them."""

    src_dsClass: u32
    src_dsIndex: u32
    dst_dsClass: u32
    dst_dsIndex: u32
