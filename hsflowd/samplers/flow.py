"""The flow sample every sampler produces: one sampled packet, framed as hsflowd frames it.

A flow sample (expanded, format 3) from data source 0:ifIndex of the sampled device, with
two records: sampled_header (Ethernet, frame_length = wire length + 4 for the FCS,
stripped = 4) and extended_timestamp (1043), as hsflowd 2.1 sends them.  hsflowd puts the
timestamp first; it goes last here because Wireshark 4.0 does not skip an unknown flow
record's body and would misread a sampled_header that follows one (every decoder finds
records by tag, so the order carries no meaning).

This is the hot path, so the fixed part of the sample is packed by one precompiled
``struct.Struct`` instead of building dataclasses; ``tests/test_flow_builder.py`` checks the
bytes against the declarative encoder (``FlowSample(...).encode()``).
"""

from __future__ import annotations

import struct
import time
from typing import Callable

from ..sflow import ExtendedTimestamp, FlowSample, HeaderProtocol, SampledHeader

FCS = 4  # the frame check sequence: on the wire, never in what a socket captures

# sample tag+length, flow_sample_expanded fixed part, record count, then the
# sampled_header record's tag+length and fixed part: 2 + 10 + 1 + 2 + 4 words
_HEAD = struct.Struct(">" + "I" * 19)
_TIMESTAMP = struct.Struct(">IIQ")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by length % 4
_FLOW_SAMPLE_TAG = FlowSample.tag
_SAMPLED_HEADER_TAG = SampledHeader.tag
_TIMESTAMP_TAG = ExtendedTimestamp.tag


class FlowSampleBuilder:
    """Sequence number, sample pool and drops of one sampler (one data source)."""

    __slots__ = ("ds_index", "sampling_rate", "header_bytes", "emit", "sequence_number",
                 "pool_base", "samples_since_base", "drops", "protocol")

    def __init__(self, ds_index: int, sampling_rate: int, header_bytes: int,
                 emit: Callable[[bytes], None], protocol: int = HeaderProtocol.ETHERNET_ISO8023):
        self.ds_index = ds_index
        self.sampling_rate = sampling_rate
        self.header_bytes = header_bytes
        self.emit = emit
        self.protocol = int(protocol)
        self.sequence_number = 0
        self.pool_base = 0           # packets the interface carried when last measured
        self.samples_since_base = 0  # samples taken since then
        self.drops = 0

    @property
    def sample_pool(self) -> int:
        """Packets that could have been sampled: the last measurement plus N per sample since."""
        return (self.pool_base + self.samples_since_base * self.sampling_rate) & 0xFFFFFFFF

    def set_pool(self, packets: int) -> None:
        """Re-anchor the pool on the interface's real packet count; never let it go back."""
        estimate = self.pool_base + self.samples_since_base * self.sampling_rate
        self.pool_base = packets if packets > estimate else estimate
        self.samples_since_base = 0

    def sample(self, header: bytes, frame_length: int, input_if: int, output_if: int,
               timestamp_ns: int = 0, output_format: int = 0, protocol: int = 0,
               stripped: int = FCS) -> None:
        """Frame one sampled packet and hand it to ``emit``.

        ``header`` is what was captured; ``frame_length`` the packet's length as captured,
        without FCS.  ``stripped`` counts what is missing from the front and back: the FCS,
        plus the 14-byte Ethernet header when only the IP packet was captured (protocol
        IPv4/IPv6, as hsflowd reports it); it is added to frame_length, as sFlow asks."""
        if len(header) > self.header_bytes:
            header = header[: self.header_bytes]
        self.sequence_number = seq = (self.sequence_number + 1) & 0xFFFFFFFF
        self.samples_since_base += 1
        n = len(header)
        padded = n + (-n & 3)
        record_len = 16 + padded
        sample_len = 40 + 4 + 8 + record_len + 16  # fixed part, count, two records
        head = _HEAD.pack(
            _FLOW_SAMPLE_TAG, sample_len,
            seq, 0, self.ds_index, self.sampling_rate,
            (self.pool_base + self.samples_since_base * self.sampling_rate) & 0xFFFFFFFF,
            self.drops & 0xFFFFFFFF, 0, input_if, output_format, output_if,
            2, _SAMPLED_HEADER_TAG, record_len,
            protocol or self.protocol, frame_length + stripped, stripped, n)
        tail = _TIMESTAMP.pack(_TIMESTAMP_TAG, 8, timestamp_ns or time.time_ns())
        self.emit(b"".join((head, header, _PAD[n & 3], tail)))
