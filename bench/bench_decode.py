#!/usr/bin/env python3
"""``hsflowd decode`` throughput: datagrams per second, with sampled-header decoding on and off.

    python3 bench/bench_decode.py              # a few seconds per figure
    python3 bench/bench_decode.py --seconds 1  # quicker

The datagrams are the real captures in tests/vectors (hsflowd 2.1.25 and Open vSwitch 3.1.0,
36 datagrams, 155 sampled headers), decoded over and over.  Figures:

1. decode only: decode_datagram, nothing shown (headers off);
2. JSON with headers: what ``hsflowd decode -j`` does per datagram (decode, to_dict, every
   sampled header dissected, json.dumps);
3. -l and -g: sflowtool's lines, which dissect every header;
4. headers alone: sampled headers dissected per second, dpkt (what the decoder uses) and, if
   installed, scapy for comparison (the reason for choosing dpkt).

Runs on one core and prints figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from hsflowd.decode.packet import add_decoded, decode_header  # noqa: E402
from hsflowd.decode.sflowtool import Received, datagram_lines  # noqa: E402
from hsflowd.sflow import SampledHeader, decode_datagram, to_dict  # noqa: E402
from hsflowd.decode.capture import read_udp  # noqa: E402
from pinning import pin_one_core  # noqa: E402

VECTORS = os.path.join(os.path.dirname(HERE), "tests", "vectors")


def payloads():
    out = []
    for name in ("hsflowd-2.1.25.pcap", "ovs-3.1.0.pcap"):
        with open(os.path.join(VECTORS, name), "rb") as f:
            out += [p.payload for p in read_udp(f)]
    return out


def rate(fn, items, seconds):
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for item in items:
            fn(item)
        done += len(items)
    return done / (time.perf_counter() - start)


def as_json(data):
    dg = decode_datagram(data)
    plain = to_dict(dg)
    add_decoded(plain, dg)
    json.dumps(plain)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    pin_one_core()
    data = payloads()
    headers = [r for d in data for s in decode_datagram(d).samples
               for r in getattr(s, "flow_records", []) if isinstance(r, SampledHeader)]
    print(f"{len(data)} datagrams, {len(headers)} sampled headers (tests/vectors)")
    received = Received(pcap_ns=1_700_000_000_000_000_000)
    print(f"decode only (headers off):  {rate(decode_datagram, data, args.seconds):>10,.0f} datagrams/s")
    print(f"JSON with headers (-j):     {rate(as_json, data, args.seconds):>10,.0f} datagrams/s")
    print(f"sflowtool -l:               "
          f"{rate(lambda d: datagram_lines(d, 'l', received), data, args.seconds):>10,.0f} datagrams/s")
    print(f"sflowtool -g:               "
          f"{rate(lambda d: datagram_lines(d, 'g', received), data, args.seconds):>10,.0f} datagrams/s")
    print(f"headers, dpkt:              "
          f"{rate(lambda r: decode_header(r.header_protocol, r.frame_length, r.stripped, r.header), headers, args.seconds):>10,.0f} headers/s")
    try:
        logging.getLogger("scapy").setLevel(logging.ERROR)
        from scapy.layers.l2 import Ether
    except ImportError:
        print("headers, scapy:             (scapy not installed)")
        return

    def scapy_fields(r):
        pkt = Ether(r.header)
        ip = pkt.payload
        return getattr(ip, "src", None), getattr(ip.payload, "sport", None)
    print(f"headers, scapy (compared):  {rate(scapy_fields, headers, args.seconds):>10,.0f} headers/s")


if __name__ == "__main__":
    main()
