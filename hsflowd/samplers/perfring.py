"""Per-CPU perf buffers that an eBPF program writes samples into, read from their memory.

An eBPF program's ``perf_submit_skb`` (bpf_perf_event_output) writes into the ring of a
perf event of the CPU it runs on: a PERF_COUNT_SW_BPF_OUTPUT event, opened here for each
CPU and put in the program's perf event array.  bcc's own reader calls back into Python
once per record (a ctypes callback, microseconds each); here the agent reads the rings'
memory itself, in a loop, as it reads its AF_PACKET rings (``cbpf``), and the kernel wakes
it only when a ring is a quarter full (a byte watermark): the tick empties every ring each
second, so no sample waits longer than the datagrams do.

The ring (perf_event_open(2), "MMAP layout"): a metadata page, whose data_head the kernel
advances and whose data_tail the reader advances, then 2^n data pages of records, each an
8-byte perf_event_header (type, misc, size) and its body.  A record may wrap around the
end of the ring: it is then read in two pieces.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import struct
from typing import Iterator, List, Tuple

PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 8
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
ATTR_WATERMARK = 1 << 14             # bit 14 of perf_event_attr's flags word
# perf_event_open(2) has no libc wrapper: its system call number, by machine
PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "riscv64": 241, "ppc64le": 319,
                   "ppc64": 319, "s390x": 331, "armv7l": 364, "i686": 336, "i386": 336}

# perf_event_attr up to wakeup_watermark and bp_type (PERF_ATTR_SIZE_VER0 is 64 bytes):
# type, size, config, sample_period, sample_type, read_format, flags, wakeup, bp_type, and
# config1/config2 left zero
_ATTR = struct.Struct("=IIQQQQQIIQQ")
_HEAD = struct.Struct("=Q")            # data_head, data_tail: u64 at 1024 and 1032
_DATA_HEAD, _DATA_TAIL = 1024, 1032
_RECORD = struct.Struct("=IHH")        # perf_event_header
_RAW_SIZE = struct.Struct("=I")
_LOST = struct.Struct("=QQ")           # id, lost (after the header)


class PerfUnavailable(OSError):
    pass


def _libc():
    from ..libc import libc
    return libc()


def open_bpf_output(cpu: int, watermark: int) -> int:
    """A BPF output perf event on ``cpu`` (its fd), waking a reader once ``watermark``
    bytes wait in its ring."""
    number = PERF_EVENT_OPEN.get(platform.machine())
    if number is None:
        raise PerfUnavailable(0, f"perf_event_open's number is not known on {platform.machine()}")
    attr = ctypes.create_string_buffer(_ATTR.pack(
        PERF_TYPE_SOFTWARE, _ATTR.size, PERF_COUNT_SW_BPF_OUTPUT, 1, PERF_SAMPLE_RAW, 0,
        ATTR_WATERMARK, watermark, 0, 0, 0), _ATTR.size)
    libc = _libc()
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    fd = syscall(ctypes.c_long(number), attr, ctypes.c_int(-1), ctypes.c_int(cpu),
                 ctypes.c_int(-1), ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise PerfUnavailable(err, f"perf_event_open on CPU {cpu}: {os.strerror(err)}")
    return fd


class PerfRing:
    """One CPU's ring, mapped: ``records()`` walks what the kernel has written."""

    def __init__(self, cpu: int, pages: int, watermark_fraction: int = 4):
        size = pages * mmap.PAGESIZE
        self.cpu = cpu
        self.fd = open_bpf_output(cpu, size // watermark_fraction)
        try:
            self.mm = mmap.mmap(self.fd, (pages + 1) * mmap.PAGESIZE, mmap.MAP_SHARED,
                                mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(self.fd)
            raise
        self.start = mmap.PAGESIZE     # data_offset on kernels that have it: the same
        self.size = size
        self.lost = 0                  # records the kernel could not write (ring full)
        self.damaged = 0               # times the ring held what no record looks like

    def records(self) -> Iterator[Tuple[bytes, int]]:
        """(buffer, offset of the raw sample's bytes) of each sample written since the last
        call, oldest first; the ring's space is given back when the walk ends.  The buffer
        is the ring itself, or, for a record that wraps around its end, a copy of it."""
        mm, start, size = self.mm, self.start, self.size
        head = _HEAD.unpack_from(mm, _DATA_HEAD)[0]
        tail = _HEAD.unpack_from(mm, _DATA_TAIL)[0]
        unpack_record = _RECORD.unpack_from
        try:
            while tail < head:
                pos = tail % size
                kind, _misc, length = unpack_record(mm, start + pos)
                if length < 8 or length & 7:
                    # not a record the kernel writes: whatever is left cannot be walked;
                    # give it all back (counted as lost) rather than stop here for ever
                    self.lost += 1
                    self.damaged += 1
                    tail = head
                    break
                if pos + length <= size:
                    buf, off = mm, start + pos
                else:
                    buf, off = mm[start + pos:start + size] + mm[start:start + pos + length - size], 0
                if kind == PERF_RECORD_SAMPLE:
                    yield buf, off + 12       # header, then the u32 size of the raw data
                elif kind == PERF_RECORD_LOST:
                    self.lost += _LOST.unpack_from(buf, off + 8)[1]
                tail += length
        finally:
            _HEAD.pack_into(mm, _DATA_TAIL, tail)

    def close(self) -> None:
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass
        os.close(self.fd)


def open_rings(cpus: List[int], pages: int) -> List[PerfRing]:
    rings: List[PerfRing] = []
    try:
        for cpu in cpus:
            rings.append(PerfRing(cpu, pages))
    except OSError:
        for ring in rings:
            ring.close()
        raise
    return rings
