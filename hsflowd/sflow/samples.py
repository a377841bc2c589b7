"""Samples (sample_data) and the datagram that carries them.

This agent sends the expanded forms (3, 4) and discard samples (5) only, as Linux hsflowd
does (the spec forbids mixing compact and expanded in one agent).  The compact forms (1, 2)
are here for decoding what Open vSwitch and switches send.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Any, List, Tuple

from .drops import drop_reason_name
from .tlv import COUNTERS, FLOWS, SAMPLES, Record, Records
from .xdr import DecodeError, address, u32, xdr_struct

FlowRecordList = Annotated[List[Any], Records(FLOWS)]
CounterRecordList = Annotated[List[Any], Records(COUNTERS)]
SampleList = Annotated[List[Any], Records(SAMPLES)]


class DataSourceClass(IntEnum):
    """sflow_data_source class: the type of thing a sample describes."""

    IFINDEX = 0
    VLAN = 1
    PHYSICAL_ENTITY = 2  # the host itself is 2:1
    LOGICAL_ENTITY = 3   # VMs and containers, 3:100000 and up


class InterfaceFormat(IntEnum):
    """interface.format: how to read the value word."""

    SINGLE = 0    # value is an ifIndex (0 unknown, INTERNAL the agent itself)
    DISCARDED = 1  # value is a drop reason
    MULTIPLE = 2   # value is the number of output interfaces (0 = unknown, more than one)


INTERNAL = 0x3FFFFFFF  # the packet started or ended in the host itself (hsflowd's host model)


@SAMPLES.register(3, "flow_sample_expanded")
class FlowSample(Record):
    """One sampled packet.  sample_pool counts every packet that could have been sampled."""

    sequence_number: u32
    source_id_type: u32
    source_id_index: u32
    sampling_rate: u32
    sample_pool: u32
    drops: u32
    input_format: u32
    input: u32
    output_format: u32
    output: u32
    flow_records: FlowRecordList


@SAMPLES.register(4, "counters_sample_expanded")
class CountersSample(Record):
    """Cumulative counters of one data source, e.g. the host (2:1) or an interface (0:ifIndex)."""

    sequence_number: u32
    source_id_type: u32
    source_id_index: u32
    counters: CounterRecordList


@SAMPLES.register(5, "discarded_packet")
class DiscardedPacket(Record):
    """A packet the device dropped, with why (sflow_drops.txt).  ifindexes: 0 = unknown."""

    sequence_number: u32
    source_id_type: u32
    source_id_index: u32
    drops: u32
    inputifindex: u32
    outputifindex: u32
    reason: u32
    discard: FlowRecordList

    def annotations(self) -> dict:
        return {"reason_name": drop_reason_name(self.reason)}


def split_source_id(word: int) -> Tuple[int, int]:
    """Compact sflow_data_source: class in the top 8 bits, index in the low 24."""
    return word >> 24, word & 0xFFFFFF


def split_interface(word: int) -> Tuple[int, int]:
    """Compact interface: format in the top 2 bits, value in the low 30."""
    return word >> 30, word & 0x3FFFFFFF


@SAMPLES.register(1, "flow_sample")
class FlowSampleCompact(Record):
    """Compact flow sample: source_id and input/output are packed words (see split_*)."""

    sequence_number: u32
    source_id: u32
    sampling_rate: u32
    sample_pool: u32
    drops: u32
    input: u32
    output: u32
    flow_records: FlowRecordList

    def annotations(self) -> dict:
        cls, index = split_source_id(self.source_id)
        in_format, in_value = split_interface(self.input)
        out_format, out_value = split_interface(self.output)
        return {"source_id_type": cls, "source_id_index": index,
                "input_format": in_format, "input_value": in_value,
                "output_format": out_format, "output_value": out_value}


@SAMPLES.register(2, "counters_sample")
class CountersSampleCompact(Record):
    sequence_number: u32
    source_id: u32
    counters: CounterRecordList

    def annotations(self) -> dict:
        cls, index = split_source_id(self.source_id)
        return {"source_id_type": cls, "source_id_index": index}


VERSION = 5


@xdr_struct
class Datagram:
    """sample_datagram_v5.  uptime is in milliseconds."""

    version: u32 = VERSION
    agent_address: address
    sub_agent_id: u32
    sequence_number: u32
    uptime: u32
    samples: SampleList

    def encode(self) -> bytes:
        return self._layout.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> "Datagram":
        """Decode one whole datagram; anything malformed raises DecodeError."""
        if len(data) < 4:
            raise DecodeError(f"datagram of {len(data)} bytes is too short")
        version = int.from_bytes(data[:4], "big")
        if version != VERSION:
            raise DecodeError(f"datagram version {version}, expected {VERSION}")
        datagram, used = cls._layout.decode(data, 0, len(data))
        if used != len(data):
            raise DecodeError(f"{len(data) - used} bytes left over after {used}-byte datagram")
        return datagram
