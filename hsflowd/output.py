"""From samples to collectors: the datagram being filled, and the collectors it goes to.

Modules hand over encoded samples (``emit``); this frames them into datagrams for the
current agent address and sub-agent and gives each datagram to every collector.  A new
address or sub-agent starts a new datagram sequence and uptime, as hsflowd does; a new set
of collectors does not.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from .collectors import Collectors
from .sflow import DatagramBuilder

log = logging.getLogger("hsflowd")

OVERSIZE_LOG_INTERVAL = 60.0


class Output:
    """The open datagram and the collectors; ``emit(sample)`` is the one way out for
    samples: the open datagram's ``add`` itself (one call per sample on the hot path), or,
    while there is no agent address, a call that drops the sample."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.collectors: Optional[Collectors] = None
        self.builder: Optional[DatagramBuilder] = None
        self.emit: Callable[[bytes], None] = _no_datagram
        self.config_path = ""
        self._oversized_reported = 0
        self._next_oversized_report = 0.0

    def _send(self, datagram: bytes) -> None:
        if self.collectors is not None:
            self.collectors.send(datagram)

    def flush(self) -> None:
        if self.builder is not None:
            self.builder.flush()

    def set_collectors(self, collectors: Collectors) -> None:
        """Send to these from now on (what is queued goes to the old ones first)."""
        self.flush()
        if self.collectors is not None:
            self.collectors.close()
        self.collectors = collectors

    def set_agent(self, address: Any, sub_agent_id: int, datagram_bytes: int,
                  config_path: str) -> None:
        """The agent address (an ip_address, or None: no output) and sub-agent id."""
        self.config_path = config_path
        b = self.builder
        if b is not None and address is not None and b.agent_address == address \
                and b.sub_agent_id == sub_agent_id:
            b.datagram_bytes = datagram_bytes
            return
        self.flush()
        self.builder, self.emit = None, _no_datagram
        if address is not None:
            self.builder = DatagramBuilder(address, sub_agent_id, self._send,
                                           datagram_bytes=datagram_bytes, clock=self.clock)
            self.emit = self.builder.add
            self._oversized_reported = 0

    def report_oversized(self, now: float) -> None:
        """Samples that fit no datagram are dropped (datagrams stay under datagramBytes);
        say so, at most once a minute, so a too-small datagramBytes is not a silent loss."""
        b = self.builder
        if b is None or b.oversized == self._oversized_reported or now < self._next_oversized_report:
            return
        log.warning("%s: %d sample(s) dropped: alone they make a datagram of up to %d bytes, "
                    "over datagramBytes=%d; raise datagramBytes", self.config_path,
                    b.oversized - self._oversized_reported, b.largest_oversized + b.header_size,
                    b.datagram_bytes)
        self._oversized_reported = b.oversized
        self._next_oversized_report = now + OVERSIZE_LOG_INTERVAL

    def writer(self) -> Optional[DatagramBuilder]:
        """The open datagram, for a flow-sample builder to pack samples straight into (its
        fast lane: see samplers.flow); None while there is no agent address."""
        return self.builder

    def status(self) -> dict:
        """For ``hsflowd status``: the sub-agent, datagrams sent, each collector's figures."""
        b = self.builder
        return {"sub_agent_id": b.sub_agent_id if b else None,
                "datagrams": b.sequence_number if b else 0,
                "collectors": self.collectors.status() if self.collectors else []}

    def close(self) -> None:
        self.flush()
        if self.collectors is not None:
            self.collectors.close()
            self.collectors = None


def _no_datagram(sample: bytes) -> None:
    """No agent address (yet): nothing can be sent, as in hsflowd."""
