"""``systemd {}``: every running service is a data source (3:N), as in hsflowd's mod_systemd.

Which services: systemd says, over D-Bus (``virt.systemdapi``, on a thread of its own):
every loaded, active ``*.service`` in system.slice (hsflowd's rule: not users' services)
that has processes.  They are listed on connecting, every ``refreshVMs`` seconds, and
within a second of a unit signal saying that a service started or stopped.  One that
stops goes away at once (hsflowd sends no last sample of it either).

Its data source: named by its unit ("cron.service"), with hsflowd's UUID for it, a type-5
UUID of the unit's name under the host's UUID (the agent address is hashed in too, in
case the host's UUID is not unique); N is hsflowd's hash of that UUID.

Its counters: its cgroup (``sources.cgroups``: v2's cpu.stat, memory.current, memory.max,
cpu.max and io.stat where they exist; on v1, the cpu, cpuacct, memory and blkio groups of
the accounting the unit has on), else the sum over its processes (``sources.processes``:
/proc/PID/stat, statm and io), read in the loop at each poll: a few small files, no D-Bus
call.  Records 2000, 2002, 2101, 2102 and 2103 (no interfaces of its own: no 2104, no
2001); virt_node (2100) in the host sample, unless docker {} or kvm {} sends it.

``markTraffic = on``: a flow hook adds extended_entities (2210) to a sampled packet of a
local socket that a service's process made (``virt.marks.SocketMarks``: the socket's
cgroup, from inet_diag, looked up on a thread), for as long as there is a service.

Privileges: as in hsflowd, the module keeps the agent root unless ``dropPriv = on``:
/proc/PID/io, the disk I/O of a service without I/O accounting, is root's to read (or its
owner's).  Nothing else needs it: systemd answers these calls for anyone, cgroup files and
/proc/PID/stat are readable by all, and inet_diag answers every user.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..sflow import Record
from ..sflow.counters import OsName
from ..sources import cgroups
from ..sources.interfaces import local_addresses
from ..sources.processes import ProcessTotals
from ..virt import systemdapi as api
from ..virt.dsindex import name_uuid
from ..virt.guests import Guest
from ..virt.marks import SocketMarks
from ..virt.process import HostFacts
from ..virt.records import DiskIo, GuestReading, VirState, guest_records, vcpus_of
from . import ROOT, AgentState, DataSource, register
from .guests import GuestsModule

SYSTEM_SLICE = "system.slice"
LOG_INTERVAL = 60.0


def v1_controllers(unit: api.Unit) -> Tuple[str, ...]:
    """The v1 hierarchies where systemd gives the unit a group of its own."""
    out: Tuple[str, ...] = ()
    if unit.cpu_accounting:
        out += ("cpu", "cpuacct")
    if unit.memory_accounting:
        out += ("memory",)
    if unit.io_accounting:
        out += ("blkio",)
    return out


@dataclass
class Service(Guest):
    """One service the module reports (key: its unit's name)."""

    unit: Optional[api.Unit] = None
    group: Optional[cgroups.Cgroup] = None
    tracking: str = ""                     # the group that lists its processes
    cgroup_id: int = 0                     # its v2 group's id (markTraffic)
    totals: ProcessTotals = field(default_factory=ProcessTotals)


def _privileges(config):
    return set() if config.systemd.drop_priv else {ROOT}


@register("systemd", enabled=lambda config: config.systemd is not None, privileges=_privileges)
class SystemdModule(GuestsModule):
    RETRY_MIN, RETRY_MAX = 1.0, 10.0      # seconds between attempts to reach the bus

    def __init__(self, ctx, bus: str = "SYSTEM", clock=time.monotonic, procfs: str = "/proc"):
        super().__init__(ctx, clock)
        self.bus = bus
        self.procfs = procfs
        self.units: Tuple[api.Unit, ...] = ()
        self.identity: Tuple[bytes, bytes] = (bytes(16), bytes(4))   # host UUID, agent IP
        self.mark = False
        self.marks = SocketMarks(ctx.watch, ctx.unwatch)
        self.next_log = 0.0
        self.closed_calls = api.CallCounts()
        self.connects = 0
        try:
            self.mounts: Optional[cgroups.Mounts] = cgroups.read_mounts(procfs)
        except OSError as e:
            self.mounts = None
            self._once("mounts", "systemd {}: cannot read the cgroup mounts (%s): services "
                       "are not reported", e)
        self.host = HostFacts.read()

    # ------------------------------------------------------------ life cycle
    def reconcile(self, state: AgentState) -> None:
        if "config" in state.changed:
            c = state.config
            self.set_intervals(c.systemd.refresh_vms or c.refresh_vms, 0)
            self.set_vnode_role(c)
            self.mark = c.systemd.mark_traffic
            if not self.mark:
                self.marks.close()
        if "interfaces" in state.changed:
            self.marks.local = local_addresses(state.interfaces)
        identity = (state.host_uuid.bytes if state.host_uuid is not None else bytes(16),
                    state.agent.ip.packed if state.agent is not None else bytes(4))
        if identity != self.identity:
            self.identity = identity        # every UUID (and N) is derived from it
            self.book.clear()
            self._apply()
        self._marks_changed()

    def tick(self, now: float) -> None:
        super().tick(now)
        self.marks.tick(now)
        if self.marks.last_error and now >= self.next_log:
            self.log.warning("systemd {}: socket look-ups failing (%d so far): %s",
                             self.marks.errors, self.marks.last_error)
            self.marks.last_error = ""
            self.next_log = now + LOG_INTERVAL

    def close(self) -> None:
        super().close()
        self.marks.close()

    # ------------------------------------------------------------ the connection
    def _connect(self, now: float) -> None:
        try:
            from jeepney.bus import get_bus
        except ImportError:
            self.unavailable = "no jeepney package"
            self.log.warning("systemd {}: the Python package 'jeepney' is not installed "
                             "(apt install python3-jeepney, or pip install jeepney); "
                             "services are not reported")
            return
        try:
            where = get_bus(self.bus)
        except (RuntimeError, KeyError, ValueError) as e:
            self.unavailable = "no usable bus address"
            self.log.warning("systemd {}: cannot use the system bus's address (%s); "
                             "services are not reported", e)
            return
        if not where.startswith("\0") and not os.path.exists(where):
            self._once("absent", "systemd {}: no system bus at %s; services will be "
                       "reported once it is there", where)
            self.retry_at = now + self.RETRY_MAX
            return
        self._open_link(api.SystemdLink(self.bus))

    def _handle(self, m) -> None:
        if isinstance(m, api.Listed):
            self.units = m.units
            self._apply()
            self._marks_changed()
        elif isinstance(m, api.Connected):
            self.connects += 1
            self.said.discard("absent")
            self.log.info("systemd {}: connected to %s over D-Bus", m.version)
            self._connected()
        elif isinstance(m, api.Lost):
            self._lost(m.reason)
        elif isinstance(m, api.CallFailed):
            self.log.debug("systemd {}: %s failed: %s", m.what, m.reason)

    def _say_lost(self, reason: str) -> None:
        self.log.warning("systemd {}: lost the system bus (%s); trying again", reason)

    def _say_unreachable(self, reason: str) -> None:
        self._once("unreachable", "systemd {}: cannot reach systemd on the system bus (%s); "
                   "trying again every %d s", reason, int(self.RETRY_MAX))

    # ------------------------------------------------------------ which services
    def _apply(self) -> None:
        """The services of the last list that have processes are reported; the others
        are not (any more)."""
        if self.mounts is None:
            return
        reported = set()
        for unit in self.units:
            tracking = cgroups.tracking_dir(unit.cgroup, self.mounts)
            if SYSTEM_SLICE not in unit.cgroup or tracking is None:
                continue
            if not cgroups.read_pids(tracking):
                continue                # nothing runs in it (yet): not reported
            s = self.book.get(unit.name)
            if s is None:
                s = self.book.add(Service(key=unit.name,
                                          uuid=name_uuid(uuid.UUID(bytes=self.identity[0]),
                                                         unit.name, self.identity[1])))
                if s is None:
                    self._once("full", "systemd {}: every data source number is taken; "
                               "service %s is not reported", unit.name)
                    continue
                self.log.info("service %s: data source 3:%d", unit.name, s.ds_index)
            reported.add(unit.name)
            self._attach(s, unit, tracking)
        for s in self.book:
            if s.key not in reported:
                self._gone(s)

    def _attach(self, s: Service, unit: api.Unit, tracking: str) -> None:
        if unit != s.unit:
            s.unit, s.tracking = unit, tracking
            s.group = cgroups.Cgroup.of_unit(unit.cgroup, self.mounts, v1_controllers(unit))
        # a service started again has a new group: its id is read on every list
        s.cgroup_id = 0
        if s.group.v2 is not None:
            try:
                s.cgroup_id = os.stat(s.group.v2).st_ino
            except OSError:
                pass

    def _gone(self, s: Service) -> None:
        self.log.info("service %s: stopped, data source 3:%d removed", s.key, s.ds_index)
        self.book.forget(s)

    # ------------------------------------------------------------ counters
    def counter_sources(self):
        return self.book.sources()

    def counters(self, due: Sequence[DataSource]) -> Dict[DataSource, List[Record]]:
        out: Dict[DataSource, List[Record]] = {}
        gone = False
        for source in due:
            s = self.book.by_ds.get(source[1])
            if s is None:
                continue
            pids = cgroups.read_pids(s.tracking)
            if not pids:
                self._gone(s)         # stopped since the last list
                gone = True
                continue
            out[source] = guest_records(self._reading(s, pids))
        if gone:
            self._marks_changed()
        return out

    def _reading(self, s: Service, pids: List[int]) -> GuestReading:
        k = s.group.read()
        cpu_ns, memory, disk = k.cpu_ns, k.memory, None
        if k.rd_bytes is not None:
            disk = DiskIo(rd_req=k.rd_req, rd_bytes=k.rd_bytes, wr_req=k.wr_req,
                          wr_bytes=k.wr_bytes)
        if cpu_ns is None or memory is None or disk is None:
            p = s.totals.read(pids, self.procfs)
            cpu_ns = p.cpu_ns if cpu_ns is None else cpu_ns
            memory = p.memory if memory is None else memory
            disk = disk or DiskIo(rd_bytes=p.rd_bytes, wr_bytes=p.wr_bytes)
        host = self.host
        limit = k.memory_limit or host.memory
        return GuestReading(
            hostname=s.key, uuid=s.uuid, state=VirState.RUNNING, cpu_ns=cpu_ns,
            vcpus=vcpus_of(k.cpu_limit, k.cpus_allowed, host.cpus), memory=memory or 0,
            max_memory=min(limit, host.memory), disk=disk, net=None, adapters=None,
            machine_type=host.machine_type, os_name=int(OsName.LINUX),
            os_release=host.os_release)

    # ------------------------------------------------------------ markTraffic
    def _marks_changed(self) -> None:
        """The flow hook, only while markTraffic is on and there is a service to find."""
        if self.mark and (self.mounts is None or self.mounts.v2 is None):
            self._once("no-v2", "systemd { markTraffic = on }: no cgroup v2 hierarchy here, "
                       "so a socket's service cannot be told; packets are not marked")
        by_cgroup = {s.cgroup_id: s.ds_index for s in self.book if s.cgroup_id}
        self.marks.set_services(by_cgroup if self.mark else {})
        self._hook_marks(bool(self.marks.by_cgroup))

    # ------------------------------------------------------------ status
    def status(self):
        calls = self.calls_made()
        figures = dict(vars(calls))
        signals = figures.pop("signals")
        return {"systemd": {"connected": self.connected, "services": len(self.book),
                            "connects": self.connects, "signals": signals,
                            "dbus_calls": {**figures, "total": calls.total()},
                            "marks": self.marks.status()}}
