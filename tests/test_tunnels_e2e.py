"""Tunnel structures end to end: a VXLAN tunnel between two test namespaces, the agent as a
real process (it gives up root) sampling the VXLAN device, a bridge with the VXLAN device
as a port, or the underlay veth, and known UDP traffic through the tunnel both ways.

What arrives is decoded by ``hsflowd decode --json`` (the agent's own decoder) and every
sample is checked: the outer addresses, protocol and port of 1023-1026, the VNI of
1029/1030, inner_header_offset of 1027/1028, the direction each is given, and that the
sample counts are still within 4 standard deviations with the hook on.
"""

from __future__ import annotations

import time

import pytest

from test_sampling_e2e import INTERNAL, MARK, AgentRun, check_count, check_headers, our_samples, send

pytestmark = pytest.mark.netns

N = 10
PACKETS = 20000
VNI = 4242
UNDERLAY = {4: ("10.232.0.1", "10.232.0.2", "/24"), 6: ("fd00:232::1", "fd00:232::2", "/64")}
OVERLAY = ("192.168.42.1", "192.168.42.2")
MACS = ("02:42:00:00:00:01", "02:42:00:00:00:02")


def tunnel(host, peer, family: int = 4, fdb: bool = False, bridge: bool = False) -> None:
    """under0 (host) -- under1 (peer), and a VXLAN device vx0 on each with VNI 4242.

    Fixed remote: ``remote`` and ``local`` set.  ``fdb``: neither; the forwarding database
    says where the other end's MAC is, and static neighbours spare the overlay ARP.
    ``bridge``: the host's vx0 is a port of br0, which has the host's overlay address."""
    for ns, name, me in ((host, "under0", 0), (peer, "under1", 1)):
        local, remote, plen = UNDERLAY[family][me], UNDERLAY[family][1 - me], UNDERLAY[family][2]
        if ns is host:
            ns.run(f"ip link add under0 type veth peer name under1 netns {peer.name}")
        ns.run(f"ip addr add {local}{plen} dev {name}" + (" nodad" if family == 6 else ""))
        ns.run(f"ip link set {name} up")
        cmd = f"ip link add vx0 address {MACS[me]} type vxlan id {VNI} dstport 4789 dev {name}"
        if fdb:
            cmd += " nolearning"
        else:
            cmd += f" local {local} remote {remote}"
        ns.run(cmd)
        if fdb:
            ns.run(f"bridge fdb add {MACS[1 - me]} dev vx0 dst {remote}")
        overlay = OVERLAY[me]
        if bridge and ns is host:
            ns.run("ip link add br0 address 02:42:00:00:00:10 type bridge forward_delay 0")
            ns.run("ip link set vx0 master br0")
            ns.run(f"ip addr add {overlay}/24 dev br0")
            ns.run("ip link set br0 up")
        else:
            ns.run(f"ip addr add {overlay}/24 dev vx0")
        ns.run("ip link set vx0 up")
        if fdb:
            ns.run(f"ip neigh add {OVERLAY[1 - me]} lladdr {MACS[1 - me]} dev vx0 nud permanent")


def records(sample) -> dict:
    return {r["struct"]: r for r in sample["flow_records"]}


def run_traffic(host, peer, tmp_path, dev: str, extra: str = ""):
    run_ = AgentRun(host, tmp_path, f"  pcap {{ dev = {dev} sampling = {N} }}\n{extra}")
    try:
        send(peer, OVERLAY[0], PACKETS)         # into the host through the tunnel
        send(host, OVERLAY[1], PACKETS)         # out of the host through the tunnel
        time.sleep(2.5)
    finally:
        assert run_.stop() == 0
    log = run_.logfile.read_text()
    assert "VXLAN forwarding database" not in log and "Traceback" not in log, log[-3000:]
    return run_


def check_tunnel(samples, family: int, received: bool, local: str, remote: str) -> None:
    """Every sample of one direction carries the outer header and VNI of that direction."""
    version = "ipv4" if family == 4 else "ipv6"
    name = f"extended_{version}_tunnel_" + ("ingress" if received else "egress")
    vni = "extended_vni_" + ("ingress" if received else "egress")
    for sample, header, _pkt in samples:
        recs = records(sample)
        assert set(recs) >= {name, vni}, recs
        assert not set(recs) & {"extended_decapsulate_egress", "extended_decapsulate_ingress",
                                name.replace("ingress", "X").replace("egress", "ingress").replace("X", "egress")}
        t = recs[name]
        src, dst = (remote, local) if received else (local, remote)
        assert (t["src_ip"], t["dst_ip"], t["protocol"], t["src_port"], t["dst_port"], t["tcp_flags"]) \
            == (src, dst, 17, 0, 4789, 0)
        # the outer IP packet: the inner frame (frame_length less the FCS) in IP, UDP, VXLAN
        assert t["length"] == header["frame_length"] - 4 + (36 if family == 4 else 56)
        assert recs[vni]["vni"] == VNI


@pytest.mark.parametrize("family,fdb,bridge", [(4, False, False), (6, False, False), (4, True, False),
                                               (4, False, True)],
                         ids=["ipv4", "ipv6", "ipv4-fdb", "ipv4-bridge"])
def test_tunnel_records_on_the_vxlan_device(netns, tmp_path, family, fdb, bridge):
    host, peer = netns(), netns()
    tunnel(host, peer, family, fdb, bridge)
    dev = "br0" if bridge else "vx0"
    run_ = run_traffic(host, peer, tmp_path, dev)
    sampled = host.ifindex(dev)
    vx0 = host.ifindex("vx0")
    samples = run_.flow_samples()
    assert samples and {s["source_id_index"] for s in samples} == {sampled}
    pairs = our_samples(samples)
    into = [p for p in pairs if p[2]["IP"].dst == OVERLAY[0]]
    out = [p for p in pairs if p[2]["IP"].dst == OVERLAY[1]]
    check_count(len(into), PACKETS, N)
    check_count(len(out), PACKETS, N)
    check_headers(into, OVERLAY[1], OVERLAY[0])
    check_headers(out, OVERLAY[0], OVERLAY[1])
    # the device (or the bridge's VXLAN port) is the input on the way in, the output on the way out
    assert {(s["input"], s["output"]) for s, _, _ in into} == {(vx0, INTERNAL)}
    assert {(s["input"], s["output"]) for s, _, _ in out} == {(INTERNAL, vx0)}
    local, remote = UNDERLAY[family][:2]
    check_tunnel(into, family, True, local, remote)
    check_tunnel(out, family, False, local, remote)
    # every sample through the tunnel (ARP, ICMP errors too) says its VNI
    for s in samples:
        recs = records(s)
        if vx0 in (s["input"], s["output"]):
            vni = recs.get("extended_vni_ingress") or recs.get("extended_vni_egress")
            assert vni and vni["vni"] == VNI, recs


def our_encapsulated(samples, family: int):
    """(sample, records, inner frame) of the test's packets as the underlay carried them."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    out = []
    for s in samples:
        header = next(r for r in s["flow_records"] if r["struct"] == "sampled_header")
        raw = bytes.fromhex(header["header"])
        off = 14 + (20 if family == 4 else 40) + 8 + 8
        inner = Ether(raw[off:])
        if MARK in raw and IP in inner and UDP in inner and inner[UDP].dport == 9999:
            out.append((s, records(s), inner))
    return out


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_decapsulation_records_on_the_underlay(netns, tmp_path, family):
    host, peer = netns(), netns()
    tunnel(host, peer, family)
    run_ = run_traffic(host, peer, tmp_path, "under0", "  headerBytes = 256")
    under0 = host.ifindex("under0")
    samples = run_.flow_samples()
    assert samples and {s["source_id_index"] for s in samples} == {under0}
    pairs = our_encapsulated(samples, family)
    into = [p for p in pairs if p[2]["IP"].dst == OVERLAY[0]]
    out = [p for p in pairs if p[2]["IP"].dst == OVERLAY[1]]
    check_count(len(into), PACKETS, N)
    check_count(len(out), PACKETS, N)
    offset = 14 + (20 if family == 4 else 40) + 8 + 8
    for sample, recs, _inner in into:     # received: decapsulated next, the VNI came with it
        assert (sample["input"], sample["output"]) == (under0, INTERNAL)
        assert recs["extended_decapsulate_egress"]["inner_header_offset"] == offset
        assert recs["extended_vni_ingress"]["vni"] == VNI
        assert "extended_decapsulate_ingress" not in recs and "extended_vni_egress" not in recs
    for sample, recs, _inner in out:      # sent: encapsulated here, the VNI goes with it
        assert (sample["input"], sample["output"]) == (INTERNAL, under0)
        assert recs["extended_decapsulate_ingress"]["inner_header_offset"] == offset
        assert recs["extended_vni_egress"]["vni"] == VNI
        assert "extended_decapsulate_egress" not in recs and "extended_vni_ingress" not in recs
    # every VXLAN packet (ICMP errors through the tunnel too) gets the records, and nothing
    # else does (ARP or neighbour discovery on the underlay)
    l3 = 14
    l4 = l3 + (20 if family == 4 else 40)
    for s in samples:
        recs = records(s)
        raw = bytes.fromhex(recs["sampled_header"]["header"])
        is_vxlan = (raw[12:14] == (b"\x08\x00" if family == 4 else b"\x86\xdd")
                    and raw[l3 + (9 if family == 4 else 6)] == 17 and raw[l4 + 2:l4 + 4] == b"\x12\xb5")
        decap = recs.get("extended_decapsulate_egress") or recs.get("extended_decapsulate_ingress")
        assert bool(decap) == is_vxlan, (recs, raw.hex())
        if decap:
            assert decap["inner_header_offset"] == offset
            assert int.from_bytes(raw[offset - 4:offset - 1], "big") == VNI
