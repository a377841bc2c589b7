"""What modules ask of the agent's ports: taps on devices and names for them.

hsflowd's modules ask mod_pcap and mod_epcap for a tap on a device they found (mod_k8s, for
a pod's host-side veth: its GET_TAP event), and set an alias that the port's counter sample
then carries as its name (setIfAlias with setIfName).  Here a module publishes both through
its ``Context`` (``request_taps``, ``name_ports``); no module reads another's state.  The
board keeps each module's requests, and the agent hands their union to every module in
``AgentState`` (``requested_taps``, ``port_names``) with ``changed`` naming "ports", at the
next tick after they change: ``pcap {}`` and ``epcap {}`` then tap what their
``dynamic = on`` rules select among the requested devices, and the interface counters go
out with the names.  A module that stops takes its requests with it.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Iterable, Mapping


class PortBoard:
    """Every module's requests; ``taps`` and ``names`` are their union (a port named by two
    modules takes the name of the one first in ``modules.ORDER``)."""

    def __init__(self):
        self._taps: Dict[str, FrozenSet[int]] = {}
        self._names: Dict[str, Dict[int, str]] = {}
        self.taps: FrozenSet[int] = frozenset()
        self.names: Mapping[int, str] = {}
        self.changed = False

    def request_taps(self, owner: str, ifindexes: Iterable[int]) -> None:
        wanted = frozenset(ifindexes)
        if self._taps.get(owner, frozenset()) != wanted:
            self._taps[owner] = wanted
            self._union()

    def name_ports(self, owner: str, names: Mapping[int, str]) -> None:
        if self._names.get(owner, {}) != names:
            self._names[owner] = dict(names)
            self._union()

    def release(self, owner: str) -> None:
        taps, names = self._taps.pop(owner, None), self._names.pop(owner, None)
        if taps or names:
            self._union()

    def _union(self) -> None:
        from . import ORDER
        taps: set = set()
        names: Dict[int, str] = {}
        for owner in sorted(set(self._taps) | set(self._names),
                            key=lambda o: ORDER.index(o) if o in ORDER else len(ORDER)):
            taps |= self._taps.get(owner, frozenset())
            for ifindex, name in self._names.get(owner, {}).items():
                names.setdefault(ifindex, name)
        if taps != self.taps or names != self.names:
            self.taps, self.names = frozenset(taps), names
            self.changed = True
