"""The flow sample every sampler produces: one sampled packet, framed as hsflowd frames it.

A flow sample (expanded, format 3) from data source 0:ifIndex of the sampled device, with
two records: sampled_header (Ethernet, frame_length = wire length + 4 for the FCS,
stripped = 4) and extended_timestamp (1043), as hsflowd 2.1 sends them.  hsflowd puts the
timestamp first; it goes last here because Wireshark 4.0 does not skip an unknown flow
record's body and would misread a sampled_header that follows one (every decoder finds
records by tag, so the order carries no meaning).

This is the hot path.  A sampler hands over its packets a batch at a time (``frame``: one
ring block, say), and each sample (sample tag and length, flow_sample_expanded's fixed
part, the record count, the sampled_header record with the header and its padding, and the
timestamp record) is packed by one precompiled ``struct.Struct`` per header length, the
builder's state held in locals for the batch.  While no flow hook needs to see samples
(``writer()`` gives the open datagram), a sample is packed straight into the datagram it
will be sent in (``sflow.datagram``'s fast lane); otherwise it goes to ``emit`` as bytes.
``tests/test_flow_builder.py`` checks the bytes against the declarative encoder
(``FlowSample(...).encode()``).
"""

from __future__ import annotations

import struct
import time
from typing import Callable, Optional, Sequence, Tuple

from ..config.keywords import MAX_HEADER_BYTES
from ..frames import FCS
from ..sflow import ExtendedTimestamp, FlowSample, HeaderProtocol, SampledHeader


# one sampled packet, as samplers hand them over: (captured bytes, frame length as captured
# without FCS, input, output, timestamp in ns (0: now), output format)
Packet = Tuple[bytes, int, int, int, int, int]
_FLOW_SAMPLE_TAG = FlowSample.tag
_SAMPLED_HEADER_TAG = SampledHeader.tag
_TIMESTAMP_TAG = ExtendedTimestamp.tag


class FlowSampleBuilder:
    """Sequence number, sample pool and drops of one sampler (one data source).

    The sample pool counts the packets that could have been sampled since sampling began on
    this data source.  Each sample advances it by N (the sampling rate); ``set_pool`` hands
    in a measurement once a second (the interface's lifetime rx+tx packets, or the eBPF
    program's count since it was attached), and the difference between that and the pool is
    spread over the samples that follow:

    - the first measurement is the baseline: it stands for the pool the samples reached so
      far (N per sample taken before it), so packets carried before sampling began never
      count, and a later measurement M puts the pool's target at that point + (M - first);
    - a correction is spread over as many samples as came in the last interval, each step
      between 1 and 4N: the pool never goes backwards and never jumps, as collectors that
      weight a sample by delta(pool)/delta(sequence) (pmacct's sfacctd_renormalize) need;
      whatever is left is planned again at the next measurement;
    - a difference larger than both the interval's packets and what its samples could make
      up at 4N cannot be the samples lagging behind the count (the count and the tap
      disagree: GRO), and the excess is dropped;
    - a measurement of 0 says nothing (nflog has no count; a device that carried nothing
      cannot have been sampled), and one that went down (a counter reset) is a new baseline.

    Per sample the cost is one test and one addition (bench/bench_flow_builder.py).
    """

    __slots__ = ("ds_index", "_rate", "header_bytes", "emit", "writer", "sequence_number",
                 "pool", "drops", "protocol", "_fix_step", "_fix_left", "_offset", "_measured",
                 "_target", "_measured_seq")

    def __init__(self, ds_index: int, sampling_rate: int, header_bytes: int,
                 emit: Callable[[bytes], None], protocol: int = HeaderProtocol.ETHERNET_ISO8023,
                 writer: Callable[[], Optional[object]] = lambda: None):
        self.ds_index = ds_index
        self._rate = sampling_rate
        self.header_bytes = min(header_bytes, MAX_HEADER_BYTES)
        self.emit = emit              # a sample as bytes, for the flow hooks
        self.writer = writer          # the open datagram, while no hook needs the samples
        self.protocol = int(protocol)
        self.sequence_number = 0
        self.pool = 0                # the pool of the last sample (unbounded; mod 2^32 on the wire)
        self.drops = 0
        self._fix_step = 0           # the corrected step ...
        self._fix_left = 0           # ... for this many more samples, then N again
        self._offset = 0             # measurement - offset = the pool's target
        self._measured = 0           # the last measurement (0: none yet)
        self._target = 0             # the pool the last measurement stands for
        self._measured_seq = 0       # sequence_number at the last measurement

    @property
    def sampling_rate(self) -> int:
        return self._rate

    @sampling_rate.setter
    def sampling_rate(self, rate: int) -> None:
        """A new N: the samples after it advance the pool by the new N; the correction in
        progress is dropped and planned again, in the new N's bounds, at the next count."""
        self._rate = rate
        self._fix_left = 0

    @property
    def sample_pool(self) -> int:
        """The pool now, mod 2^32: the last measurement's target, or the last sample's pool
        if the samples have gone past it."""
        pool = self.pool if self.pool > self._target else self._target
        return pool & 0xFFFFFFFF

    def set_pool(self, packets: int, from_start: bool = False) -> None:
        """A count of the packets the sampler's population has had (since any fixed point):
        the pool's target follows it, the samples that follow catch up.  ``from_start``
        says the count began when this builder did (an eBPF program's count since it was
        attached): the first one is then no baseline but the pool's target itself."""
        if packets <= 0:
            return
        samples = (self.sequence_number - self._measured_seq) & 0xFFFFFFFF
        self._measured_seq = self.sequence_number
        counted = packets - self._measured
        if not self._measured and from_start:
            self._offset, counted = 0, packets
        elif not self._measured or counted < 0:
            # the baseline: what the samples counted so far (N each), or the target already
            # reached if a reset counter starts again
            self._offset, counted = packets - max(self.pool, self._target), 0
        self._measured = packets
        owed = packets - self._offset - self.pool
        # More than the interval's packets, and more than its samples could make up at 4N,
        # is no lag of the samples behind the count: the count and the tap disagree (a NIC
        # with GRO counts the wire's packets, its tap sees them merged).  The excess is
        # forgiven rather than owed for ever.  An interval without samples judges nothing.
        limit = max(counted, 3 * self._rate * samples)
        if samples and owed > limit:
            self._offset += owed - limit
            owed = limit
        elif samples and owed < -limit:
            self._offset -= -limit - owed
            owed = -limit
        self._target = packets - self._offset
        self._plan(owed, samples)

    def _plan(self, owed: int, samples: int) -> None:
        """Spread ``owed`` packets (negative: the samples ran ahead) over about ``samples``
        samples, each step within 1..4N; what does not fit waits for the next count."""
        rate = self._rate
        per = samples if samples > 0 else 1
        if owed > 0:
            extra = min(3 * rate, -(-owed // per))
            self._fix_step, self._fix_left = rate + extra, owed // extra
        elif owed < 0 and rate > 1:
            cut = min(rate - 1, -(owed // per))
            self._fix_step, self._fix_left = rate - cut, -owed // cut
        else:
            self._fix_left = 0

    def sample(self, header: bytes, frame_length: int, input_if: int, output_if: int,
               timestamp_ns: int = 0, output_format: int = 0, protocol: int = 0,
               stripped: int = FCS) -> None:
        """Frame one sampled packet (see ``frame``)."""
        self.frame(((header, frame_length, input_if, output_if, timestamp_ns, output_format),),
                   protocol, stripped)

    def frame(self, packets: Sequence[Packet], protocol: int = 0, stripped: int = FCS) -> None:
        """Frame sampled packets, in the order taken: into the open datagram, or to ``emit``.

        A packet's header is what was captured (cut to headerBytes); its frame length is
        the packet's length as captured, without FCS.  ``stripped`` counts what is missing
        from the front and back: the FCS, plus the 14-byte Ethernet header when only the IP
        packet was captured (protocol IPv4/IPv6, as hsflowd reports it); it is added to
        frame_length, as sFlow asks.

        The datagram's fast lane: ``buf`` (bytearray), ``used``, ``count``,
        ``datagram_bytes`` and ``header_size`` are read once, samples packed at ``used``, and
        ``used``/``count`` written back at the end (whatever happens); ``flush`` when the
        next sample would reach datagramBytes, ``refuse(size)`` for one that fits no
        datagram."""
        writer = self.writer()
        direct = writer is not None
        if direct:
            buf, used, count, limit = writer.buf, writer.used, writer.count, writer.datagram_bytes
            largest = limit - writer.header_size     # a sample this big fits no datagram
        else:                          # each sample packed alone, for the hooks
            buf, used, count, limit, largest = None, 0, 0, _NO_LIMIT, _NO_LIMIT
        emit, now = self.emit, time.time_ns
        seq, pool, rate = self.sequence_number, self.pool, self._rate
        fix_left, fix_step = self._fix_left, self._fix_step
        ds_index, header_bytes = self.ds_index, self.header_bytes
        drops = self.drops & 0xFFFFFFFF
        protocol = protocol or self.protocol
        layouts = _LAYOUTS
        sample_tag, header_tag, timestamp_tag = _FLOW_SAMPLE_TAG, _SAMPLED_HEADER_TAG, _TIMESTAMP_TAG
        try:
            for header, length, input_if, output_if, timestamp_ns, output_format in packets:
                n = len(header)
                if n > header_bytes:
                    n = header_bytes
                    header = header[:n]
                seq = (seq + 1) & 0xFFFFFFFF
                if fix_left:
                    fix_left -= 1
                    pool += fix_step
                else:
                    pool += rate
                pack_into, pack, size, body, record_len = layouts[n]
                if used + size >= limit:
                    if size >= largest:
                        writer.refuse(size)
                        continue
                    writer.used, writer.count = used, count
                    used = -1            # the writer's own, should the flush raise
                    writer.flush()
                    used, count = writer.used, writer.count
                if direct:
                    pack_into(buf, used, sample_tag, body, seq, 0, ds_index, rate,
                              pool & 0xFFFFFFFF, drops, 0, input_if, output_format, output_if, 2,
                              header_tag, record_len, protocol, length + stripped, stripped, n,
                              header, timestamp_tag, 8, timestamp_ns or now())
                    used += size
                    count += 1
                else:
                    emit(pack(sample_tag, body, seq, 0, ds_index, rate, pool & 0xFFFFFFFF, drops,
                              0, input_if, output_format, output_if, 2, header_tag, record_len,
                              protocol, length + stripped, stripped, n, header, timestamp_tag, 8,
                              timestamp_ns or now()))
        finally:      # what was framed stays framed, even if a send raised half-way
            if direct and used >= 0:
                writer.used, writer.count = used, count
            self.sequence_number, self.pool, self._fix_left = seq, pool, fix_left


def _layout(n: int) -> Tuple[Callable[..., None], Callable[..., bytes], int, int, int]:
    """The whole sample with an n-byte header, by one precompiled struct: (its pack_into,
    its pack, the sample's size with its tag and length, the length it declares (less those
    8 bytes), the sampled_header record's length)."""
    padded = n + (-n & 3)
    layout = struct.Struct(">" + "I" * 19 + f"{n}s{padded - n}x" + "IIQ")
    return layout.pack_into, layout.pack, layout.size, layout.size - 8, 16 + padded


_LAYOUTS = [_layout(n) for n in range(MAX_HEADER_BYTES + 1)]
_NO_LIMIT = 1 << 62     # samples packed alone never fill a datagram
