"""``containerd {}``: every running container of containerd is a data source (3:N), as in
hsflowd's mod_containerd; and what it shares with ``k8s {}`` (modules/k8s.py).

Which containers: containerd's own API on its socket (``virt.containerdapi``, on a thread
of its own): the tasks of every namespace, listed when the connection is made and every
refreshVMs, and the event stream, which says when a task starts (the container's spec is
then fetched: its hostname and annotations), exits, is deleted, paused or resumed, and
when a container is deleted.  No call is made per poll: the counters come from the
task's process, its cgroup and its network namespace (``virt.process``), as docker {}'s.

Names: a Kubernetes container (CRI annotations) is named as hsflowd names it,
``k8s_<container>_<pod>_<namespace>_u_a`` (the container's name left out when it is the
pod's); any other by its id, or with ``hostname = on`` by its OCI spec's hostname.  A
name used twice gets ".<short id>".  UUID: the id's first 16 bytes when it begins with
32 hex digits (Docker's, CRI's), else hsflowd's type-5 UUID of the id
(``virt.dsindex.name_uuid``).

A list is an older snapshot than the events that arrive while it is out (its calls and the
event stream run side by side on containerd's thread): the module counts events, asks each
list with the count so far, and lets a list decide nothing for a container that has had an
event since it was asked, nor start one whose process is gone (docker {}'s tickets, for the
same race).

A container whose task stops is reported, shut down, until forgetVMs has passed.  When
containerd goes away the containers stay as they are (a container whose cgroup goes has
stopped) and the module connects again, 1, 2 ... 10 s later, and lists them again.

``markTraffic = on`` adds extended_entities (2210) to samples between containers (by the
host side of their veths, their addresses and MACs: ``virt.marks``).  With docker {} on
and dockerd's socket there, the module stands down, as hsflowd's does.  It keeps root:
containerd's socket is root's, and entering a network namespace needs CAP_SYS_ADMIN.
"""

from __future__ import annotations

import importlib
import os
import string
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..sflow import Record
from ..virt import containerdapi as api
from ..virt.dsindex import name_uuid
from ..virt.guests import Guest
from ..virt.handover import CallFailed, Connected, Lost
from ..virt.marks import Marks
from ..virt.process import ContainerProcess, HostFacts, ProcessReader, container_reading
from ..virt.records import VirState, guest_records, virt_node
from . import ROOT, AgentState, DataSource, register
from .guests import Books, GuestsModule, docker_socket_present, unique_names

STOPS = {"exit": VirState.SHUTDOWN, "delete": VirState.SHUTDOWN, "removed": VirState.SHUTDOWN}
MAX_NAME = 254          # hsflowd builds these names in 255 bytes, NUL included


# ---------------------------------------------------------------- names and UUIDs

def id_uuid(ident: str) -> Optional[bytes]:
    """hsflowd's parseUUID: 16 bytes of hex from the start of the id ('-', ':' and '.'
    between them allowed), or None when the id has fewer."""
    out = bytearray()
    i = 0
    while i < len(ident) and len(out) < 16:
        c = ident[i]
        if c in string.hexdigits:
            if i + 1 < len(ident) and ident[i + 1] in string.hexdigits:
                out.append(int(ident[i:i + 2], 16))
                i += 2
            else:
                out.append(int(c, 16))
                i += 1
        elif c in "-:.":
            i += 1
        else:
            break
    return bytes(out) if len(out) == 16 else None


def cri_pod(info: api.ContainerInfo) -> Optional[Tuple[str, str]]:
    """(pod, namespace) of a Kubernetes container, from its CRI annotations (the pod's name
    else the container's hostname, as hsflowd falls back); None for any other."""
    a = info.annotations
    if api.CONTAINER_TYPE not in a:
        return None
    return a.get(api.SANDBOX_NAME) or info.hostname, a.get(api.SANDBOX_NAMESPACE, "")


def cri_name(info: api.ContainerInfo) -> Optional[str]:
    """hsflowd's name for a Kubernetes container, None for any other."""
    pod = cri_pod(info)
    if pod is None:
        return None
    container = info.annotations.get(api.CONTAINER_NAME, "")
    if container in (pod[0], info.hostname):
        container = ""
    return f"k8s_{container}_{pod[0]}_{pod[1]}_u_a"[:MAX_NAME]


# ---------------------------------------------------------------- what containerd {} and k8s {} share

@dataclass
class Task:
    """One container with a task, as the module last knew it (key: namespace/id)."""

    info: api.ContainerInfo
    proc: ContainerProcess = field(default_factory=ContainerProcess)
    state: int = VirState.RUNNING

    @property
    def running(self) -> bool:
        return self.state in (VirState.RUNNING, VirState.PAUSED)


class ContainerdModule(GuestsModule):
    """The connection to containerd and the tasks it reports; a subclass decides what a
    guest is (``_task_started``, ``_task_stopped``) and its records."""

    RETRY_MIN, RETRY_MAX = 1.0, 10.0
    label = "containerd {}"

    def __init__(self, ctx, clock=time.monotonic, procfs: str = "/proc"):
        super().__init__(ctx, clock)
        self.socket = api.DEFAULT_SOCKET
        self.standing_down: Optional[str] = None    # docker's socket, while docker {} has it
        self.api: Optional[api.Api] = None
        self.tasks: Dict[str, Task] = {}
        self.starting: Dict[str, int] = {}          # key -> pid of a start being fetched
        self.events_seen = 0                        # task events so far: a list's ticket
        self.lists_out: Dict[int, int] = {}         # lists asked, not answered: by ticket
        self.last_event: Dict[str, int] = {}        # key -> its last event, while lists are out
        self.books = Books()
        self.closed_calls = api.CallCounts()
        self.mark = False
        self.hostname = False
        self.host_uuid: Optional[uuidlib.UUID] = None
        self.agent_ip = bytes(4)                    # the agent's address, packed
        self.marks = Marks()
        self.reader = ProcessReader(self.log, procfs, addresses=True)
        self.host = HostFacts.read()

    # ------------------------------------------------------------ life cycle
    def settings(self, config) -> Any:
        """The module's block of ``config``."""
        raise NotImplementedError

    def reconcile(self, state: AgentState) -> None:
        self.host_uuid = state.host_uuid
        self.agent_ip = state.agent.ip.packed if state.agent is not None else bytes(4)
        if "config" not in state.changed:
            return
        config = state.config
        if self.unavailable is not None:
            # its library (or the API description) may have been installed since: a reload
            # tries again, with Python's caches of what directories hold made afresh
            self.unavailable = None
            importlib.invalidate_caches()
        block = self.settings(config)
        self.set_intervals(config.refresh_vms, getattr(block, "forget_vms", None)
                           or config.forget_vms)
        self.mark = block.mark_traffic
        self.set_vnode_role(config)
        socket = block.unixsock or api.DEFAULT_SOCKET
        docker = docker_socket_present(config)
        if docker and not self.standing_down:
            self.log.warning("%s: docker {} is on and dockerd's socket %s is there: standing "
                             "down, as hsflowd does", self.label, docker)
            self._reset()
        elif self.standing_down and not docker:
            self.log.info("%s: docker {} no longer has dockerd's socket: starting",
                          self.label)
        self.standing_down = docker
        if socket != self.socket:
            self._reset()
            self.socket = socket
        self._guests_changed()

    def _reset(self) -> None:
        """Forget the connection and everything it said (a new socket, or standing down)."""
        self._drop_link()
        self.book.clear()
        self.tasks.clear()
        self.starting.clear()
        self.said.discard("absent")
        self.retry_at, self.retry = 0.0, self.RETRY_MIN

    def tick(self, now: float) -> None:
        if not self.standing_down:
            super().tick(now)

    # ------------------------------------------------------------ the connection
    def _connect(self, now: float) -> None:
        if self.api is None:
            try:
                self.api = api.Api()
            except api.ContainerdUnavailable as e:
                self.unavailable = str(e)
                self.log.warning("%s: %s; containers are not reported (reload the agent "
                                 "once it is there)", self.label, e)
                return
        if not os.path.exists(self.socket):
            self._once("absent", f"{self.label}: no containerd socket at %s; its containers "
                       "will be reported once containerd is there", self.socket)
            self.retry_at = now + self.RETRY_MAX
            return
        self._open_link(api.ContainerdLink(self.socket, self.api))

    def _link_closed(self, link: api.ContainerdLink) -> None:
        super()._link_closed(link)
        self.lists_out.clear()          # they will not be answered
        self.last_event.clear()

    def _ask_list(self) -> None:
        """A list, ticketed with the events seen so far (``_listed``)."""
        ticket = self.events_seen
        self.lists_out[ticket] = self.lists_out.get(ticket, 0) + 1
        self.link.list(ticket)

    def _list_answered(self, ticket: int) -> None:
        left = self.lists_out.pop(ticket, 0) - 1
        if left > 0:
            self.lists_out[ticket] = left
        if not self.lists_out:
            self.last_event.clear()     # no list is out that an event could be newer than

    def _say_lost(self, reason: str) -> None:
        self.log.warning("%s: lost containerd (%s); trying again", self.label, reason)

    def _say_unreachable(self, reason: str) -> None:
        self._once("unreachable", f"{self.label}: cannot reach containerd at %s (%s); "
                   "trying again every %d s", self.socket, reason, int(self.RETRY_MAX))

    def _handle(self, m) -> None:
        if isinstance(m, api.TaskEvent):
            self.books.events += 1
            self.events_seen += 1
            if self.lists_out:
                self.last_event[m.key] = self.events_seen
            self._event(m)
        elif isinstance(m, api.Started):
            self.books.events += 1
            self._started(m.info)
        elif isinstance(m, api.Listed):
            self._listed(m.containers, m.ticket)
            self._list_answered(m.ticket)
        elif isinstance(m, Connected):
            self.books.connects += 1
            self.said.discard("absent")
            self.log.info("%s: connected to containerd %s at %s", self.label, m.version,
                          self.socket)
            self._connected()
        elif isinstance(m, Lost):
            self._lost(m.reason)
        elif isinstance(m, CallFailed):
            self.log.debug("%s: %s failed: %s", self.label, m.what, m.reason)
            if m.ticket is not None:
                self._list_answered(m.ticket)

    # ------------------------------------------------------------ what containerd says
    def _listed(self, containers: Iterable[api.ContainerInfo], ticket: int) -> None:
        """A list asked when ``ticket`` events had been seen: it says nothing of a container
        that has had an event since (the list may be older than the event), and does not
        start one whose process is gone (it may be older than an exit still on its way)."""
        def newer(key: str) -> bool:
            return self.last_event.get(key, 0) > ticket

        live = {info.key: info for info in containers}
        for key, info in live.items():
            if newer(key):
                continue
            task = self.tasks.get(key)
            if task is None or task.info.pid != info.pid or not task.running:
                if self._alive(info.pid):
                    self._run(info)
            elif task.state != info.state:
                task.state = info.state
        for key, task in list(self.tasks.items()):
            if task.running and key not in live and not newer(key):
                self._stop(task, VirState.SHUTDOWN)       # its events were missed
        self._guests_changed()

    def _alive(self, pid: int) -> bool:
        return pid > 0 and os.path.exists(os.path.join(self.reader.procfs, str(pid)))

    def _started(self, info: api.ContainerInfo) -> None:
        if self.starting.get(info.key) != info.pid:
            return          # it stopped (or started again) while its spec was fetched
        del self.starting[info.key]
        self._run(info)
        self._guests_changed()

    def _event(self, e: api.TaskEvent) -> None:
        task = self.tasks.get(e.key)
        if e.what == "start":
            self.starting[e.key] = e.pid         # its spec first: name, annotations
            self.link.fetch(e.namespace, e.id, e.pid)
        elif e.what in STOPS:
            self.starting.pop(e.key, None)
            if task is None:
                return
            if task.running:
                self._stop(task, STOPS[e.what])
            if e.what != "exit":
                self._task_removed(task)        # its task or its container deleted
            self._guests_changed()
        elif task is not None and e.what in ("paused", "resumed"):
            task.state = VirState.PAUSED if e.what == "paused" else VirState.RUNNING

    def _run(self, info: api.ContainerInfo) -> None:
        """``info``'s task runs: find its process, then its guest."""
        task = self.tasks.get(info.key)
        if task is None:
            task = self.tasks[info.key] = Task(info)
        task.info, task.state = info, info.state
        self._task_started(task)

    def _stop(self, task: Task, state: int) -> None:
        task.state = state
        self._task_stopped(task)

    # ------------------------------------------------------------ what a subclass decides
    def _task_started(self, task: Task) -> None:
        raise NotImplementedError

    def _task_stopped(self, task: Task) -> None:
        raise NotImplementedError

    def _task_removed(self, task: Task) -> None:
        """Its task, or the container, was deleted (after ``_task_stopped``)."""

    def _guests_changed(self) -> None:
        """Guests came or went, or markTraffic changed: the marks and the ports again."""

    # ------------------------------------------------------------ the shared parts
    def _attach(self, task: Task, name: str, net: bool = True) -> bool:
        """Read the (new) process of ``task``; whether its links were read."""
        if task.proc.pid == task.info.pid and task.proc.cgroup is not None:
            return False
        return self.reader.attach(task.proc, task.info.pid, name, net)

    def _rebuild_marks(self, guests: Iterable[Any]) -> None:
        """markTraffic's tables from (ds_index, ports, ips, macs) of the running guests; the
        flow hook only while there is one to find."""
        self.marks.rebuild(guests if self.mark else ())
        self._hook_marks(not self.marks.empty)

    def host_records(self) -> List[Record]:
        if not self.vnode or self.standing_down:
            return []
        return [virt_node(self.book.running_count())]

    def counter_sources(self):
        return [] if self.standing_down else self.book.sources()

    def status(self):
        calls = self.calls_made()
        key = self.name
        return {key: {"connected": self.connected, "standing_down": bool(self.standing_down),
                      "guests": len(self.book), "running": self.book.running_count(),
                      "containers": len(self.tasks), "events": self.books.events,
                      "connects": self.books.connects,
                      "api_calls": {**vars(calls), "total": calls.total()}}}


# ---------------------------------------------------------------- containerd {}

@dataclass
class Container(Guest):
    """One container containerd {} reports (key: namespace/id)."""

    task: Optional[Task] = None

    @property
    def state(self) -> int:
        return self.task.state if self.task is not None else VirState.SHUTDOWN


@register("containerd", enabled=lambda config: config.containerd is not None,
          privileges=lambda config: {ROOT})
class ContainerdContainers(ContainerdModule):
    def settings(self, config):
        return config.containerd

    def reconcile(self, state: AgentState) -> None:
        if "config" in state.changed:
            self.hostname = state.config.containerd.hostname
        super().reconcile(state)

    def _task_started(self, task: Task) -> None:
        c = self.book.get(task.info.key)
        if c is None:
            uuid16 = id_uuid(task.info.id) or name_uuid(self.host_uuid, task.info.id,
                                                        self.agent_ip)
            c = self.book.add(Container(key=task.info.key, uuid=uuid16, task=task))
            if c is None:
                self._once("full", "containerd {}: every data source number is taken; "
                           "container %s is not reported", task.info.key)
                return
            self.log.info("container %s: data source 3:%d", task.info.key, c.ds_index)
        c.task = task
        self.book.started(c)
        self._attach(task, task.info.key)

    def _task_stopped(self, task: Task) -> None:
        c = self.book.get(task.info.key)
        if c is not None:
            self.book.stopped(c)

    def _task_removed(self, task: Task) -> None:
        if self.book.get(task.info.key) is None:
            self.tasks.pop(task.info.key, None)     # not reported: nothing to keep

    def _forgotten(self, gone: Container) -> None:
        self.tasks.pop(gone.key, None)
        self._guests_changed()
        self.log.info("container %s forgotten (stopped %d s ago)", gone.key, self.forget)

    def _guests_changed(self) -> None:
        self._rebuild_marks((c.ds_index, c.task.proc.peers, c.task.proc.ips,
                             {m for _, m in c.task.proc.adapters})
                            for c in self.book if c.running and c.task is not None)

    def counters(self, due: Sequence[DataSource]) -> Dict[DataSource, List[Record]]:
        names = self._names()
        out: Dict[DataSource, List[Record]] = {}
        for source in due:
            c = self.book.by_ds.get(source[1])
            if c is None or c.task is None:
                continue
            task = c.task
            if c.running and self.reader.gone(task.proc):
                self._stop(task, VirState.SHUTDOWN)    # gone while containerd could not say
            if c.running and self.reader.poll(task.proc, c.key):
                self._guests_changed()
            out[source] = guest_records(container_reading(names[c.key], c.uuid, c.state,
                                                          task.proc, self.host))
        return out

    def _names(self) -> Dict[str, str]:
        base = {}
        for c in self.book:
            info = c.task.info
            base[c.key] = cri_name(info) or (self.hostname and info.hostname) or info.id
        return unique_names(base, lambda key: key.rsplit('/', 1)[-1])
