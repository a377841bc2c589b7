"""``nflog {}``: packets that an iptables ``-m statistic ... -j NFLOG`` rule hands over.

The kernel draws the packets; the module binds the NFLOG group, sub-samples to the wanted
rate and frames flow samples.  With ``iptables=on`` it also adds and removes the rule.
"""

from __future__ import annotations

from ..samplers.nflog import NflogSampler
from . import AgentState, Module, register


def _privileges(config):
    # binding an NFLOG group needs CAP_NET_ADMIN; python-iptables also opens a raw socket
    return {"CAP_NET_ADMIN", "CAP_NET_RAW"} if config.nflog.manage_rule else {"CAP_NET_ADMIN"}


@register("nflog", enabled=lambda config: config.nflog is not None, privileges=_privileges)
class NflogModule(Module):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.sampler = None

    def reconcile(self, state: AgentState) -> None:
        c = state.config
        if self.sampler is None:
            self.sampler = NflogSampler(c.nflog, c.sampling, c.header_bytes, self.ctx.emit,
                                        watcher=self.ctx, writer=self.ctx.writer)
        elif "config" in state.changed:
            self.sampler.update(c.nflog, c.sampling, c.header_bytes)
        if "interfaces" in state.changed:
            table = state.interfaces
            self.sampler.forget(lambda ifindex: table.get(ifindex) is not None)

    def tick(self, now: float) -> None:
        self.sampler.tick({})

    def status(self):
        table = self.ctx.interfaces
        out = []
        for entry in self.sampler.status():
            iface = table.get(entry.pop("ifindex"))
            out.append({"ifname": iface.name if iface else f"nflog group {self.sampler.config.group}",
                        **entry})
        return {"samplers": out}

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
