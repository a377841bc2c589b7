"""Packing encoded samples into datagrams, one sequence per (agent address, sub-agent).

The builder holds samples until the next one would bring the datagram to ``datagram_bytes``
or the agent asks it to flush (at least once a second: the spec lets a sample wait no longer).
Like hsflowd it sends before the datagram would reach the limit, so every datagram is
strictly smaller than ``datagram_bytes``.

The open datagram is one buffer of ``datagram_bytes``, its header's room first.  ``add``
copies an encoded sample in.  The flow-sample builder, which frames most samples, writes
them into the buffer itself (``buf``, ``used``, ``count``: the fast lane that
``samplers.flow.FlowSampleBuilder.frame`` documents) and calls ``flush`` when the next one
would not fit: a sample on that path is packed once, where it will be sent from.
"""

from __future__ import annotations

import struct
import time
from ipaddress import IPv4Address, IPv6Address
from typing import Callable, Union

from .samples import VERSION

DEFAULT_DATAGRAM_BYTES = 1400
MIN_DATAGRAM_BYTES = 200
MAX_DATAGRAM_BYTES = 8192

_HEADER4 = struct.Struct(">II4sIIII")
_HEADER6 = struct.Struct(">II16sIIII")


class DatagramBuilder:
    """Frames samples for one agent.  ``send`` gets each finished datagram's bytes."""

    def __init__(self, agent_address: Union[IPv4Address, IPv6Address], sub_agent_id: int,
                 send: Callable[[bytes], None], datagram_bytes: int = DEFAULT_DATAGRAM_BYTES,
                 clock: Callable[[], float] = time.monotonic):
        if not 0 <= sub_agent_id <= 0xFFFFFFFF:
            raise ValueError(f"sub_agent_id {sub_agent_id} is outside 0..4294967295")
        if not MIN_DATAGRAM_BYTES <= datagram_bytes <= MAX_DATAGRAM_BYTES:
            raise ValueError(f"datagramBytes {datagram_bytes} is outside "
                             f"{MIN_DATAGRAM_BYTES}..{MAX_DATAGRAM_BYTES}")
        self.agent_address = agent_address
        self.sub_agent_id = sub_agent_id
        self._datagram_bytes = datagram_bytes
        self.send = send
        self.clock = clock
        self._header = _HEADER4 if agent_address.version == 4 else _HEADER6
        self._address_type = 1 if agent_address.version == 4 else 2
        self._packed_address = agent_address.packed
        self.started = clock()
        self.sequence_number = 0
        self.oversized = 0          # samples too big for any datagram, dropped
        self.largest_oversized = 0  # the biggest of them, in bytes
        self.header_size = self._header.size
        self.buf = bytearray(datagram_bytes)
        self.used = self.header_size   # bytes of buf in use: the header's room, the samples
        self.count = 0                  # samples in the open datagram

    @property
    def datagram_bytes(self) -> int:
        return self._datagram_bytes

    @datagram_bytes.setter
    def datagram_bytes(self, size: int) -> None:
        """A new datagramBytes (a reload): what is queued goes first."""
        if size != self._datagram_bytes:
            self.flush()
            self.buf = bytearray(size)
        self._datagram_bytes = size

    def add(self, sample: bytes) -> None:
        """Queue one encoded sample (its tag, length and body)."""
        size = len(sample)
        used = self.used
        if used + size >= self._datagram_bytes:
            if self._header.size + size >= self._datagram_bytes:
                self.refuse(size)    # fits no datagram at all
                return
            self.flush()
            used = self.used
        self.buf[used:used + size] = sample
        self.used = used + size
        self.count += 1

    def refuse(self, size: int) -> None:
        """A sample of ``size`` bytes that alone would make a datagram of datagramBytes or
        more: dropped, and counted for the warning (output.report_oversized)."""
        self.oversized += 1
        self.largest_oversized = max(self.largest_oversized, size)

    def flush(self) -> None:
        """Send what is queued, if anything."""
        if not self.count:
            return
        self.sequence_number = (self.sequence_number + 1) & 0xFFFFFFFF
        uptime = int((self.clock() - self.started) * 1000) & 0xFFFFFFFF
        buf = self.buf
        self._header.pack_into(buf, 0, VERSION, self._address_type, self._packed_address,
                               self.sub_agent_id, self.sequence_number, uptime, self.count)
        datagram = bytes(memoryview(buf)[:self.used])
        self.used, self.count = self._header.size, 0
        self.send(datagram)
