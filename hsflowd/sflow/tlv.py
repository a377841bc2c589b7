"""Tagged records: the (data_format, length, body) framing sFlow uses for samples and records.

Three tables map a data_format to its structure: ``SAMPLES`` (sample_data), ``FLOWS``
(flow_data) and ``COUNTERS`` (counter_data).  Format numbers are scoped per table: 2100 is
extended_socket_ipv4 as a flow record but virt_node as a counter record.  A tag nobody
registered decodes to ``UnknownRecord`` with its raw bytes, so receivers skip it by length.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, Dict, List, Tuple

from .xdr import (PACK_ERRORS, DecodeError, EncodeError, Layout, Variable, _pad, _PADDING, layout_of,
                  read_u32, xdr_struct)

_TLV = struct.Struct(">II")
_LEN = struct.Struct(">I")


def make_tag(enterprise: int, fmt: int) -> int:
    return (enterprise << 12) | fmt


def split_tag(tag: int) -> Tuple[int, int]:
    return tag >> 12, tag & 0xFFF


class Record:
    """Base of every tagged structure.  ``tag`` and ``sflow_name`` are set by the decorator."""

    __slots__ = ()
    tag = 0
    sflow_name = ""

    def encode(self) -> bytes:  # replaced per class by Table.register
        """This record as tag + length + body."""
        raise NotImplementedError

    @classmethod
    def decode_body(cls, buf: bytes, off: int = 0, end: int | None = None):
        """Decode one body (no tag/length) that spans ``buf[off:end]``."""
        record, _ = cls._layout.decode(buf, off, len(buf) if end is None else end)
        return record


class Table:
    """One dispatch table: data_format -> record class, duplicates refused."""

    def __init__(self, name: str):
        self.name = name
        self.classes: Dict[int, type] = {}

    def register(self, fmt: int, name: str, enterprise: int = 0):
        def decorate(cls):
            tag = make_tag(enterprise, fmt)
            if tag in self.classes and self.classes[tag] is not cls:
                raise ValueError(f"{self.name} format {enterprise}:{fmt} is already "
                                 f"{self.classes[tag].__name__}")
            cls.tag = tag
            cls.sflow_name = name
            if "_layout" not in cls.__dict__:
                cls = xdr_struct(cls)
            # the encoder is the method itself: no extra call per record
            cls.encode = _tlv_encoder(layout_of(cls), tag)
            self.classes[tag] = cls
            return cls
        return decorate

    def __getitem__(self, tag: int) -> type:
        return self.classes[tag]

    def decode_one(self, tag: int, buf: bytes, off: int, stop: int):
        """The record whose body spans ``buf[off:stop]``; UnknownRecord if ``tag`` is not here."""
        cls = self.classes.get(tag)
        if cls is None:
            return UnknownRecord(tag >> 12, tag & 0xFFF, bytes(buf[off:stop]))
        return _decode_known(cls, buf, off, stop, stop - off)


SAMPLES = Table("sample")
FLOWS = Table("flow record")
COUNTERS = Table("counter record")


def _tlv_encoder(layout: Layout, tag: int):
    """Precompile the TLV encoder for one record class.

    A record that is one run of fixed fields, optionally followed by one variable field
    (samples and their record lists, sampled_header, port_name, host_adapters...), packs
    its tag, length and fixed fields in a single ``struct`` call.
    """
    segs = layout.segments
    first = segs[0] if segs else None
    if first is not None and first[0] == "fixed" and not first[4] and (
            len(segs) == 1 or (len(segs) == 2 and segs[1][0] == "var")):
        _, st, _, getter, _, _, run = first
        head = struct.Struct(">II" + st.format.lstrip(">"))
        size = st.size
        if len(segs) == 1:
            def encode_fixed(rec):
                try:
                    return head.pack(tag, size, *getter(rec))
                except PACK_ERRORS:
                    raise layout._field_error(rec, run) from None
            return encode_fixed
        _, codec, name = segs[1]
        tail_of = codec.encode

        def encode_head_tail(rec):
            try:
                tail = tail_of(getattr(rec, name))
            except EncodeError as e:
                raise EncodeError(f"{layout.name}.{name}: {e}") from None
            except PACK_ERRORS as e:
                raise EncodeError(f"{layout.name}.{name}: {e}") from None
            try:
                return head.pack(tag, size + len(tail), *getter(rec)) + tail
            except PACK_ERRORS:
                raise layout._field_error(rec, run) from None
        return encode_head_tail

    def encode_any(rec):
        body = layout.encode(rec)
        return _TLV.pack(tag, len(body)) + body
    return encode_any


@dataclasses.dataclass(frozen=True)
class UnknownRecord:
    """A record or sample whose format this decoder does not know, kept as raw bytes."""

    enterprise: int
    format: int
    data: bytes
    sflow_name = "unknown"

    @property
    def tag(self) -> int:
        return make_tag(self.enterprise, self.format)

    def encode(self) -> bytes:
        n = len(self.data)
        return _TLV.pack(self.tag, n + _pad(n)) + self.data + _PADDING[_pad(n)]


class Records(Variable):
    """``T x<>`` of tagged records: count, then (tag, length, body) for each."""

    kind = "records"

    def __init__(self, table: Table):
        self.table = table
        self.default = []

    def encode(self, records: List[Any]) -> bytes:
        return _LEN.pack(len(records)) + b"".join([r.encode() for r in records])

    def decode(self, buf: bytes, off: int, end: int) -> Tuple[list, int]:
        count = read_u32(buf, off, end, f"{self.table.name} count")
        off += 4
        if off + 8 * count > end:
            raise DecodeError(f"{count} {self.table.name}s cannot fit in {end - off} bytes")
        out = []
        for _ in range(count):
            if off + 8 > end:
                raise DecodeError(f"{self.table.name} header truncated at byte {off}")
            tag, length = _TLV.unpack_from(buf, off)
            off += 8
            stop = off + length
            if stop > end:
                raise DecodeError(f"{self.table.name} {tag >> 12}:{tag & 0xFFF} says {length} "
                                  f"bytes but only {end - off} are left")
            out.append(self.table.decode_one(tag, buf, off, stop))
            # structures may grow at the end: whatever the layout did not read is skipped
            off = stop
        return out, off


def _decode_known(cls, buf, off, stop, length):
    layout: Layout = cls._layout
    minimum = getattr(cls, "minimum_length", None)
    if minimum is not None and layout.fixed_size and minimum <= length < layout.fixed_size:
        # an older, shorter version of the structure (host_cpu was 68 bytes before 2014):
        # the fields it lacks read as zero
        body = bytes(buf[off:stop]) + bytes(layout.fixed_size - length)
        record, _ = layout.decode(body, 0, layout.fixed_size)
        return record
    try:
        record, _ = layout.decode(buf, off, stop)
    except DecodeError as e:
        raise DecodeError(f"{cls.sflow_name}: {e}") from None
    return record


__all__ = ["Record", "Records", "Table", "UnknownRecord", "SAMPLES", "FLOWS", "COUNTERS",
           "make_tag", "split_tag", "EncodeError", "DecodeError"]
