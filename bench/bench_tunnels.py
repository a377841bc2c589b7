#!/usr/bin/env python3
"""The tunnels module's flow hook: what it costs per flow sample.

    python3 bench/bench_tunnels.py              # a few seconds per figure
    python3 bench/bench_tunnels.py --seconds 1  # quicker

Runs on one core and prints figures only; it asserts nothing.  The hook sees every flow
sample of every sampler while pcap {} or epcap {} is on, so the figure that matters most
is the first: a sample that has nothing to do with VXLAN.  No netlink: the module is given
the devices and tables it would have read.

1. a plain sample (TCP over IPv4 on a NIC): two dict lookups and a look at the header.
2. a plain UDP sample (DNS): the header is followed as far as the UDP port.
3. a sample on a VXLAN device: tunnel_egress (1023) and vni_egress (1029) added.
4. a VXLAN packet on the underlay: decapsulate_egress (1027) and vni_ingress (1030) added.
For comparison: building the flow sample itself (samplers/flow.py), per sampled packet.
"""

from __future__ import annotations

import argparse
import logging
import os
import struct
import sys
import time
from ipaddress import ip_interface

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hsflowd.frames import walk_sample  # noqa: E402
from hsflowd.modules.tunnels import TunnelsModule  # noqa: E402
from hsflowd.samplers.flow import FlowSampleBuilder  # noqa: E402
from hsflowd.sources.interfaces import Address, Interface, Vxlan  # noqa: E402
from pinning import pin_one_core  # noqa: E402

INTERNAL = 0x3FFFFFFF
LOCAL, REMOTE = bytes([10, 232, 0, 1]), bytes([10, 232, 0, 2])


def rate(fn, seconds: float) -> float:
    fn(1000)
    done, start, batch = 0, time.perf_counter(), 10000
    while time.perf_counter() - start < seconds:
        fn(batch)
        done += batch
    return done / (time.perf_counter() - start)


def ipv4(proto: int, payload: bytes, src=REMOTE, dst=LOCAL) -> bytes:
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, src, dst) + payload


def ether(payload: bytes) -> bytes:
    return bytes.fromhex("020000000011020000000022") + b"\x08\x00" + payload


class Ctx:
    log = logging.getLogger("bench")

    def add_flow_hook(self, hook):
        pass

    def remove_flow_hooks(self):
        pass


class Neighbour(dict):
    """The all-zeros forwarding entry ``remote`` makes, as pyroute2 gives it."""

    def __init__(self, ifindex):
        super().__init__(ifindex=ifindex)

    def get_attr(self, name):
        return {"NDA_LLADDR": "00:00:00:00:00:00", "NDA_DST": "10.232.0.2"}.get(name)


class NoNetlink:
    def get_neighbours(self, family, ifindex):
        return [Neighbour(ifindex)]

    def route(self, *args, **kw):
        return []

    def close(self):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    print(f"bench_tunnels: {pin_one_core()}, Python {sys.version.split()[0]}")
    module = TunnelsModule(Ctx(), ipr_factory=NoNetlink)
    module.update([
        Interface(3, "eth0", addresses=[Address(ip_interface("10.232.0.1/24"))]),
        Interface(7, "vx0", kind="vxlan", vxlan=Vxlan(4242, "10.232.0.1", "10.232.0.2", 4789)),
    ])
    inner = bytes.fromhex("02bb00000002" "02aa00000001") + b"\x08\x00" + ipv4(17, b"\0" * 8 + b"x" * 64)
    vxlan = ether(ipv4(17, struct.pack(">HHHH", 5555, 4789, 16 + len(inner), 0)
                       + struct.pack(">B3sI", 8, b"\0\0\0", 4242 << 8) + inner))
    cases = [
        ("plain TCP sample", ether(ipv4(6, b"\0" * 20 + b"x" * 80)), 3, INTERNAL, 3),
        ("plain UDP sample (DNS)", ether(ipv4(17, struct.pack(">HHHH", 5353, 53, 88, 0) + b"x" * 80)),
         3, INTERNAL, 3),
        ("VXLAN device, egress", inner, INTERNAL, 7, 7),
        ("underlay VXLAN packet", vxlan[:128], 3, INTERNAL, 3),
    ]
    built = []
    builder = FlowSampleBuilder(3, 100, 128, built.append)
    for name, header, in_if, out_if, ds in cases:
        builder.ds_index = ds
        builder.sample(header, len(header), in_if, out_if, 1)
        sample = built.pop()
        hook = module.hook
        added = len(hook(sample, walk_sample(sample))) - len(sample)

        def run(n, hook=hook, sample=sample):
            for _ in range(n):     # the walk (once per sample, for every hook) and the hook
                hook(sample, walk_sample(sample))
        per_s = rate(run, args.seconds)
        print(f"  {name:28s} {per_s:12,.0f} samples/s  {1e6 / per_s:6.2f} us  (+{added} bytes)")

    def build(n, header=cases[0][1]):
        for _ in range(n):
            builder.sample(header, len(header), 3, INTERNAL, 1)
            built.clear()
    per_s = rate(build, args.seconds)
    print(f"  {'building the sample itself':28s} {per_s:12,.0f} samples/s  {1e6 / per_s:6.2f} us")


if __name__ == "__main__":
    main()
