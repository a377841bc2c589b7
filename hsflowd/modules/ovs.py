"""``ovs {}``: Open vSwitch's own sFlow agent pointed at the same collectors, agent device,
sampling, polling and header size, through OVSDB (hsflowd's mod_ovs).

The sync runs on a thread of its own (``hsflowd.ovs``); this module tells it the settings
whenever the configuration, the agent address or the resolved collectors change, and a new
``db=`` replaces the connection.  On close our sFlow row is removed from every bridge.
"""

from __future__ import annotations

from . import AgentState, Module, register


def _privileges(config):
    # OVSDB's unix socket belongs to root (or openvswitch): connecting needs write access
    db = config.ovs.db or "unix:"
    return {"CAP_DAC_OVERRIDE"} if db.startswith("unix:") else set()


@register("ovs", enabled=lambda config: config.ovs is not None, privileges=_privileges)
class OvsModule(Module):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.sync = None
        self.db = None
        self.settings = None       # what the sync thread was last told

    def reconcile(self, state: AgentState) -> None:
        from ..ovs import OvsSync, SflowSettings  # the ovs package only with ovs {}
        c = state.config
        if self.sync is None or c.ovs.db != self.db:
            if self.sync is not None:
                self.log.info("Open vSwitch: db changed to %s", c.ovs.db or "the default")
                self.sync.stop(cleanup=True)
            self.db = c.ovs.db
            self.sync = OvsSync(c.ovs.db)
            self.sync.start()
            self.settings = None
        targets = tuple(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                        for host, port in state.targets)
        device = state.agent.device if state.agent is not None else None
        settings = SflowSettings(agent=device or "", header=c.header_bytes,
                                 polling=c.polling, sampling=c.sampling, targets=targets)
        if settings != self.settings:   # not a wake-up of the thread per interface event
            self.settings = settings
            self.sync.update(settings)

    def status(self):
        return {"ovs": self.sync.status if self.sync is not None else "stopped"}

    def close(self) -> None:
        if self.sync is not None:
            self.sync.stop(cleanup=True)   # hsflowd removes what it added on a clean exit
            self.sync = None
