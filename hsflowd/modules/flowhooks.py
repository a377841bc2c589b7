"""Records one module adds to the flow samples of another.

The container and VM modules add extended_entities (2210) to a sampled packet between
their data sources, ``tcp {}`` adds extended_tcp_info (2209) to one of this host's
TCP connections, and ``tunnels`` the tunnel structures (1023-1030) to a VXLAN packet.  They see samples as the samplers framed them, after the fact: a hook
gets the encoded flow sample and returns it, with records appended or not, or returns
None to keep it and send it later itself (``Context.send``: a hook that waits for the
kernel's answer).  Samplers know nothing of hooks, and with no hook registered a sample
costs one check on its way out.

Appended records go last, after the records Wireshark 4.0 knows (it cannot skip an unknown
record that comes before a known one).
"""

from __future__ import annotations

import struct
from typing import Callable, List, NamedTuple, Optional, Tuple

from ..sflow import FlowSample

FLOW_SAMPLE_TAG = FlowSample.tag
_WORD = struct.Struct(">I")
_FIXED = struct.Struct(">IIIIIIIIIIIII")   # tag, length, 10 fixed words, record count
_RECORD = struct.Struct(">II")
_SAMPLED_HEADER = struct.Struct(">IIII")   # header_protocol, frame_length, stripped, length
COUNT_OFFSET = 48
MAX_RECORDS = 16           # walked looking for the sampled header: ours have a handful

HeaderSpan = Tuple[int, int, int, int]

Hook = Callable[[bytes], Optional[bytes]]


class SampleView(NamedTuple):
    """What a hook usually needs from an encoded flow sample."""

    ds_index: int
    input: int
    output_format: int
    output: int
    header_protocol: int      # 0 when the sample has no sampled_header
    header: bytes


def header_span(sample: bytes) -> Optional[HeaderSpan]:
    """(header_protocol, frame_length, start, end) of the sampled_header record of an
    encoded expanded flow sample, ``start:end`` its bytes in ``sample`` (clipped to the
    record and to what there is); None if the bytes are not a flow sample or have none.
    The one walk every hook's look at the packet goes through."""
    size = len(sample)
    if size < _FIXED.size or _WORD.unpack_from(sample)[0] != FLOW_SAMPLE_TAG:
        return None
    off = _FIXED.size
    for _ in range(min(_WORD.unpack_from(sample, COUNT_OFFSET)[0], MAX_RECORDS)):
        if off + 8 > size:
            return None
        tag, length = _RECORD.unpack_from(sample, off)
        if tag == 1 and length >= 16 and off + 24 <= size:
            protocol, frame, _stripped, n = _SAMPLED_HEADER.unpack_from(sample, off + 8)
            start = off + 24
            return protocol, frame, start, min(start + n, off + 8 + length, size)
        off += 8 + length
    return None


def view(sample: bytes) -> Optional[SampleView]:
    """The data source, ports and sampled header of an expanded flow sample (None if the
    bytes are not one)."""
    if len(sample) < _FIXED.size:
        return None
    (tag, _length, _seq, _ds_class, ds_index, _rate, _pool, _drops, _in_format, in_if,
     out_format, out_if, _count) = _FIXED.unpack_from(sample)
    if tag != FLOW_SAMPLE_TAG:
        return None
    protocol, _frame, start, end = header_span(sample) or (0, 0, 0, 0)
    return SampleView(ds_index, in_if, out_format, out_if, protocol, sample[start:end])


def append_records(sample: bytes, records: bytes, count: int) -> bytes:
    """``sample`` with ``count`` encoded records (tag, length, body each) added at the end."""
    length = _WORD.unpack_from(sample, 4)[0] + len(records)
    n = _WORD.unpack_from(sample, COUNT_OFFSET)[0] + count
    return b"".join((sample[:4], _WORD.pack(length), sample[8:COUNT_OFFSET], _WORD.pack(n),
                     sample[COUNT_OFFSET + 4:], records))


class FlowHooks:
    """The hooks the running modules registered, in the order they registered."""

    def __init__(self, send: Callable[[bytes], None],
                 call: Callable[[str, Hook, bytes], Optional[bytes]] = lambda owner, hook, s: hook(s)):
        self.send = send
        self.call = call          # the supervisor's: a hook that raises fails its own module
        self.hooks: List[Tuple[str, Hook]] = []

    def add(self, owner: str, hook: Hook) -> None:
        self.hooks.append((owner, hook))

    def remove(self, owner: str) -> None:
        self.hooks = [(o, h) for o, h in self.hooks if o != owner]

    def emit(self, sample: bytes) -> None:
        """A sample on its way out: through every hook, then to the datagram."""
        if self.hooks:
            for owner, hook in self.hooks:
                sample = self.call(owner, hook, sample)
                if sample is None:
                    return   # kept by that hook: it sends it later
        self.send(sample)
