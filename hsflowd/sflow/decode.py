"""Decoding datagrams and showing them to people: JSON-ready dicts and ``key value`` text.

Names in the output are the specification's own field names; every record and sample also
carries ``tag`` ("enterprise:format") and ``struct`` (the spec's structure name).  Some
structures add derived values for readers (``Record.annotations``), e.g. a compact sample's
source_id split into class and index.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator

from . import counters, custom, flows  # noqa: F401 - importing registers the records
from .samples import Datagram
from .tlv import UnknownRecord, split_tag
from .xdr import DecodeError, Layout

__all__ = ["decode_datagram", "to_dict", "to_text", "DecodeError"]


def decode_datagram(data: bytes) -> Datagram:
    return Datagram.decode(data)


def _format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _plain(value: Any, codec: Any) -> Any:
    """A JSON-ready form of one field value, chosen by its XDR type."""
    kind = codec.kind
    if kind == "mac":
        return _format_mac(value)
    if kind in ("ipv4", "ipv6", "uuid"):
        return str(value)
    if kind == "address":
        return None if value is None else str(value)
    if kind == "opaque":
        return value.hex()
    if kind == "f32":
        return float(f"{value:.7g}")  # what a 32-bit float can tell
    if kind == "records":
        return [to_dict(r) for r in value]
    if kind == "array":
        return [_plain(v, codec.element) for v in value]
    if kind == "struct":
        return _fields(value, codec)
    plain = getattr(codec, "plain", None)   # a codec with a form of its own (custom.TypedFields)
    if plain is not None:
        return plain(value)
    return value


def _fields(obj: Any, layout: Layout) -> Dict[str, Any]:
    return {name: _plain(getattr(obj, name), codec) for name, codec in layout.fields}


def to_dict(obj: Any) -> Dict[str, Any]:
    """A datagram, sample or record as nested dicts and lists of JSON types."""
    if isinstance(obj, UnknownRecord):
        return {"tag": f"{obj.enterprise}:{obj.format}", "struct": "unknown",
                "length": len(obj.data), "data": obj.data.hex()}
    layout: Layout = obj._layout
    out: Dict[str, Any] = {}
    tag = getattr(obj, "tag", None)
    if tag is not None:
        enterprise, fmt = split_tag(tag)
        out["tag"] = f"{enterprise}:{fmt}"
        out["struct"] = obj.sflow_name
    out.update(_fields(obj, layout))
    annotate = getattr(obj, "annotations", None)
    if annotate is not None:
        out.update(annotate())
    return out


def _is_structure(value: Any) -> bool:
    return isinstance(value, dict) and "tag" in value and "struct" in value


def _lines(value: Dict[str, Any], prefix: str, depth: int) -> Iterator[str]:
    """Scalars first, then nested structures, each tagged structure as an indented block."""
    pad = "  " * depth
    if _is_structure(value):
        yield f"{pad}{prefix}{value['struct']} {value['tag']}"
        depth += 1
        pad = "  " * depth
        prefix = ""
    nested = []
    for key, item in value.items():
        if key in ("tag", "struct") and _is_structure(value):
            continue
        if isinstance(item, dict) or (isinstance(item, list) and item and isinstance(item[0], dict)):
            nested.append((key, item))
        elif isinstance(item, list):
            yield f"{pad}{prefix}{key} {','.join(str(v) for v in item)}"
        else:
            yield f"{pad}{prefix}{key} {'' if item is None else item}"
    for key, item in nested:
        if isinstance(item, dict) and not _is_structure(item):  # a named group: key.field
            yield from _lines(item, f"{prefix}{key}.", depth)
            continue
        for i, element in enumerate(item if isinstance(item, list) else [item]):
            if _is_structure(element):
                yield from _lines(element, "", depth)
            else:
                yield from _lines(element, f"{prefix}{key}.{i}.", depth)


def to_text(datagram_dict: Dict[str, Any]) -> str:
    """Readable ``key value`` lines, one record per indented block (as sflowtool is read)."""
    return "\n".join(_lines(datagram_dict, "", 0))
