"""``pcap {}``: packet sampling with a classic BPF random filter on AF_PACKET rings.

The taps follow the configuration and the interfaces: a rule that selects a device taps it
at the rate hsflowd's rules give it, and reloads, link changes and interfaces that come and
go are applied by retuning, opening or closing taps (``samplers.taps``).
"""

from __future__ import annotations

from ..samplers.cbpf import ClassicBpfSampler
from ..samplers.rules import wanted_taps
from . import AgentState, Module, register


class TapModule(Module):
    """What pcap {} and epcap {} share: a TapSampler fed the interfaces' packet counts (for
    the sample pools, where it wants them) each tick."""

    sampler = None

    def tick(self, now: float) -> None:
        s = self.sampler
        s.tick(self.ctx.interfaces.read_packet_counts(list(s.tapped)) if s.wants_counts else {})

    def status(self):
        return {"samplers": self.sampler.status()}

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()


@register("pcap", enabled=lambda config: bool(config.pcap),
          privileges=lambda config: {"CAP_NET_RAW"})
class PcapModule(TapModule):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.sampler = ClassicBpfSampler(ctx.emit, lambda: ctx.interfaces, watcher=ctx,
                                         writer=ctx.writer)

    def reconcile(self, state: AgentState) -> None:
        if state.changed & {"config", "interfaces"}:
            self.sampler.update(wanted_taps(state.config, state.interfaces, state.config.pcap))
