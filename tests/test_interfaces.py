"""The interface table (hsflowd.sources.interfaces) and the records built from it
(hsflowd.sources.ifcounters).

Pure tests use hand-built Interface/LinkStats objects.  Kernel tests build topologies in
namespaces of their own and run the table *inside* them, in a driver subprocess started
with ``ip netns exec`` (tests/netns.py), talking JSON lines over stdin/stdout: this test
process never changes namespace, and the table runs single-threaded as in the agent.
Every namespace (and the driver in it) is removed by the ``netns`` fixture.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import time

import pytest

from hsflowd.sflow.counters import UNKNOWN32, EthernetCounters, HostAdapter, IfCounters, PortName
from hsflowd.sources import ifcounters
from hsflowd.sources.interfaces import (IFF_MASTER, Address, Interface, LinkStats, host_adapters,
                                        interface_counters, nio_interfaces, raw_attr)
from hsflowd.sources.rtnetlink import attributes
from kernel_limits import NO_VLAN, kernel_limit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the interpreter the kernel tests run the table under (e.g. /usr/bin/python3 to run them
# all against Debian's python3-pyroute2)
DRIVER_PYTHON = os.environ.get("HSFLOWD_TEST_PYTHON", sys.executable)
MAC1 = bytes.fromhex("020000000001")


def make(name, ifindex, kind="", up=True, mac=MAC1, loopback=False, flags=0, **kw) -> Interface:
    return Interface(ifindex=ifindex, name=name, kind=kind, admin_up=up, oper_up=up, mac=mac,
                     loopback=loopback, flags=flags, **kw)


# ================================================================ pure: counter records

STATS = LinkStats(rx_packets=1000, tx_packets=900, rx_bytes=150_000, tx_bytes=120_000,
                  rx_errors=3, tx_errors=4, rx_dropped=5, tx_dropped=6, multicast=40,
                  collisions=7, rx_length_errors=8, rx_over_errors=9, rx_crc_errors=10,
                  rx_frame_errors=11, rx_fifo_errors=12, rx_missed_errors=13,
                  tx_aborted_errors=14, tx_carrier_errors=15, tx_fifo_errors=16,
                  tx_heartbeat_errors=17, tx_window_errors=18)


def test_interface_counters_order_and_generic_fields():
    eth = make("eth0", 7, speed=10_000_000_000, duplex="full", promisc=True)
    records = interface_counters(eth, STATS)
    # Wireshark 4.0 knows 1 and 2 and cannot skip 1005: that goes last
    assert [type(r) for r in records] == [IfCounters, EthernetCounters, PortName]
    assert [r.tag for r in records] == [1, 2, 1005]
    assert records[2].name == "eth0"
    g = records[0]
    assert (g.ifIndex, g.ifType, g.ifSpeed, g.ifDirection, g.ifStatus) == (7, 6, 10**10, 1, 3)
    assert (g.ifInOctets, g.ifInUcastPkts, g.ifInMulticastPkts) == (150_000, 960, 40)
    assert (g.ifInDiscards, g.ifInErrors) == (5, 3)
    assert (g.ifOutOctets, g.ifOutUcastPkts, g.ifOutDiscards, g.ifOutErrors) == (120_000, 900, 6, 4)
    assert g.ifInBroadcastPkts == g.ifInUnknownProtos == UNKNOWN32
    assert g.ifOutMulticastPkts == g.ifOutBroadcastPkts == UNKNOWN32
    assert g.ifPromiscuousMode == 1


def test_interface_counters_ethernet_mapping():
    e = interface_counters(make("eth0", 7), STATS)[1]
    assert e.dot3StatsAlignmentErrors == 11          # rx_frame_errors
    assert e.dot3StatsFCSErrors == 10                # rx_crc_errors
    assert e.dot3StatsSQETestErrors == 17            # tx_heartbeat_errors
    assert e.dot3StatsLateCollisions == 18           # tx_window_errors
    assert e.dot3StatsExcessiveCollisions == 14      # tx_aborted_errors
    assert e.dot3StatsCarrierSenseErrors == 15       # tx_carrier_errors
    for name in ("SingleCollisionFrames", "MultipleCollisionFrames", "DeferredTransmissions",
                 "InternalMacTransmitErrors", "FrameTooLongs", "InternalMacReceiveErrors",
                 "SymbolErrors"):
        assert getattr(e, "dot3Stats" + name) == UNKNOWN32


@pytest.mark.parametrize("admin, oper, duplex, status, direction", [
    (True, True, "full", 3, 1), (True, False, "half", 1, 2), (False, False, "", 0, 0),
])
def test_interface_counters_status_and_direction(admin, oper, duplex, status, direction):
    eth = Interface(ifindex=2, name="eth0", admin_up=admin, oper_up=oper, duplex=duplex)
    g = interface_counters(eth, LinkStats())[0]
    assert (g.ifStatus, g.ifDirection, g.ifPromiscuousMode, g.ifSpeed) == (status, direction, 0, 0)


def test_interface_counters_wrap_32_bits_and_keep_64():
    big = LinkStats(rx_packets=2**32 + 5, multicast=7, tx_packets=2**33 + 1, rx_bytes=2**40,
                    tx_bytes=2**63, rx_dropped=2**32, rx_frame_errors=2**32 + 2)
    records = interface_counters(make("eth0", 2), big)
    g = records[0]
    assert g.ifInUcastPkts == (2**32 + 5 - 7) % 2**32 == 2**32 - 2
    assert g.ifInMulticastPkts == 7 and g.ifOutUcastPkts == 1 and g.ifInDiscards == 0
    assert g.ifInOctets == 2**40 and g.ifOutOctets == 2**63
    assert records[1].dot3StatsAlignmentErrors == 2
    # and they encode: 1 (8 + 88), 2 (8 + 52), 1005 (4+4 + 4+4 name)
    assert [len(r.encode()) for r in records] == [96, 60, 16]


def test_link_stats_from_netlink_attribute():
    # struct rtnl_link_stats64: 24 fields here (rx_nohandler last), of which 23 are kept
    stats = LinkStats.from_bytes(struct.pack("=24Q", 3, 0, 0, 9, *range(18), 21, 1))
    assert stats.rx_packets == 3 and stats.tx_bytes == 9 and stats.rx_errors == 0
    assert stats.tx_compressed == 21 and stats == LinkStats(3, 0, 0, 9, *range(18), 21)
    assert LinkStats.from_bytes(struct.pack("=2Q", 5, 6)) == LinkStats(rx_packets=5, tx_packets=6)


# ================================================================ pure: host adapters, nio

def test_host_adapters_rules():
    table = [
        make("lo", 1, mac=bytes(6), loopback=True),
        make("eth0", 2, mac=bytes.fromhex("525400000002")),
        make("eth1", 3, mac=bytes.fromhex("525400000003"), up=False),       # down
        make("veth0", 4, kind="veth", link=5),                              # peer here
        make("vethc", 6, kind="veth", link=2, link_netnsid=0),              # peer elsewhere
        make("tun0", 7, kind="tun", mac=b""),                               # no MAC
        make("zero", 8, mac=bytes(6)),                                      # zero MAC
        make("br0", 9, kind="bridge", mac=bytes.fromhex("525400000009")),
        make("mv0", 10, kind="macvlan", mac=bytes.fromhex("52540000000a")),
    ]
    assert host_adapters(reversed(table)) == [
        HostAdapter(ifIndex=2, mac_addresses=[bytes.fromhex("525400000002")]),
        HostAdapter(ifIndex=9, mac_addresses=[bytes.fromhex("525400000009")]),
        HostAdapter(ifIndex=10, mac_addresses=[bytes.fromhex("52540000000a")]),
    ]


def test_host_adapters_are_capped_at_32():
    table = [make(f"eth{i}", i, mac=bytes([2, 0, 0, 0, 0, i])) for i in range(2, 50)]
    adapters = host_adapters(table)
    assert len(adapters) == ifcounters.MAX_HOST_ADAPTERS == 32
    assert [a.ifIndex for a in adapters] == list(range(2, 34))


def test_nio_interfaces_rules():
    table = [
        make("lo", 1, loopback=True),
        make("eth0", 2),
        make("eth1", 3, up=False),
        make("eth0.100", 4, kind="vlan", link=2),
        make("bond0", 5, kind="bond", flags=IFF_MASTER),
        make("team0", 6, kind="team", flags=IFF_MASTER),      # IFF_MASTER is what hsflowd tests
        make("eth2", 7, master=5),                            # bond slave: counted
        make("br0", 8, kind="bridge"),
        make("veth0", 9, kind="veth"),
    ]
    assert nio_interfaces(table) == ["eth0", "eth2", "br0", "veth0"]


def test_records_are_importable_from_both_modules():
    assert interface_counters is ifcounters.interface_counters
    with pytest.raises(AttributeError):
        from hsflowd.sources import interfaces
        interfaces.no_such_name  # noqa: B018


def test_raw_attribute_walk_finds_attributes_pyroute2_does_not_know():
    class Msg(dict):
        pass
    attrs = bytes.fromhex("080001000a000001") + bytes.fromhex("05000b0002000000")
    msg = Msg(header={"length": 16 + 8 + len(attrs)})
    msg.data, msg.offset = b"\xff" * 4 + bytes(24) + attrs, 4
    assert raw_attr(msg, 8, 11) == b"\x02"
    assert raw_attr(msg, 8, 1) == bytes.fromhex("0a000001")
    assert raw_attr(msg, 8, 99) is None


def test_attribute_walk_reads_every_attribute():
    # IFA_ADDRESS 10.0.0.1, then IFA_PROTO 2 (padded to 4 bytes), after an 8-byte ifaddrmsg
    attrs = bytes.fromhex("080001000a000001") + bytes.fromhex("05000b0002000000")
    got = attributes(bytes(8) + attrs, 8)
    assert got == {1: bytes.fromhex("0a000001"), 11: b"\x02"}
    assert attributes(bytes(8) + attrs[:6], 8) == {}         # cut short: nothing made up


def test_address_flags():
    a = Address(ipaddress.ip_interface("10.0.0.1/24"), flags=0x01 | 0x80)
    assert a.secondary and not a.temporary and a.permanent
    assert a.ip == ipaddress.ip_address("10.0.0.1")
    b = Address(ipaddress.ip_interface("2001:db8::1/64"), flags=0x01 | 0x20 | 0x40)
    assert b.temporary and b.deprecated and b.tentative and not b.secondary and b.slaac


# ================================================================ kernel: the driver

DRIVER = r'''
import dataclasses, json, select, sys, time
from hsflowd.sources.interfaces import (InterfaceTable, interface_counters, host_adapters,
                                        nio_interfaces)
from hsflowd.address import elect_agent_address

def dump(t):
    out = []
    for i in t:
        d = dataclasses.asdict(i)
        d["mac"] = i.mac.hex()
        d["addresses"] = [dict(addr=str(a.addr), flags=a.flags, scope=a.scope, proto=a.proto,
                               slaac=a.slaac, label=a.label) for a in i.addresses]
        out.append(d)
    return {"interfaces": out, "ethtool_reads": t.ethtool_reads, "resyncs": t.resyncs}

def sysfs(name):
    base = "/sys/class/net/%s/statistics/" % name
    keys = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors",
            "rx_dropped", "tx_dropped", "multicast", "collisions", "rx_crc_errors",
            "rx_frame_errors")
    return {k: int(open(base + k).read()) for k in keys}

table = InterfaceTable(**json.loads(sys.argv[1]))
version = __import__("pyroute2").__version__
print(json.dumps(dict(dump(table), ready=True, pyroute2=version)), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    op = req["op"]
    if op == "quit":
        break
    if op == "dump":
        out = dump(table)
    elif op == "refresh":
        table.refresh(); out = dump(table)
    elif op == "events":
        start = time.monotonic(); changed = set(); first = None
        deadline = start + req.get("timeout", 1.0)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([table.fileno()], [], [], left)
            if r:
                got = table.handle_events()
                if got and first is None:
                    first = time.monotonic() - start
                    deadline = min(deadline, time.monotonic() + req.get("settle", 0.3))
                changed |= got
        out = dump(table); out.update(changed=sorted(changed), first=first)
    elif op == "counters":
        names = req["names"]
        if req.get("link_dump"):
            table._getstats = False
        before = {n: sysfs(n) for n in names}
        stats = table.read_counters()
        after = {n: sysfs(n) for n in names}
        out = {"stats": {str(k): v._asdict() for k, v in stats.items()},
               "before": before, "after": after, "records": {}}
        for n in names:
            iface = table.by_name(n)
            out["records"][n] = [
                dict(tag=r.tag, **{f.name: getattr(r, f.name) for f in dataclasses.fields(r)})
                for r in interface_counters(iface, stats[iface.ifindex])]
    elif op == "adapters":
        out = {"adapters": [[a.ifIndex, [m.hex() for m in a.mac_addresses]]
                            for a in host_adapters(table)],
               "nio": nio_interfaces(table)}
    elif op == "elect":
        cidrs = [(c, ex) for c, ex in req.get("cidrs", [])]
        r = elect_agent_address(table, agent_ip=req.get("agent_ip"),
                                agent_device=req.get("agent_device"), cidrs=cidrs)
        out = {"elected": None if r is None else [str(r.ip), r.device, r.ifindex]}
    print(json.dumps(out), flush=True)
table.close()
'''


class Driver:
    """An InterfaceTable running inside ``ns`` (in a subprocess), driven over JSON lines."""

    def __init__(self, ns, python: str = DRIVER_PYTHON, **table_kw):
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = ns.popen([python, "-c", DRIVER, json.dumps(table_kw)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.state = self._read()
        assert self.state.get("ready")

    def _read(self, timeout: float = 30.0) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            raise AssertionError(f"driver died or hung: {self.proc.stderr.read()[-3000:]}")
        return json.loads(line)

    def call(self, op: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps(dict(op=op, **kw)) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if "interfaces" in out:
            self.state = out
        return out

    def events(self, timeout: float = 1.0, settle: float = 0.3) -> dict:
        return self.call("events", timeout=timeout, settle=settle)

    def settle(self, quiet: float = 0.4, tries: int = 20) -> None:
        """Apply events until none come for ``quiet`` seconds (a new bridge, a link just
        brought up: the kernel keeps announcing carrier and port state for a moment)."""
        for _ in range(tries):
            if not self.events(timeout=quiet, settle=0.2)["changed"]:
                return
        pytest.fail("netlink events never stopped")

    def by_name(self, name: str):
        return next((i for i in self.state["interfaces"] if i["name"] == name), None)

    def index(self, name: str) -> int:
        return self.by_name(name)["ifindex"]


def ip_json(ns, *args):
    return json.loads(ns.run(["ip", "-j", *args]).stdout)


def ethtool_speed(ns, name):
    """(bits/s, duplex) as ethtool(8) prints them, (0, "") when it has none."""
    out = ns.run(["ethtool", name], check=False).stdout
    m = re.search(r"Speed:\s*(\d+)Mb/s", out)
    d = re.search(r"Duplex:\s*(\w+)", out)
    duplex = d.group(1).lower() if d else ""
    return (int(m.group(1)) * 1_000_000 if m else 0), (duplex if duplex in ("full", "half") else "")


needs_tools = pytest.mark.skipif(not shutil.which("ethtool"), reason="needs ethtool(8)")


def build_topology(ns, other):
    """veth a0-b0 (a0 a port of br0), macvlan mv0 on b0, veth x0 whose peer is in ``other``
    and left down, vxlan vx0 (IPv4), vx6 (IPv6) and vxe (external), a tap and a tun; IPv4
    and IPv6 addresses."""
    for cmd in [
        "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
        "sysctl -qw net.ipv4.conf.all.promote_secondaries=1"
        " net.ipv4.conf.default.promote_secondaries=1",
        "ip link add a0 type veth peer name b0",
        "ip link add br0 type bridge forward_delay 0",
        "ip link set a0 master br0",
        "ip link add mv0 link b0 type macvlan mode bridge",
        f"ip link add x0 type veth peer name x1 netns {other.name}",
        "ip link add vx0 type vxlan id 42 dstport 4789 dev b0 local 10.1.0.1 remote 10.1.0.7",
        "ip link add vx6 type vxlan id 43 dstport 4790 remote 2001:db8:1::7 nolearning tos inherit",
        "ip link add vxe type vxlan external dstport 4791",
        "ip tuntap add dev tp0 mode tap",
        "ip tuntap add dev tn0 mode tun",
        "ip addr add 10.1.0.1/24 dev b0",
        "ip addr add 10.1.0.99/24 dev b0",
        "ip addr add 2001:db8:1::1/64 dev b0",
        "ip addr add 192.0.2.1/24 dev br0",
        "ip addr add 198.51.100.1/24 dev x0",
        "ip link set br0 alias uplink",
        "ip link set tp0 promisc on",
    ]:
        ns.run(cmd)
    for name in ("a0", "b0", "br0", "mv0", "vx0", "tp0", "tn0"):
        ns.run(["ip", "link", "set", name, "up"])
    wait_for_carrier(ns, "a0", "b0", "br0", "mv0")


def wait_for_carrier(ns, *names, timeout: float = 10.0):
    """Until the links are operationally up and have their IPv6 link-local address, so the
    kernel has stopped announcing them when a test starts."""
    deadline = time.monotonic() + timeout
    while True:
        links = {l["ifname"]: l for l in ip_json(ns, "addr")}
        if all(links[n]["operstate"] == "UP"
               and any(a["local"].startswith("fe80:") for a in links[n].get("addr_info", []))
               for n in names):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"links never came up: {names}")
        time.sleep(0.05)


# ================================================================ kernel: the table

@pytest.mark.netns
@needs_tools
def test_table_matches_ip_link_and_ethtool(netns):
    ns, other = netns(), netns()
    build_topology(ns, other)
    drv = Driver(ns)
    links = {l["ifname"]: l for l in ip_json(ns, "-d", "link")}
    addrs = {l["ifname"]: l.get("addr_info", []) for l in ip_json(ns, "addr")}
    index = {name: l["ifindex"] for name, l in links.items()}
    got = {i["name"]: i for i in drv.state["interfaces"]}
    assert set(got) == set(links)
    for name, link in links.items():
        i = got[name]
        flags = link["flags"]
        assert i["ifindex"] == link["ifindex"], name
        mac = link.get("address", "")
        assert i["mac"] == (mac.replace(":", "") if len(mac) == 17 else ""), name
        assert i["kind"] == link.get("linkinfo", {}).get("info_kind", ""), name
        assert i["master"] == (index[link["master"]] if "master" in link else 0), name
        assert i["admin_up"] == ("UP" in flags), name
        assert i["oper_up"] == ("UP" in flags and link["operstate"] in ("UP", "UNKNOWN")), name
        assert i["promisc"] == ("PROMISC" in flags), name
        assert i["loopback"] == ("LOOPBACK" in flags), name
        assert i["mtu"] == link["mtu"], name
        assert i["operstate"] == link["operstate"], name
        assert i["alias"] == link.get("ifalias", ""), name
        if name != "lo":
            assert (i["speed"], i["duplex"]) == ethtool_speed(ns, name), name
        want = sorted(f"{a['local']}/{a['prefixlen']}" for a in addrs[name])
        assert sorted(a["addr"] for a in i["addresses"]) == want, name
    # links: peers here, peers elsewhere, lower devices
    assert (got["a0"]["link"], got["b0"]["link"]) == (index["b0"], index["a0"])
    assert got["a0"]["link_netnsid"] is None and got["a0"]["master"] == index["br0"]
    assert got["mv0"]["link"] == index["b0"] and got["mv0"]["kind"] == "macvlan"
    assert got["x0"]["link"] == other.ifindex("x1")
    assert got["x0"]["link_netnsid"] == links["x0"]["link_netnsid"]
    assert got["x0"]["admin_up"] is False and got["tn0"]["mac"] == ""
    assert got["a0"]["speed"] == 10_000_000_000 and got["a0"]["duplex"] == "full"   # veth
    assert got["tp0"]["promisc"] and got["br0"]["alias"] == "uplink"
    # VXLAN devices: their tunnel (Vxlan, a list in JSON); nothing on other links
    assert got["vx0"]["vxlan"] == [42, "10.1.0.1", "10.1.0.7", 4789, 0, index["b0"], True, False]
    assert got["vx6"]["vxlan"] == [43, "", "2001:db8:1::7", 4790, 1, 0, False, False]
    assert got["vxe"]["vxlan"][3] == 4791 and got["vxe"]["vxlan"][7] is True
    assert all(i["vxlan"] is None for i in got.values() if i["kind"] != "vxlan")
    b0 = {a["addr"]: a for a in got["b0"]["addresses"]}
    assert b0["10.1.0.99/24"]["flags"] & 0x01                               # secondary
    assert not b0["10.1.0.1/24"]["flags"] & 0x01
    assert b0["2001:db8:1::1/64"]["flags"] & 0x80 and not b0["2001:db8:1::1/64"]["slaac"]
    # ethtool was asked once per link (not lo), when the table was built
    assert drv.state["ethtool_reads"] == len(links) - 1


@pytest.mark.netns
def test_vlan_sub_interface(netns):
    kernel_limit(NO_VLAN)
    ns = netns()
    ns.run("ip link add a0 type veth peer name b0")
    ns.run("ip link add link a0 name a0.100 type vlan id 100")
    ns.run("ip addr add 10.100.0.1/24 dev a0.100")
    for name in ("a0", "b0", "a0.100"):
        ns.run(["ip", "link", "set", name, "up"])
    drv = Driver(ns)
    vlan = drv.by_name("a0.100")
    assert vlan["kind"] == "vlan" and vlan["link"] == drv.index("a0")
    assert "a0.100" not in drv.call("adapters")["nio"]


@pytest.mark.netns
def test_events_address_down_delete_and_new_link(netns):
    ns, other = netns(), netns()
    build_topology(ns, other)
    drv = Driver(ns)
    drv.settle()
    reads = drv.state["ethtool_reads"]

    ns.run("ip addr add 10.9.0.1/24 dev b0")
    ev = drv.events()
    assert drv.index("b0") in ev["changed"] and ev["first"] < 1.0
    assert "10.9.0.1/24" in [a["addr"] for a in drv.by_name("b0")["addresses"]]
    assert ev["ethtool_reads"] == reads                     # an address is no reason to ask

    ns.run("ip addr del 10.1.0.1/24 dev b0")                # the primary: 10.1.0.99 is promoted
    ev = drv.events()
    assert drv.index("b0") in ev["changed"]
    b0 = {a["addr"]: a["flags"] for a in drv.by_name("b0")["addresses"]}
    assert "10.1.0.1/24" not in b0 and not b0["10.1.0.99/24"] & 0x01

    b0_index, mv0_index = drv.index("b0"), drv.index("mv0")
    ns.run("ip link set b0 down")
    ev = drv.events()
    assert b0_index in ev["changed"] and ev["first"] < 1.0
    assert drv.by_name("b0")["admin_up"] is False and drv.by_name("b0")["oper_up"] is False
    assert mv0_index in ev["changed"] and drv.by_name("mv0")["oper_up"] is False   # lost its lower
    assert ev["ethtool_reads"] > reads                      # state changed: speed read again

    x0_index = drv.index("x0")
    ns.run("ip link del x0")
    ev = drv.events()
    assert x0_index in ev["changed"] and ev["first"] < 1.0
    assert drv.by_name("x0") is None

    ns.run("ip link add n0 type veth peer name n1")
    ev = drv.events()
    n0, n1 = drv.by_name("n0"), drv.by_name("n1")
    assert {n0["ifindex"], n1["ifindex"]} <= set(ev["changed"]) and ev["first"] < 1.0
    assert n0["kind"] == "veth" and n0["link"] == n1["ifindex"] and n0["speed"] == 10_000_000_000
    assert n0["mac"] == ns.mac("n0").replace(":", "")

    ns.run("ip link set n0 name renamed0")
    ev = drv.events()
    assert n0["ifindex"] in ev["changed"] and drv.by_name("renamed0")["ifindex"] == n0["ifindex"]
    assert drv.by_name("n0") is None

    # leaving a bridge sends RTM_DELLINK with family AF_BRIDGE: the port must stay
    a0_index = drv.index("a0")
    ns.run("ip link set a0 nomaster")
    ev = drv.events()
    assert a0_index in ev["changed"]
    assert drv.by_name("a0") is not None and drv.by_name("a0")["master"] == 0

    # once the bridge has settled nothing more is reported, and a full re-dump agrees with
    # the table the events built (veth peers, speeds, address order included)
    drv.settle()
    before = drv.state["interfaces"]
    assert drv.call("refresh")["interfaces"] == before


@pytest.mark.netns
def test_lost_events_trigger_a_full_redump(netns):
    ns = netns()
    ns.run("ip link add a0 type veth peer name b0")
    ns.run("ip link set a0 up")
    drv = Driver(ns, rcvbuf=1024)               # the kernel makes this its minimum, ~2.3 KB
    batch = "".join(f"addr add 10.50.{i // 250}.{i % 250 + 1}/32 dev a0\n" for i in range(300))
    ns.run(["ip", "-batch", "-"], input=batch)
    ev = drv.events()
    assert ev["resyncs"] >= 1
    assert drv.index("a0") in ev["changed"]
    assert len([a for a in drv.by_name("a0")["addresses"] if a["addr"].startswith("10.50.")]) == 300


NETLINK_REQUESTS = r'''
import errno, json
from hsflowd.sources.interfaces import RTM_GETLINK, dump_links, link_request
from hsflowd.sources.rtnetlink import NetlinkSocket, is_gone
with NetlinkSocket() as nl:
    first = next(dump_links(nl))               # one link, and the rest of the dump given up
    names = [i.name for i in dump_links(nl)]   # the next dump is whole
    again = [body for _, body in nl.request(RTM_GETLINK, link_request(first.ifindex))]
    try:
        list(nl.request(RTM_GETLINK, link_request(999999)))
        gone = False
    except OSError as e:
        gone = is_gone(e)
print(json.dumps({"first": first.name, "names": names, "again": len(again), "gone": gone}))
'''


@pytest.mark.netns
def test_netlink_requests_after_a_dump_given_up(netns):
    ns = netns()
    pairs = "".join(f"link add q{i}a type veth peer name q{i}b\n" for i in range(100))
    ns.run(["ip", "-batch", "-"], input=pairs)    # a link dump of several datagrams
    out = json.loads(ns.run([DRIVER_PYTHON, "-c", NETLINK_REQUESTS],
                            env=dict(os.environ, PYTHONPATH=ROOT)).stdout)
    assert out["first"] == "lo" and len(out["names"]) == 201 and len(set(out["names"])) == 201
    assert out["again"] == 1 and out["gone"]


SENDER = r'''
import socket, sys
dst, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    s.sendto(b"x" * 100, (dst, 9999))
'''


@pytest.mark.netns
def test_read_counters_match_sysfs(netns):
    ns, other = netns(), netns()
    ns.run(["ip", "link", "add", "c0", "type", "veth", "peer", "name", "c1", "netns", other.name])
    for space, name, address in ((ns, "c0", "10.3.0.1/24"), (other, "c1", "10.3.0.2/24")):
        space.run(["sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1"])   # no ND/MLD noise
        space.run(["ip", "addr", "add", address, "dev", name])
        space.run(["ip", "link", "set", name, "up"])
    # static neighbours: no ARP traffic either
    ns.run(["ip", "neigh", "replace", "10.3.0.2", "lladdr", other.mac("c1"), "dev", "c0"])
    other.run(["ip", "neigh", "replace", "10.3.0.1", "lladdr", ns.mac("c0"), "dev", "c1"])
    here, there = Driver(ns), Driver(other)
    first = here.call("counters", names=["c0"])
    other.run([sys.executable, "-c", SENDER, "10.3.0.1", "500"])
    out, out1 = here.call("counters", names=["c0"]), there.call("counters", names=["c1"])
    dumped = here.call("counters", names=["c0"], link_dump=True)      # the pre-4.7 fallback
    for drv, got, name in ((here, out, "c0"), (there, out1, "c1"), (here, dumped, "c0")):
        stats = got["stats"][str(drv.index(name))]
        before, after = got["before"][name], got["after"][name]
        for key in before:
            # exact when nothing moved between the two sysfs reads, bracketed otherwise
            assert before[key] <= stats[key] <= after[key], (name, key)
            if before[key] == after[key]:
                assert stats[key] == before[key], (name, key)
    c0 = out["stats"][str(here.index("c0"))]
    c1 = out1["stats"][str(there.index("c1"))]
    c0_first = first["stats"][str(here.index("c0"))]
    assert c0["rx_packets"] - c0_first["rx_packets"] >= 500
    assert c0["rx_bytes"] - c0_first["rx_bytes"] >= 500 * (14 + 20 + 8 + 100)
    # one wire: what c1 sent is what c0 received (read a moment apart, so >=)
    assert c1["tx_packets"] >= c0["rx_packets"] and c1["tx_bytes"] >= c0["rx_bytes"]
    # the records carry the same numbers
    records = out["records"]["c0"]
    generic = {r["tag"]: r for r in records}[1]
    assert [r["tag"] for r in records] == [1, 2, 1005] and records[2]["name"] == "c0"
    assert generic["ifIndex"] == here.index("c0") and generic["ifInOctets"] == c0["rx_bytes"]
    assert generic["ifInUcastPkts"] + generic["ifInMulticastPkts"] == c0["rx_packets"]
    assert generic["ifOutUcastPkts"] == c0["tx_packets"] and generic["ifStatus"] == 3
    assert generic["ifSpeed"] == 10_000_000_000 and generic["ifDirection"] == 1


@pytest.mark.netns
def test_host_adapters_and_nio_in_a_namespace(netns):
    ns, other = netns(), netns()
    build_topology(ns, other)
    ns.run("ip link add br1 type bridge")                   # left down
    drv = Driver(ns)
    out = drv.call("adapters")
    got = {ifindex for ifindex, _ in out["adapters"]}
    # up, non-zero MAC, not lo, not a veth (a0, b0 and x0 all have peers); tn0 has no MAC
    assert got == {drv.index(n) for n in ("br0", "mv0", "vx0", "tp0")}
    assert dict(out["adapters"])[drv.index("br0")] == [ns.mac("br0").replace(":", "")]
    assert out["nio"] == [i["name"] for i in drv.state["interfaces"]
                          if i["name"] in ("a0", "b0", "br0", "mv0", "vx0", "tp0", "tn0")]


RA = r'''
import socket, struct, sys
dev, prefix = sys.argv[1], socket.inet_pton(socket.AF_INET6, sys.argv[2])
ifindex = socket.if_nametoindex(dev)
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 0, 0, 0)        # router advertisement
pio = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + prefix   # on-link, autonomous
s.sendto(ra + pio, ("ff02::1", 0, 0, ifindex))
'''


@pytest.mark.netns
def test_election_in_a_namespace(netns):
    ns, other = netns(), netns()
    build_topology(ns, other)
    drv = Driver(ns)
    elect = lambda **kw: drv.call("elect", **kw)["elected"]   # noqa: E731
    br0, b0 = drv.index("br0"), drv.index("b0")
    # 192.0.2.1 (public, br0) beats 10.1.0.x (RFC 1918) and 2001:db8:1::1; x0's public
    # 198.51.100.1 is on a down link
    assert elect() == ["192.0.2.1", "br0", br0]
    assert elect(cidrs=[["10.1.0.0/16", False]]) == ["10.1.0.1", "b0", b0]
    assert elect(cidrs=[["192.0.2.0/24", True]]) == ["10.1.0.1", "b0", b0]
    assert elect(agent_device="b0") == ["10.1.0.1", "b0", b0]
    assert elect(agent_device="uplink") == ["192.0.2.1", "br0", br0]          # alias
    assert elect(agent_ip="2001:db8:1::1") == ["2001:db8:1::1", "b0", b0]


@pytest.mark.netns
def test_election_prefers_static_ipv6_over_slaac_from_a_real_router_advert(netns):
    ns = netns()
    ns.run("sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0")
    ns.run("ip link add r0 type veth peer name r1")
    ns.run("ip link set r0 up")
    ns.run("ip link set r1 up")
    drv = Driver(ns)
    ns.run([sys.executable, "-c", RA, "r0", "2001:db8:5::"])
    deadline = time.monotonic() + 5
    slaac = []
    while not slaac and time.monotonic() < deadline:
        drv.events(timeout=0.5)
        slaac = [a for a in drv.by_name("r1")["addresses"] if a["addr"].startswith("2001:db8:5:")]
    assert slaac, "no SLAAC address appeared"
    assert slaac[0]["slaac"] and slaac[0]["proto"] in (0, 2)
    assert drv.call("elect")["elected"][0] == slaac[0]["addr"].split("/")[0]
    # a static global address on a higher ifIndex device ties on rank and wins the tie
    ns.run("ip addr add 2001:db8:6::1/64 dev r0")
    drv.events()
    assert drv.call("elect")["elected"] == ["2001:db8:6::1", "r0", drv.index("r0")]


DEBIAN_PYTHON = "/usr/bin/python3"


def _debian_pyroute2() -> str:
    if not os.path.exists(DEBIAN_PYTHON):
        return ""
    code = "import pyroute2, os; print(os.path.dirname(pyroute2.__file__))"
    proc = subprocess.run([DEBIAN_PYTHON, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


@pytest.mark.netns
@pytest.mark.skipif(not _debian_pyroute2(), reason="no Debian python3-pyroute2")
def test_debian_python3_pyroute2_smoke(netns):
    """The deb package runs on /usr/bin/python3 with python3-pyroute2 (0.7.2 on Debian 12)."""
    ns, other = netns(), netns()
    build_topology(ns, other)
    drv = Driver(ns, python=DEBIAN_PYTHON)
    names = {i["name"] for i in drv.state["interfaces"]}
    assert {"lo", "a0", "b0", "br0", "mv0", "x0", "vx0", "tp0", "tn0"} <= names
    assert drv.by_name("mv0")["kind"] == "macvlan" and drv.by_name("a0")["speed"] == 10_000_000_000
    assert drv.by_name("vx0")["vxlan"] == [42, "10.1.0.1", "10.1.0.7", 4789, 0, drv.index("b0"),
                                           True, False]
    assert drv.by_name("vx6")["vxlan"][2] == "2001:db8:1::7"
    ll = [a for a in drv.by_name("b0")["addresses"] if a["addr"].startswith("fe80:")]
    assert ll and ll[0]["proto"] == 3                  # IFA_PROTO read raw: 0.7 cannot decode it
    ns.run("ip addr add 10.9.0.1/24 dev b0")
    ns.run("ip link add n0 type veth peer name n1")
    ev = drv.events()
    assert drv.index("b0") in ev["changed"] and drv.index("n0") in ev["changed"]
    out = drv.call("counters", names=["b0"])
    assert out["stats"][str(drv.index("b0"))]["tx_packets"] >= 0
    assert drv.call("elect")["elected"][0] == "192.0.2.1"
