"""Counter polling: which data sources are due this second, and their counters samples.

As in hsflowd, a poller counts down whole seconds.  Setting an interval starts the countdown
at a random 1..interval so that a host with many interfaces spreads its samples over the
interval instead of sending them all in the same second.  The host poller is the exception
at start-up: it goes first, so a new installation shows up on the collector at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from .modules import HOST_SOURCE, DataSource
from .sflow import CountersSample, Record


@dataclass
class Poller:
    """One data source's counter schedule and sample sequence number."""

    source: DataSource
    interval: int
    countdown: int = 1
    sequence_number: int = 0

    def set_interval(self, interval: int, rng: random.Random, first: Optional[int] = None) -> None:
        self.interval = interval
        if interval > 0:
            self.countdown = first if first is not None else rng.randint(1, interval)

    def due(self) -> bool:
        """Count one second down; True when this source's counters should go out now."""
        if self.interval <= 0:
            return False
        self.countdown -= 1
        if self.countdown > 0:
            return False
        self.countdown = self.interval
        return True

    def sample(self, records: List[Record]) -> bytes:
        self.sequence_number = (self.sequence_number + 1) & 0xFFFFFFFF
        ds_class, ds_index = self.source
        return CountersSample(sequence_number=self.sequence_number, source_id_type=ds_class,
                              source_id_index=ds_index, counters=records).encode()


@dataclass
class PollerSet:
    """All pollers of the agent, keyed by data source."""

    rng: random.Random = field(default_factory=random.Random)
    pollers: Dict[DataSource, Poller] = field(default_factory=dict)

    def ensure(self, source: DataSource, interval: int, first: Optional[int] = None) -> Poller:
        poller = self.pollers.get(source)
        if poller is None:
            poller = self.pollers[source] = Poller(source, interval)
            poller.set_interval(interval, self.rng, first)
        elif poller.interval != interval:
            poller.set_interval(interval, self.rng)
        return poller

    def keep_only(self, wanted: set) -> None:
        """Forget pollers of data sources no longer wanted (e.g. an interface that went away)."""
        if any(s not in wanted for s in self.pollers):
            # a new dict: one that only had entries deleted keeps the size it grew to
            self.pollers = {s: p for s, p in self.pollers.items() if s in wanted}

    def due(self) -> List[Poller]:
        return [p for p in self.pollers.values() if p.due()]


class CounterPolling:
    """Each second: the data sources the running modules poll, which of them are due, their
    records from the module that owns each, framed as counters samples.

    The host sample (2:1) also carries what other modules add to it (``host_records``:
    virt_node from the container and VM modules), as hsflowd's modules add theirs to the
    csample event.  A module that fails loses its own samples this second, no one else's."""

    def __init__(self, rng: Optional[random.Random] = None):
        self.pollers = PollerSet(rng or random.Random())

    def tick(self, supervisor, interval: int, emit: Callable[[bytes], None]) -> int:
        owners = supervisor.counter_sources()
        for source in owners:
            self.pollers.ensure(source, interval, first=1 if source == HOST_SOURCE else None)
        self.pollers.keep_only(set(owners))
        due = self.pollers.due()
        if not due:
            return 0
        by_owner: Dict[str, List[DataSource]] = {}
        for poller in due:
            by_owner.setdefault(owners[poller.source], []).append(poller.source)
        records: Dict[DataSource, List[Record]] = {}
        for owner, sources in by_owner.items():
            records.update(supervisor.counters(owner, sources))
        if records.get(HOST_SOURCE):
            records[HOST_SOURCE] = list(records[HOST_SOURCE]) + supervisor.host_records()
        sent = 0
        for poller in due:
            recs = records.get(poller.source)
            if recs:
                emit(poller.sample(recs))
                sent += 1
        return sent
