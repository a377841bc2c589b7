"""``kvm {}``: every libvirt domain is a data source (3:N), as in hsflowd's mod_kvm.

The connection is read-only, to ``uri`` (new in this agent; qemu:///system by default), and
is made off the loop's thread (``virt.libvirtapi``).  The active domains are listed when
it is made, every ``refreshVMs`` seconds, and when a lifecycle event says one started;
each domain's XML gives its interfaces (the host's tap device and the guest's MAC) and
disks.  A poll asks libvirt for the due domains' statistics in one call (state, CPU time,
vCPUs, balloon, interfaces, disks), and waits for them half a second at most.

The records are hsflowd's: host_descr with the domain's name and UUID, host_parent (2:1),
virt_net_io summed over its interfaces as the guest sees them (libvirt swaps a tap's
counters), virt_cpu, virt_memory (balloon current and maximum), virt_disk_io (capacity and
allocation, requests and bytes) and host_adapters (the tap's ifIndex here, the guest's
MAC).  A domain that stops is still reported, shut off, until ``forgetVMs`` has passed.

Privileges: libvirtd lets an unprivileged client open its read-only socket only after
polkit says yes, over D-Bus, which a host without a system bus (a container, this agent's
test machines) does not have; so, as hsflowd's mod_kvm, the module keeps root.  The test
driver (``test:///...``) runs inside the agent and needs nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from ..sflow import Record
from ..virt import libvirtapi as lva
from ..virt.guests import Guest
from ..virt.handover import Busy
from ..virt.records import DiskIo, GuestReading, NetIo, VirState, guest_records
from . import ROOT, AgentState, DataSource, register
from .guests import GuestsModule

NET_FIELDS = ("rx.bytes", "rx.pkts", "rx.errs", "rx.drop", "tx.bytes", "tx.pkts", "tx.errs",
              "tx.drop")
BLOCK_FIELDS = ("rd.reqs", "rd.bytes", "wr.reqs", "wr.bytes", "errors", "capacity",
                "allocation")


def uri_of(config) -> str:
    return config.kvm.uri or lva.DEFAULT_URI


def _privileges(config):
    return set() if uri_of(config).startswith("test:") else {ROOT}


@dataclass
class Domain(Guest):
    """One domain the module reports (key: its UUID as text)."""

    info: Optional[lva.DomainInfo] = None      # name and devices, from the list
    stats: Optional[Dict[str, Any]] = None     # the last statistics libvirt gave

    @property
    def name(self) -> str:
        return self.info.name if self.info is not None else self.key


def reading_of(d: Domain, ifindex_of) -> GuestReading:
    """A domain's last statistics as the records' values."""
    s = d.stats or {}
    net = lva.sum_prefixed(s, "net", NET_FIELDS)
    blk = lva.sum_prefixed(s, "block", BLOCK_FIELDS)
    state = s.get("state.state", VirState.NOSTATE) if d.running else VirState.SHUTOFF
    capacity, allocation = blk["capacity"] or 0, blk["allocation"] or 0
    return GuestReading(
        hostname=d.name, uuid=d.uuid, state=int(state),
        cpu_ns=s.get("cpu.time"), vcpus=int(s.get("vcpu.current", 0) or 0),
        memory=int(s.get("balloon.current", 0) or 0) * 1024,
        max_memory=int(s.get("balloon.maximum", 0) or 0) * 1024,
        disk=DiskIo(capacity=capacity, allocation=allocation,
                    available=max(capacity - allocation, 0),
                    rd_req=blk["rd.reqs"], rd_bytes=blk["rd.bytes"], wr_req=blk["wr.reqs"],
                    wr_bytes=blk["wr.bytes"], errs=blk["errors"]),
        net=NetIo(rx_bytes=net["rx.bytes"], rx_packets=net["rx.pkts"], rx_errs=net["rx.errs"],
                  rx_drop=net["rx.drop"], tx_bytes=net["tx.bytes"], tx_packets=net["tx.pkts"],
                  tx_errs=net["tx.errs"], tx_drop=net["tx.drop"]),
        adapters=tuple((ifindex_of(dev), mac) for dev, mac in d.info.interfaces))


@register("kvm", enabled=lambda config: config.kvm is not None, privileges=_privileges)
class KvmModule(GuestsModule):
    RETRY_MIN, RETRY_MAX = 2.0, 60.0

    def __init__(self, ctx, clock=time.monotonic):
        super().__init__(ctx, clock)
        self.uri: Optional[str] = None
        self.libvirt = None
        self.skipped_polls = 0

    # ------------------------------------------------------------ life cycle
    def reconcile(self, state: AgentState) -> None:
        if "config" not in state.changed:
            return
        c = state.config
        self.set_intervals(c.kvm.refresh_vms or c.refresh_vms, c.kvm.forget_vms or c.forget_vms)
        self.set_vnode_role(c)
        uri = uri_of(c)
        if uri != self.uri:
            if self.uri is not None:
                self.log.info("kvm {}: uri changed to %s", uri)
                self._drop_link()
                self.book.clear()
                self.said.clear()
                self.retry_at, self.retry = 0.0, self.RETRY_MIN
            self.uri = uri

    def _forgotten(self, gone: Domain) -> None:
        self.log.info("domain %s forgotten (stopped %d s ago)", gone.name, self.forget)

    # ------------------------------------------------------------ the connection
    def _connect(self, now: float) -> None:
        if self.libvirt is None:
            try:
                self.libvirt = lva.load_libvirt()
            except lva.LibvirtUnavailable as e:
                self.unavailable = str(e)
                self.log.warning("kvm {}: %s; domains are not reported", e)
                return
        self.retry_at = now + self.retry     # until Connected says otherwise
        self._open_link(lva.LibvirtLink(self.libvirt, self.uri))

    def _say_lost(self, reason: str) -> None:
        self.log.warning("kvm {}: lost libvirt at %s (%s); trying again", self.uri, reason)

    def _say_unreachable(self, reason: str) -> None:
        self._once("unreachable", "kvm {}: cannot open %s read-only (%s); trying again "
                   "every %d s", self.uri, reason, int(self.RETRY_MAX))

    def _handle(self, m) -> None:
        if isinstance(m, lva.Domains):
            self._listed(m)
        elif isinstance(m, lva.Lifecycle):
            self._lifecycle(m)
        elif isinstance(m, lva.Connected):
            self.log.info("kvm {}: connected to %s (libvirt %s)", self.uri, m.version)
            self._connected()
        elif isinstance(m, lva.Lost):
            self._lost(m.reason)
        elif isinstance(m, lva.CallFailed):
            self.log.debug("kvm {}: %s failed: %s", m.what, m.reason)

    def _listed(self, listed: lva.Domains) -> None:
        active = set()
        for info in listed.domains:
            key = _key(info.uuid)
            active.add(key)
            d = self.book.get(key)
            if d is None:
                d = self.book.add(Domain(key=key, uuid=info.uuid))
                if d is None:
                    self._once("full", "kvm {}: every data source number is taken; domain "
                               "%s is not reported", info.name)
                    continue
                self.log.info("domain %s: data source 3:%d", info.name, d.ds_index)
            d.info = info
            self.book.started(d)
        for d in self.book:
            if d.running and d.key not in active:
                self.book.stopped(d)

    def _lifecycle(self, e: lva.Lifecycle) -> None:
        d = self.book.get(_key(e.uuid))
        if e.event in (lva.EVENT_STARTED, lva.EVENT_RESUMED) and (d is None or not d.running):
            self.link.list()         # a new domain, or one back: its devices may be new too
        elif e.event in (lva.EVENT_STOPPED, lva.EVENT_CRASHED) and d is not None:
            self.book.stopped(d)
        if d is not None and d.stats is not None:
            if e.event == lva.EVENT_SUSPENDED:
                d.stats["state.state"] = VirState.PAUSED
            elif e.event == lva.EVENT_RESUMED:
                d.stats["state.state"] = VirState.RUNNING

    # ------------------------------------------------------------ counters
    def counter_sources(self):
        return self.book.sources()

    def counters(self, due: Sequence[DataSource]) -> Dict[DataSource, List[Record]]:
        domains = [d for d in (self.book.by_ds.get(s[1]) for s in due) if d is not None]
        if not self.connected:
            # no fresh numbers while libvirt is away: only what is known for good (shut off)
            domains = [d for d in domains if not d.running]
        running = [d.info for d in domains if d.running]
        if running:
            try:
                stats = self.link.stats(running)
            except Busy:
                self.skipped_polls += 1
                self.log.debug("kvm {}: libvirt did not answer in time; this poll skipped")
                return {}
            except Exception as e:      # a libvirt error: this poll only
                self.log.debug("kvm {}: statistics failed: %s", e)
                return {}
            for d in domains:
                if d.uuid in stats:
                    d.stats = stats[d.uuid]
        table = self.ctx.interfaces

        def ifindex_of(dev: str) -> int:
            iface = table.by_name(dev) if table is not None else None
            return iface.ifindex if iface is not None else 0

        return {d.source: guest_records(reading_of(d, ifindex_of))
                for d in domains if d.stats is not None}

    def status(self):
        return {"kvm": {"uri": self.uri, "connected": self.connected,
                        "domains": len(self.book),
                        "running": self.book.running_count(),
                        "libvirt_calls": self.link.calls if self.link else 0,
                        "skipped_polls": self.skipped_polls}}


def _key(uuid16: bytes) -> str:
    return bytes(uuid16).hex()
