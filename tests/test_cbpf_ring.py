"""The pcap {} ring read by hand: a TPACKET_V3 block laid out as the kernel lays it out
(linux/if_packet.h), framed by the sampler's drain into flow samples, checked field by
field.  What the kernel does with real traffic is test_sampling_e2e's; this is the layout:
the slot header's fields, the direction, a VLAN tag put back with its own TPID."""

from __future__ import annotations

import mmap
import struct

from hsflowd.samplers import Tap
from hsflowd.samplers.cbpf import (TP_STATUS_USER, TP_STATUS_VLAN_TPID_VALID,
                                   TP_STATUS_VLAN_VALID, ClassicBpfSampler, PacketRing)
from hsflowd.samplers.flow import FlowSampleBuilder
from hsflowd.samplers.taps import Tapped
from hsflowd.sflow import INTERNAL, SAMPLES

BLOCK = 4096
HOST, OUTGOING, OTHERHOST = 0, 4, 3
MAC_HERE, MAC_THERE = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def slot(data: bytes, length: int, pkttype: int, status: int = 0, tci: int = 0, tpid: int = 0,
         sec: int = 1_700_000_000, nsec: int = 5) -> bytes:
    """tpacket3_hdr (48 bytes), sockaddr_ll, then the frame at tp_mac = 80."""
    mac = 80
    size = (mac + len(data) + 15) & ~15
    hdr = struct.pack("<IIIIIIHHIIHH", size, sec, nsec, len(data), length,
                      TP_STATUS_USER | status, mac, mac + 14, 0, tci, tpid, 0) + bytes(8)
    sll = struct.pack("<HHiHBB8s", 17, 0x0300, 3, 1, pkttype, 6, MAC_THERE)
    out = hdr + sll
    return out + bytes(mac - len(out)) + data + bytes(size - mac - len(data))


def ring_of(slots) -> PacketRing:
    body = b"".join(slots)
    mem = mmap.mmap(-1, 2 * BLOCK)        # what the kernel maps: slices of it are bytes
    struct.pack_into("<IIIII", mem, 0, 3, 0, TP_STATUS_USER, len(slots), 48)
    mem[48:48 + len(body)] = body
    ring = PacketRing.__new__(PacketRing)
    ring.ring, ring.block_size, ring.block_count, ring.next_block = mem, BLOCK, 2, 0
    ring.ethernet = True
    return ring


def frame(dst: bytes, src: bytes, size: int = 60) -> bytes:
    return dst + src + b"\x08\x00" + bytes(size - 14)


def test_a_block_framed_with_direction_lengths_times_and_vlan_tags():
    out = []
    sampler = ClassicBpfSampler(out.append, lambda: [])
    sampler.ports.local_macs = {MAC_HERE}
    tap = Tap(3, "eth0", 10, 128)
    ring = ring_of([
        slot(frame(MAC_HERE, MAC_THERE), 60, HOST),
        slot(frame(MAC_THERE, MAC_HERE), 1500, OUTGOING, nsec=7),
        slot(frame(MAC_THERE, MAC_THERE), 60, OTHERHOST),
        # the kernel took an 802.1ad tag out of this one: it goes back with its TPID
        slot(frame(MAC_HERE, MAC_THERE), 60, HOST, TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID,
             tci=0x2005, tpid=0x88A8),
        # an older kernel that says nothing of the TPID: 802.1Q
        slot(frame(MAC_HERE, MAC_THERE), 60, HOST, TP_STATUS_VLAN_VALID, tci=7),
    ])
    t = Tapped(tap, FlowSampleBuilder(3, 10, 128, out.append), ring)
    assert sampler._drain(t) == 5
    samples = [SAMPLES.decode_one(struct.unpack_from(">I", s)[0], s, 8, len(s)) for s in out]
    ports = [(s.input, s.output) for s in samples]
    assert ports == [(3, INTERNAL), (INTERNAL, 3), (3, 0), (3, INTERNAL), (3, INTERNAL)]
    headers = [s.flow_records[0] for s in samples]
    assert [h.frame_length for h in headers] == [64, 1504, 64, 68, 68]
    assert [h.stripped for h in headers] == [4] * 5
    assert headers[3].header[12:16] == bytes.fromhex("88a82005")
    assert headers[3].header[16:18] == b"\x08\x00"
    assert headers[4].header[12:16] == bytes.fromhex("81000007")
    assert [s.flow_records[1].nanoseconds for s in samples[:2]] == \
        [1_700_000_000 * 10**9 + 5, 1_700_000_000 * 10**9 + 7]
    assert [s.sequence_number for s in samples] == [1, 2, 3, 4, 5]
    assert [s.sample_pool for s in samples] == [10, 20, 30, 40, 50]
    # the block went back to the kernel, and nothing more is there
    assert struct.unpack_from("<I", ring.ring, 8)[0] == 0
    assert sampler._drain(t) == 0
