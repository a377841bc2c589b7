"""Agent address election: which local address the datagrams carry as the agent's identity.

Follows hsflowd (hsflowconfig.c agentAddressPriority, priorityHigher, selectAgentAddress):

1. ``agentIP`` wins outright (the caller resolves a hostname first).
2. Otherwise every address of every interface that is up is a candidate, ranked by class
   (``Priority``, low to high).  For IPv4 the first test that matches decides: device is
   loopback, 169.254/16, VLAN device, RFC 1918, class E, multicast, else public.  For IPv6:
   loopback device or ::1, fe80::/10, fc00::/7 (ULA ranks above VLAN), VLAN device,
   multicast, else global.  As coded in hsflowd, a multicast address is then forced to 0,
   so the MULTICAST rung is never used and multicast ranks with excluded addresses.
3. ``agent.cidr``: hsflowd keeps the CIDRs in reverse order and takes the first that
   matches from the end, so the *last listed* CIDR that matches decides; it adds
   index*13 where the last listed has index 1 and the first listed index n (the first
   listed gives the biggest boost).  A matching ``!cidr`` forces 0 instead.  A priority of
   0 is not a ban: such an address still wins when nothing else ranks higher.
4. ``agent=dev`` adds 13 to addresses on that device (name, or alias as hsflowd does).
5. Ties: a non-SLAAC IPv6 address beats a SLAAC one, then the lowest ifIndex of the
   devices holding the address, then the address discovered first.

An address held by several devices is one candidate: its priority is the best over those
devices, and that device is the one reported.

Decisions where hsflowd is silent or accidental: addresses on interfaces that are down are
skipped (hsflowd's getifaddrs pass skips them; its SIOCGIFADDR pass does not); tentative
and DAD-failed addresses are skipped (the kernel will not use them as a source; the
address comes back as a change event when DAD completes); deprecated addresses compete
normally, as they do in hsflowd; 127/8 on any device ranks as IPv4 loopback.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class Priority(IntEnum):
    """hsflowd's EnumIPSelectionPriority."""

    NONE = 0
    CLASS_E = 1
    MULTICAST = 2
    LOOPBACK6 = 3
    LOOPBACK4 = 4
    SELFASSIGNED4 = 5
    IP6_LINK = 6
    VLAN6 = 7
    VLAN4 = 8
    IP6_UNIQUE = 9
    IP6_GLOBAL = 10
    IP4_RFC1918 = 11
    IP4 = 12


BOOST = 13      # IPSP_NUM_PRIORITIES: one agent.cidr index or agent=dev is worth a whole ladder

_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_SELF_ASSIGNED = ipaddress.ip_network("169.254.0.0/16")
_CLASS_E = ipaddress.ip_network("240.0.0.0/4")
_V4_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_V6_LINK = ipaddress.ip_network("fe80::/10")
_V6_ULA = ipaddress.ip_network("fc00::/7")


@dataclass(frozen=True)
class AgentAddress:
    ip: IPAddress
    device: Optional[str] = None
    ifindex: int = 0


def base_priority(ip: IPAddress, loopback: bool = False, vlan: bool = False) -> Priority:
    """The class of one address on a device (``loopback``: IFF_LOOPBACK; ``vlan``: 802.1Q)."""
    if ip.is_multicast:
        return Priority.NONE        # hsflowd: "make sure we can't get a multicast in here"
    if ip.version == 4:
        if loopback or ip in _V4_LOOPBACK:
            return Priority.LOOPBACK4
        if ip in _SELF_ASSIGNED:
            return Priority.SELFASSIGNED4
        if vlan:
            return Priority.VLAN4
        if any(ip in net for net in _RFC1918):
            return Priority.IP4_RFC1918
        if ip in _CLASS_E:
            return Priority.CLASS_E
        return Priority.IP4
    if loopback or ip.is_loopback:
        return Priority.LOOPBACK6
    if ip in _V6_LINK:
        return Priority.IP6_LINK
    if ip in _V6_ULA:
        return Priority.IP6_UNIQUE
    if vlan:
        return Priority.VLAN6
    return Priority.IP6_GLOBAL


CidrList = Sequence[Tuple[Union[Network, str], bool]]


def _normalise(cidrs: CidrList) -> List[Tuple[Network, bool]]:
    return [(ipaddress.ip_network(net, strict=False), bool(exclude)) for net, exclude in cidrs]


def cidr_priority(ip: IPAddress, base: int, cidrs: Sequence[Tuple[Network, bool]]) -> int:
    """``base`` after agent.cidr: the last listed CIDR that matches decides."""
    n = len(cidrs)
    for position in range(n - 1, -1, -1):
        net, exclude = cidrs[position]
        if ip.version == net.version and ip in net:
            return Priority.NONE if exclude else base + (n - position) * BOOST
    return base


def address_priority(ip: IPAddress, loopback: bool = False, vlan: bool = False,
                     cidrs: CidrList = ()) -> int:
    return cidr_priority(ip, base_priority(ip, loopback, vlan), _normalise(cidrs))


@dataclass
class _Candidate:
    ip: IPAddress
    priority: int
    device: object          # the Interface that gave the best priority
    min_ifindex: int
    discovered: int
    slaac: bool
    devices: List[str]


def _candidates(interfaces: Iterable, cidrs: List[Tuple[Network, bool]]) -> List[_Candidate]:
    found: Dict[IPAddress, _Candidate] = {}
    for iface in interfaces:
        if not iface.admin_up:
            continue
        for address in iface.addresses:
            if address.tentative or address.dadfailed or address.ip.is_unspecified:
                continue
            ip = address.ip
            priority = cidr_priority(ip, base_priority(ip, iface.loopback, iface.is_vlan), cidrs)
            names = [iface.name] + ([iface.alias] if iface.alias else [])
            cand = found.get(ip)
            if cand is None:
                found[ip] = _Candidate(ip, priority, iface, iface.ifindex, len(found),
                                       address.slaac, names)
                continue
            if priority > cand.priority:
                cand.priority, cand.device = priority, iface
            cand.min_ifindex = min(cand.min_ifindex, iface.ifindex)
            cand.slaac = cand.slaac and address.slaac
            cand.devices.extend(names)
    return list(found.values())


def elect_agent_address(interfaces: Iterable, agent_ip: Union[str, IPAddress, None] = None,
                        agent_device: Optional[str] = None,
                        cidrs: CidrList = ()) -> Optional[AgentAddress]:
    """The agent address, or None when there is no usable address at all.

    ``interfaces`` are ``hsflowd.sources.interfaces.Interface`` objects (an
    ``InterfaceTable`` will do); ``cidrs`` are (network, exclude) in config file order.
    """
    interfaces = list(interfaces)
    if agent_ip is not None:
        ip = ipaddress.ip_address(agent_ip)
        for iface in sorted(interfaces, key=lambda i: i.ifindex):
            if any(a.ip == ip for a in iface.addresses):
                return AgentAddress(ip, iface.name, iface.ifindex)
        return AgentAddress(ip)
    candidates = _candidates(interfaces, _normalise(cidrs))
    if not candidates:
        return None
    pegged = None
    if agent_device:
        names = {i.name for i in interfaces}
        aliases = {i.alias for i in interfaces if i.alias}
        if agent_device in names or agent_device in aliases:
            pegged = agent_device

    def rank(c: _Candidate):
        boosted = c.priority + (BOOST if pegged and pegged in c.devices else 0)
        # max() keeps the first of equal keys; make "better" compare greater
        return (boosted, not c.slaac, -c.min_ifindex, -c.discovered)

    best = max(candidates, key=rank)
    return AgentAddress(best.ip, best.device.name, best.device.ifindex)
