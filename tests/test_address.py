"""Agent address election (hsflowd.address): the priority ladder, agent.cidr, agent=dev,
agentIP and the tie rules, on hand-built interfaces (no root, no kernel)."""

from __future__ import annotations

import ipaddress

import pytest

from hsflowd.address import (BOOST, AgentAddress, Priority, address_priority, base_priority,
                             elect_agent_address)
from hsflowd.sources.interfaces import (IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_MANAGETEMPADDR,
                                        IFA_F_PERMANENT, IFA_F_TENTATIVE, Address, Interface)


def addr(text: str, flags: int = IFA_F_PERMANENT, proto: int = 0) -> Address:
    if "/" not in text:
        text += "/32" if ":" not in text else "/128"
    return Address(ipaddress.ip_interface(text), flags=flags, proto=proto)


def iface(name: str, ifindex: int, *addresses, kind: str = "", loopback: bool = False,
          up: bool = True, alias: str = "") -> Interface:
    return Interface(ifindex=ifindex, name=name, kind=kind, loopback=loopback, admin_up=up,
                     oper_up=up, alias=alias,
                     addresses=[a if isinstance(a, Address) else addr(a) for a in addresses])


def elected(*interfaces, **kw) -> str:
    result = elect_agent_address(interfaces, **kw)
    return str(result.ip) if result else None


def ip(text):
    return ipaddress.ip_address(text)


# ---------------------------------------------------------------- the ladder, rung by rung

# (rung, address, device kind, loopback device), lowest first, as hsflowd ranks them
LADDER = [
    (Priority.NONE, "224.0.0.5", "", False),          # multicast: forced to 0 (see below)
    (Priority.CLASS_E, "240.0.0.1", "", False),
    (Priority.LOOPBACK6, "::1", "", True),
    (Priority.LOOPBACK4, "127.0.0.1", "", True),
    (Priority.SELFASSIGNED4, "169.254.7.7", "", False),
    (Priority.IP6_LINK, "fe80::1", "", False),
    (Priority.VLAN6, "2001:db8:77::1", "vlan", False),
    (Priority.VLAN4, "198.51.100.7", "vlan", False),
    (Priority.IP6_UNIQUE, "fd12:3456::1", "", False),
    (Priority.IP6_GLOBAL, "2001:db8::1", "", False),
    (Priority.IP4_RFC1918, "10.1.2.3", "", False),
    (Priority.IP4, "192.0.2.1", "", False),
]


@pytest.mark.parametrize("rung, text, kind, loopback", LADDER, ids=[r[0].name for r in LADDER])
def test_rung_classification(rung, text, kind, loopback):
    assert base_priority(ip(text), loopback=loopback, vlan=(kind == "vlan")) == rung


@pytest.mark.parametrize("lower, higher", list(zip(LADDER, LADDER[1:])),
                         ids=[f"{a[0].name}<{b[0].name}" for a, b in zip(LADDER, LADDER[1:])])
def test_each_rung_beats_the_one_below(lower, higher):
    # the lower rung sits on the lower ifIndex, so only priority can make the higher one win
    low = iface("lo" if lower[3] else "low", 2, lower[1], kind=lower[2], loopback=lower[3])
    high = iface("lo" if higher[3] else "high", 3, higher[1], kind=higher[2], loopback=higher[3])
    assert elected(low, high) == higher[1]
    assert elected(high, low) == higher[1]


def test_ladder_values_strictly_increase():
    values = [base_priority(ip(t), loopback=lb, vlan=(k == "vlan")) for _, t, k, lb in LADDER]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert BOOST == 13 == len(Priority)


def test_multicast_is_forced_to_zero_and_loses_even_to_class_e():
    # hsflowd has a MULTICAST rung above CLASS_E but overrides any multicast address to 0
    assert base_priority(ip("239.1.1.1")) == Priority.NONE
    assert base_priority(ip("ff02::1")) == Priority.NONE
    assert elected(iface("a", 2, "239.1.1.1"), iface("b", 3, "240.0.0.9")) == "240.0.0.9"


@pytest.mark.parametrize("text, rung", [
    ("10.0.0.0", Priority.IP4_RFC1918), ("10.255.255.255", Priority.IP4_RFC1918),
    ("172.15.255.255", Priority.IP4), ("172.16.0.1", Priority.IP4_RFC1918),
    ("172.31.255.255", Priority.IP4_RFC1918), ("172.32.0.0", Priority.IP4),
    ("192.168.1.1", Priority.IP4_RFC1918), ("192.169.0.1", Priority.IP4),
    ("100.64.0.1", Priority.IP4),                   # CGNAT is not RFC 1918
    ("169.254.0.1", Priority.SELFASSIGNED4), ("255.255.255.255", Priority.CLASS_E),
    ("127.0.0.2", Priority.LOOPBACK4),
    ("fc00::1", Priority.IP6_UNIQUE), ("fdff::1", Priority.IP6_UNIQUE),
    ("fe80::abcd", Priority.IP6_LINK), ("febf::1", Priority.IP6_LINK),
    ("fec0::1", Priority.IP6_GLOBAL),               # old site-local: hsflowd has no rung for it
])
def test_classification_boundaries(text, rung):
    assert base_priority(ip(text)) == rung


def test_device_flags_that_override_the_address_class():
    # any IPv4 address on a loopback device ranks as loopback (issue #40's 192.0.2.10 on lo)
    assert base_priority(ip("192.0.2.10"), loopback=True) == Priority.LOOPBACK4
    assert base_priority(ip("2001:db8::10"), loopback=True) == Priority.LOOPBACK6
    # on a VLAN device: 169.254 stays self-assigned, RFC 1918 becomes VLAN4, ULA stays ULA
    assert base_priority(ip("169.254.1.1"), vlan=True) == Priority.SELFASSIGNED4
    assert base_priority(ip("10.0.0.1"), vlan=True) == Priority.VLAN4
    assert base_priority(ip("fd00::1"), vlan=True) == Priority.IP6_UNIQUE
    assert base_priority(ip("fe80::1"), vlan=True) == Priority.IP6_LINK


def test_v4_public_beats_v6_global_on_the_same_device():
    assert elected(iface("eth0", 2, "2001:db8::5/64", "203.0.113.5/24")) == "203.0.113.5"


# ---------------------------------------------------------------- agent.cidr

def test_cidr_boost_makes_rfc1918_beat_public():
    a = iface("eth0", 2, "192.0.2.1/24")
    b = iface("eth1", 3, "10.1.1.1/24")
    assert elected(a, b) == "192.0.2.1"
    assert elected(a, b, cidrs=[(ipaddress.ip_network("10.0.0.0/8"), False)]) == "10.1.1.1"


def test_first_listed_cidr_gives_the_biggest_boost():
    a = iface("eth0", 2, "10.1.1.1/24")
    b = iface("eth1", 3, "172.16.1.1/24")
    assert elected(a, b, cidrs=[("172.16.0.0/12", False), ("10.0.0.0/8", False)]) == "172.16.1.1"
    assert elected(a, b, cidrs=[("10.0.0.0/8", False), ("172.16.0.0/12", False)]) == "10.1.1.1"
    cidrs = [("172.16.0.0/12", False), ("10.0.0.0/8", False)]
    assert address_priority(ip("172.16.1.1"), cidrs=cidrs) == Priority.IP4_RFC1918 + 2 * BOOST
    assert address_priority(ip("10.1.1.1"), cidrs=cidrs) == Priority.IP4_RFC1918 + 1 * BOOST


def test_the_last_listed_matching_cidr_decides():
    # hsflowd walks its reversed list and stops at the first match: with overlapping CIDRs
    # the narrower one listed second gives the *smaller* boost (as coded)
    cidrs = [("10.0.0.0/8", False), ("10.1.0.0/16", False)]
    assert address_priority(ip("10.1.0.1"), cidrs=cidrs) == Priority.IP4_RFC1918 + BOOST
    assert address_priority(ip("10.2.0.1"), cidrs=cidrs) == Priority.IP4_RFC1918 + 2 * BOOST
    assert elected(iface("a", 2, "10.1.0.1"), iface("b", 3, "10.2.0.1"), cidrs=cidrs) == "10.2.0.1"


def test_excluded_cidr_forces_priority_zero():
    a = iface("eth0", 2, "192.0.2.1/24")          # public: would win
    b = iface("eth1", 3, "240.0.0.1/24")          # class E: the lowest real rung
    assert elected(a, b, cidrs=[("192.0.2.0/24", True)]) == "240.0.0.1"
    assert address_priority(ip("192.0.2.1"), cidrs=[("192.0.2.0/24", True)]) == 0


def test_excluded_address_is_still_elected_when_nothing_else_exists():
    # priority 0 is a rank, not a ban: hsflowd elects the best it has
    only = iface("eth0", 2, "192.0.2.1/24")
    assert elected(only, cidrs=[("192.0.2.0/24", True)]) == "192.0.2.1"


def test_exclusion_listed_before_a_broader_include_is_shadowed():
    # the last listed match decides, so "!10.1/16" then "10/8" boosts 10.1.x (as coded);
    # list the exclusion last to make it bite
    assert address_priority(ip("10.1.0.1"), cidrs=[("10.1.0.0/16", True), ("10.0.0.0/8", False)]) \
        == Priority.IP4_RFC1918 + BOOST
    assert address_priority(ip("10.1.0.1"),
                            cidrs=[("10.0.0.0/8", False), ("10.1.0.0/16", True)]) == 0


def test_cidr_of_the_other_family_never_matches():
    cidrs = [("::/0", False)]
    assert address_priority(ip("10.0.0.1"), cidrs=cidrs) == Priority.IP4_RFC1918
    assert address_priority(ip("2001:db8::1"), cidrs=cidrs) == Priority.IP6_GLOBAL + BOOST
    assert elected(iface("a", 2, "10.0.0.1"), iface("b", 3, "2001:db8::1"),
                   cidrs=cidrs) == "2001:db8::1"


def test_issue_76_agent_cidr_wins_over_docker_and_macvlan_addresses():
    """sflow/host-sflow#76: agent.cidr=10.10.10.0/24 with 10.10.10.1 on lo must win over the
    RFC 1918 addresses on macvlan, docker and bridge devices (2.1.13 picked macvlan1001)."""
    interfaces = [
        iface("lo", 1, "127.0.0.1/8", "10.10.10.1/32", "::1", loopback=True),
        iface("vlan100", 9, "192.168.255.1/24", "fe80::5449:dcff:fe68:c77b/64", kind="vlan"),
        iface("vlan99", 11, "192.168.254.1/24", "fe80::5449:dcff:fe68:c77b/64", kind="vlan"),
        iface("macvlan1001", 13, "10.251.0.1/24", kind="macvlan"),
        iface("br-0d5797347c2e", 14, "172.19.0.1/16", kind="bridge"),
        iface("docker0", 15, "172.17.0.1/16", kind="bridge"),
        iface("veth36e7c26", 70, "fe80::4c36:43ff:fea1:2250/64", kind="veth"),
    ]
    # without the CIDR: the RFC 1918 tie goes to the lowest ifIndex, macvlan1001 (the report)
    assert elect_agent_address(interfaces) == AgentAddress(ip("10.251.0.1"), "macvlan1001", 13)
    # with it: 10.10.10.1 on lo, LOOPBACK4 + 13 = 17 > RFC 1918's 11
    result = elect_agent_address(interfaces, cidrs=[(ipaddress.ip_network("10.10.10.0/24"), False)])
    assert result == AgentAddress(ip("10.10.10.1"), "lo", 1)


# ---------------------------------------------------------------- agent=dev and agentIP

def test_agent_device_adds_one_boost():
    public = iface("eth0", 2, "192.0.2.1/24")
    private = iface("eth1", 3, "10.0.0.1/24")
    assert elected(public, private) == "192.0.2.1"
    assert elect_agent_address([public, private], agent_device="eth1") == \
        AgentAddress(ip("10.0.0.1"), "eth1", 3)


def test_agent_device_is_only_a_boost_not_a_command():
    # +13 on a loopback address (4+13=17) still beats a public one (12)...
    lo = iface("lo", 1, "127.0.0.1/8", loopback=True)
    eth = iface("eth0", 2, "192.0.2.1/24")
    assert elected(lo, eth, agent_device="lo") == "127.0.0.1"
    # ...but not a CIDR-boosted public one listed first of two (12+26=38 > 11+13=24)
    eth1 = iface("eth1", 3, "10.0.0.1/24")
    assert elected(eth, eth1, agent_device="eth1",
                   cidrs=[("192.0.2.0/24", False), ("198.51.100.0/24", False)]) == "192.0.2.1"


def test_agent_device_matches_an_alias_and_ignores_unknown_names():
    public = iface("eth0", 2, "192.0.2.1/24")
    private = iface("eth1", 3, "10.0.0.1/24", alias="mgmt")
    assert elected(public, private, agent_device="mgmt") == "10.0.0.1"
    assert elected(public, private, agent_device="nosuchdev") == "192.0.2.1"


def test_agent_ip_short_circuits_the_election():
    public = iface("eth0", 2, "192.0.2.1/24")
    private = iface("eth1", 3, "10.0.0.1/24")
    assert elect_agent_address([public, private], agent_ip="10.0.0.1") == \
        AgentAddress(ip("10.0.0.1"), "eth1", 3)
    assert elect_agent_address([public, private], agent_ip=ip("2001:db8::99")) == \
        AgentAddress(ip("2001:db8::99"), None, 0)
    # even with no interfaces at all, and even if it is "worse" than what is there
    assert elect_agent_address([], agent_ip="127.0.0.1") == AgentAddress(ip("127.0.0.1"))
    with pytest.raises(ValueError):
        elect_agent_address([], agent_ip="collector.example.com")   # the caller resolves names


# ---------------------------------------------------------------- ties

def test_tie_non_slaac_v6_beats_slaac():
    slaac = addr("2001:db8:5:0:20b9:58ff:feb8:afd0/64", flags=IFA_F_MANAGETEMPADDR, proto=2)
    static = addr("2001:db8:6::1/64")
    assert slaac.slaac and not static.slaac
    # SLAAC on the lower ifIndex and discovered first: the static address still wins
    assert elected(iface("eth0", 2, slaac), iface("eth1", 3, static)) == "2001:db8:6::1"
    assert elected(iface("eth0", 2, slaac, static)) == "2001:db8:6::1"
    # but SLAAC is only a tie-breaker: it does not lose to a lower rung
    assert elected(iface("eth0", 2, slaac), iface("eth1", 3, "fd00::1/64")) == str(slaac.ip)


def test_tie_lowest_ifindex_wins_whatever_the_order():
    a = iface("eth7", 7, "192.0.2.7/24")
    b = iface("eth3", 3, "198.51.100.3/24")
    assert elected(a, b) == "198.51.100.3"
    assert elected(b, a) == "198.51.100.3"


def test_tie_first_discovered_wins_on_one_device():
    assert elected(iface("eth0", 2, "192.0.2.1/24", "198.51.100.1/24")) == "192.0.2.1"
    assert elected(iface("eth0", 2, "198.51.100.1/24", "192.0.2.1/24")) == "198.51.100.1"


def test_address_on_several_devices_takes_its_best_rank_and_lowest_ifindex():
    # the same address on a VLAN device (VLAN4) and a plain one (IP4): it ranks IP4, it is
    # reported on the plain device, and ties are broken with the lowest ifIndex of both
    shared_vlan = iface("eth0.5", 4, "192.0.2.1/24", kind="vlan")
    shared = iface("br0", 9, "192.0.2.1/24")
    other = iface("eth1", 5, "198.51.100.1/24")
    assert elect_agent_address([shared_vlan, shared, other]) == \
        AgentAddress(ip("192.0.2.1"), "br0", 9)


# ---------------------------------------------------------------- what is not a candidate

def test_down_interfaces_are_skipped():
    down = iface("eth0", 2, "192.0.2.1/24", up=False)
    up = iface("eth1", 3, "10.0.0.1/24")
    assert elected(down, up) == "10.0.0.1"
    assert elected(down) is None


def test_tentative_and_dad_failed_addresses_are_skipped_deprecated_are_not():
    eth = iface("eth0", 2, addr("2001:db8::1/64", IFA_F_TENTATIVE | IFA_F_PERMANENT),
                addr("2001:db8::2/64", IFA_F_DADFAILED | IFA_F_TENTATIVE | IFA_F_PERMANENT),
                addr("2001:db8::3/64", IFA_F_DEPRECATED | IFA_F_PERMANENT), "fe80::1/64")
    assert elected(eth) == "2001:db8::3"
    only_tentative = iface("eth0", 2, addr("2001:db8::1/64", IFA_F_TENTATIVE))
    assert elected(only_tentative) is None


def test_nothing_to_elect():
    assert elect_agent_address([]) is None
    assert elect_agent_address([iface("eth0", 2)]) is None
    assert elect_agent_address([iface("eth0", 2, "0.0.0.0/0")]) is None


def test_address_slaac_detection():
    assert addr("2001:db8::1/64", flags=0x100).slaac                       # mngtmpaddr
    assert addr("2001:db8::1/64", flags=0x01).slaac                        # privacy temporary
    assert addr("2001:db8::1/64", flags=0, proto=2).slaac                  # IFAPROT_KERNEL_RA
    assert addr("2001:db8::1/64", flags=0).slaac                           # dynamic /64
    assert not addr("2001:db8::1/128", flags=0).slaac                      # DHCPv6 lease
    assert not addr("2001:db8::1/64").slaac                                # static (permanent)
    assert not addr("fe80::1/64", flags=0, proto=3).slaac                  # link-local
    assert not addr("10.0.0.1/24", flags=0x01).slaac                       # IPv4 secondary
    assert addr("10.0.0.1/24", flags=0x01).secondary
