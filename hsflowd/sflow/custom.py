"""InMon's custom metrics samples (sample_data, enterprise 4300): rtmetric (1002) and
rtflow (1003), what hsflowd's json {} module sends for applications' "rtmetric" and
"rtflow" messages (sFlow-RT reads them).

Each is a data source name and a list of named, typed values.  A value's XDR form depends
on its type word, so the list has a codec of its own (``TypedFields``); the layouts are
hsflowd's encoder (mod_json.c) and sflowtool's decoder (readRTMetric, readRTFlow):

    rtmetric: string datasource<64>; unsigned int n;
              n x { string name<64>; unsigned int type; value }
    rtflow:   string datasource<64>; unsigned int sampling_rate; unsigned int sample_pool;
              unsigned int n; n x { string name<64>; unsigned int type; value }
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Annotated, Any, Dict, List, Tuple

from .tlv import SAMPLES, Record
from .xdr import (F32, F64, IPV4, IPV6, MAC, PACK_ERRORS, U32, U64, DecodeError, EncodeError,
                  Fixed, String, Variable, read_u32, string, u32)

ENTERPRISE_INMON = 4300
MAX_NAME = 64          # hsflowd HSP_MAX_RTMETRIC_KEY_LEN
MAX_STRING = 255       # HSP_MAX_RTMETRIC_VAL_LEN

_NAME = String(MAX_NAME)
_STRING = String(MAX_STRING)
_COUNT = struct.Struct(">I")

# type word -> (type name, codec), as the JSON messages name the types
RTMETRIC_TYPES: Dict[int, Tuple[str, Any]] = {
    0: ("string", _STRING), 1: ("counter32", U32), 2: ("counter64", U64), 3: ("gauge32", U32),
    4: ("gauge64", U64), 5: ("gaugeFloat", F32), 6: ("gaugeDouble", F64),
}
RTFLOW_TYPES: Dict[int, Tuple[str, Any]] = {
    0: ("string", _STRING), 1: ("mac", MAC), 2: ("ip", IPV4), 3: ("ip6", IPV6), 4: ("int32", U32),
    5: ("int64", U64), 6: ("float", F32), 7: ("double", F64),
}


@dataclass(frozen=True)
class TypedField:
    """One named value; ``type`` is the type word (see RTMETRIC_TYPES, RTFLOW_TYPES)."""

    name: str
    type: int
    value: Any


class TypedFields(Variable):
    """``unsigned int n`` then n x {name, type, value by type}."""

    kind = "typed_fields"

    def __init__(self, types: Dict[int, Tuple[str, Any]]):
        self.types = types
        self.default = []
        # a fixed-size value packs with one precompiled struct
        self._fixed = {code: struct.Struct(">" + codec.code)
                       for code, (_, codec) in types.items() if isinstance(codec, Fixed)}

    def encode(self, fields: List[TypedField]) -> bytes:
        parts = [_COUNT.pack(len(fields))]
        for f in fields:
            entry = self.types.get(f.type)
            if entry is None:
                raise EncodeError(f"{f.name}: type {f.type} is not one of {sorted(self.types)}")
            type_name, codec = entry
            parts.append(_NAME.encode(f.name))
            parts.append(_COUNT.pack(f.type))
            st = self._fixed.get(f.type)
            if st is None:
                parts.append(codec.encode(f.value))
                continue
            try:
                parts.append(st.pack(codec.to_wire(f.value) if codec.to_wire else f.value))
            except PACK_ERRORS as e:
                raise EncodeError(f"{f.name}: {f.value!r} is not a {type_name} ({e})") from None
        return b"".join(parts)

    def decode(self, buf: bytes, off: int, end: int) -> Tuple[List[TypedField], int]:
        count = read_u32(buf, off, end, "field count")
        off += 4
        if off + count * 12 > end:   # a name, a type and a value take 12 bytes at least
            raise DecodeError(f"{count} fields cannot fit in {end - off} bytes")
        out = []
        for _ in range(count):
            name, off = _NAME.decode(buf, off, end)
            code = read_u32(buf, off, end, "field type")
            off += 4
            entry = self.types.get(code)
            if entry is None:
                raise DecodeError(f"field {name!r}: unknown type {code}")
            codec = entry[1]
            st = self._fixed.get(code)
            if st is None:
                value, off = codec.decode(buf, off, end)
            else:
                if off + st.size > end:
                    raise DecodeError(f"field {name!r} truncated at byte {off}")
                value = st.unpack_from(buf, off)[0]
                if codec.from_wire:
                    value = codec.from_wire(value)
                off += st.size
            out.append(TypedField(name, code, value))
        return out, off

    def plain(self, fields: List[TypedField]) -> List[Dict[str, Any]]:
        """JSON-ready: [{"name", "type" (its name), "value"}]."""
        out = []
        for f in fields:
            type_name, codec = self.types[f.type]
            value = f.value
            if codec is MAC:
                value = ":".join(f"{b:02x}" for b in value)
            elif codec is IPV4 or codec is IPV6:
                value = str(value)
            elif codec is F32:
                value = float(f"{value:.7g}")   # what a 32-bit float can tell
            out.append({"name": f.name, "type": type_name, "value": value})
        return out


@SAMPLES.register(1002, "rtmetric", enterprise=ENTERPRISE_INMON)
class RtMetric(Record):
    """Named metrics an application sent (JSON "rtmetric"), under its own data source name."""

    datasource: string(MAX_NAME)
    metrics: Annotated[List[Any], TypedFields(RTMETRIC_TYPES)]


@SAMPLES.register(1003, "rtflow", enterprise=ENTERPRISE_INMON)
class RtFlow(Record):
    """One sampled event an application sent (JSON "rtflow"): named, typed fields.
    sample_pool is reserved (hsflowd sends 0)."""

    datasource: string(MAX_NAME)
    sampling_rate: u32 = 1
    sample_pool: u32
    fields: Annotated[List[Any], TypedFields(RTFLOW_TYPES)]


__all__ = ["ENTERPRISE_INMON", "RTFLOW_TYPES", "RTMETRIC_TYPES", "RtFlow", "RtMetric",
           "TypedField", "TypedFields"]
