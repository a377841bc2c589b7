"""Kernel sampling with classic BPF on an AF_PACKET socket, read from a memory-mapped ring.

The filter draws the kernel's per-packet random number (the SKF_AD_RANDOM ancillary load),
keeps one packet in N and truncates it to headerBytes, so only samples cross into user
space; no libpcap is needed.  The socket uses a TPACKET_V3 ring: the kernel fills blocks
and hands a block over when it is full or 100 ms old, so the agent wakes up once per block
rather than once per sample.  Each ring slot tells the packet's direction (sll_pkttype) and
original length; the captured bytes are copied once out of the ring and once into the
datagram they are sent in.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import socket
import struct
from typing import Dict, Iterator, List, Tuple

from ..frames import FCS
from ..sflow import INTERNAL
from . import Tap
from .flow import FlowSampleBuilder
from .ports import (ETHERNET_LINK_TYPES, PACKET_OTHERHOST, PACKET_OUTGOING, RAW_IP_STRIPPED,
                    ethernet_packet, raw_ip_packet)
from .taps import Tapped, TapSampler

log = logging.getLogger("hsflowd.samplers")

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
PACKET_MR_PROMISC = 1
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6

BLOCK_SIZE = 1 << 18         # 256 KiB: about 1,300 samples of 128 bytes


def block_count(rate: int) -> int:
    """Ring size by how many samples can come at once: 4 MiB (about 100 ms of 200,000
    samples/s) below 1-in-100, else 1 MiB; libpcap, under hsflowd, takes 2 MiB either way."""
    return 16 if rate < 100 else 4

BLOCK_TIMEOUT_MS = 100       # a part-filled block is handed over after this long
FRAME_SIZE = 1 << 11

_BLOCK = struct.Struct("<III")        # block_status, num_pkts, offset_to_first_pkt (at +8)
# tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status, tp_mac;
# then, at 32, tp_vlan_tci (a __u32) and tp_vlan_tpid, read only when a tag was taken out
_PACKET = struct.Struct("<IIIIIIH")
_VLAN_TAG = struct.Struct("<IH")
_VLAN_TAG_AT = 32
_SLL_PKTTYPE = 48 + 10               # sockaddr_ll follows the 48-byte tpacket3_hdr
_STATS = struct.Struct("III")         # tpacket_stats_v3: packets, drops, freeze count
_VLAN = struct.Struct(">HH")
_RELEASE = struct.Struct("<I")
_NONE: frozenset = frozenset()


def random_sampling_program(rate: int, snaplen: int) -> bytes:
    """The classic BPF program: keep a packet when (random % rate) == 0, cut to snaplen.

    rate 1 keeps every packet (only the cut).  Instructions are (code, jt, jf, k).
    """
    if rate <= 1:
        insns = [(0x06, 0, 0, snaplen)]                   # ret #snaplen
    else:
        insns = [(0x20, 0, 0, 0xFFFFF038),                # ld  rand (SKF_AD_OFF + SKF_AD_RANDOM)
                 (0x94, 0, 0, rate),                      # mod #rate
                 (0x15, 0, 1, 0),                         # jeq #0, keep, drop
                 (0x06, 0, 0, snaplen),                   # keep: ret #snaplen
                 (0x06, 0, 0, 0)]                         # drop: ret #0
    return b"".join(struct.pack("HBBI", *i) for i in insns)


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    """Attach (or atomically replace) the socket's filter."""
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _promisc(sock: socket.socket, ifindex: int, on: bool) -> None:
    """Promiscuous mode held by this socket: the kernel undoes it when the socket closes."""
    mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP if on else PACKET_DROP_MEMBERSHIP, mreq)


class PacketRing:
    """An AF_PACKET socket on one interface with the sampling filter and a TPACKET_V3 ring."""

    def __init__(self, ifname: str, ifindex: int, rate: int, snaplen: int, promisc: bool = False,
                 block_size: int = BLOCK_SIZE, blocks: int = 0):
        nblocks = blocks or block_count(rate)
        # protocol 0 at creation: nothing is queued before the filter is in place
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            _attach_filter(sock, random_sampling_program(rate, snaplen))
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            req = struct.pack("IIIIIII", block_size, nblocks, FRAME_SIZE,
                              block_size * nblocks // FRAME_SIZE, BLOCK_TIMEOUT_MS, 0, 0)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.ring = mmap.mmap(sock.fileno(), block_size * nblocks, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
            sock.bind((ifname, ETH_P_ALL))
            # the device's link type (sll_hatype): Ethernet frames, or bare IP (tun)
            self.ethernet = sock.getsockname()[3] in ETHERNET_LINK_TYPES
            if promisc:
                _promisc(sock, ifindex, True)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.ifname = ifname
        self.ifindex = ifindex
        self.promisc = promisc
        self.block_size = block_size
        self.block_count = nblocks
        self.next_block = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def blocks(self) -> Iterator[Tuple[int, int]]:
        """(offset of the first packet, packet count) of each block the kernel has handed
        over, in order; a block goes back to the kernel when the next one is asked for.
        Each packet is a tpacket3_hdr (``_PACKET``), its sockaddr_ll, then the data at
        tp_mac; tp_next_offset leads to the next."""
        ring = self.ring
        size = self.block_size
        for _ in range(self.block_count):
            base = self.next_block * size
            status, count, offset = _BLOCK.unpack_from(ring, base + 8)
            if not status & TP_STATUS_USER:
                return
            yield base + offset, count
            _RELEASE.pack_into(ring, base + 8, TP_STATUS_KERNEL)
            self.next_block = (self.next_block + 1) % self.block_count

    def retune(self, rate: int, snaplen: int, promisc: bool) -> None:
        """A new rate or header size (the filter is replaced in one step: no packet passes
        unfiltered) and promiscuous mode on or off, without closing the ring."""
        _attach_filter(self.sock, random_sampling_program(rate, snaplen))
        if promisc != self.promisc:
            _promisc(self.sock, self.ifindex, promisc)
            self.promisc = promisc

    def pending_error(self) -> int:
        """Read (and so clear) the socket's pending error.  The kernel sets ENETDOWN when
        the interface goes down; until it is read the socket polls as readable, and an
        agent that only reads the ring would wake up for ever."""
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    def statistics(self) -> Tuple[int, int]:
        """(packets, drops) since the last call: the kernel resets them when read."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        packets, drops, _ = _STATS.unpack(raw)
        return packets, drops

    def close(self) -> None:
        try:
            self.ring.close()
        except (BufferError, ValueError):
            pass
        self.sock.close()


# ---------------------------------------------------------------- the pcap {} sampler

class ClassicBpfSampler(TapSampler):
    """``pcap {}``: one ring per sampled interface, flow samples through the port models."""

    label = "pcap"

    def _open(self, tap: Tap) -> Tapped:
        ring = PacketRing(tap.name, tap.ifindex, tap.sampling_rate, tap.header_bytes, tap.promisc)
        builder = FlowSampleBuilder(tap.ifindex, tap.sampling_rate, tap.header_bytes, self.emit,
                                    writer=self.writer)
        t = Tapped(tap, builder, ring)
        t.watch = self.watcher.watch(ring.fileno(), lambda: self._read_tap(t))
        return t

    def _retune(self, t: Tapped, tap: Tap) -> bool:
        if (tap.name, tap.bridge) != (t.tap.name, t.tap.bridge):
            return False
        self._drain(t)  # samples drawn at the old rate are framed with it
        t.handle.retune(tap.sampling_rate, tap.header_bytes, tap.promisc)
        t.builder.sampling_rate, t.builder.header_bytes = tap.sampling_rate, tap.header_bytes
        return True

    def _close(self, t: Tapped) -> None:
        try:
            self._drain(t)  # the samples the kernel has already handed over still count
        except OSError:
            pass
        t.handle.close()

    def fds(self) -> List[int]:
        return [t.handle.fileno() for t in self.tapped.values()]

    def read(self, fd: int) -> int:
        for t in list(self.tapped.values()):
            if t.handle.fileno() == fd:
                return self._read_tap(t)
        return 0

    def _read_tap(self, t: Tapped) -> int:
        try:
            n = self._drain(t)
            if not n and t.handle.pending_error():
                log.debug("pcap: %s reported an error (link down?)", t.tap.name)
            return n
        except OSError as e:  # this interface only: the others go on
            self.restart(t.tap.ifindex, e.strerror or str(e))
            return 0

    def _drain(self, t: Tapped) -> int:
        """Frame every packet the kernel has handed over.  The hot path: one loop over the
        ring slots, the host model (the common case) worked out in line, and each block's
        packets framed by the builder in one call."""
        tap, builder, ring = t.tap, t.builder, t.handle
        mm = ring.ring
        unpack_packet = _PACKET.unpack_from
        ifindex, bridge, ethernet = tap.ifindex, tap.bridge, ring.ethernet
        ports, interfaces = self.ports, self.interfaces
        local = ports.local_macs
        uppers = ports.uppers.get(ifindex, _NONE)
        pkttype_at = _SLL_PKTTYPE
        n = 0
        for off, count in ring.blocks():
            batch = []              # Ethernet frames; a raw-IP device's go in runs of one IP
            add = batch.append      # version (the header protocol a frame call takes)
            protocol = 0
            for _ in range(count):
                nxt, sec, nsec, snaplen, length, pstatus, mac = unpack_packet(mm, off)
                data = mm[off + mac: off + mac + snaplen]
                if pstatus & TP_STATUS_VLAN_VALID and len(data) >= 12:
                    # the kernel took the 802.1Q tag out of the frame: put it back
                    tci, tpid = _VLAN_TAG.unpack_from(mm, off + _VLAN_TAG_AT)
                    tpid = tpid if pstatus & TP_STATUS_VLAN_TPID_VALID else 0x8100
                    data = data[:12] + _VLAN.pack(tpid, tci) + data[12:]
                    length += 4
                pkttype = mm[off + pkttype_at]
                ts = sec * 1_000_000_000 + nsec
                off += nxt
                if not ethernet:
                    raw = raw_ip_packet(ifindex, data, length, pkttype, ts)
                    if raw is None:
                        continue
                    if raw[1] != protocol and batch:
                        builder.frame(batch, protocol, RAW_IP_STRIPPED)
                        n += len(batch)
                        batch.clear()
                    protocol = raw[1]
                    add(raw[0])
                elif len(data) < 14:
                    continue                # a runt: no addresses to describe it by
                elif bridge:
                    add(ethernet_packet(ports, tap, interfaces, data, length, pkttype, ts))
                # the host model (ports.host_ports), in line
                elif pkttype == PACKET_OUTGOING:
                    add((data, length, INTERNAL, ifindex, ts, 0))
                elif pkttype != PACKET_OTHERHOST or data[0:6] in local or data[0:6] in uppers:
                    add((data, length, ifindex, INTERNAL, ts, 0))
                else:
                    add((data, length, ifindex, 0, ts, 0))
            if batch:
                builder.frame(batch, protocol, RAW_IP_STRIPPED if protocol else FCS)
                n += len(batch)
        return n

    def _tick(self, counts: Dict[int, int]) -> None:
        for ifindex, t in list(self.tapped.items()):
            packets = counts.get(ifindex)
            if packets is not None:
                # what the ring holds was drawn from the packets counted now: frame it first
                self._read_tap(t)
                if ifindex not in self.tapped:
                    continue
                t.builder.set_pool(packets)
            try:
                _, drops = t.handle.statistics()
            except OSError:
                continue
            t.builder.drops += drops
