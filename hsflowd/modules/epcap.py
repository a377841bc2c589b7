"""``epcap {}``: packet sampling by an eBPF program on the tc hooks (through bcc), which
knows each packet's direction.

Where bcc is missing or cannot compile the program, the module says why once and samples
the same interfaces with classic BPF instead; each new configuration revision tries bcc
again.  An interface that a ``pcap {}`` rule also selects is left to ``pcap {}``.
"""

from __future__ import annotations

from ..samplers.cbpf import ClassicBpfSampler
from ..samplers.rules import select_interfaces, wanted_taps
from . import AgentState, register
from .pcap import TapModule

# tc needs CAP_NET_ADMIN, the promiscuous socket CAP_NET_RAW, maps and perf buffers
# CAP_BPF and CAP_PERFMON (Linux 5.8+; CAP_SYS_ADMIN before)
EBPF_CAPABILITIES = ("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_NET_RAW")


@register("epcap", enabled=lambda config: bool(config.epcap),
          privileges=lambda config: EBPF_CAPABILITIES)
class EpcapModule(TapModule):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.sampler = None
        self.fallback = False
        self._make()

    def _make(self) -> None:
        from ..samplers.ebpf import EbpfSampler, EbpfUnavailable  # bcc only with epcap {}
        ctx = self.ctx
        try:
            sampler = EbpfSampler(ctx.emit, lambda: ctx.interfaces, watcher=ctx,
                                  writer=ctx.writer)
        except EbpfUnavailable as e:
            if not self.fallback:
                self.log.warning("epcap: %s; sampling with classic BPF instead", e)
            if self.sampler is None:
                self.sampler = ClassicBpfSampler(ctx.emit, lambda: ctx.interfaces, watcher=ctx,
                                                 writer=ctx.writer)
                self.sampler.label = "epcap (classic BPF)"
            self.fallback = True
            return
        if self.sampler is not None:
            self.sampler.close()
            self.log.info("epcap: bcc works now; sampling with eBPF")
        self.sampler, self.fallback = sampler, False

    def reconcile(self, state: AgentState) -> None:
        if self.fallback and "config" in state.changed and state.revision > 1:
            self._make()    # try bcc again on each new configuration
        if state.changed & {"config", "interfaces"}:
            config = state.config
            pcap = select_interfaces(config.pcap, state.interfaces) if config.pcap else {}
            self.sampler.update(wanted_taps(config, state.interfaces, config.epcap, exclude=pcap))
