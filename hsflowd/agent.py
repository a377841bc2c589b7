"""The agent: one thread, one select loop, a tick every second.

Each tick runs the counter pollers that are due and flushes the open datagram, so no sample
waits more than a second (the spec's limit).  Netlink events keep the interface table and
the agent address current between ticks.  Signals only set a flag (SIGHUP reload, SIGTERM
or SIGINT stop); the loop acts on it, so a reload never interrupts a half-built datagram.
"""

from __future__ import annotations

import gc
import logging
import selectors
import signal
import socket
import time
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Dict, List, Optional

from . import config as cfg
from .address import AgentAddress, elect_agent_address
from .collectors import Collectors, Destination
from .pollers import Poller, PollerSet
from .samplers import Sampler, Tap
from .samplers.cbpf import ClassicBpfSampler
from .samplers.rules import select_interfaces
from .sflow import DatagramBuilder, Record
from .sources.host import HostSource
from .sources.interfaces import InterfaceTable, host_adapters, interface_counters, nio_interfaces

log = logging.getLogger("hsflowd")

HOST_SOURCE = (2, 1)          # the physical host: entPhysicalEntry 1
TICK = 1.0


@dataclass
class Options:
    """What the command line adds to the config file."""

    config_path: str = "/etc/hsflowd.conf"
    auto_path: Optional[str] = "/etc/hsflowd.auto"
    uuid: Optional[str] = None
    machine_id: Optional[str] = None


class StartupError(RuntimeError):
    """The agent cannot start (one line for the operator)."""


class Agent:
    """The running agent: its sources, samplers and collectors, and the loop that drives them."""

    def __init__(self, config: cfg.Config, options: Options):
        self.options = options
        self.config = config
        self.revision = 0
        self.stopping = False
        self.reload_requested = False
        self.reported_unsupported: set = set()
        try:
            self.host = HostSource(uuid=options.uuid or config.uuid, machine_id=options.machine_id)
        except ValueError as e:  # -u, uuid= or -m that is not 32 hex digits
            where = "-u" if options.uuid else f"{config.path}: uuid" if config.uuid else "-m"
            raise StartupError(f"{where}: {e}") from None
        self.interfaces = InterfaceTable()
        self.pollers = PollerSet()
        self.collectors: Optional[Collectors] = None
        self.address: Optional[AgentAddress] = None
        self.builder: Optional[DatagramBuilder] = None
        self.samplers: Dict[str, Sampler] = {}
        self.ovs = None  # an OvsSync with ovs {}
        self.sel = selectors.DefaultSelector()
        self.sampler_fds: Dict[int, Sampler] = {}
        self.next_refresh = 0.0
        self.agent_ip: Optional[str] = None
        self.ebpf_unavailable: Optional[str] = None
        self._link_stats: Dict = {}
        self.oversized_reported = 0
        self.next_oversized_report = 0.0
        self.apply(config, first=True)
        if self.address is None:
            raise StartupError("no usable agent address: no interface has an IP address "
                               "(set agentIP= in the config)")

    # ------------------------------------------------------------ configuration
    def apply(self, config: cfg.Config, first: bool = False) -> None:
        """Make ``config`` the running configuration (at start and on every reload)."""
        self.config = config
        for warning in config.warnings:
            log.warning("%s", warning)
        for block in config.unsupported:
            if block not in self.reported_unsupported:
                self.reported_unsupported.add(block)
                log.warning("%s: %s {} is not supported yet; ignored", config.path, block)
        if self.collectors is not None:
            self.flush()
            self.collectors.close()
        self.collectors = Collectors(Destination(
            host=c.ip, port=c.udpport, dev=c.dev, namespace=c.namespace,
            where=f"{config.path}:{c.line}") for c in config.collectors)
        self.agent_ip = self.configured_agent_ip()  # resolved once per revision, not per event
        self.ebpf_unavailable = None                 # try bcc again on each revision
        self.elect()
        self.update_nflog()       # interfaces do not matter to it: only on a new revision
        self.update_samplers()
        self.update_pollers(first=first)
        self.update_ovs()
        self.next_refresh = time.monotonic() + config.refresh_adaptors
        self.revision += 1
        self.write_auto()
        log.info("configuration revision %d: %d collector(s), polling %d s, agent %s",
                 self.revision, len(config.collectors), config.polling,
                 self.address.ip if self.address else "none")

    def sub_agent_id(self) -> int:
        """hsflowd sends from subAgentId when packets are sampled, subAgentId+1 when only
        counters are (its poll agent), so the sub-agent id a collector sees stays the same."""
        c = self.config
        sampling = bool(c.pcap or c.epcap or c.nflog)
        return c.sub_agent_id + (0 if sampling else 1)

    def configured_agent_ip(self) -> Optional[str]:
        """agentIP as an address (a host name is resolved), or None to elect one."""
        c = self.config
        if c.agent_ip is None:
            return None
        try:
            return str(ip_address(c.agent_ip))
        except ValueError:
            pass
        try:
            return socket.getaddrinfo(c.agent_ip, None)[0][4][0]
        except OSError as e:
            log.warning("%s: agentIP %s does not resolve (%s); electing an address instead",
                        c.path, c.agent_ip, e)
            return None

    def elect(self) -> None:
        """Elect the agent address; a new address (or sub-agent) starts a new datagram
        sequence and uptime, as hsflowd does."""
        c = self.config
        address = elect_agent_address(self.interfaces, agent_ip=self.agent_ip,
                                      agent_device=c.agent_device,
                                      cidrs=[(a.network, a.exclude) for a in c.agent_cidrs])
        old = self.address
        if (old and old.ip) != (address and address.ip):
            if old is not None:
                log.info("agent address %s -> %s", old.ip, address.ip if address else "none")
            self.flush()
            self.builder = None
        self.address = address
        if address is None:
            return
        sub_agent = self.sub_agent_id()
        if self.builder is not None and self.builder.sub_agent_id == sub_agent:
            self.builder.datagram_bytes = c.datagram_bytes
            return
        self.flush()
        self.builder = DatagramBuilder(address.ip, sub_agent, self.send,
                                       datagram_bytes=c.datagram_bytes)
        self.oversized_reported = 0

    # ------------------------------------------------------------ Open vSwitch
    def update_ovs(self) -> None:
        """With ``ovs {}``, point Open vSwitch's own sFlow agent at the same collectors, with
        the same agent device, sampling, polling and header size (hsflowd's mod_ovs)."""
        c = self.config
        if c.ovs is None:
            if self.ovs is not None:
                self.ovs.stop(cleanup=True)
                self.ovs = None
            return
        from .ovs import OvsSync, SflowSettings  # only with ovs {}
        if self.ovs is None:
            self.ovs = OvsSync(c.ovs.db)
            self.ovs.start()
        targets = []
        for d in self.collectors.destinations:
            # OVS sends from its own namespace, to addresses: names must have resolved
            if d.address is not None and d.namespace is None:
                host = d.address[0]
                targets.append(f"[{host}]:{d.port}" if ":" in host else f"{host}:{d.port}")
        device = self.address.device if self.address else None
        self.ovs.update(SflowSettings(agent=device or "", header=c.header_bytes, polling=c.polling,
                                      sampling=c.sampling, targets=tuple(targets)))

    def write_auto(self) -> None:
        path = self.options.auto_path
        if not path:
            return
        a = self.address
        text = cfg.render_auto(self.config, self.revision, self.host.host_descr().hostname,
                               str(a.ip) if a else None, a.device if a else None)
        try:
            cfg.write_auto(path, text)
        except OSError as e:
            log.warning("cannot write %s: %s", path, e.strerror or e)

    # ------------------------------------------------------------ counters
    def polled_interfaces(self) -> Dict[int, object]:
        """Interfaces that get counter samples: those a pcap/epcap block selects, and the
        ports of a selected bridge unless its rule says vport=off (hsflowd's default is on
        for bridges)."""
        chosen = select_interfaces(list(self.config.pcap) + list(self.config.epcap), self.interfaces)
        for ifindex, rule in list(chosen.items()):
            iface = self.interfaces.get(ifindex)
            if iface is not None and iface.kind == "bridge" and rule.vport is not False:
                for port in self.interfaces:
                    if port.master == ifindex:
                        chosen.setdefault(port.ifindex, rule)
        return chosen

    # ------------------------------------------------------------ packet sampling
    def taps(self, rules) -> Dict[int, Tap]:
        c = self.config
        out = {}
        for ifindex, rule in select_interfaces(rules, self.interfaces).items():
            iface = self.interfaces.get(ifindex)
            rate = cfg.sampling_rate_for(c, iface.speed, iface.oper_up, rule.sampling)
            out[ifindex] = Tap(ifindex, iface.name, rate, c.header_bytes, rule.promisc_for(iface.kind == "bridge"),
                               iface.kind == "bridge")
        return out

    def update_samplers(self) -> None:
        """Open, re-open or close taps to match the config and the interfaces present.

        ``epcap {}`` interfaces go to the eBPF sampler; where bcc is missing or cannot
        compile, that is logged once per revision and they are sampled with classic BPF."""
        c = self.config
        pcap = self.taps(c.pcap) if c.pcap else {}
        epcap = self.taps(c.epcap) if c.epcap else {}
        if epcap and "epcap" not in self.samplers and self.ebpf_unavailable is None:
            from .samplers.ebpf import EbpfSampler, EbpfUnavailable  # only with epcap {}
            try:
                self.samplers["epcap"] = EbpfSampler(self.emit, lambda: iter(self.interfaces))
            except EbpfUnavailable as e:
                self.ebpf_unavailable = str(e)
                log.warning("epcap: %s; sampling with classic BPF instead", e)
        if "epcap" in self.samplers:
            self.samplers["epcap"].update({i: t for i, t in epcap.items() if i not in pcap})
        else:
            pcap = {**epcap, **pcap}  # a pcap {} rule wins where both select an interface
        if pcap and "pcap" not in self.samplers:
            self.samplers["pcap"] = ClassicBpfSampler(self.emit, lambda: iter(self.interfaces))
        if "pcap" in self.samplers:
            self.samplers["pcap"].update(pcap)
        for name, taps in (("pcap", pcap), ("epcap", epcap)):
            if not taps and name in self.samplers:
                self.samplers.pop(name).close()
        self.register_sampler_fds()

    def update_nflog(self) -> None:
        """``nflog {}`` samples what an iptables rule hands over, whatever the interfaces."""
        c = self.config
        current = self.samplers.get("nflog")
        if c.nflog is None:
            if current is not None:
                self.samplers.pop("nflog").close()
        elif current is None:
            from .samplers.nflog import NflogSampler  # only with nflog {}
            self.samplers["nflog"] = NflogSampler(c.nflog, c.sampling, c.header_bytes, self.emit)
        else:
            current.update(c.nflog, c.sampling, c.header_bytes)

    def register_sampler_fds(self) -> None:
        current = {fd: s for s in self.samplers.values() for fd in s.fds()}
        for fd in [fd for fd in self.sampler_fds if fd not in current]:
            self.sel.unregister(fd)
            del self.sampler_fds[fd]
        for fd, sampler in current.items():
            if fd not in self.sampler_fds:
                self.sel.register(fd, selectors.EVENT_READ, sampler)
                self.sampler_fds[fd] = sampler

    def update_pollers(self, first: bool = False) -> None:
        interval = self.config.polling
        wanted = {HOST_SOURCE}
        self.pollers.ensure(HOST_SOURCE, interval, first=1 if first else None)
        for ifindex in self.polled_interfaces():
            source = (0, ifindex)
            wanted.add(source)
            self.pollers.ensure(source, interval)
        self.pollers.keep_only(wanted)

    def read_counters(self, due: List[Poller]) -> Dict[tuple, List[Record]]:
        out: Dict[tuple, List[Record]] = {}
        ifaces = [p.source[1] for p in due if p.source[0] == 0]
        if ifaces:
            stats = self.link_stats(ifaces)
            for ifindex in ifaces:
                iface = self.interfaces.get(ifindex)
                if iface is not None and ifindex in stats:
                    out[(0, ifindex)] = interface_counters(iface, stats[ifindex])
        if any(p.source == HOST_SOURCE for p in due):
            out[HOST_SOURCE] = self.host.records(host_adapters(self.interfaces),
                                                 nio_interfaces(self.interfaces))
        return out

    # ------------------------------------------------------------ datagrams
    def emit(self, sample: bytes) -> None:
        if self.builder is not None:
            self.builder.add(sample)

    def send(self, datagram: bytes) -> None:
        self.collectors.send(datagram)

    def flush(self) -> None:
        if self.builder is not None:
            self.builder.flush()

    # ------------------------------------------------------------ the loop
    def link_stats(self, ifindexes: List[int]) -> Dict:
        """These links' counters, each read at most once per tick."""
        missing = [i for i in ifindexes if i not in self._link_stats]
        if missing:
            self._link_stats.update(self.interfaces.read_counters(missing))
        return self._link_stats

    def tick(self) -> None:
        now = time.monotonic()
        self._link_stats = {}
        if now >= self.next_refresh:
            self.interfaces.refresh()
            # a full dump of hundreds of links leaves pyroute2 objects in reference cycles:
            # collect them now, or the next dumps pile up on top of them
            gc.collect()
            self.on_interfaces_changed()
            self.next_refresh = now + self.config.refresh_adaptors
        self.collectors.tick()
        try:
            if self.samplers:
                sampled = [i for s in self.samplers.values() for i in s.tapped]
                stats = self.link_stats(sampled)
                for sampler in self.samplers.values():
                    sampler.tick(stats)
            self.pollers.poll(self.read_counters, self.emit)
        except Exception:  # one failing source must never stop the agent
            log.exception("counter polling failed")
        self.flush()
        self.report_oversized(now)

    def report_oversized(self, now: float) -> None:
        """Samples that fit no datagram are dropped (datagrams stay under datagramBytes);
        say so, at most once a minute, so a too-small datagramBytes is not a silent loss."""
        b = self.builder
        if b is None or b.oversized == self.oversized_reported or now < self.next_oversized_report:
            return
        log.warning("%s: %d sample(s) dropped: alone they make a datagram of up to %d bytes, "
                    "over datagramBytes=%d; raise datagramBytes", self.config.path,
                    b.oversized - self.oversized_reported, b.largest_oversized + b.header_size,
                    b.datagram_bytes)
        self.oversized_reported = b.oversized
        self.next_oversized_report = now + 60

    def on_interfaces_changed(self) -> None:
        old = self.address
        self.elect()
        self.update_samplers()
        self.update_pollers()
        if self.ovs is not None and (old and old.device) != (self.address and self.address.device):
            self.update_ovs()

    def request_reload(self, *_args) -> None:
        self.reload_requested = True

    def request_stop(self, *_args) -> None:
        self.stopping = True

    def reload(self) -> None:
        self.reload_requested = False
        path = self.options.config_path
        try:
            config = cfg.load_config(path)
        except cfg.ConfigError as e:
            log.error("%s; keeping the running configuration (revision %d)", e, self.revision)
            return
        log.info("reloading %s", path)
        self.apply(config)

    def run(self, ready=None) -> int:
        """Run until SIGTERM/SIGINT.  ``ready()`` is called once the first tick is done."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        handlers = {signal.SIGHUP: self.request_reload, signal.SIGTERM: self.request_stop,
                    signal.SIGINT: self.request_stop}
        previous = {s: signal.signal(s, h) for s, h in handlers.items()}
        sel = self.sel
        sel.register(wake_r, selectors.EVENT_READ, "wakeup")
        sel.register(self.interfaces.fileno(), selectors.EVENT_READ, "netlink")
        try:
            next_tick = time.monotonic()
            while not self.stopping:
                now = time.monotonic()
                if now >= next_tick:
                    self.tick()
                    if ready is not None:
                        ready()
                        ready = None
                    next_tick += TICK
                    if next_tick < now:  # we were suspended or very late: do not catch up
                        next_tick = now + TICK
                    continue
                for key, _ in sel.select(timeout=next_tick - now):
                    if key.data == "wakeup":
                        try:
                            wake_r.recv(4096)
                        except BlockingIOError:
                            pass
                    elif key.data == "netlink":
                        if self.interfaces.handle_events():
                            self.on_interfaces_changed()
                    else:
                        key.data.read(key.fd)
                if self.reload_requested:
                    self.reload()
        finally:
            self.shutdown()
            sel.close()
            signal.set_wakeup_fd(old_wakeup)
            for s, h in previous.items():
                signal.signal(s, h)
            wake_r.close()
            wake_w.close()
        log.info("stopped")
        return 0

    def shutdown(self) -> None:
        for sampler in self.samplers.values():
            sampler.close()
        self.samplers.clear()
        if self.ovs is not None:
            self.ovs.stop(cleanup=True)  # hsflowd removes what it added on a clean exit
            self.ovs = None
        self.flush()
        if self.collectors is not None:
            self.collectors.close()
        self.interfaces.close()
