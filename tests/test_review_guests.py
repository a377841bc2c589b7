"""Review of containerd {}, k8s {} and the packaged unit: reproductions of suspected bugs.

Each test states what should be true; a failure is the finding.  No daemon is needed: the
modules are fed containerd's messages by hand, as the link would hand them over.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from ipaddress import ip_address
from types import SimpleNamespace

import pytest

from hsflowd.config import parse_config
from hsflowd.modules import AgentState, Context
from hsflowd.modules.containerd import ContainerdContainers
from hsflowd.modules.flowhooks import FlowHooks
from hsflowd.modules.k8s import K8sPods
from hsflowd.modules.ports import PortBoard
from hsflowd.virt import containerdapi as api
from hsflowd.virt.dsindex import DsIndexTable
from hsflowd.virt.handover import Connected
from hsflowd.virt.records import VirState

HOST_UUID = uuid.UUID("8d9e8f14-1b6c-4a3e-9d61-3f0e5c2a7b10")


class FakeLink:
    """What the module asks of a ContainerdLink, recorded."""

    def __init__(self):
        self.asked = []
        self.calls = api.CallCounts()

    def list(self):
        self.asked.append("list")

    def fetch(self, namespace, ident, pid):
        self.asked.append(("fetch", namespace, ident, pid))

    def close(self):
        pass


def make(cls, tmp_path, block: str):
    procfs = tmp_path / "proc"
    (procfs / "self").mkdir(parents=True)
    (procfs / "self" / "mountinfo").write_text("")
    hooks = FlowHooks(lambda s: None)
    ctx = Context(cls.name, lambda name, fd, cb: object(), lambda t: None, lambda s: None,
                  lambda s: None, lambda i: {}, [], hooks, ds_indexes=DsIndexTable(True),
                  ports=PortBoard())
    module = cls(ctx, procfs=str(procfs))
    config = parse_config(f"sflow {{\n collector {{ ip=192.0.2.1 }}\n {block}\n}}\n")
    module.reconcile(AgentState(config=config, revision=1, interfaces=[], host_uuid=HOST_UUID,
                                agent=SimpleNamespace(ip=ip_address("192.0.2.2"))))
    module.link = FakeLink()
    module._handle(Connected("1.7"))          # the module asks for its first list here
    return module


def cri(cid: str, pid: int, kind: str, pod: str = "web-0", container: str = ""):
    annotations = {api.CONTAINER_TYPE: kind, api.SANDBOX_NAME: pod,
                   api.SANDBOX_NAMESPACE: "default", api.SANDBOX_ID: "sb-" + pod}
    if container:
        annotations[api.CONTAINER_NAME] = container
    return api.ContainerInfo("k8s.io", cid, pid, annotations=annotations)


def start(module, info):
    """A task start event, then the spec the module fetched for it."""
    module._handle(api.TaskEvent("start", info.namespace, info.id, info.pid))
    module._handle(api.Started(info))


# ---------------------------------------------------------------- a list older than an event

@pytest.mark.parametrize("cls,block", [(K8sPods, "k8s { }"), (ContainerdContainers, "containerd { }")])
def test_a_list_asked_for_before_a_start_does_not_stop_what_started(tmp_path, cls, block):
    """The list asked for at connect (three or more calls on containerd's thread) can come
    back after the start event and the spec of a container that started meanwhile (the
    spec's one call overtakes it).  That list, a snapshot from before the start, must not
    stop the container: it is reported shut down until the next list (refreshVMs, 60 s),
    and forgotten if forgetVMs is shorter."""
    module = make(cls, tmp_path, block)
    assert module.link.asked == ["list"]        # list #1 is on its way
    start(module, cri("sb1", 100, "sandbox"))
    guest = next(iter(module.book))
    assert guest.running
    module._handle(api.Listed(()))              # list #1's answer: taken before sb1 started
    assert guest.running, "a stale list stopped a container that had just started"


# ---------------------------------------------------------------- a pod's containers, for ever

def test_a_pods_restarted_containers_are_not_kept_for_ever(tmp_path):
    """A crash-looping container is a new container (a new id) at each restart, and
    containerd deletes the old ones.  The pod keeps every one it ever had (pod.members and
    module.tasks, each with its ContainerProcess), sums them all at every poll, and lets
    them go only when the pod is forgotten: a pod that lives for weeks grows without end.
    The counters of a deleted container should be folded into the pod's and the Task let go."""
    module = make(K8sPods, tmp_path, "k8s { }")
    start(module, cri("sb1", 100, "sandbox"))
    for attempt in range(200):
        cid = f"app-{attempt}"
        start(module, cri(cid, 1000 + attempt, "container", container="app"))
        for what in ("exit", "delete", "removed"):
            module._handle(api.TaskEvent(what, "k8s.io", cid))
    pod = next(iter(module.book))
    assert pod.running
    assert len(pod.members) <= 3 and len(module.tasks) <= 3, \
        f"{len(pod.members)} containers kept for one pod, {len(module.tasks)} tasks"


# ---------------------------------------------------------------- the packaged unit's sandbox

UNIT_BOUNDING = "-all,+setuid,+setgid,+net_raw,+net_admin,+sys_admin,+bpf,+perfmon," \
                "+dac_override,+dac_read_search,+net_bind_service"   # hsflowd.service's
DOCKER_DEFAULT = "-all,+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,+setpcap," \
                 "+net_bind_service,+net_raw,+sys_chroot,+mknod,+audit_write,+setfcap"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_the_units_bounding_set_lets_root_into_a_containers_namespace():
    """docker {}, containerd {} and k8s {} keep root, and hsflowd(8) says CAP_SYS_ADMIN is what
    they need to read a container's interfaces.  But /proc/PID/ns/net is a ptrace check: root
    needs every capability the target holds, or CAP_SYS_PTRACE, which the unit's bounding set
    leaves out.  A container started with Docker's (or the CRI's) default capabilities holds
    CAP_CHOWN, CAP_KILL, CAP_MKNOD ... so under the unit same_netns() and read_namespace()
    fail: no host_adapters (2001), no host-side veth (markTraffic by port, k8s's taps and
    port names), and a --network host container is taken for one with its own namespace."""
    target = subprocess.Popen(["setpriv", "--bounding-set", DOCKER_DEFAULT, "--", "sleep", "60"])
    try:
        time.sleep(0.3)
        probe = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {os.getcwd()!r})
            from hsflowd.sources import vnic
            try:
                vnic.read_namespace({target.pid})
                print("ok")
            except OSError as e:
                print("failed:", e)
        """)
        run = subprocess.run(["setpriv", "--bounding-set", UNIT_BOUNDING, "--", sys.executable,
                              "-c", probe], capture_output=True, text=True, timeout=30)
        assert run.stdout.strip() == "ok", run.stdout + run.stderr
    finally:
        target.kill()
        target.wait()


# ---------------------------------------------------------------- a real pod's limits

def test_a_pods_limits_are_its_workloads_not_the_hosts():
    """In Kubernetes the sandbox (pause) container never has a memory limit or a CPU quota:
    the kubelet puts the pod's limits on its workload containers (and on the pod's cgroup,
    the sandbox's parent).  pod_reading counts a limit only if *every* running container has
    one, the sandbox included, so every real pod reports the host's memory as maxMemory and
    the host's CPUs as nrVirtCpu, whatever its limits (test_k8s.py asserts exactly that for
    web-0: 64 MiB and half a CPU, reported as the host's)."""
    from hsflowd.sources.cgroups import CgroupCounters
    from hsflowd.virt.process import ContainerProcess, HostFacts, pod_reading
    host = HostFacts(memory=64 << 30, cpus=32, machine_type=3, os_release="6.1")
    sandbox = ContainerProcess(counters=CgroupCounters(cpu_ns=1, memory=1 << 20, cpus_allowed=32))
    app = ContainerProcess(counters=CgroupCounters(cpu_ns=1, memory=30 << 20, memory_limit=64 << 20,
                                                   cpu_limit=0.5, cpus_allowed=32))
    r = pod_reading("k8s__web-0_default_u_a", b"\x01" * 16, VirState.RUNNING,
                    ever=[sandbox, app], running=[sandbox, app], net=sandbox, host=host)
    assert (r.max_memory, r.vcpus) == (64 << 20, 1), (r.max_memory, r.vcpus)


@pytest.mark.parametrize("cls,block", [(K8sPods, "k8s { }"), (ContainerdContainers, "containerd { }")])
def test_a_list_taken_before_an_exit_does_not_bring_the_container_back(tmp_path, cls, block):
    """The other side of the same race: the list's snapshot has the task; its exit event
    (the event stream does not wait for the calls) is handled first; then the list makes it
    run again, with a dead PID, until the next list (docker {} asks inspect again instead)."""
    module = make(cls, tmp_path, block)
    info = cri("sb1", 100, "sandbox")
    start(module, info)
    guest = next(iter(module.book))
    module._handle(api.TaskEvent("exit", "k8s.io", "sb1"))
    assert not guest.running
    module._handle(api.Listed((info,)))          # snapshot from before the exit
    assert not guest.running, "a stale list brought back a container that had exited"
