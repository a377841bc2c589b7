"""Interface counters, 0:ifIndex: if_counters (1), ethernet_counters (2), port_name (1005).

As in hsflowd, interfaces are polled on demand only: the devices a pcap {} or epcap {} rule
selects (a dynamic rule: among those modules asked to have tapped), and the ports of a
selected bridge unless its rule says vport=off.  Which ones is a function of the
configuration, the interface table and those requests, decided again when one changes.
A port a module named (k8s {}'s pod veths, with setIfName) carries that name in 1005.
"""

from __future__ import annotations

from typing import Collection, Dict, List, Mapping, Sequence

from ..samplers.rules import select_interfaces
from ..sflow import Record
from ..sources.ifcounters import interface_counters
from . import AgentState, DataSource, Module, register


def polled_interfaces(config, interfaces, requested: Collection[int] = ()) -> Dict[int, object]:
    """ifindex -> the rule that makes it polled."""
    chosen = select_interfaces(list(config.pcap) + list(config.epcap), interfaces, requested)
    for ifindex, rule in list(chosen.items()):
        iface = interfaces.get(ifindex)
        if iface is not None and iface.kind == "bridge" and rule.vport is not False:
            for port in interfaces:
                if port.master == ifindex:
                    chosen.setdefault(port.ifindex, rule)
    return chosen


@register("interfaces", enabled=lambda config: bool(config.pcap or config.epcap))
class InterfaceCounters(Module):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.sources: List[DataSource] = []
        self.names: Mapping[int, str] = {}

    def reconcile(self, state: AgentState) -> None:
        if state.changed & {"config", "interfaces", "ports"}:
            polled = polled_interfaces(state.config, state.interfaces, state.requested_taps)
            self.sources = [(0, i) for i in sorted(polled)]
            self.names = state.port_names

    def counter_sources(self):
        return self.sources

    def counters(self, due: Sequence[DataSource]) -> Dict[DataSource, List[Record]]:
        table = self.ctx.interfaces
        stats = self.ctx.link_stats([index for _, index in due])
        out = {}
        for source in due:
            iface = table.get(source[1])
            if iface is not None and source[1] in stats:
                out[source] = interface_counters(iface, stats[source[1]],
                                                 self.names.get(source[1]))
        return out
