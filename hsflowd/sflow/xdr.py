"""XDR building blocks for sFlow v5 structures (RFC 4506 as sFlow uses it).

Every structure in this package is a dataclass whose fields are annotated with one of the
XDR types below (``u32``, ``u64``, ``string(64)``, ``array(...)``...).  ``@xdr_struct``
reads the annotations once and compiles them into a ``Layout``: runs of fixed-size fields
become one precompiled ``struct.Struct``; strings, opaques, addresses and arrays get a small
codec each.  Encoder, decoder and printer all read the same layout, so they cannot drift.

Decoding never lets ``struct.error`` or ``IndexError`` escape: every read is bounds-checked
against the end of the enclosing structure and failures raise ``DecodeError``.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
import typing
import uuid
from ipaddress import IPv4Address, IPv6Address, ip_address
from operator import attrgetter
from typing import Annotated, Any, Callable, ClassVar, List, Optional, Tuple, Union

__all__ = [
    "DecodeError", "EncodeError", "Layout", "xdr_struct", "layout_of",
    "u32", "u64", "i32", "f32", "f64", "mac", "ipv4", "ipv6", "uuid16",
    "string", "opaque", "address", "array", "Fixed", "Variable",
]


class DecodeError(ValueError):
    """Malformed or truncated sFlow input."""


class EncodeError(ValueError):
    """A value that does not fit its XDR field."""


# --------------------------------------------------------------------------- field types

class Fixed:
    """A fixed-size XDR item: one ``struct`` code, optional conversion to and from the wire."""

    __slots__ = ("code", "size", "default", "to_wire", "from_wire", "kind")

    def __init__(self, code: str, default: Any, kind: str,
                 to_wire: Optional[Callable] = None, from_wire: Optional[Callable] = None):
        self.code = code
        self.size = struct.calcsize(">" + code)
        self.default = default
        self.kind = kind
        self.to_wire = to_wire
        self.from_wire = from_wire


def _mac_to_wire(m: bytes) -> bytes:
    if len(m) != 6:
        raise ValueError(f"a MAC address is 6 bytes, not {len(m)}")
    return m


def _ip4_to_wire(a: IPv4Address) -> bytes:
    if a.version != 4:
        raise ValueError(f"{a} is not an IPv4 address")
    return a.packed


def _ip6_to_wire(a: IPv6Address) -> bytes:
    if a.version != 6:
        raise ValueError(f"{a} is not an IPv6 address")
    return a.packed


def _uuid_to_wire(u: uuid.UUID) -> bytes:
    return u.bytes


def _uuid_from_wire(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=raw)


U32 = Fixed("I", 0, "u32")
U64 = Fixed("Q", 0, "u64")
I32 = Fixed("i", 0, "i32")
F32 = Fixed("f", 0.0, "f32")
F64 = Fixed("d", 0.0, "f64")
# mac is opaque[6]: six bytes then two bytes of XDR padding.
MAC = Fixed("6s2x", bytes(6), "mac", _mac_to_wire)
IPV4 = Fixed("4s", IPv4Address(0), "ipv4", _ip4_to_wire, IPv4Address)
IPV6 = Fixed("16s", IPv6Address(0), "ipv6", _ip6_to_wire, IPv6Address)
# host_descr's uuid is 16 raw bytes with no length word (as hsflowd and sflowtool do it).
UUID16 = Fixed("16s", uuid.UUID(int=0), "uuid", _uuid_to_wire, _uuid_from_wire)

_LEN = struct.Struct(">I")
# what struct.pack and the to_wire conversions raise for a value that does not fit
PACK_ERRORS = (struct.error, OverflowError, TypeError, ValueError, AttributeError)


def _pad(n: int) -> int:
    return (4 - (n & 3)) & 3


_PADDING = (b"", b"\0", b"\0\0", b"\0\0\0")


class Variable:
    """A variable-size XDR item.  Subclasses implement ``encode`` and ``decode``."""

    kind = "variable"
    default: Any = None

    def encode(self, value: Any) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, buf: bytes, off: int, end: int) -> Tuple[Any, int]:  # pragma: no cover
        raise NotImplementedError


def read_u32(buf: bytes, off: int, end: int, what: str) -> int:
    if off + 4 > end:
        raise DecodeError(f"{what}: truncated at byte {off}")
    return _LEN.unpack_from(buf, off)[0]


class Opaque(Variable):
    """``opaque x<max>``: length word, bytes, zero padding."""

    kind = "opaque"

    def __init__(self, maximum: Optional[int] = None):
        self.maximum = maximum
        self.default = b""

    def encode(self, value: bytes) -> bytes:
        if self.maximum is not None and len(value) > self.maximum:
            value = value[: self.maximum]
        n = len(value)
        return _LEN.pack(n) + value + _PADDING[_pad(n)]

    def decode(self, buf: bytes, off: int, end: int) -> Tuple[bytes, int]:
        n = read_u32(buf, off, end, "opaque length")
        start = off + 4
        stop = start + n
        if stop + _pad(n) > end:
            raise DecodeError(f"opaque of {n} bytes runs past the end at byte {start}")
        return bytes(buf[start:stop]), stop + _pad(n)


class String(Opaque):
    """``string x<max>``: UTF-8; longer values are clipped to ``max`` bytes, as hsflowd does."""

    kind = "string"

    def __init__(self, maximum: Optional[int] = None):
        super().__init__(maximum)
        self.default = ""

    def encode(self, value: str) -> bytes:
        raw = value.encode("utf-8", "surrogateescape")
        if self.maximum is not None and len(raw) > self.maximum:
            # clip, backing off so that no UTF-8 character is cut in two
            cut = self.maximum
            while cut > 0 and raw[cut] & 0xC0 == 0x80:
                cut -= 1
            raw = raw[:cut]
        return Opaque.encode(self, raw)

    def decode(self, buf: bytes, off: int, end: int) -> Tuple[str, int]:
        raw, off = Opaque.decode(self, buf, off, end)
        return raw.decode("utf-8", "surrogateescape"), off


_ADDR4 = struct.Struct(">I4s")
_ADDR6 = struct.Struct(">I16s")


class Address(Variable):
    """sFlow ``address``: type word (0 unknown, 1 IPv4, 2 IPv6) then 0, 4 or 16 bytes."""

    kind = "address"
    default = None

    def encode(self, value: Union[IPv4Address, IPv6Address, None]) -> bytes:
        if value is None:
            return _LEN.pack(0)
        if value.version == 4:
            return _ADDR4.pack(1, value.packed)
        return _ADDR6.pack(2, value.packed)

    def decode(self, buf: bytes, off: int, end: int):
        kind = read_u32(buf, off, end, "address type")
        off += 4
        if kind == 0:
            return None, off
        size = {1: 4, 2: 16}.get(kind)
        if size is None:
            raise DecodeError(f"address type {kind} is neither 1 (IPv4) nor 2 (IPv6)")
        if off + size > end:
            raise DecodeError(f"address truncated at byte {off}")
        return ip_address(bytes(buf[off: off + size])), off + size


class Array(Variable):
    """``T x<>``: element count then the elements (scalars or nested structures)."""

    kind = "array"

    def __init__(self, element: Any):
        self.element = element
        self.default = []

    def encode(self, value: list) -> bytes:
        elem = self.element
        if isinstance(elem, Fixed):
            fmt = ">I" + elem.code * len(value)
            items = value if elem.to_wire is None else [elem.to_wire(v) for v in value]
            return struct.pack(fmt, len(value), *items)
        return _LEN.pack(len(value)) + b"".join(elem.encode(v) for v in value)

    def decode(self, buf: bytes, off: int, end: int) -> Tuple[list, int]:
        count = read_u32(buf, off, end, "array count")
        off += 4
        elem = self.element
        if isinstance(elem, Fixed):
            if off + count * elem.size > end:
                raise DecodeError(f"array of {count} items runs past the end at byte {off}")
            items = struct.unpack_from(">" + elem.code * count, buf, off)
            conv = elem.from_wire
            return [conv(v) if conv else v for v in items], off + count * elem.size
        # every element takes at least 4 bytes, which bounds a bogus count cheaply
        if off + count * 4 > end:
            raise DecodeError(f"array of {count} items runs past the end at byte {off}")
        out = []
        for _ in range(count):
            item, off = elem.decode(buf, off, end)
            out.append(item)
        return out, off


# Annotated aliases: what the structure definitions write.
u32 = Annotated[int, U32]
u64 = Annotated[int, U64]
i32 = Annotated[int, I32]
f32 = Annotated[float, F32]
f64 = Annotated[float, F64]
mac = Annotated[bytes, MAC]
ipv4 = Annotated[IPv4Address, IPV4]
ipv6 = Annotated[IPv6Address, IPV6]
uuid16 = Annotated[uuid.UUID, UUID16]
address = Annotated[Union[IPv4Address, IPv6Address, None], Address()]


def string(maximum: Optional[int] = None):
    return Annotated[str, String(maximum)]


def opaque(maximum: Optional[int] = None):
    return Annotated[bytes, Opaque(maximum)]


def array(element: Any):
    """An array of a scalar alias (``array(u32)``) or of an ``@xdr_struct`` class."""
    meta = getattr(element, "__metadata__", None)
    codec = meta[0] if meta else layout_of(element)
    return Annotated[List[Any], Array(codec)]


# --------------------------------------------------------------------------- layouts

_RANGES = {"I": (0, 0xFFFFFFFF), "Q": (0, 0xFFFFFFFFFFFFFFFF), "i": (-(2 ** 31), 2 ** 31 - 1)}


class Layout(Variable):
    """The compiled wire form of one ``@xdr_struct`` dataclass."""

    kind = "struct"

    def __init__(self, cls: type, fields: List[Tuple[str, Any]]):
        self.cls = cls
        self.name = getattr(cls, "sflow_name", cls.__name__)
        self.fields = fields
        # segments: ("fixed", Struct, names, conversions) or ("var", codec, name)
        self.segments: List[tuple] = []
        run: List[Tuple[str, Fixed]] = []
        for name, codec in fields:
            if isinstance(codec, Fixed):
                run.append((name, codec))
                continue
            if run:
                self.segments.append(self._fixed_segment(run))
                run = []
            self.segments.append(("var", codec, name))
        if run:
            self.segments.append(self._fixed_segment(run))
        self.fixed_size: Optional[int] = None
        if len(self.segments) == 1 and self.segments[0][0] == "fixed":
            self.fixed_size = self.segments[0][1].size
        elif not self.segments:
            self.fixed_size = 0
        self.default = None

    @staticmethod
    def _fixed_segment(run):
        names = [n for n, _ in run]
        st = struct.Struct(">" + "".join(c.code for _, c in run))
        to_wire = [(i, c.to_wire) for i, (_, c) in enumerate(run) if c.to_wire]
        from_wire = [(i, c.from_wire) for i, (_, c) in enumerate(run) if c.from_wire]
        getter = attrgetter(*names)
        if len(names) == 1:
            one = getter
            getter = lambda obj: (one(obj),)  # noqa: E731 - attrgetter of one name is not a tuple
        return ("fixed", st, names, getter, to_wire, from_wire, run)

    # ---- encoding
    def encode(self, obj: Any) -> bytes:
        parts = []
        for seg in self.segments:
            if seg[0] == "fixed":
                _, st, names, getter, to_wire, _, run = seg
                values = getter(obj)
                if to_wire:
                    values = list(values)
                    try:
                        for i, conv in to_wire:
                            values[i] = conv(values[i])
                        parts.append(st.pack(*values))
                    except PACK_ERRORS:
                        raise self._field_error(obj, run) from None
                else:
                    try:
                        parts.append(st.pack(*values))
                    except PACK_ERRORS:
                        raise self._field_error(obj, run) from None
            else:
                _, codec, name = seg
                try:
                    parts.append(codec.encode(getattr(obj, name)))
                except EncodeError as e:
                    raise EncodeError(f"{self.name}.{name}: {e}") from None
                except PACK_ERRORS as e:
                    raise EncodeError(f"{self.name}.{name}: {e}") from None
        return b"".join(parts)

    def _field_error(self, obj: Any, run) -> EncodeError:
        """Find which field of a failed ``pack`` was wrong (slow path, errors only)."""
        for name, codec in run:
            value = getattr(obj, name)
            try:
                struct.pack(">" + codec.code, codec.to_wire(value) if codec.to_wire else value)
            except PACK_ERRORS:
                limits = _RANGES.get(codec.code)
                if limits and isinstance(value, int):
                    return EncodeError(f"{self.name}.{name} = {value} is outside "
                                       f"{codec.kind} range {limits[0]}..{limits[1]}")
                return EncodeError(f"{self.name}.{name} = {value!r} is not a valid {codec.kind}")
        return EncodeError(f"{self.name}: cannot encode")

    # ---- decoding
    def decode(self, buf: bytes, off: int, end: int) -> Tuple[Any, int]:
        values: List[Any] = []
        for seg in self.segments:
            if seg[0] == "fixed":
                _, st, names, _, _, from_wire, _ = seg
                if off + st.size > end:
                    raise DecodeError(f"{self.name}: truncated (needs {st.size} bytes at "
                                      f"byte {off}, {max(end - off, 0)} left)")
                got = st.unpack_from(buf, off)
                if from_wire:
                    got = list(got)
                    for i, conv in from_wire:
                        got[i] = conv(got[i])
                values.extend(got)
                off += st.size
            else:
                value, off = seg[1].decode(buf, off, end)
                values.append(value)
        return self.cls(*values), off


def layout_of(cls: type) -> Layout:
    layout = cls.__dict__.get("_layout")
    if layout is None:
        raise TypeError(f"{cls.__name__} is not an @xdr_struct")
    return layout


def xdr_struct(cls: type) -> type:
    """Make ``cls`` a slotted dataclass and compile its XDR layout from the annotations.

    Fields without an explicit default get their XDR type's zero value, so a record can be
    built from the fields one knows (``IfCounters(ifIndex=3, ifSpeed=10**9)``).
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    own = cls.__dict__.get("__annotations__", {})
    for name in own:
        hint = hints[name]
        if typing.get_origin(hint) is ClassVar:
            continue
        codec = _codec_of(hint, cls, name)
        if name not in cls.__dict__:
            default = codec.default
            if isinstance(default, list):
                setattr(cls, name, dataclasses.field(default_factory=list))
            else:
                setattr(cls, name, default)
    cls = dataclasses.dataclass(cls, **({"slots": True} if sys.version_info >= (3, 10) else {}))
    fields = []
    for f in dataclasses.fields(cls):
        fields.append((f.name, _codec_of(hints[f.name], cls, f.name)))
    cls._layout = Layout(cls, fields)
    return cls


def _codec_of(hint: Any, cls: type, name: str):
    meta = getattr(hint, "__metadata__", None)
    if not meta or not isinstance(meta[0], (Fixed, Variable)):
        raise TypeError(f"{cls.__name__}.{name}: annotate with an XDR type (u32, string(64), ...)")
    return meta[0]
