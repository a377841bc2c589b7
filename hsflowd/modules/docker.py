"""``docker {}``: every container is a data source (3:N), as in hsflowd's mod_docker.

Which containers: the Docker Engine API (``virt.dockerapi``, off the loop's thread).  The
event stream says when one starts, stops, dies, pauses or is renamed; a start is followed
by one inspect (name, hostname, PID, limits, MACs and addresses).  The whole list is read
when the connection is made and every ``refreshVMs`` seconds, to catch what an event
stream cannot (a connection made after the fact).  No API call is made per poll.

The counters: the container's cgroup (``sources.cgroups``: CPU time and limit, memory
used and limit, block I/O; v1 and v2) and its network namespace (``sources.vnic``:
/proc/PID/net/dev for virt_net_io, and, when its devices change, the links for
host_adapters and the host side of its veth).  Its UUID is the first 16 bytes of its id,
its N hsflowd's hash of that UUID.

A container that stops is still reported (state shut off, its last counters) until
``forgetVMs`` seconds have passed.  When the socket goes away the containers stay as they
are (their cgroups can still be read; one whose cgroup disappears has stopped) and the
module connects again when it is back, re-reading the list and inspecting every running
container.

``markTraffic = on``: a flow hook adds extended_entities (2210) to each sampled packet
whose source or destination is a container: by the bridge port it crossed (the host side
of the container's veth), else its IP address, else its MAC.

It keeps root, as hsflowd's mod_docker does: the socket belongs to root (or the docker
group), and entering a container's network namespace needs CAP_SYS_ADMIN.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..sflow import Record
from ..virt import dockerapi as api
from ..virt.guests import Guest
from ..virt.marks import Marks
from ..virt.process import ContainerProcess, HostFacts, ProcessReader, container_reading
from ..virt.records import GuestReading, VirState, guest_records
from . import ROOT, AgentState, DataSource, register
from .guests import SHORT_ID, Books, GuestsModule, unique_names


# Docker's state words and events, as virt_cpu's state (hsflowd's mapping)
STATES = {"running": VirState.RUNNING, "paused": VirState.PAUSED, "created": VirState.NOSTATE,
          "exited": VirState.SHUTDOWN, "dead": VirState.SHUTDOWN,
          "removing": VirState.SHUTDOWN, "restarting": VirState.NOSTATE}
STOP_EVENTS = {"die": VirState.SHUTDOWN, "stop": VirState.SHUTOFF,
               "destroy": VirState.SHUTDOWN}
START_EVENTS = ("start", "restart", "unpause")


@dataclass
class Container(Guest):
    """One container the module reports (key: its id)."""

    name: str = ""
    hostname: str = ""
    state: int = VirState.NOSTATE
    memory_limit: int = 0                      # from inspect, if the cgroup has none
    proc: ContainerProcess = field(default_factory=ContainerProcess)
    macs: Tuple[bytes, ...] = ()               # from inspect
    ips: Tuple[bytes, ...] = ()


@dataclass
class Settings:
    refresh: int = 60
    forget: int = 180
    hostname: bool = False
    mark: bool = False


def settings_of(config) -> Settings:
    d = config.docker
    return Settings(refresh=d.refresh_vms or config.refresh_vms,
                    forget=d.forget_vms or config.forget_vms,
                    hostname=d.hostname, mark=d.mark_traffic)


def uuid_of(container_id: str) -> bytes:
    """hsflowd's container UUID: the first 16 bytes of the 64-hex-digit id."""
    return bytes.fromhex(container_id[:32])


@register("docker", enabled=lambda config: config.docker is not None,
          privileges=lambda config: {ROOT})
class DockerModule(GuestsModule):
    RETRY_MIN, RETRY_MAX = 1.0, 10.0      # seconds between attempts to reach dockerd

    def __init__(self, ctx, url: Optional[str] = None, clock=time.monotonic,
                 procfs: str = "/proc"):
        super().__init__(ctx, clock)
        self.url = url or api.docker_url()
        self.settings = Settings()
        self.resync = False
        self.tickets: Dict[str, int] = {}     # events seen per id: an older inspect loses
        self.books = Books()
        self.closed_calls = api.CallCounts()
        self.marks = Marks()
        self.reader = ProcessReader(self.log, procfs)
        self.host = HostFacts.read()

    # ------------------------------------------------------------ life cycle
    def reconcile(self, state: AgentState) -> None:
        if "config" not in state.changed:
            return
        self.settings = settings_of(state.config)
        self.set_intervals(self.settings.refresh, self.settings.forget)
        self.set_vnode_role(state.config)
        self._marks_changed()

    def _forgotten(self, gone: Container) -> None:
        self.tickets.pop(gone.key, None)
        self._marks_changed()
        self.log.info("container %s forgotten (stopped %d s ago)", gone.name, self.forget)

    # ------------------------------------------------------------ the connection
    def _connect(self, now: float) -> None:
        try:
            import docker  # noqa: F401  (the maintained client; only with docker {})
        except ImportError:
            self.unavailable = "no docker package"
            self.log.warning("docker {}: the Python package 'docker' is not installed "
                             "(pip install docker, or apt install python3-docker); "
                             "containers are not reported")
            return
        path = api.socket_path(self.url)
        if path is not None and not os.path.exists(path):
            self._once("absent", "docker {}: no Docker socket at %s; containers will be "
                       "reported once dockerd is there", path)
            self.retry_at = now + self.RETRY_MAX
            return
        self._open_link(api.DockerLink(self.url))

    def _say_lost(self, reason: str) -> None:
        self.log.warning("docker {}: lost dockerd (%s); trying again", reason)

    def _say_unreachable(self, reason: str) -> None:
        self._once("unreachable", "docker {}: cannot reach dockerd at %s (%s); "
                   "trying again every %d s", self.url, reason, int(self.RETRY_MAX))

    def _handle(self, m) -> None:
        if isinstance(m, api.Event):
            self.books.events += 1
            self._event(m)
        elif isinstance(m, api.Inspected):
            self._inspected(m.info, m.ticket)
        elif isinstance(m, api.Listed):
            self._listed(m)
        elif isinstance(m, api.Connected):
            self.resync = True
            # nothing of the old connection can answer now: forget the ids it left (removed
            # while dockerd was away, or never reported), which the list's inspects redo
            self.tickets = {k: v for k, v in self.tickets.items() if k in self.book.guests}
            self.books.connects += 1
            self.said.discard("absent")
            self.log.info("docker {}: connected to dockerd (API %s)", m.version)
            self._connected()
        elif isinstance(m, api.Gone):
            c = self.book.get(m.id)
            if c is not None and m.ticket == self.tickets.get(m.id, 0):
                self._stopped(c, VirState.SHUTDOWN)
        elif isinstance(m, api.Lost):
            self._lost(m.reason)
        elif isinstance(m, api.CallFailed):
            self.log.debug("docker {}: %s failed: %s", m.what, m.reason)

    # ------------------------------------------------------------ what dockerd says
    def _inspect(self, ident: str) -> None:
        self.link.inspect(ident, self.tickets.get(ident, 0))

    def _event(self, e: api.Event) -> None:
        c = self.book.get(e.id)
        if e.action in START_EVENTS:
            self.tickets[e.id] = self.tickets.get(e.id, 0) + 1
            self._inspect(e.id)
        elif e.action in STOP_EVENTS:
            self.tickets[e.id] = self.tickets.get(e.id, 0) + 1
            if c is not None:
                self._stopped(c, STOP_EVENTS[e.action])
            elif e.action == "destroy":
                self.tickets.pop(e.id, None)
        elif e.action == "pause" and c is not None:
            c.state = VirState.PAUSED
        elif e.action == "rename" and c is not None and e.name:
            c.name = e.name.lstrip("/")

    def _listed(self, listed: api.Listed) -> None:
        running = {ident for ident, _name, status in listed.containers}
        for ident in running:
            c = self.book.get(ident)
            if c is None or not c.running or self.resync:
                self._inspect(ident)
        for c in self.book:
            if c.running and c.key not in running:
                self._stopped(c, VirState.SHUTDOWN)     # its events were missed
        self.resync = False

    def _inspected(self, info: api.ContainerInfo, ticket: int) -> None:
        c = self.book.get(info.id)
        current = ticket == self.tickets.get(info.id, 0)
        if c is None:
            if not current or info.status not in ("running", "paused") or not info.pid:
                return
            c = self.book.add(Container(key=info.id, uuid=uuid_of(info.id)))
            if c is None:
                self._once("full", "docker {}: every data source number is taken; "
                           "container %s is not reported", info.name)
                return
            self.log.info("container %s: data source 3:%d", info.name, c.ds_index)
        c.name, c.hostname = info.name, info.hostname
        c.memory_limit, c.macs, c.ips = info.memory_limit, info.macs, info.ips
        if not current:
            self._marks_changed()
            return          # an event came after this answer was asked for: it says more
        if info.status in ("running", "paused") and info.pid:
            self.book.started(c)
            c.state = STATES[info.status]
            if info.pid != c.proc.pid or c.proc.cgroup is None:
                self.reader.attach(c.proc, info.pid, c.name)
            self._marks_changed()
        else:
            self._stopped(c, STATES.get(info.status, VirState.SHUTDOWN))

    def _stopped(self, c: Container, state: int) -> None:
        c.state = state
        self.book.stopped(c)
        self._marks_changed()

    # ------------------------------------------------------------ counters
    def counter_sources(self):
        return self.book.sources()

    def counters(self, due: Sequence[DataSource]) -> Dict[DataSource, List[Record]]:
        names = self._names()
        out: Dict[DataSource, List[Record]] = {}
        for source in due:
            c = self.book.by_ds.get(source[1])
            if c is None:
                continue
            if c.running and self.reader.gone(c.proc):
                self._stopped(c, VirState.SHUTDOWN)   # gone while dockerd could not say so
            if c.running and self.reader.poll(c.proc, c.name):
                self._marks_changed()
            out[source] = guest_records(self._reading(c, names[c.key]))
        return out

    def _names(self) -> Dict[str, str]:
        """What each container is called in host_descr: its name, or its hostname with
        hostname = on; one used twice gets ".<short id>" (as hsflowd)."""
        return unique_names({c.key: (c.hostname if self.settings.hostname else c.name)
                             or c.key[:SHORT_ID] for c in self.book}, lambda key: key)

    def _reading(self, c: Container, name: str) -> GuestReading:
        return container_reading(name, c.uuid, c.state, c.proc, self.host, c.memory_limit)

    # ------------------------------------------------------------ markTraffic
    def _marks_changed(self) -> None:
        """Its containers, or markTraffic, changed: the tables again, and the flow hook
        (``virt.marks``) only while there is a container to find."""
        if self.settings.mark:
            self.marks.rebuild((c.ds_index, c.proc.peers, c.ips,
                                set(c.macs) | {m for _, m in c.proc.adapters})
                               for c in self.book if c.running)
        else:
            self.marks.rebuild(())
        self._hook_marks(not self.marks.empty)

    # ------------------------------------------------------------ status
    def status(self):
        calls = self.calls_made()
        return {"docker": {"connected": self.connected, "containers": len(self.book),
                           "running": self.book.running_count(),
                           "events": self.books.events, "connects": self.books.connects,
                           "api_calls": {**vars(calls), "total": calls.total()}}}

