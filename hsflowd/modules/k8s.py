"""``k8s {}``: every Kubernetes pod is a data source (3:N), its containers summed, as in
hsflowd's mod_k8s.

The pods come from containerd (the connection, the lists and the events are containerd
{}'s: ``modules.containerd``): the CRI keeps, in each container's OCI spec, annotations
that say which pod it belongs to (``io.kubernetes.cri.container-type``, ``sandbox-name``,
``sandbox-namespace``, ``sandbox-id``).  Containers without them are not the kubelet's and
are left to containerd {}.

A pod is named and identified as hsflowd names it, so a collector sees the same pod under
either agent: ``k8s__<pod>_<namespace>_u_a`` (the dockershim form with the container's
name, uid and attempt left out), and a type-5 UUID of that name under the host's UUID with
the agent's address hashed in (``virt.dsindex.name_uuid``), fixed when the pod is first
seen.

Its sample sums its containers' cgroups (``virt.process.pod_reading``) and reads its
network namespace, through its sandbox's process: /proc/PID/net/dev for virt_net_io, and
when its devices change its links (2001) and addresses.  The host side of its veth is the
port where its traffic is seen: markTraffic finds the pod there (and by its addresses and
MACs), the port is offered to pcap {} and epcap {} rules with ``dynamic = on``
(``Context.request_taps``, hsflowd's GET_TAP), and with setIfAlias and setIfName the port
is reported under the pod's name (1005), as hsflowd reports the alias it gives it.

A pod keeps the containers it has, not every one it had: a workload container that stops
(a crash-looping one is a new container at each restart), or any container whose task or
container is deleted, is read one last time and let go, its CPU time and disk I/O kept in
the pod's retired totals (``virt.process.Retired``) so that the pod's counters never go
back.  The sandbox stays until it is deleted (its namespace's last counters with it).  A
pod whose containers have all stopped is reported, shut down, until forgetVMs has passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..sflow import Record
from ..virt import containerdapi as api
from ..virt.dsindex import name_uuid
from ..virt.guests import Guest
from ..virt.process import ContainerProcess, Retired, pod_reading
from ..virt.records import VirState, guest_records
from . import ROOT, AgentState, DataSource, register
from .containerd import MAX_NAME, ContainerdModule, Task, cri_pod


def pod_name(info: api.ContainerInfo) -> Optional[str]:
    """hsflowd's name for the pod of a CRI container; None for a container that is not."""
    pod = cri_pod(info)
    return None if pod is None else f"k8s__{pod[0]}_{pod[1]}_u_a"[:MAX_NAME]


@dataclass
class Pod(Guest):
    """One pod (key: its name); the containers it has, by key, each as last read."""

    members: Dict[str, Task] = field(default_factory=dict)
    sandbox: Optional[str] = None       # the member whose namespace is the pod's
    retired: Retired = field(default_factory=Retired)   # what the containers it had counted
    last_net: Optional[ContainerProcess] = None   # the namespace as last read, its sandbox gone

    @property
    def state(self) -> int:
        states = [t.state for t in self.members.values()]
        if VirState.RUNNING in states:
            return VirState.RUNNING
        if VirState.PAUSED in states:
            return VirState.PAUSED
        return VirState.SHUTDOWN

    def net_task(self) -> Optional[Task]:
        """The running member whose process gives the namespace: the sandbox, else any."""
        chosen = self.members.get(self.sandbox) if self.sandbox else None
        if chosen is not None and chosen.running:
            return chosen
        return next((t for t in self.members.values() if t.running), chosen)

    def net_proc(self) -> Optional[ContainerProcess]:
        task = self.net_task()
        return task.proc if task is not None else self.last_net


@register("k8s", enabled=lambda config: config.k8s is not None,
          privileges=lambda config: {ROOT})
class K8sPods(ContainerdModule):
    label = "k8s {}"

    def __init__(self, ctx, *args, **kw):
        super().__init__(ctx, *args, **kw)
        self.pod_of: Dict[str, str] = {}      # task key -> pod name
        self.name_ports = False

    def settings(self, config):
        return config.k8s

    def reconcile(self, state: AgentState) -> None:
        if "config" in state.changed:
            k = state.config.k8s
            self.name_ports = k.set_if_alias and k.set_if_name
        super().reconcile(state)

    def _reset(self) -> None:
        super()._reset()
        self.pod_of.clear()

    # ------------------------------------------------------------ pods from tasks
    def _task_started(self, task: Task) -> None:
        name = pod_name(task.info)
        if name is None:
            return
        pod = self.book.get(name)
        if pod is None:
            pod = self.book.add(Pod(key=name, uuid=name_uuid(self.host_uuid, name,
                                                             self.agent_ip)))
            if pod is None:
                self._once("full", "k8s {}: every data source number is taken; pod %s is "
                           "not reported", name)
                return
            self.log.info("pod %s: data source 3:%d", name, pod.ds_index)
        if task.proc.pid and task.proc.pid != task.info.pid:
            # the same container with a new process, its stop not seen: what the old one
            # counted is kept, the new one counts from its own start
            pod.retired.add(task.proc.counters)
            task.proc = ContainerProcess()
        pod.members[task.info.key] = task
        self.pod_of[task.info.key] = name
        if task.info.annotations.get(api.CONTAINER_TYPE) == "sandbox":
            pod.sandbox = task.info.key
        self.book.started(pod)
        self._attach(task, name, net=pod.net_task() is task)

    def _task_stopped(self, task: Task) -> None:
        pod = self.book.get(self.pod_of.get(task.info.key, ""))
        if pod is None:
            return
        if task.info.key != pod.sandbox:
            self._retire(pod, task)         # a workload that stopped counts no more
        if pod.state == VirState.SHUTDOWN:
            self.book.stopped(pod)
        else:
            self._read_namespace(pod)       # another member's process may give it now

    def _task_removed(self, task: Task) -> None:
        pod = self.book.get(self.pod_of.get(task.info.key, ""))
        if pod is not None:
            self._retire(pod, task)
        else:
            self.tasks.pop(task.info.key, None)     # not a pod's (or its pod is forgotten)
            self.pod_of.pop(task.info.key, None)

    def _retire(self, pod: Pod, task: Task) -> None:
        """``task``'s container is gone from ``pod``: read one last time (its group may still
        be there), its counters kept in the pod's retired totals, and let go."""
        key = task.info.key
        if pod.members.pop(key, None) is None:
            return
        self.reader.poll(task.proc, pod.key)
        pod.retired.add(task.proc.counters)
        self.tasks.pop(key, None)
        self.pod_of.pop(key, None)
        if key == pod.sandbox:
            pod.sandbox, pod.last_net = None, task.proc

    def _forgotten(self, gone: Pod) -> None:
        for key in gone.members:
            self.tasks.pop(key, None)
            self.pod_of.pop(key, None)
        self._guests_changed()
        self.log.info("pod %s forgotten (stopped %d s ago)", gone.key, self.forget)

    def _read_namespace(self, pod: Pod) -> None:
        """Make sure the namespace is read through the process that now gives it."""
        task = pod.net_task()
        if task is not None and task.running and not task.proc.devices:
            self.reader.attach(task.proc, task.info.pid, pod.key, net=True)

    # ------------------------------------------------------------ what the pods' ports do
    def _guests_changed(self) -> None:
        running = [(pod, pod.net_task()) for pod in self.book if pod.running]
        nets = [(pod, t.proc) for pod, t in running if t is not None]
        self._rebuild_marks((pod.ds_index, p.peers, p.ips, {m for _, m in p.adapters})
                            for pod, p in nets)
        self.ctx.request_taps([peer for _, p in nets for peer in p.peers]
                              if not self.standing_down else [])
        self.ctx.name_ports({peer: pod.key for pod, p in nets for peer in p.peers}
                            if self.name_ports and not self.standing_down else {})

    # ------------------------------------------------------------ counters
    def counters(self, due: Sequence[DataSource]) -> Dict[DataSource, List[Record]]:
        out: Dict[DataSource, List[Record]] = {}
        changed = False
        for source in due:
            pod = self.book.by_ds.get(source[1])
            if pod is None:
                continue
            net = pod.net_task()
            for task in list(pod.members.values()):
                if task.running and self.reader.gone(task.proc):
                    self._stop(task, VirState.SHUTDOWN)   # gone while containerd could not say
                    changed = True
                elif task.running and self.reader.poll(task.proc, pod.key) and task is net:
                    changed = True
            tasks = list(pod.members.values())
            sandbox = pod.members.get(pod.sandbox) if pod.sandbox else None
            out[source] = guest_records(pod_reading(
                pod.key, pod.uuid, pod.state, [t.proc for t in tasks],
                [t.proc for t in tasks if t.running], pod.net_proc(), self.host, pod.retired,
                sandbox.proc if sandbox is not None else None))
        if changed:
            self._guests_changed()
        return out
