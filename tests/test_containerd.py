"""containerd {} and k8s {} without a containerd: names, UUIDs, messages, a pod's sums, and
the modules fed containerd's messages by hand (the races of a list with the event stream,
a crash-looping container, a reload).

The UUIDs are hsflowd's: mod_k8s names a pod ``k8s__<pod>_<namespace>_u_a`` and asks
libuuid's uuid_generate_sha1 for the type-5 UUID of that name followed by the agent's
address, under the host's UUID.  The expected values below were computed with that very
libuuid call (util-linux 2.38), and are checked against it again where it is installed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import uuid
from types import SimpleNamespace

import pytest

from hsflowd.config import parse_config
from hsflowd.modules import AgentState, Context
from hsflowd.modules.containerd import ContainerdContainers, cri_name, id_uuid
from hsflowd.modules.flowhooks import FlowHooks
from hsflowd.modules.k8s import K8sPods, pod_name
from hsflowd.modules.ports import PortBoard
from hsflowd.sources.cgroups import CgroupCounters
from hsflowd.virt import containerdapi as api
from hsflowd.virt.dsindex import DsIndexTable, name_uuid
from hsflowd.virt.handover import CallFailed, Connected
from hsflowd.virt.process import ContainerProcess, HostFacts, Retired, pod_reading
from hsflowd.virt.records import VirState

HOST = uuid.UUID("8d9e8f14-1b6c-4a3e-9d61-3f0e5c2a7b10")
CASES = [
    # pod, namespace, agent address, what libuuid's uuid_generate_sha1 gave
    ("web-0", "default", "192.0.2.2", "6573dc6c-3231-56b0-b7b3-ecf72d5bb81e"),
    ("coredns-5d78c9869d-x7k2p", "kube-system", "2001:db8::5",
     "bd0b8676-15d5-5aa3-b6a2-aa07933d90c7"),
]


def cri(kind: str, pod: str, namespace: str, container: str = "", hostname: str = ""):
    annotations = {api.CONTAINER_TYPE: kind, api.SANDBOX_NAME: pod,
                   api.SANDBOX_NAMESPACE: namespace, api.SANDBOX_ID: "f" * 64}
    if container:
        annotations[api.CONTAINER_NAME] = container
    return api.ContainerInfo("k8s.io", "a" * 64, 42, hostname=hostname, annotations=annotations)


@pytest.mark.parametrize("pod,namespace,agent,expected", CASES)
def test_pod_name_and_uuid_are_hsflowds(pod, namespace, agent, expected):
    # every container of the pod, sandbox or not, names the same pod
    for info in (cri("sandbox", pod, namespace), cri("container", pod, namespace, "app")):
        assert pod_name(info) == f"k8s__{pod}_{namespace}_u_a"
    name = pod_name(cri("sandbox", pod, namespace))
    made = name_uuid(HOST, name, ipaddress.ip_address(agent).packed)
    assert str(uuid.UUID(bytes=made)) == expected


@pytest.mark.parametrize("pod,namespace,agent,expected", CASES)
def test_uuid_matches_libuuid(pod, namespace, agent, expected):
    path = ctypes.util.find_library("uuid")
    if path is None:
        pytest.skip("no libuuid here")
    lib = ctypes.CDLL(path)
    out = ctypes.create_string_buffer(16)
    name = f"k8s__{pod}_{namespace}_u_a".encode() + ipaddress.ip_address(agent).packed
    lib.uuid_generate_sha1(out, HOST.bytes, name, len(name))
    assert str(uuid.UUID(bytes=out.raw)) == expected


def test_names_of_containers_and_pods():
    # hsflowd's mod_containerd leaves the container's name out when it is the pod's
    assert cri_name(cri("container", "web-0", "default", "app")) == "k8s_app_web-0_default_u_a"
    assert cri_name(cri("container", "web-0", "default", "web-0")) == "k8s__web-0_default_u_a"
    assert cri_name(cri("sandbox", "web-0", "default")) == "k8s__web-0_default_u_a"
    # no pod name: the hostname stands in, as in hsflowd
    no_name = cri("sandbox", "", "default", hostname="web-0")
    assert pod_name(no_name) == "k8s__web-0_default_u_a"
    # not the kubelet's: no pod, no CRI name
    plain = api.ContainerInfo("default", "c1", 7, hostname="h1")
    assert pod_name(plain) is None and cri_name(plain) is None
    # hsflowd builds names in 255 bytes
    assert len(pod_name(cri("sandbox", "p" * 300, "default"))) == 254


def test_container_uuid_from_its_id():
    ident = "3f2a" * 16
    assert id_uuid(ident) == bytes.fromhex(ident[:32])
    assert id_uuid("8d9e8f14-1b6c-4a3e-9d61-3f0e5c2a7b10") == HOST.bytes
    assert id_uuid("c1") is None and id_uuid("web-server") is None
    # an id that is no UUID gets the type-5 one, as hsflowd falls back to
    u = name_uuid(HOST, "c1", ipaddress.ip_address("192.0.2.2").packed)
    assert uuid.UUID(bytes=u).version == 5


def _proc(cpu_ns=None, memory=None, limit=None, quota=None, cpus=2, rd=None):
    return ContainerProcess(counters=CgroupCounters(cpu_ns=cpu_ns, memory=memory,
                                                    memory_limit=limit, cpu_limit=quota,
                                                    cpus_allowed=cpus, rd_bytes=rd))


def test_pod_reading_sums_its_containers_and_those_it_had():
    host = HostFacts(memory=8 << 30, cpus=4, machine_type=3, os_release="6.1")
    sandbox, app = _proc(1_000_000, 1 << 20), _proc(5_000_000, 3 << 20, 64 << 20, 0.5, rd=4096)
    stopped = _proc(7_000_000, 9 << 20, rd=100)
    retired = Retired()
    retired.add(CgroupCounters(cpu_ns=2_000_000, rd_bytes=50, memory=1 << 30))
    r = pod_reading("k8s__web-0_default_u_a", b"\x01" * 16, VirState.RUNNING,
                    members=[sandbox, app, stopped], running=[sandbox, app], net=sandbox,
                    host=host, retired=retired, sandbox=sandbox)
    assert r.cpu_ns == 15_000_000                 # those it has and those it had: no step back
    assert r.disk.rd_bytes == 4246 and r.disk.wr_bytes is None
    assert r.memory == 4 << 20                     # those running (a retired one's is no gauge)
    both = pod_reading("p", b"\x01" * 16, VirState.RUNNING, members=[app, app],
                       running=[app, app], net=None, host=host)
    assert (both.max_memory, both.vcpus) == (128 << 20, 1)   # limits summed, 1.0 CPU
    # nothing known of the containers it has: what the retired ones counted
    r = pod_reading("p", b"\x01" * 16, VirState.SHUTDOWN, members=[_proc()], running=[],
                    net=None, host=host, retired=retired)
    assert (r.cpu_ns, r.disk.rd_bytes, r.disk.rd_req) == (2_000_000, 50, None)


def test_a_pods_limits_are_its_workloads_not_its_sandboxs():
    """The kubelet puts a pod's limits on its workload containers (and the pod's cgroup);
    the sandbox (pause) container has none.  Counted in, it made every real pod report the
    host's memory and CPUs."""
    host = HostFacts(memory=64 << 30, cpus=32, machine_type=3, os_release="6.1")
    sandbox = _proc(1, 1 << 20, cpus=32)
    app = _proc(1, 30 << 20, limit=64 << 20, quota=0.5, cpus=32)
    sidecar = _proc(1, 10 << 20, limit=32 << 20, quota=0.25, cpus=32)

    def limits(running):
        r = pod_reading("k8s__web-0_default_u_a", b"\x01" * 16, VirState.RUNNING,
                        members=running, running=running, net=sandbox, host=host,
                        sandbox=sandbox)
        return r.max_memory, r.vcpus
    assert limits([sandbox, app]) == (64 << 20, 1)           # half a CPU: 1
    assert limits([sandbox, app, sidecar]) == (96 << 20, 1)  # 0.75 CPU: 1
    # a workload without a limit: the pod has none (the host's), and the CPUs it may use
    assert limits([sandbox, app, _proc(1, 1 << 20, cpus=6)]) == (64 << 30, 32)
    assert limits([sandbox, _proc(1, 1 << 20, cpus=6)]) == (64 << 30, 6)
    # the sandbox all that runs: its own (none: the host's)
    assert limits([sandbox]) == (64 << 30, 32)


@pytest.fixture(scope="module")
def client():
    try:
        return api.Api()
    except api.ContainerdUnavailable as e:
        pytest.skip(str(e))


def test_events_and_containers_from_containerds_messages(client):
    Envelope = client.message("containerd.services.events.v1.Envelope")
    TaskStart = client.message("containerd.events.TaskStart")
    TaskExit = client.message("containerd.events.TaskExit")
    ContainerDelete = client.message("containerd.events.ContainerDelete")

    def envelope(topic, payload):
        e = Envelope(namespace="k8s.io", topic=topic)
        e.event.type_url = "containerd.events." + type(payload).DESCRIPTOR.name
        e.event.value = payload.SerializeToString()
        return api.parse_event(e, client.unpack(e.event))

    assert envelope("/tasks/start", TaskStart(container_id="c1", pid=9)) == \
        api.TaskEvent("start", "k8s.io", "c1", 9)
    assert envelope("/tasks/exit", TaskExit(container_id="c1", id="c1", pid=9)) == \
        api.TaskEvent("exit", "k8s.io", "c1")
    # an exec'd process that ends is not the container stopping
    assert envelope("/tasks/exit", TaskExit(container_id="c1", id="exec-7", pid=10)) is None
    assert envelope("/containers/delete", ContainerDelete(id="c1")) == \
        api.TaskEvent("removed", "k8s.io", "c1")
    Container = client.message("containerd.services.containers.v1.Container")
    c = Container(id="c2")
    c.spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
    c.spec.value = b'{"hostname": "h2", "annotations": {"io.kubernetes.cri.container-type": "container"}}'
    info = api.parse_container("k8s.io", c, 11, 4)
    assert (info.key, info.pid, info.state, info.hostname) == ("k8s.io/c2", 11, VirState.PAUSED, "h2")
    assert info.annotations == {api.CONTAINER_TYPE: "container"}
    # a spec that is not JSON costs its names, nothing else
    c.spec.value = b"\xff{"
    assert api.parse_container("k8s.io", c, 11).hostname == ""


# ---------------------------------------------------------------- the modules, fed by hand
#
# containerd {} and k8s {} given containerd's messages as their link would hand them over,
# in the orders its thread can give them: a list's calls and the event stream run side by
# side, so a list can be answered after events newer than its snapshot.  /proc is a
# directory of the test's: a PID is alive while procfs/PID exists.

HOST_IP = ipaddress.ip_address("192.0.2.2")


class FakeLink:
    """What a module asks of its ContainerdLink, recorded."""

    def __init__(self):
        self.asked = []
        self.calls = api.CallCounts()

    def list(self, ticket=0):
        self.asked.append(("list", ticket))

    def fetch(self, namespace, ident, pid):
        self.asked.append(("fetch", namespace, ident, pid))

    def close(self):
        pass

    def tickets(self):
        return [a[1] for a in self.asked if a[0] == "list"]


def make(cls, tmp_path, settings: str = ""):
    """The module, its first revision read, connected (to no containerd: its socket is the
    test's, and nothing listens there)."""
    procfs = tmp_path / "proc"
    (procfs / "self").mkdir(parents=True)
    (procfs / "self" / "mountinfo").write_text("")
    ctx = Context(cls.name, lambda name, fd, cb: object(), lambda t: None, lambda s: None,
                  lambda s: None, lambda i: {}, [], FlowHooks(lambda s: None),
                  ds_indexes=DsIndexTable(True), ports=PortBoard())
    module = cls(ctx, procfs=str(procfs))
    module.procfs = procfs

    def reconcile(settings, revision):
        if "unixsock" not in settings:
            settings += f" unixsock = {tmp_path}/containerd.sock"
        block = f"{cls.name} {{ {settings} }}"
        config = parse_config(f"sflow {{\n collector {{ ip=192.0.2.1 }}\n {block}\n}}\n")
        module.reconcile(AgentState(config=config, revision=revision, interfaces=[],
                                    host_uuid=HOST, agent=SimpleNamespace(ip=HOST_IP)))
    module.reconfigure = reconcile
    reconcile(settings, 1)
    module.link = FakeLink()
    module._handle(Connected("1.7"))          # it asks for its first list here
    return module


def cri_task(cid: str, pid: int, kind: str, pod: str = "web-0", container: str = ""):
    annotations = {api.CONTAINER_TYPE: kind, api.SANDBOX_NAME: pod,
                   api.SANDBOX_NAMESPACE: "default", api.SANDBOX_ID: "sb-" + pod}
    if container:
        annotations[api.CONTAINER_NAME] = container
    return api.ContainerInfo("k8s.io", cid, pid, annotations=annotations)


def alive(module, *pids):
    for pid in pids:
        (module.procfs / str(pid)).mkdir(exist_ok=True)


def dead(module, pid):
    (module.procfs / str(pid)).rmdir()


def start(module, info):
    """A task's start event, then the spec the module fetched for it."""
    alive(module, info.pid)
    module._handle(api.TaskEvent("start", info.namespace, info.id, info.pid))
    module._handle(api.Started(info))


def stop(module, info, *events):
    for what in events or ("exit", "delete", "removed"):
        module._handle(api.TaskEvent(what, info.namespace, info.id))
    dead(module, info.pid)


BOTH = pytest.mark.parametrize("cls", [K8sPods, ContainerdContainers])


@BOTH
def test_a_list_asked_before_a_start_does_not_stop_what_started(tmp_path, cls):
    """The list asked at connect (three calls or more) comes back after the start event and
    the spec of a container that started meanwhile (one call): its snapshot is older, and
    must not stop the container until the next list (refreshVMs) or for good (forgetVMs)."""
    module = make(cls, tmp_path)
    assert module.link.tickets() == [0]
    start(module, cri_task("sb1", 100, "sandbox"))
    guest = next(iter(module.book))
    assert guest.running
    module._handle(api.Listed((), 0))                # list #0: from before sb1 started
    assert guest.running
    # a list asked after the start, that no longer has it: its events were missed
    module._ask_list()
    module._handle(api.Listed((), module.link.tickets()[-1]))
    assert not guest.running


@BOTH
def test_a_list_taken_before_an_exit_does_not_bring_the_container_back(tmp_path, cls):
    """The other side of the race: the list's snapshot has the task, its exit event is
    handled first; the list must not make it run again (with a dead PID)."""
    module = make(cls, tmp_path)
    info = cri_task("sb1", 100, "sandbox")
    start(module, info)
    module._ask_list()                               # the refresh, asked while it runs
    guest = next(iter(module.book))
    stop(module, info, "exit")
    assert not guest.running
    module._handle(api.Listed((info,), module.link.tickets()[-1]))
    assert not guest.running


@BOTH
def test_a_list_starts_no_container_whose_process_is_gone(tmp_path, cls):
    module = make(cls, tmp_path)
    info = cri_task("sb1", 100, "sandbox")
    module._handle(api.Listed((info,), 0))          # procfs/100 does not exist
    assert not any(g.running for g in module.book)
    alive(module, 100)
    module._ask_list()
    module._handle(api.Listed((info,), module.link.tickets()[-1]))
    assert [g.running for g in module.book] == [True]


@BOTH
def test_events_are_remembered_only_while_a_list_is_out(tmp_path, cls):
    """What the tickets cost: nothing once every list is answered, failed or lost."""
    module = make(cls, tmp_path)
    for i in range(50):
        start(module, cri_task(f"c{i}", 200 + i, "sandbox", pod=f"p{i}"))
    assert len(module.last_event) == 50 and module.lists_out == {0: 1}
    module._handle(api.Listed(tuple(cri_task(f"c{i}", 200 + i, "sandbox", pod=f"p{i}")
                                    for i in range(50)), 0))
    assert (module.lists_out, module.last_event) == ({}, {})
    module._ask_list()
    stop(module, cri_task("c0", 200, "sandbox", pod="p0"), "exit")
    assert module.last_event
    module._handle(CallFailed("list", "DeadlineExceeded", module.link.tickets()[-1]))
    assert (module.lists_out, module.last_event) == ({}, {})
    module._ask_list()
    stop(module, cri_task("c1", 201, "sandbox", pod="p1"), "exit")
    module._drop_link()                              # lost: its lists will not come
    assert (module.lists_out, module.last_event) == ({}, {})


def _pod_counters(module, pod):
    records = module.counters([(3, pod.ds_index)])[(3, pod.ds_index)]
    by_tag = {r.tag: r for r in records}
    return by_tag[2101].cpuTime, by_tag[2103].rd_bytes, by_tag[2103].wr_req, by_tag[2101].state


def test_a_crash_looping_container_leaves_its_pod_bounded_and_counting(tmp_path):
    """A container that crash-loops is a new container (a new id) at each restart, and the
    CRI deletes the old ones.  The pod keeps what it has now, not all it ever had, and its
    counters (CPU time, disk) never go back: what the containers that went counted is kept."""
    module = make(K8sPods, tmp_path)
    sandbox = cri_task("sb1", 100, "sandbox")
    start(module, sandbox)
    pod = next(iter(module.book))
    module.tasks[sandbox.key].proc.counters = CgroupCounters(cpu_ns=7_000_000, rd_bytes=1,
                                                             wr_req=0)
    cpu_ms, rd_bytes, wr_req = 7, 1, 0
    seen = [_pod_counters(module, pod)]
    for attempt in range(200):
        app = cri_task(f"app-{attempt}", 1000 + attempt, "container", container="app")
        start(module, app)
        task = module.tasks[app.key]
        for step in (1, 2):              # two polls, its counters growing
            task.proc.counters = CgroupCounters(cpu_ns=step * 3_000_000, rd_bytes=step * 10,
                                                wr_req=step)
            seen.append(_pod_counters(module, pod))
        cpu_ms, rd_bytes, wr_req = cpu_ms + 6, rd_bytes + 20, wr_req + 2
        assert seen[-1][:3] == (cpu_ms, rd_bytes, wr_req)
        if attempt % 3 == 0:             # a list while it runs (refreshVMs)
            module._ask_list()
            module._handle(api.Listed((sandbox, app), module.link.tickets()[-1]))
        stop(module, app, *(("exit", "delete", "removed") if attempt % 2 else ("exit",)))
        seen.append(_pod_counters(module, pod))
        assert seen[-1][:3] == (cpu_ms, rd_bytes, wr_req), attempt
        assert len(pod.members) == 1 and set(module.tasks) == {sandbox.key}
        assert set(module.pod_of) == {sandbox.key} and not module.starting
    assert pod.running and len(module.book) == 1
    for a, b in zip(seen, seen[1:]):
        assert all(x <= y for x, y in zip(a[:3], b[:3])), (a, b)
    # the sandbox goes too: the pod is shut down, its counters stand
    stop(module, sandbox)
    assert not pod.members and not module.tasks and not module.pod_of
    assert _pod_counters(module, pod) == (cpu_ms, rd_bytes, wr_req, VirState.SHUTDOWN)


def test_a_container_seen_again_with_a_new_process_counts_on(tmp_path):
    """Its stop missed (containerd away): the list shows the same container with another
    process, whose cgroup counts from zero; the pod's counters go on from where they were."""
    module = make(K8sPods, tmp_path)
    start(module, cri_task("sb1", 100, "sandbox"))
    app = cri_task("app", 200, "container", container="app")
    start(module, app)
    pod = next(iter(module.book))
    module.tasks[app.key].proc.counters = CgroupCounters(cpu_ns=50_000_000, rd_bytes=500)
    before = _pod_counters(module, pod)
    again = cri_task("app", 300, "container", container="app")
    alive(module, 300)
    module._ask_list()
    module._handle(api.Listed((cri_task("sb1", 100, "sandbox"), again),
                              module.link.tickets()[-1]))
    assert module.tasks[app.key].proc.pid == 300
    module.tasks[app.key].proc.counters = CgroupCounters(cpu_ns=1_000_000, rd_bytes=5)
    assert _pod_counters(module, pod)[:2] == (before[0] + 1, before[1] + 5)


def test_a_container_not_of_a_pod_is_let_go_when_deleted(tmp_path):
    module = make(K8sPods, tmp_path)
    plain = api.ContainerInfo("default", "c1", 100)
    start(module, plain)
    assert plain.key in module.tasks and not module.book.guests
    stop(module, plain)
    assert not module.tasks


def test_a_new_socket_forgets_the_pods_and_their_containers(tmp_path):
    module = make(K8sPods, tmp_path)
    start(module, cri_task("sb1", 100, "sandbox"))
    start(module, cri_task("app", 200, "container", container="app"))
    assert len(module.pod_of) == 2
    module.reconfigure(f"unixsock = {tmp_path}/other.sock", 2)
    assert not module.book.guests and not module.tasks and not module.pod_of


def test_without_its_library_the_module_says_so_once_and_tries_again_on_reload(
        tmp_path, monkeypatch, caplog):
    """grpclib installed while the agent runs: a reload (SIGHUP) is enough."""
    calls = []

    def missing():
        calls.append(1)
        raise api.ContainerdUnavailable("the Python package 'grpclib' is not installed")
    module = make(ContainerdContainers, tmp_path)
    module._drop_link()
    monkeypatch.setattr(api, "Api", missing)
    for now in range(5):
        module.tick(1000.0 + now)
    assert len(calls) == 1 and "reload" in caplog.text
    module.reconfigure("", 2)          # a reload, the library still missing
    module.tick(2000.0)
    assert len(calls) == 2
    monkeypatch.setattr(api, "Api", lambda: object())
    module.reconfigure("", 3)
    module.tick(3000.0)
    assert module.unavailable is None and "absent" in module.said   # on to the socket
