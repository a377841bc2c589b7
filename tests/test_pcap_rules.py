"""Which interfaces `pcap {}` rules select (hsflowd's matching), and the rate each one gets."""

from __future__ import annotations

import pytest

from hsflowd.config import parse_config, sampling_rate_for
from hsflowd.samplers.rules import rule_matches, select_interfaces
from hsflowd.sources.interfaces import Interface

G = 1_000_000_000


def iface(ifindex, name, kind="", speed=10 * G, loopback=False, up=True):
    return Interface(ifindex=ifindex, name=name, mac=bytes([2, 0, 0, 0, 0, ifindex]), kind=kind,
                     speed=speed, admin_up=up, oper_up=up, loopback=loopback)


HOST = [
    iface(1, "lo", speed=0, loopback=True),
    iface(2, "eth0", speed=G),
    iface(3, "eth1", speed=10 * G),
    iface(4, "docker0", kind="bridge", speed=0),
    iface(5, "veth1a2b", kind="veth"),
    iface(6, "bond0", kind="bond", speed=20 * G),
    iface(7, "eth0.100", kind="vlan", speed=G),
    iface(8, "ens5", speed=25 * G),
    iface(9, "tap0", kind="tun", speed=10 * 1_000_000),
]


def rules(body: str):
    return parse_config("sflow {\n collector { ip = 127.0.0.1 }\n%s\n}\n" % body).pcap


def selected(body: str):
    return sorted(HOST[i - 1].name for i in select_interfaces(rules(body), HOST))


@pytest.mark.parametrize("body,expected", [
    ("pcap { dev = eth0 }", ["eth0"]),
    ("pcap { dev = docker0 }", ["docker0"]),
    # a device named with dev= is taken whatever its kind, as in hsflowd
    ("pcap { dev = veth1a2b }", ["veth1a2b"]),
    ("pcap { dev = nosuch }", []),
    # a pattern is searched in the name (regexec); veths, bonds and VLANs are skipped
    ("pcap { dev.pattern = eth }", ["eth0", "eth1"]),
    ('pcap { dev.pattern = "^e(th|ns)[0-9]+$" }', ["ens5", "eth0", "eth1"]),
    ("pcap { dev.pattern = veth }", []),
    ("pcap { dev.pattern = bond }", []),
    ("pcap { dev.pattern = . }", ["docker0", "ens5", "eth0", "eth1", "tap0"]),
    # speed: a range, an open range, one exact speed; interfaces of unknown speed never match
    ("pcap { speed = 1G-10G }", ["eth0", "eth1"]),
    ("pcap { speed = 10G- }", ["ens5", "eth1"]),
    ("pcap { speed = 1G }", ["eth0"]),
    ("pcap { speed = 1M-100M }", ["tap0"]),
    # several rules: every interface any of them selects
    ("pcap { dev = eth0 }\n pcap { dev = docker0 }", ["docker0", "eth0"]),
])
def test_selection(body, expected):
    assert selected(body) == expected


def test_first_matching_rule_wins():
    chosen = select_interfaces(rules("pcap { dev = eth0 sampling = 7 }\n pcap { speed = 1G- sampling = 9 }"), HOST)
    assert chosen[2].sampling == 7 and chosen[3].sampling == 9


def test_loopback_only_by_name():
    assert not rule_matches(rules("pcap { dev.pattern = . }")[0], HOST[0])
    assert rule_matches(rules("pcap { dev = lo }")[0], HOST[0])


@pytest.mark.parametrize("extra,rule,speed,up,expected", [
    ("", "", G, True, 1000),                       # link speed / 1e6
    ("", "", 100 * 1_000_000, True, 100),          # with a minimum of 100
    ("", "", 0, True, 400),                        # speed unknown: the global sampling
    ("sampling = 50", "", 10 * G, True, 10000),    # a plain sampling= does not apply (#53, #75)
    ("sampling = 50\n sampling.bps_ratio = 0", "", 10 * G, True, 50),
    ("sampling.10G = 2000", "", 10 * G, True, 2000),
    ("", "sampling = 3", 10 * G, True, 3),         # the rule's own rate beats everything
    ("", "", G, False, 0),                         # down: not sampled
])
def test_rate_per_interface(extra, rule, speed, up, expected):
    config = parse_config("sflow {\n collector { ip = 127.0.0.1 }\n %s\n pcap { dev = eth0 %s }\n}\n"
                          % (extra, rule))
    assert sampling_rate_for(config, speed, up, config.pcap[0].sampling) == expected


# -- dynamic = on: the devices modules ask for (k8s {}'s pod veths), as hsflowd's GET_TAP ---

@pytest.mark.parametrize("body,requested,expected", [
    # a dynamic rule taps nothing of itself
    ("pcap { dynamic = on }", (), []),
    # any requested device, whatever its kind (a veth is what k8s {} asks for)
    ("pcap { dynamic = on }", (5, 2), ["eth0", "veth1a2b"]),
    # with the rule's criteria, those it has
    ("pcap { dynamic = on dev.pattern = ^veth }", (5, 2), ["veth1a2b"]),
    ("pcap { dynamic = on speed = 1G }", (5, 2), ["eth0"]),
    # a static rule is not widened by requests, and takes its devices first
    ("pcap { dev = eth1 }\n pcap { dynamic = on }", (5,), ["eth1", "veth1a2b"]),
    ("pcap { dev.pattern = veth }", (5,), []),
])
def test_dynamic_rules_take_requested_devices(body, requested, expected):
    chosen = select_interfaces(rules(body), HOST, requested)
    assert sorted(HOST[i - 1].name for i in chosen) == expected


def test_port_board_unions_requests_and_forgets_a_stopped_module():
    from hsflowd.modules.ports import PortBoard
    board = PortBoard()
    board.request_taps("k8s", [5, 6])
    board.name_ports("k8s", {5: "k8s__web-0_default_u_a"})
    board.name_ports("docker", {5: "other", 7: "seven"})     # docker comes first in ORDER
    assert board.changed and board.taps == {5, 6}
    assert board.names == {5: "other", 7: "seven"}
    board.changed = False
    board.request_taps("k8s", [6, 5])                        # the same requests: no change
    assert not board.changed
    board.release("docker")
    assert board.changed and board.names == {5: "k8s__web-0_default_u_a"}
    board.release("k8s")
    assert board.taps == frozenset() and board.names == {}
