"""The host data source, 2:1: hsflowd's host sample (structures 2000-2010).

Always on.  The records come from ``sources.host`` (psutil first, /proc where psutil has no
value); the interface table gives host_adapters (2001) and the devices summed into
host_net_io (2006).  The host UUID is decided once by the agent (it may need root to read
the DMI UUID) and handed over in the state.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

from ..sflow import Record
from ..sources.host import HostSource
from ..sources.ifcounters import host_adapters, nio_interfaces
from . import HOST_SOURCE, AgentState, DataSource, Module, register


@register("host", enabled=lambda config: True)
class HostModule(Module):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.source = None
        self.uuid = None

    def reconcile(self, state: AgentState) -> None:
        if self.source is None or state.host_uuid != self.uuid:
            self.uuid = state.host_uuid
            self.source = HostSource(uuid=str(self.uuid))

    def counter_sources(self):
        return (HOST_SOURCE,)

    def counters(self, due: Sequence[DataSource]) -> Dict[DataSource, List[Record]]:
        table = self.ctx.interfaces
        return {HOST_SOURCE: self.source.records(host_adapters(table), nio_interfaces(table))}
