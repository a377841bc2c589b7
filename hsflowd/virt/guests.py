"""The guests a module reports, each with its data source, and when one is forgotten.

A guest is known by a key of the module's (a container id, a domain UUID) and holds a
data source 3:N from the agent's table for as long as it is known.  One that stops (or
vanishes from the list) is still reported, with its state and last counters, until
``forget_vms`` seconds have passed; then it is forgotten and its N given back.  One that
runs again before that keeps its N.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, Generic, Iterator, List, Optional, Tuple, TypeVar

from .dsindex import DS_CLASS


@dataclass
class Guest:
    """What every guest has; a module's own guests add their fields."""

    key: str
    uuid: bytes               # 16 bytes
    ds_index: int = 0
    stopped_at: Optional[float] = None    # monotonic time it was seen stopped; None running

    @property
    def source(self) -> Tuple[int, int]:
        return DS_CLASS, self.ds_index

    @property
    def running(self) -> bool:
        return self.stopped_at is None


G = TypeVar("G", bound=Guest)


class GuestBook(Generic[G]):
    """The known guests by key.  ``claim(uuid)`` and ``release(uuid)`` are the agent's
    data source table (``Context.claim_ds_index``)."""

    def __init__(self, claim: Callable[[bytes], int], release: Callable[[bytes], None],
                 clock: Callable[[], float] = time.monotonic):
        self.claim = claim
        self.release = release
        self.clock = clock
        self.guests: Dict[str, G] = {}
        self.by_ds: Dict[int, G] = {}

    def __iter__(self) -> Iterator[G]:
        return iter(list(self.guests.values()))

    def __len__(self) -> int:
        return len(self.guests)

    def running_count(self) -> int:
        """virt_node's num_domains: the guests running now."""
        return sum(1 for g in self.guests.values() if g.running)

    def get(self, key: str) -> Optional[G]:
        return self.guests.get(key)

    def add(self, guest: G) -> Optional[G]:
        """Make ``guest`` known; None if no data source number is free."""
        guest.ds_index = self.claim(guest.uuid)
        if not guest.ds_index:
            return None
        self.guests[guest.key] = guest
        self.by_ds[guest.ds_index] = guest
        return guest

    def stopped(self, guest: G) -> None:
        if guest.stopped_at is None:
            guest.stopped_at = self.clock()

    def started(self, guest: G) -> None:
        guest.stopped_at = None

    def forget(self, guest: G) -> None:
        if self.guests.pop(guest.key, None) is not None:
            self.by_ds.pop(guest.ds_index, None)
            self.release(guest.uuid)

    def expire(self, forget_vms: float) -> List[G]:
        """Forget the guests stopped ``forget_vms`` seconds ago or more; those forgotten."""
        now = self.clock()
        gone = [g for g in self.guests.values()
                if g.stopped_at is not None and now - g.stopped_at >= forget_vms]
        for guest in gone:
            self.forget(guest)
        return gone

    def clear(self) -> None:
        for guest in list(self.guests.values()):
            self.forget(guest)

    def sources(self) -> List[Tuple[int, int]]:
        return [g.source for g in self.guests.values()]
