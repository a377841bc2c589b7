"""Packing encoded samples into datagrams, one sequence per (agent address, sub-agent).

The builder holds samples until the next one would bring the datagram to ``datagram_bytes``
or the agent asks it to flush (at least once a second: the spec lets a sample wait no longer).
Like hsflowd it sends before the datagram would reach the limit, so every datagram is
strictly smaller than ``datagram_bytes``.
"""

from __future__ import annotations

import struct
import time
from ipaddress import IPv4Address, IPv6Address
from typing import Callable, List, Union

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
        self.datagram_bytes = datagram_bytes
        self.send = send
        self.clock = clock
        self._header = _HEADER4 if agent_address.version == 4 else _HEADER6
        self._address_type = 1 if agent_address.version == 4 else 2
        self._packed_address = agent_address.packed
        self.started = clock()
        self.sequence_number = 0
        self.oversized = 0          # samples too big for any datagram, dropped
        self.largest_oversized = 0  # the biggest of them, in bytes
        self._samples: List[bytes] = []
        self._size = self._header.size

    @property
    def header_size(self) -> int:
        return self._header.size

    def add(self, sample: bytes) -> None:
        """Queue one encoded sample (its tag, length and body)."""
        size = len(sample)
        if self._size + size >= self.datagram_bytes:
            if self._header.size + size >= self.datagram_bytes:
                self.oversized += 1  # fits no datagram at all
                self.largest_oversized = max(self.largest_oversized, size)
                return
            self.flush()
        self._samples.append(sample)
        self._size += size

    def flush(self) -> None:
        """Send what is queued, if anything."""
        samples = self._samples
        if not samples:
            return
        self.sequence_number = (self.sequence_number + 1) & 0xFFFFFFFF
        uptime = int((self.clock() - self.started) * 1000) & 0xFFFFFFFF
        head = self._header.pack(VERSION, self._address_type, self._packed_address,
                                 self.sub_agent_id, self.sequence_number, uptime, len(samples))
        samples.insert(0, head)
        datagram = b"".join(samples)
        self._samples = []
        self._size = self._header.size
        self.send(datagram)
