"""Kernel sampling with classic BPF on an AF_PACKET socket, read from a memory-mapped ring.

The filter draws the kernel's per-packet random number (the SKF_AD_RANDOM ancillary load),
keeps one packet in N and truncates it to headerBytes, so only samples cross into user
space; no libpcap is needed.  The socket uses a TPACKET_V3 ring: the kernel fills blocks
and hands a block over when it is full or 100 ms old, so the agent wakes up once per block
rather than once per sample.  Each ring slot tells the packet's direction (sll_pkttype) and
original length; the header bytes are the only copy made per sample.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import socket
import struct
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from . import Tap
from .flow import FlowSampleBuilder
from .ports import ETHERNET_LINK_TYPES, PortMap, sample_packet

log = logging.getLogger("hsflowd.samplers")

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
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
_PACKET = struct.Struct("<IIIIIIHHIHH")  # tpacket3_hdr up to the vlan tpid
_SLL_HATYPE = 48 + 8                  # sockaddr_ll follows the 48-byte tpacket3_hdr
_SLL_PKTTYPE = 48 + 10
_HATYPE = struct.Struct("<H")
_STATS = struct.Struct("III")         # tpacket_stats_v3: packets, drops, freeze count
_VLAN = struct.Struct(">HH")


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
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


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
            if promisc:
                mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.ifname = ifname
        self.block_size = block_size
        self.block_count = nblocks
        self.next_block = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def packets(self) -> Iterator[Tuple[bytes, int, int, int, int]]:
        """Every packet in the blocks the kernel has handed over:
        (captured bytes, original length, sll_pkttype, sll_hatype, timestamp in ns)."""
        ring = self.ring
        size = self.block_size
        unpack_block = _BLOCK.unpack_from
        unpack_packet = _PACKET.unpack_from
        unpack_hatype = _HATYPE.unpack_from
        for _ in range(self.block_count):
            base = self.next_block * size
            status, count, offset = unpack_block(ring, base + 8)
            if not status & TP_STATUS_USER:
                return
            off = base + offset
            for _ in range(count):
                (nxt, sec, nsec, snaplen, length, pstatus, mac, _net,
                 _hash, tci, tpid) = unpack_packet(ring, off)
                data = ring[off + mac: off + mac + snaplen]
                if pstatus & TP_STATUS_VLAN_VALID and len(data) >= 12:
                    # the kernel took the 802.1Q tag out of the frame: put it back
                    tpid = tpid if pstatus & TP_STATUS_VLAN_TPID_VALID else 0x8100
                    data = data[:12] + _VLAN.pack(tpid, tci) + data[12:]
                    length += 4
                yield (data, length, ring[off + _SLL_PKTTYPE], unpack_hatype(ring, off + _SLL_HATYPE)[0],
                       sec * 1_000_000_000 + nsec)
                off += nxt
            struct.pack_into("<I", ring, base + 8, TP_STATUS_KERNEL)
            self.next_block = (self.next_block + 1) % self.block_count

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

class _Tapped:
    __slots__ = ("tap", "ring", "builder")

    def __init__(self, tap, ring, builder):
        self.tap, self.ring, self.builder = tap, ring, builder


class ClassicBpfSampler:
    """``pcap {}``: one ring per sampled interface, flow samples through the port models."""

    def __init__(self, emit: Callable[[bytes], None], interfaces: Callable[[], Iterator],
                 ports: Optional[PortMap] = None):
        self.emit = emit
        self.interfaces = interfaces      # the current interface table, for the MAC tables
        self.ports = ports or PortMap()
        self.tapped: Dict[int, _Tapped] = {}
        self.by_fd: Dict[int, _Tapped] = {}
        self.failed: Dict[int, str] = {}  # ifindex -> why it could not be opened (logged once)

    def update(self, taps: Dict[int, Tap]) -> None:
        for ifindex in [i for i, t in self.tapped.items() if taps.get(i) != t.tap]:
            self._close(ifindex)
        for ifindex, tap in taps.items():
            if ifindex in self.tapped or tap.sampling_rate <= 0:
                continue
            self._open(tap)
        for ifindex in [i for i in self.failed if i not in taps]:
            del self.failed[ifindex]
        self.ports.interfaces_changed(self.interfaces(), (t.tap for t in self.tapped.values()))

    def _open(self, tap: Tap) -> None:
        try:
            ring = PacketRing(tap.name, tap.ifindex, tap.sampling_rate, tap.header_bytes, tap.promisc)
        except OSError as e:
            why = e.strerror or str(e)
            if self.failed.get(tap.ifindex) != why:
                log.warning("pcap: cannot sample %s: %s; will try again", tap.name, why)
            self.failed[tap.ifindex] = why
            return
        self.failed.pop(tap.ifindex, None)
        builder = FlowSampleBuilder(tap.ifindex, tap.sampling_rate, tap.header_bytes, self.emit)
        t = self.tapped[tap.ifindex] = _Tapped(tap, ring, builder)
        self.by_fd[ring.fileno()] = t
        log.info("pcap: sampling %s 1-in-%d, %d header bytes%s", tap.name, tap.sampling_rate,
                 tap.header_bytes, ", promiscuous" if tap.promisc else "")

    def _close(self, ifindex: int) -> None:
        t = self.tapped.pop(ifindex, None)
        if t is not None:
            try:
                self._drain(t)  # the samples the kernel has already handed over still count
            except OSError:
                pass
            self.by_fd.pop(t.ring.fileno(), None)
            t.ring.close()
            log.info("pcap: stopped sampling %s", t.tap.name)

    def fds(self) -> List[int]:
        return list(self.by_fd)

    def read(self, fd: int) -> int:
        t = self.by_fd.get(fd)
        if t is None:
            return 0
        try:
            return self._drain(t)
        except OSError as e:  # this interface only: the others go on
            log.warning("pcap: %s failed (%s); re-opening it", t.tap.name, e.strerror or e)
            self._close(t.tap.ifindex)
            return 0

    def _drain(self, t: _Tapped) -> int:
        tap, builder, ports, interfaces = t.tap, t.builder, self.ports, self.interfaces
        n = 0
        for data, length, pkttype, hatype, ts in t.ring.packets():
            n += sample_packet(builder, ports, tap, interfaces, data, length, pkttype, ts,
                               hatype in ETHERNET_LINK_TYPES)
        return n

    def tick(self, stats: Dict) -> None:
        for ifindex, t in list(self.tapped.items()):
            s = stats.get(ifindex)
            if s is not None:
                t.builder.set_pool(s.rx_packets + s.tx_packets)
            try:
                _, drops = t.ring.statistics()
            except OSError:
                continue
            t.builder.drops += drops
        if self.tapped:
            self.ports.tick(self.interfaces())

    def close(self) -> None:
        for ifindex in list(self.tapped):
            self._close(ifindex)
        self.ports.close()
