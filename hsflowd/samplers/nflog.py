"""``nflog {}``: packets an iptables rule (``-m statistic ... -j NFLOG``) sends to user space.

The kernel does the 1-in-R selection; this module binds the NFLOG group on a netfilter
netlink socket (pyroute2 has no NFLOG support), sub-samples 1-in-k more when the wanted rate
S is sparser than the rule's (k = ceil(S/R), reported rate k*R, as mod_nflog), and turns each
kept packet into one flow sample.  Messages come in batches (the kernel queues up to
QTHRESH of them or TIMEOUT), several per recv; NFULA_SEQ numbers them, so a gap is a drop.

Choices, where hsflowd leaves room:

- data source 0:ifIndex is the interface the input (else the output) field names: the
  device where the rule saw the packet.  No interface's counters match an iptables rule, so
  the sample pool grows by the reported rate per sample, as in hsflowd.
- frame_length is the packet's real length: the IP header's length field when the copy was
  cut short (NFLOG gives no original length), else what was copied.
- with ``iptables=on`` the agent's rules go in INPUT and OUTPUT only (IPv4 and IPv6), as
  upstream's example: the host's own traffic (see ``iptables``).  A router operator can add
  a FORWARD rule with the same group; its packets are sampled the same way.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import random
import socket
import struct
import time
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Union

from ..sflow import INTERNAL, HeaderProtocol
from . import NO_WATCHER, Watcher
from .ports import ETHERNET_LINK_TYPES, RAW_IP_STRIPPED
from .flow import FCS, FlowSampleBuilder
from .iptables import RuleManager, RuleSpec

log = logging.getLogger("hsflowd.samplers")

# linux/netlink.h, linux/netfilter/nfnetlink.h, linux/netfilter/nfnetlink_log.h
NETLINK_NETFILTER = 12
NLM_F_REQUEST = 0x01
NLM_F_ACK = 0x04
NLMSG_ERROR = 0x2
NLA_TYPE_MASK = 0x3FFF       # strips NLA_F_NESTED and NLA_F_NET_BYTEORDER
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 0x02
NFULNL_CFG_F_SEQ = 0x0001
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_NLBUFSIZ, NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH, \
    NFULA_CFG_FLAGS = 1, 2, 3, 4, 5, 6
(NFULA_PACKET_HDR, NFULA_MARK, NFULA_TIMESTAMP, NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV,
 NFULA_IFINDEX_PHYSINDEV, NFULA_IFINDEX_PHYSOUTDEV, NFULA_HWADDR, NFULA_PAYLOAD, NFULA_PREFIX,
 NFULA_UID, NFULA_SEQ, NFULA_SEQ_GLOBAL, NFULA_GID, NFULA_HWTYPE, NFULA_HWHEADER,
 NFULA_HWLEN) = range(1, 18)
SO_RCVBUFFORCE = 33

PACKET_MSG = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
CONFIG_MSG = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
RCVBUF_BYTES = 8 << 20       # as hsflowd: room for bursts while the agent is busy
NLBUFSIZ = 65536             # one batch: ~150 messages of 128 header bytes (kernel max 128 KiB)
QTHRESH = 100                # messages per batch (a rule's --nflog-threshold may lower it)
TIMEOUT = 10                 # 1/100 s: a part-filled batch waits at most 100 ms
RECV_BYTES = 1 << 18         # bigger than any batch the kernel builds
MAX_RECVS_PER_READ = 64      # then let the agent loop run; the socket stays readable
ACK_TIMEOUT = 2.0
MAX_RATE = 0xFFFFFFFF        # sampling_rate is 32 bits

_NLMSGHDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")   # attribute headers are host order, values network order
_NFGENMSG = struct.Struct(">BBH")
_ERRNO = struct.Struct("=i")
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_TIMESTAMP = struct.Struct(">QQ")
_MODE = struct.Struct(">IBB")
_IFINDEX_FIELD = {NFULA_IFINDEX_INDEV: 0, NFULA_IFINDEX_OUTDEV: 1,
                  NFULA_IFINDEX_PHYSINDEV: 2, NFULA_IFINDEX_PHYSOUTDEV: 3}


# ---------------------------------------------------------------- parsing (pure functions)

class NflogPacket(NamedTuple):
    """One logged packet.  ifindexes are 0 when absent; seq is None without NFULA_SEQ."""

    family: int
    indev: int
    outdev: int
    physindev: int
    physoutdev: int
    hwtype: int
    hwheader: Optional[bytes]   # the link header (NFULA_HWHEADER), present on input only
    payload: bytes              # the packet from the IP header on, cut to the copy range
    timestamp_ns: int           # arrival time, 0 when the kernel gives none (OUTPUT)
    seq: Optional[int]


class NetlinkError(NamedTuple):
    """An NLMSG_ERROR: the kernel's answer to a request; errno 0 is an ACK."""

    seq: int
    errno: int


def parse_packet(buf, off: int, end: int, family: int = 0) -> NflogPacket:
    """The attributes of one NFULNL_MSG_PACKET, from just after its nfgenmsg to ``end``.
    A malformed attribute ends the walk; what was read before it is kept."""
    ifs = [0, 0, 0, 0]
    hwtype = ts = 0
    hwheader = None
    payload = b""
    seq = None
    nla, be32, ifindex_field = _NLA.unpack_from, _BE32.unpack_from, _IFINDEX_FIELD  # hot loop
    while off + 4 <= end:
        nla_len, nla_type = nla(buf, off)
        if nla_len < 4 or off + nla_len > end:
            break
        v, size = off + 4, nla_len - 4
        kind = nla_type & NLA_TYPE_MASK
        if kind == NFULA_PAYLOAD:
            payload = buf[v:v + size]
        elif kind in ifindex_field:
            if size >= 4:
                ifs[ifindex_field[kind]] = be32(buf, v)[0]
        elif kind == NFULA_SEQ:
            if size >= 4:
                seq = be32(buf, v)[0]
        elif kind == NFULA_HWHEADER:
            hwheader = buf[v:v + size]
        elif kind == NFULA_HWTYPE:
            if size >= 2:
                hwtype = _BE16.unpack_from(buf, v)[0]
        elif kind == NFULA_TIMESTAMP:
            if size >= 16:
                sec, usec = _TIMESTAMP.unpack_from(buf, v)
                ts = sec * 1_000_000_000 + usec * 1000
        off += (nla_len + 3) & ~3
    return NflogPacket(family, ifs[0], ifs[1], ifs[2], ifs[3], hwtype, hwheader, payload, ts, seq)


def parse_batch(buf, end: Optional[int] = None) -> Iterator[Union[NflogPacket, NetlinkError]]:
    """Every message in what one recv returned.  A truncated message ends the batch."""
    end = len(buf) if end is None else min(end, len(buf))
    off = 0
    while off + 16 <= end:
        length, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(buf, off)
        if length < 16 or off + length > end:
            return
        if mtype == PACKET_MSG and length >= 20:
            yield parse_packet(buf, off + 20, off + length, buf[off + 16])
        elif mtype == NLMSG_ERROR and length >= 20:
            yield NetlinkError(seq, -_ERRNO.unpack_from(buf, off + 16)[0])
        off += (length + 3) & ~3


def ip_length(payload) -> int:
    """The packet's length from its IP header (IPv4 total length, IPv6 payload length + 40);
    0 when it does not say (too short, jumbograms, TSO super-packets with length 0)."""
    if len(payload) >= 20 and payload[0] >> 4 == 4:
        return _BE16.unpack_from(payload, 2)[0]
    if len(payload) >= 40 and payload[0] >> 4 == 6:
        n = _BE16.unpack_from(payload, 4)[0]
        return n + 40 if n else 0
    return 0


def nflog_rates(probability: Optional[float], sampling: int):
    """(R, k): the rule samples 1-in-R, we keep 1-in-k of those; the reported rate is k*R.
    Without a probability the rule is taken to sample 1-in-``sampling``."""
    sampling = max(1, sampling)
    rule_rate = int(min(1 / probability, MAX_RATE)) if probability and probability > 0 else sampling
    rule_rate = max(1, rule_rate)
    return rule_rate, max(1, math.ceil(sampling / rule_rate))


# ---------------------------------------------------------------- the netlink socket

def _nla(kind: int, value: bytes) -> bytes:
    n = 4 + len(value)
    return _NLA.pack(n, kind) + value + b"\0" * (-n & 3)


def config_message(group: int, seq: int, copy_range: int) -> bytes:
    """NFULNL_MSG_CONFIG: bind ``group`` and set copy mode, batching and sequence numbers in
    one request (the kernel applies the other attributes after the bind)."""
    attrs = b"".join((
        _nla(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])),
        _nla(NFULA_CFG_MODE, _MODE.pack(copy_range, NFULNL_COPY_PACKET, 0)),
        _nla(NFULA_CFG_FLAGS, _BE16.pack(NFULNL_CFG_F_SEQ)),
        _nla(NFULA_CFG_NLBUFSIZ, _BE32.pack(NLBUFSIZ)),
        _nla(NFULA_CFG_QTHRESH, _BE32.pack(QTHRESH)),
        _nla(NFULA_CFG_TIMEOUT, _BE32.pack(TIMEOUT))))
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, group) + attrs
    return _NLMSGHDR.pack(16 + len(body), CONFIG_MSG, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


class NflogSocket:
    """A netlink socket bound to one NFLOG group, non-blocking once configured.

    Only NFULNL_CFG_CMD_BIND is sent, no PF_UNBIND/PF_BIND: the NFLOG target finds its
    logger by type, and unbinding would change the family's default logger (nf_log sysctl)
    for everyone.  Packets that arrive before the ACK are kept in ``pending``."""

    def __init__(self, group: int, copy_range: int):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.pending: List[bytes] = []
        try:
            try:  # root may go past net.core.rmem_max
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
            sock.bind((0, 0))
            sock.settimeout(ACK_TIMEOUT)
            sock.send(config_message(group, 1, copy_range))
            while True:
                data = sock.recv(RECV_BYTES)
                answer = [m for m in parse_batch(data) if isinstance(m, NetlinkError) and m.seq == 1]
                if answer:
                    if answer[0].errno:
                        raise OSError(answer[0].errno, os.strerror(answer[0].errno))
                    break
                self.pending.append(data)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.group = group

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_into(self, buf) -> int:
        return self.sock.recv_into(buf)

    def close(self) -> None:
        self.sock.close()  # the kernel destroys the instance with the socket


# ---------------------------------------------------------------- the nflog {} sampler

_ETHERNET, _IPV4, _IPV6 = (int(HeaderProtocol.ETHERNET_ISO8023), int(HeaderProtocol.IPV4),
                           int(HeaderProtocol.IPV6))
_CLOCK_SKEW_NS = 60 * 1_000_000_000  # a kernel timestamp further off than this is not wall time


class NflogSampler:
    """``nflog {}``: one NFLOG group, sub-sampled to the wanted rate, a builder per device.

    ``listen=False`` opens no socket: tests feed ``handle`` with hand-built messages."""

    tapped: dict = {}  # no interface of its own: an iptables rule decides what is sampled

    def __init__(self, config, sampling: int, header_bytes: int, emit: Callable[[bytes], None],
                 sub_sample_rng: Optional[random.Random] = None, listen: bool = True,
                 rules: Optional[RuleManager] = None, watcher: Watcher = NO_WATCHER,
                 writer: Callable[[], Optional[object]] = lambda: None):
        self.emit = emit
        self.writer = writer          # the open datagram (samplers.flow's fast lane)
        self.rng = sub_sample_rng or random.Random()
        self.listen = listen
        self.watcher = watcher
        self.rules = rules or RuleManager(watcher)
        self.sock: Optional[NflogSocket] = None
        self._watch = None
        self.builders: Dict[int, FlowSampleBuilder] = {}
        self.messages = 0     # NFLOG messages received
        self.drops = 0        # NFLOG messages lost: gaps in NFULA_SEQ
        self.overruns = 0     # ENOBUFS: the kernel found the socket buffer full
        self.config = None
        self._next_seq: Optional[int] = None
        self._copy_range = 0
        self._failed: Optional[str] = None
        self._now = 0
        self._buf = bytearray(RECV_BYTES)
        self.update(config, sampling, header_bytes)

    def forget(self, present: Callable[[int], bool]) -> None:
        """Drop the builders (sequence numbers, pools) of interfaces that are gone: a host
        where containers come and go would otherwise keep one for every veth it ever saw."""
        for ds in [ds for ds in self.builders if ds and not present(ds)]:
            del self.builders[ds]

    def update(self, config, sampling: int, header_bytes: int) -> None:
        """Apply a (re)loaded config: rates at once, a new socket if the group or copy range
        changed, our iptables rules replaced if their settings changed."""
        old, self.config = self.config, config
        self.rule_rate, self.k = nflog_rates(config.probability, sampling)
        self.sampling_rate = rate = self.rule_rate * self.k
        self.header_bytes = header_bytes
        self._countdown = self._draw()
        for builder in self.builders.values():
            builder.sampling_rate = rate      # the samples that follow advance the pool by it
            builder.header_bytes = header_bytes
        if old is None or old.group != config.group or header_bytes != self._copy_range:
            self._close_socket()
            self._open()
        if config.manage_rule or self.rules.installed is not None or self.rules.busy:
            probability = config.probability or 1.0 / max(1, sampling)
            self.rules.apply(RuleSpec(config.group, probability, config.dev)
                             if config.manage_rule else None)
        log.info("nflog: group %d, the rule samples 1-in-%d, keeping 1-in-%d: sampling rate %d",
                 config.group, self.rule_rate, self.k, rate)

    def _draw(self) -> int:
        """hsflowd's random skip: uniform in 1..2k-1, so 1 in k on average."""
        return self.rng.randint(1, 2 * self.k - 1) if self.k > 1 else 1

    def _open(self) -> None:
        if not self.listen:
            return
        group = self.config.group
        try:
            self.sock = NflogSocket(group, self.header_bytes)
        except OSError as e:
            why = e.strerror or str(e)
            if e.errno == errno.EBUSY:
                why = "another process (ulogd?) has bound it"
            if self._failed != why:
                log.warning("nflog: cannot bind NFLOG group %d: %s; will try again", group, why)
            self._failed = why
            return
        self._failed = None
        self._next_seq = None  # a new kernel instance numbers from 0
        self._copy_range = self.header_bytes
        sock = self.sock
        self._watch = self.watcher.watch(sock.fileno(), lambda: self.read(sock.fileno()))
        log.info("nflog: bound NFLOG group %d, copying %d bytes per packet", group, self.header_bytes)
        for chunk in self.sock.pending:
            self.handle(chunk)
        self.sock.pending.clear()

    def _close_socket(self) -> None:
        self.watcher.unwatch(self._watch)
        self._watch = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def fds(self) -> List[int]:
        return [self.sock.fileno()] if self.sock is not None else []

    def read(self, fd: int) -> int:
        """Drain the socket (a bounded number of recvs, then back to the agent loop)."""
        sock, buf, n = self.sock, self._buf, 0
        if sock is None or fd != sock.fileno():
            return 0
        for _ in range(MAX_RECVS_PER_READ):
            try:
                size = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    log.warning("nflog: reading group %d failed (%s); binding it again",
                                self.config.group, e.strerror or e)
                    self._close_socket()
                    break
                self._overrun()
                continue
            n += self.handle(buf, size)
        return n

    def _overrun(self) -> None:
        """The exact loss shows as the NFULA_SEQ gap at the next message; without sequence
        numbers (never seen so far), count the overrun itself."""
        if not self.overruns:
            log.warning("nflog: the kernel dropped NFLOG messages (socket buffer full): "
                        "lower the rule's probability")
        self.overruns += 1
        if self._next_seq is None and self.messages:
            self.drops += 1

    def handle(self, buf, size: Optional[int] = None) -> int:
        """Every message of one recv; returns the number of flow samples emitted."""
        self._now = time.time_ns()
        n = 0
        for m in parse_batch(buf, size):
            if m.__class__ is NflogPacket:
                n += self._take(m)
            elif m.errno:
                log.warning("nflog: the kernel refused a request: %s", os.strerror(m.errno))
        return n

    def _take(self, p: NflogPacket) -> int:
        self.messages += 1
        if p.seq is not None:
            expected = self._next_seq
            if expected is not None and p.seq != expected:
                gap = (p.seq - expected) & 0xFFFFFFFF
                if gap < 0x80000000:  # not a late or repeated message
                    self.drops += gap
            self._next_seq = (p.seq + 1) & 0xFFFFFFFF
        if self.k > 1:
            self._countdown -= 1
            if self._countdown > 0:
                return 0
            self._countdown = self._draw()
        payload = p.payload
        if not payload:
            return 0
        in_if = p.physindev or p.indev or INTERNAL
        out_if = p.physoutdev or p.outdev or INTERNAL
        ds = in_if if in_if != INTERNAL else (out_if if out_if != INTERNAL else 0)
        builder = self.builders.get(ds)
        if builder is None:
            builder = self.builders[ds] = FlowSampleBuilder(ds, self.sampling_rate, self.header_bytes,
                                                            self.emit, writer=self.writer)
        builder.drops = self.drops
        length = ip_length(payload)
        if length < len(payload):  # not cut short, or the header does not say
            length = len(payload)
        ts = p.timestamp_ns
        if ts and abs(ts - self._now) > _CLOCK_SKEW_NS:
            ts = 0
        hw = p.hwheader
        if hw is not None and len(hw) == 14 and p.hwtype in ETHERNET_LINK_TYPES:
            builder.sample(hw + payload, 14 + length, in_if, out_if, ts, 0, _ETHERNET, FCS)
            return 1
        version = payload[0] >> 4
        if version != 4 and version != 6:
            return 0
        builder.sample(payload, length, in_if, out_if, ts, 0, _IPV4 if version == 4 else _IPV6,
                       RAW_IP_STRIPPED)
        return 1

    def tick(self, stats: Dict) -> None:
        """Once a second: bind again if that failed.  The pools need no interface counters."""
        if self.sock is None and self.listen:
            self._open()
        self.rules.tick()

    def status(self) -> List[dict]:
        """One entry per data source (the ifindex the rule saw packets on; 0 if none)."""
        return [{"ifindex": ds, "sampling_rate": b.sampling_rate, "samples": b.sequence_number,
                 "drops": b.drops} for ds, b in self.builders.items()]

    def close(self) -> None:
        self.rules.close()
        self._close_socket()
