"""containerd {} and k8s {} without a containerd: names, UUIDs, messages, a pod's sums.

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

import pytest

from hsflowd.modules.containerd import cri_name, id_uuid
from hsflowd.modules.k8s import pod_name
from hsflowd.sources.cgroups import CgroupCounters
from hsflowd.virt import containerdapi as api
from hsflowd.virt.dsindex import name_uuid
from hsflowd.virt.process import ContainerProcess, HostFacts, pod_reading
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


def test_pod_reading_sums_its_containers():
    host = HostFacts(memory=8 << 30, cpus=4, machine_type=3, os_release="6.1")

    def proc(cpu_ns, memory, limit=None, quota=None, rd=None):
        return ContainerProcess(counters=CgroupCounters(cpu_ns=cpu_ns, memory=memory,
                                                        memory_limit=limit, cpu_limit=quota,
                                                        cpus_allowed=2, rd_bytes=rd))
    sandbox, app, gone = proc(1_000_000, 1 << 20), proc(5_000_000, 3 << 20, 64 << 20, 0.5, 4096), \
        proc(7_000_000, 9 << 20, rd=100)
    r = pod_reading("k8s__web-0_default_u_a", b"\x01" * 16, VirState.RUNNING,
                    ever=[sandbox, app, gone], running=[sandbox, app], net=sandbox, host=host)
    assert r.cpu_ns == 13_000_000                 # every container it has had: no step back
    assert r.memory == 4 << 20                     # those running
    assert r.max_memory == host.memory             # the sandbox has no limit: the host's
    assert r.vcpus == 2                            # one without a quota: the CPUs it may use
    assert r.disk.rd_bytes == 4196 and r.disk.wr_bytes is None
    both = pod_reading("p", b"\x01" * 16, VirState.RUNNING, ever=[app, app], running=[app, app],
                       net=None, host=host)
    assert (both.max_memory, both.vcpus) == (128 << 20, 1)   # limits summed, 1.0 CPU


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
