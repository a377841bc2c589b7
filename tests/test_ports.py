"""The bridge model's MAC tables (samplers/ports.py): the forwarding database read from
netlink's bytes, against bridge(8)'s own view of it."""

from __future__ import annotations

import json
import os
import struct
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hsflowd.samplers.ports import NDMSG, parse_fdb_entry  # noqa: E402

MAC = bytes.fromhex("02aa00000001")


def nla(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + bytes(-len(payload) % 4)


def test_parse_fdb_entry():
    # NDA_LLADDR 2, NDA_MASTER 9
    body = NDMSG.pack(7, 5, 0x80, 2, 0) + nla(2, MAC) + nla(9, struct.pack("=I", 3))
    assert parse_fdb_entry(body) == (5, 3, MAC)
    assert parse_fdb_entry(NDMSG.pack(7, 5, 0x80, 0, 0) + nla(2, MAC)) == (5, 0, MAC)
    assert parse_fdb_entry(NDMSG.pack(7, 5, 0x80, 0, 0) + nla(2, MAC[:4])) is None


PORT_MAP = r'''
import json, socket, sys
from hsflowd.samplers.ports import PortMap
bridge, device = int(sys.argv[1]), int(sys.argv[2])
class Tap:
    def __init__(self, ifindex, bridge):
        self.ifindex, self.bridge = ifindex, bridge
ports = PortMap()
ports.interfaces_changed([], [Tap(bridge, True), Tap(device, False)])
print(json.dumps({"fdb": {str(b): {m.hex(): p for m, p in t.items()} for b, t in ports.fdb.items()},
                  "uppers": {str(d): sorted(m.hex() for m in s) for d, s in ports.uppers.items()}}))
ports.close()
'''


@pytest.mark.netns
def test_port_map_agrees_with_bridge_fdb(netns):
    ns = netns()
    for cmd in ["ip link add br0 type bridge", "ip link add p0 type veth peer name q0",
                "ip link add p1 type veth peer name q1", "ip link set p0 master br0",
                "ip link set p1 master br0", "ip link add m0 link q1 type macvlan mode bridge",
                "bridge fdb add 02:aa:00:00:00:01 dev p0 master static",
                "bridge fdb add 02:aa:00:00:00:02 dev p1 master static",
                "ip link set q1 up", "ip link set m0 up"]:     # m0's MAC on q1's list
        ns.run(cmd)
    index = {name: ns.ifindex(name) for name in ("br0", "p0", "p1", "q1", "m0")}
    out = json.loads(ns.run([sys.executable, "-c", PORT_MAP, str(index["br0"]), str(index["q1"])],
                            env=dict(os.environ, PYTHONPATH=ROOT)).stdout)
    # what bridge(8) lists with master br0, unicast MACs only, and q1's own entries
    shown = json.loads(ns.run(["bridge", "-j", "fdb", "show"]).stdout)
    want = {e["mac"].replace(":", ""): index[e["ifname"]] for e in shown
            if e.get("master") == "br0" and not int(e["mac"][:2], 16) & 1}
    assert out["fdb"] == {str(index["br0"]): want}
    assert want[MAC.hex()] == index["p0"] and want["02aa00000002"] == index["p1"]
    uppers = {e["mac"].replace(":", "") for e in shown
              if e["ifname"] == "q1" and "master" not in e and not int(e["mac"][:2], 16) & 1}
    assert uppers and out["uppers"] == {str(index["q1"]): sorted(uppers)}
    assert ns.mac("m0").replace(":", "") in uppers          # the macvlan child's MAC
