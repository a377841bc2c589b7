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
import mmap
import socket
import struct
from typing import Callable, Iterator, Optional, Tuple

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

# sll_pkttype
PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2
PACKET_OTHERHOST = 3
PACKET_OUTGOING = 4

BLOCK_SIZE = 1 << 18         # 256 KiB: about 1,300 samples of 128 bytes
BLOCK_COUNT = 4
BLOCK_TIMEOUT_MS = 100       # a part-filled block is handed over after this long
FRAME_SIZE = 1 << 11

_BLOCK = struct.Struct("<III")        # block_status, num_pkts, offset_to_first_pkt (at +8)
_PACKET = struct.Struct("<IIIIIIHHIHH")  # tpacket3_hdr up to the vlan tpid
_SLL_PKTTYPE = 48 + 10                # sockaddr_ll follows the 48-byte tpacket3_hdr
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
                 block_size: int = BLOCK_SIZE, block_count: int = BLOCK_COUNT):
        # protocol 0 at creation: nothing is queued before the filter is in place
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            _attach_filter(sock, random_sampling_program(rate, snaplen))
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            req = struct.pack("IIIIIII", block_size, block_count, FRAME_SIZE,
                              block_size * block_count // FRAME_SIZE, BLOCK_TIMEOUT_MS, 0, 0)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.ring = mmap.mmap(sock.fileno(), block_size * block_count, mmap.MAP_SHARED,
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
        self.block_count = block_count
        self.next_block = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def packets(self) -> Iterator[Tuple[bytes, int, int, int]]:
        """Every packet in the blocks the kernel has handed over:
        (captured bytes, original length, sll_pkttype, timestamp in ns)."""
        ring = self.ring
        size = self.block_size
        unpack_block = _BLOCK.unpack_from
        unpack_packet = _PACKET.unpack_from
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
                yield data, length, ring[off + _SLL_PKTTYPE], sec * 1_000_000_000 + nsec
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
