"""Kernel sampling with eBPF on the tc hooks, through bcc (``epcap {}``).

One C program (``ebpf_prog.c``), compiled once, has two entry points attached with a clsact
qdisc to the two hooks of every tapped interface, so the hook tells the direction.  Per
packet it looks up the interface's N and headerBytes (map ``config``), counts the packet
(per-CPU map ``counts``: no atomics) and, if ``bpf_get_prandom_u32() % N == 0``, sends a
32-byte record (time, ifindex, hook, pkt_type, length, VLAN tag) and the packet's first
headerBytes.  It returns TC_ACT_UNSPEC, not TC_ACT_OK: the packet goes on unchanged and a
filter at a later priority still runs (with direct-action, OK would end classification).

Perf buffer, not ring buffer: ``perf_submit_skb`` copies the packet (paged data too) from
the skb into a record of exactly the captured size, on any kernel bcc runs on; a ring buffer
(5.8+) needs ``bpf_skb_load_bytes`` into a fixed-size slot.  The agent opens the per-CPU
perf events and reads their rings' memory itself (``perfring``: no callback per record);
their fds go to the agent's select loop and ``read(fd)`` drains that CPU's ring: no thread.
A ring wakes the agent when a quarter full (waking on each record slowed a 1-in-1 sender
from 200 to 55 kpps and cost 6-15 us a sample); ``tick()`` drains the rest before the
agent's once-a-second flush, so no sample waits longer than datagrams already do.

sample_pool follows the program's packet count since the tap was attached (ingress + egress,
all CPUs), read at each tick: exactly the population the draw ran over (``set_pool`` with
``from_start``: the first count is already the pool's target, not a baseline).  Interface counters agree on a veth, not in general: a NIC
counts wire packets before GRO and after TSO where tc sees merged skbs.  drops: records the
program could not write to a full buffer, per interface (bcc's lost callback has no
interface; its total is ``lost``).

bcc is not on PyPI: ``load_bcc`` imports it or else loads Debian's python3-bpfcc from its
directory alone (pure Python over libbcc.so).  Compiling needs kernel headers.  Any failure
is one ``EbpfUnavailable`` line with bcc's output folded in, so the agent can fall back to
``pcap``.  libbcc brings LLVM: about 120 MB resident.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import logging
import mmap
import os
import socket
import struct
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..sflow import INTERNAL
from ..netlink import discard_stray_replies

from . import NO_WATCHER, Tap, Watcher
from .cbpf import PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC, SOL_PACKET
from .flow import FlowSampleBuilder
from .perfring import PerfRing, open_rings
from .ports import (ETHERNET_LINK_TYPES, PACKET_OTHERHOST, PACKET_OUTGOING, RAW_IP_STRIPPED,
                    PortMap, ethernet_packet, raw_ip_packet)
from .taps import Tapped, TapSampler

log = logging.getLogger("hsflowd.samplers")

BCC_DIST = "/usr/lib/python3/dist-packages/bcc"   # Debian's python3-bpfcc
TC_PRIORITY = 32         # our filters' priority on both hooks: ahead of tc's automatic ones
TC_NAME = "hsflowd_epcap"
INGRESS, EGRESS = 0xFFFFFFF2, 0xFFFFFFF3   # clsact's two parents
MAX_TAPS = 4096

PROGRAM_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ebpf_prog.c")

_META = struct.Struct("=QIIIHHBBB5x")  # native order: the kernel wrote it
_VLAN = struct.Struct(">HH")
_NONE: frozenset = frozenset()


def perf_pages(cpus: int, page_size: int = mmap.PAGESIZE) -> int:
    """Pages in each CPU's perf buffer (a power of two): 4 MiB, about 20,000 samples of 128
    bytes (the same as a pcap ring at 1-in-1: 100 ms of 200,000 samples a second), on
    machines of one or two CPUs; less per CPU on bigger ones, where the same packets are
    spread over more rings: 8 MiB in all (64 KiB at least)."""
    per_cpu = max(64 << 10, min(4 << 20, (8 << 20) // max(cpus, 1)))
    pages = max(1, per_cpu // page_size)
    return 1 << (pages.bit_length() - 1)


class EbpfUnavailable(Exception):
    """bcc cannot be imported, or the program cannot be compiled or loaded: one line, why."""


def load_bcc():
    """The bcc module: importable as is, or Debian's package loaded from its own directory."""
    try:
        import bcc
        if not hasattr(bcc, "BPF"):
            raise EbpfUnavailable(f"the bcc module at {bcc.__file__} is not BCC")
        return bcc
    except ImportError:
        pass
    except OSError as e:  # the package is there, libbcc.so is not
        raise EbpfUnavailable(f"bcc cannot load libbcc: {e}") from None
    init = os.path.join(BCC_DIST, "__init__.py")
    if not os.path.exists(init):
        raise EbpfUnavailable("bcc is not installed (Debian: apt-get install python3-bpfcc)")
    spec = importlib.util.spec_from_file_location("bcc", init, submodule_search_locations=[BCC_DIST])
    module = importlib.util.module_from_spec(spec)
    sys.modules["bcc"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # an incompatible or broken package, libbcc.so missing
        for name in [n for n in sys.modules if n == "bcc" or n.startswith("bcc.")]:
            del sys.modules[name]
        raise EbpfUnavailable(f"cannot import bcc from {BCC_DIST}: {e}") from None
    return module


@contextmanager
def _output_captured():
    """Send file descriptors 1 and 2 (libbcc, clang and modprobe write to both) to a file."""
    with tempfile.TemporaryFile(mode="w+", errors="replace") as f:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = {}
        for fd in (1, 2):
            try:
                saved[fd] = os.dup(fd)
            except OSError:  # closed: it will be again
                saved[fd] = None
        out: List[str] = []
        try:
            for fd in saved:
                os.dup2(f.fileno(), fd)
            yield out
        finally:
            for fd, old in saved.items():
                if old is None:
                    os.close(fd)
                else:
                    os.dup2(old, fd)
                    os.close(old)
            f.seek(0)
            out.append(f.read())


def _why(text: str, exc: Exception) -> str:
    """bcc's many lines of complaint as the one line a person needs."""
    release = os.uname().release
    if "Unable to find kernel headers" in text:
        return (f"no kernel headers for {release} (install linux-headers and link "
                f"/lib/modules/{release}/build to them)")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for i, line in enumerate(lines):
        if line.startswith("processed ") and i:  # the verifier's verdict comes just before
            return f"{first} (verifier: {lines[i - 1]})"
        if "error:" in line:
            return line
    return first


def _captured(what: str, call):
    """call() with bcc's output captured: a failure becomes one EbpfUnavailable line."""
    with _output_captured() as out:
        try:
            result, error = call(), None
        except Exception as e:
            result, error = None, e
    if error is not None:
        raise EbpfUnavailable(f"cannot {what} the eBPF program: {_why(out[0], error)}")
    if out[0].strip():
        log.debug("bcc: %s", out[0].strip())
    return result


def compile_program(bcc, program: Optional[str] = None):
    """Compile and load the program once: (BPF object, ingress function, egress function)."""
    BPF = bcc.BPF
    if program is None:
        try:
            with open(PROGRAM_PATH) as f:
                program = f.read()
        except OSError as e:
            raise EbpfUnavailable(f"cannot read {PROGRAM_PATH}: {e.strerror}") from None
    bpf = _captured("compile", lambda: BPF(text=program.encode(), cflags=["-w", f"-DMAX_TAPS={MAX_TAPS}"]))
    try:
        fns = _captured("load", lambda: tuple(bpf.load_func(f, BPF.SCHED_CLS)
                                              for f in (b"tc_ingress", b"tc_egress")))
    except EbpfUnavailable:
        bpf.cleanup()
        raise
    bpf.free_bcc_memory()
    return (bpf,) + fns


# ---------------------------------------------------------------- tc: clsact and our filters

def tc_attach(ipr, ifindex: int, fn_ingress, fn_egress) -> bool:
    """Our filters on both hooks; True if we added the clsact qdisc (so we remove it later).

    Filters of ours left by an agent that died are replaced, not added to."""
    had = any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex))
    if not had:
        try:
            ipr.tc("add", "clsact", ifindex)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise
            raise RuntimeError("its ingress qdisc leaves no room for clsact") from None
    else:
        tc_detach(ipr, ifindex, False)
    try:
        for parent, fn, way in ((INGRESS, fn_ingress, "in"), (EGRESS, fn_egress, "out")):
            ipr.tc("add-filter", "bpf", ifindex, 1, parent=parent, prio=TC_PRIORITY,
                   fd=fn.fd, name=f"{TC_NAME}_{way}", direct_action=True)
    except Exception:
        tc_detach(ipr, ifindex, not had)
        raise
    return not had


def tc_detach(ipr, ifindex: int, remove_qdisc: bool) -> None:
    """Remove our filters; the qdisc too if we added it and no one else's filter is on it."""
    try:
        others = 0
        for parent in (INGRESS, EGRESS):
            for msg in ipr.get_filters(index=ifindex, parent=parent):
                opts = msg.get_attr("TCA_OPTIONS")
                if opts and (opts.get_attr("TCA_BPF_NAME") or "").startswith(TC_NAME):
                    ipr.tc("del-filter", "bpf", ifindex, msg["handle"], parent=parent,
                           prio=msg["info"] >> 16)
                elif msg["handle"]:  # handle 0 is a priority's own entry, not a filter
                    others += 1
        if remove_qdisc and not others:
            ipr.tc("del", "clsact", ifindex)
    except NetlinkError as e:
        if e.code not in (errno.ENODEV, errno.ENOENT, errno.EINVAL):  # the device went away
            raise


def _promisc_socket(ifindex: int) -> socket.socket:
    """Promiscuous mode that the kernel undoes when this socket closes, even if we crash.
    Protocol 0: the socket itself receives nothing."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                    struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b""))
    return sock


# ---------------------------------------------------------------- the epcap {} sampler

class _Handle:
    """What an eBPF tap holds besides its builder."""

    __slots__ = ("own_qdisc", "promisc")

    def __init__(self, own_qdisc: bool, promisc: Optional[socket.socket]):
        self.own_qdisc = own_qdisc        # we added the clsact qdisc
        self.promisc = promisc            # held open for promiscuous mode


class EbpfSampler(TapSampler):
    """``epcap {}``: one eBPF program on every tapped interface, samples from perf buffers."""

    label = "epcap"
    wants_counts = False

    def __init__(self, emit: Callable[[bytes], None], interfaces: Callable[[], Iterable],
                 ports: Optional[PortMap] = None, watcher: Watcher = NO_WATCHER,
                 writer: Callable[[], Optional[object]] = lambda: None):
        super().__init__(emit, interfaces, ports, watcher, writer=writer)
        bcc = load_bcc()
        self.bpf, self.fn_ingress, self.fn_egress = compile_program(bcc)
        self.rings: List[PerfRing] = []
        try:
            self.config, self.counts = self.bpf[b"config"], self.bpf[b"counts"]
            cpus = bcc.utils.get_online_cpus()
            self.rings = open_rings(cpus, perf_pages(len(cpus)))
            samples = self.bpf[b"samples"]
            for ring in self.rings:
                samples[ctypes.c_int(ring.cpu)] = ctypes.c_int(ring.fd)
        except Exception as e:
            for ring in self.rings:
                ring.close()
            self.bpf.cleanup()
            raise EbpfUnavailable(f"cannot open the perf buffers: {e}") from None
        self.readers = {ring.fd: ring for ring in self.rings}
        self.emitted = 0
        self._damaged_said = 0
        self.ipr = IPRoute()
        self.clock_offset = time.time_ns() - time.monotonic_ns()
        self._watches = [watcher.watch(fd, lambda fd=fd: self.read(fd)) for fd in self.readers]

    @property
    def lost(self) -> int:
        """Records the perf buffers could not take (their rings were full)."""
        return sum(ring.lost for ring in self.rings)

    # ------------------------------------------------------------ taps
    def _open(self, tap: Tap) -> Tapped:
        key = self.config.Key(tap.ifindex)
        promisc = None
        try:
            link = self.ipr.get_links(tap.ifindex)[0]
            discard_stray_replies(self.ipr)
            promisc = _promisc_socket(tap.ifindex) if tap.promisc else None
            self.counts[key] = self.counts.Leaf()         # zero on every CPU
            self.config[key] = self.config.Leaf(tap.sampling_rate, tap.header_bytes)
            own = tc_attach(self.ipr, tap.ifindex, self.fn_ingress, self.fn_egress)
        except BaseException:
            self._forget(tap.ifindex)
            if promisc is not None:
                promisc.close()
            raise
        builder = FlowSampleBuilder(tap.ifindex, tap.sampling_rate, tap.header_bytes, self.emit,
                                    writer=self.writer)
        return Tapped(tap, builder, _Handle(own, promisc), link["ifi_type"] in ETHERNET_LINK_TYPES)

    def _retune(self, t: Tapped, tap: Tap) -> bool:
        """A new rate or header size: samples drawn at the old rate are framed with it first.
        Promiscuous mode on or off: the socket that holds it is opened or closed, as pcap's
        ring is retuned (the filters, sequence numbers and pool stay)."""
        if (tap.name, tap.bridge) != (t.tap.name, t.tap.bridge):
            return False
        if tap.promisc != t.tap.promisc:
            try:
                promisc = _promisc_socket(tap.ifindex) if tap.promisc else None
            except OSError:
                return False      # opened again instead: a failure there is said and retried
            old, t.handle.promisc = t.handle.promisc, promisc
            if old is not None:
                old.close()
        self._drain(self.readers.values())
        self._set_pool(t)
        self.config[self.config.Key(tap.ifindex)] = self.config.Leaf(tap.sampling_rate, tap.header_bytes)
        t.builder.sampling_rate, t.builder.header_bytes = tap.sampling_rate, tap.header_bytes
        return True

    def _forget(self, ifindex: int) -> None:
        for table in (self.config, self.counts):
            try:
                del table[table.Key(ifindex)]
            except KeyError:
                pass

    def _close(self, t: Tapped) -> None:
        try:
            tc_detach(self.ipr, t.tap.ifindex, t.handle.own_qdisc)
        except Exception as e:
            log.warning("epcap: cannot remove the tc filters from %s: %s", t.tap.name, e)
        self._forget(t.tap.ifindex)
        if t.handle.promisc is not None:
            t.handle.promisc.close()

    # ------------------------------------------------------------ samples
    def fds(self) -> List[int]:
        return list(self.readers)

    def read(self, fd: int) -> int:
        return self._drain([self.readers[fd]] if fd in self.readers else [])

    def _drain(self, rings: Iterable[PerfRing]) -> int:
        """Frame every record in these CPUs' rings: the hot path.  The host model (the
        common case) is worked out in line, as cbpf's drain does, and each tap's packets
        are framed by its builder in one call."""
        tapped, offset = self.tapped, self.clock_offset
        unpack_meta = _META.unpack_from
        ports, interfaces = self.ports, self.interfaces
        local, uppers_of = ports.local_macs, ports.uppers
        batches: Dict[int, list] = {}
        n = 0
        for ring in rings:
            for buf, off in ring.records():
                ts, ifindex, length, caplen, tci, vproto, egress, pkttype, vlan = unpack_meta(buf, off)
                t = tapped.get(ifindex)
                if t is None:
                    continue      # drawn just before the tap was removed
                start = off + _META.size
                header = buf[start:start + caplen]
                if vlan and len(header) >= 12:
                    # tc sees the tag the NIC or veth took out of the frame: put it back
                    header = header[:12] + _VLAN.pack(socket.ntohs(vproto) or 0x8100, tci) + header[12:]
                    length += 4
                ts += offset
                if egress:
                    pkttype = PACKET_OUTGOING
                if not t.ethernet:
                    raw = raw_ip_packet(ifindex, header, length, pkttype, ts)
                    if raw is not None:
                        t.builder.frame((raw[0],), raw[1], RAW_IP_STRIPPED)
                        n += 1
                    continue
                if len(header) < 14:
                    continue                # a runt: no addresses to describe it by
                batch = batches.get(ifindex)
                if batch is None:
                    batch = batches[ifindex] = []
                if t.tap.bridge:
                    batch.append(ethernet_packet(ports, t.tap, interfaces, header, length, pkttype, ts))
                # the host model (ports.host_ports), in line
                elif egress:
                    batch.append((header, length, INTERNAL, ifindex, ts, 0))
                elif (pkttype != PACKET_OTHERHOST or header[0:6] in local
                      or header[0:6] in uppers_of.get(ifindex, _NONE)):
                    batch.append((header, length, ifindex, INTERNAL, ts, 0))
                else:
                    batch.append((header, length, ifindex, 0, ts, 0))
        for ifindex, batch in batches.items():
            if batch:
                tapped[ifindex].builder.frame(batch)
                n += len(batch)
        self.emitted += n
        return n

    # ------------------------------------------------------------ once a second
    def counters(self, ifindex: int) -> Tuple[int, int]:
        """(packets, drops) the program counted on this interface since tapped, all CPUs."""
        try:
            per_cpu = self.counts[self.counts.Key(ifindex)]
        except KeyError:
            return 0, 0
        return sum(c.packets for c in per_cpu), sum(c.drops for c in per_cpu)

    def _set_pool(self, t: Tapped) -> None:
        packets, t.builder.drops = self.counters(t.tap.ifindex)
        t.builder.set_pool(packets, from_start=True)

    def _tick(self, counts: Dict) -> None:
        """Pools from the program's counts (``counts`` are not needed: see the module's doc)."""
        self._drain(self.readers.values())  # samples short of a wakeup go out with this second
        damaged = sum(ring.damaged for ring in self.rings)
        if damaged > self._damaged_said:
            log.warning("epcap: a perf buffer held something that is no record (%d times); "
                        "what it held was dropped and counted as lost", damaged)
            self._damaged_said = damaged
        self.clock_offset = time.time_ns() - time.monotonic_ns()
        for t in list(self.tapped.values()):
            self._set_pool(t)

    def close(self) -> None:
        super().close()
        for token in self._watches:
            self.watcher.unwatch(token)
        self._watches = []
        if self.ipr is not None:
            self.ipr.close()
            self.ipr = None
        self.readers = {}
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
        for ring in self.rings:
            ring.close()
        self.rings = []
