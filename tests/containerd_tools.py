"""A private containerd for the containerd {} and k8s {} tests, and pods made as the kubelet
and a CNI plugin make them.

How it runs here (docs: /work/shared/reference/environment.md, section 7): containerd 1.6
and runc come with docker.io; containerd is started directly with a config of its own, so
its socket, root and state live in a temporary directory and nothing it does touches
another containerd (the CRI and opt plugins and the snapshotters that cannot work here are
off).  Containers are made with ``ctr run`` from a busybox-static root (no image, no
registry), their cgroups under a parent named after this test run (``--cgroup``).

A pod is what CRI makes: a sandbox container and its containers, each carrying the CRI
annotations, sharing a network namespace made with ``ip netns add``; as a bridge CNI plugin
would, the namespace gets a veth whose other end is on a bridge (cni0's role).  The bridge
and the host ends are the test's own devices in the root namespace, where the agent must
run to see the pods' cgroups (``ip netns exec`` mounts a /sys without /sys/fs/cgroup); the
bridge has no address, so no route changes, and the traffic stays between the pods.

``stop()`` ends everything by PID (tasks, shims, containerd) and removes what is left: the
state directory's mounts, the cgroups, the directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import docker_tools
from netns import Namespace, run as run_cmd

CGROUP_ROOT = Path("/sys/fs/cgroup")
K8S_NS = "k8s.io"
DISABLED = ("io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
            "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.tracing.processor.v1.otlp")


class ContainerdUnavailable(Exception):
    """containerd cannot run here (one line: why)."""


def why_not() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("containerd", "ctr", "runc", "busybox"):
        if not shutil.which(tool):
            return f"{tool} is missing (apt-get install docker.io busybox-static)"
    try:
        from hsflowd.virt.containerdapi import Api
        Api()
    except Exception as e:     # the agent's client must be there to be tested
        return str(e)
    return None


class Containerd:
    """One containerd of our own; ``start()`` waits until it answers."""

    def __init__(self, tag: Optional[str] = None):
        self.tag = tag or f"hsftc{os.getpid() % 100000}"
        self.dir = Path(tempfile.mkdtemp(prefix="hsft-ctd-"))
        os.chmod(self.dir, 0o755)
        self.socket = self.dir / "containerd.sock"
        self.rootfs = self.dir / "rootfs"
        self.log = self.dir / "containerd.log"
        self.proc: Optional[subprocess.Popen] = None
        self._write_config()
        self._make_rootfs()

    def _write_config(self) -> None:
        disabled = ", ".join(f'"{p}"' for p in DISABLED)
        (self.dir / "config.toml").write_text(f"""version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
disabled_plugins = [{disabled}]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
""")

    def _make_rootfs(self) -> None:
        self.rootfs.mkdir()
        import io
        import tarfile
        with tarfile.open(fileobj=io.BytesIO(docker_tools.busybox_tar())) as tar:
            tar.extractall(self.rootfs)

    # ---------------------------------------------------------------- the daemon
    def start(self, timeout: float = 20.0) -> "Containerd":
        why = why_not()
        if why:
            raise ContainerdUnavailable(why)
        log = open(self.log, "a")
        try:
            self.proc = subprocess.Popen(["containerd", "--config", str(self.dir / "config.toml")],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerdUnavailable(f"containerd exited ({self.proc.returncode})")
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.1)
        raise ContainerdUnavailable(f"containerd did not answer within {timeout:.0f} s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """What a crash looks like: SIGKILL by PID (the shims and tasks live on)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def ctr(self, *args: str, namespace: str = K8S_NS, check: bool = True
            ) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ctr", "-a", str(self.socket), "-n", namespace, *args],
                              capture_output=True, text=True, timeout=30)
        if check and proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    # ---------------------------------------------------------------- containers
    def run(self, name: str, command: Sequence[str] = ("/bin/sleep", "100000"),
            namespace: str = K8S_NS, annotations: Optional[Dict[str, str]] = None,
            netns: Optional[str] = None, memory: Optional[int] = None,
            cpus: Optional[float] = None) -> int:
        """Start a container; its task's PID."""
        args = ["run", "-d", "--rootfs", "--cgroup", f"/{self.tag}/{namespace}/{name}"]
        for key, value in (annotations or {}).items():
            args += ["--annotation", f"{key}={value}"]
        if netns:
            args += ["--with-ns", f"network:/var/run/netns/{netns}"]
        if memory:
            args += ["--memory-limit", str(memory)]
        if cpus:
            args += ["--cpus", str(cpus)]
        self.ctr(*args, str(self.rootfs), name, *command, namespace=namespace)
        return self.task_pid(name, namespace)

    def task_pid(self, name: str, namespace: str = K8S_NS) -> int:
        for line in self.ctr("task", "ls", namespace=namespace).stdout.splitlines()[1:]:
            words = line.split()
            if words and words[0] == name:
                return int(words[1])
        raise RuntimeError(f"no task {name}")

    def remove(self, name: str, namespace: str = K8S_NS) -> None:
        """Kill the task, delete it and the container (as the kubelet does a pod's)."""
        self.ctr("task", "kill", "-s", "KILL", name, namespace=namespace, check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ctr("task", "rm", name, namespace=namespace, check=False).returncode == 0:
                break
            time.sleep(0.1)
        self.ctr("containers", "rm", name, namespace=namespace, check=False)

    def cgroup_file(self, name: str, v1_controller: str, v1_name: str, v2_name: str,
                    namespace: str = K8S_NS) -> Path:
        """A container's cgroup file: the v1 controller's where there is one, else v2's."""
        group = f"{self.tag}/{namespace}/{name}"
        v1 = CGROUP_ROOT / v1_controller / group / v1_name
        if v1.exists() or not (CGROUP_ROOT / "cgroup.controllers").exists():
            return v1
        return CGROUP_ROOT / group / v2_name

    # ---------------------------------------------------------------- cleaning up
    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for namespace in self.ctr("namespaces", "ls", "-q", check=False).stdout.split():
                for name in self.ctr("containers", "ls", "-q", namespace=namespace,
                                     check=False).stdout.split():
                    self.remove(name, namespace)
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # shims (they name our socket) and what runs in our cgroups, if anything is left
        docker_tools.end_leftovers(self.dir, self.cgroup_dirs())
        for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            target = line.split()[1]
            if target.startswith(str(self.dir)):
                subprocess.run(["umount", "-l", target], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def cgroup_dirs(self) -> List[Path]:
        return docker_tools.cgroup_dirs(self.tag)


# ---------------------------------------------------------------- pods

@dataclass
class Pod:
    """One pod: its sandbox and containers (names in containerd), its network namespace,
    its host-side veth on the node's bridge, and its address."""

    name: str
    namespace: str
    sandbox: str
    netns: Namespace
    veth: str
    ip: str
    containers: List[str] = field(default_factory=list)

    def annotations(self, kind: str, container: str = "") -> Dict[str, str]:
        out = {"io.kubernetes.cri.container-type": kind,
               "io.kubernetes.cri.sandbox-id": self.sandbox,
               "io.kubernetes.cri.sandbox-name": self.name,
               "io.kubernetes.cri.sandbox-namespace": self.namespace}
        if container:
            out["io.kubernetes.cri.container-name"] = container
        return out


def _quiet(name: str) -> None:
    """No IPv6 on a link the test made (before it is up): a new link's duplicate address
    detection, MLD reports and router solicitations go on for seconds, and the agent samples
    the bridge 1 in 1, so they would be read as the agent not being idle."""
    Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")


class Node:
    """The node's pod network: a bridge of the test's own, with no address."""

    def __init__(self, tag: str, subnet: str = "10.233"):
        self.tag = tag
        self.bridge = f"{tag}br"[:15]
        self.subnet = f"{subnet}.{os.getpid() % 200}"
        run_cmd(["ip", "link", "add", self.bridge, "type", "bridge"])
        _quiet(self.bridge)
        run_cmd(["ip", "link", "set", self.bridge, "up"])
        self.pods: List[Pod] = []
        self._hosts = iter(range(2, 250))

    def make_pod(self, ctd: Containerd, name: str, namespace: str = "default",
                 containers: Sequence[str] = ("app",),
                 command: Sequence[str] = ("/bin/sleep", "100000"), **limits) -> Pod:
        """A sandbox and its containers, in a network namespace on the bridge."""
        host = next(self._hosts)
        index = host - 2
        netns = Namespace(f"{self.tag}p{index}"[:15])
        veth = f"veth{self.tag[-5:]}{index}"[:15]
        run_cmd(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                 "netns", netns.name])
        _quiet(veth)
        netns.run("sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1")
        run_cmd(["ip", "link", "set", veth, "master", self.bridge, "up"])
        netns.run(f"ip addr add {self.subnet}.{host}/24 dev eth0")
        netns.run("ip link set eth0 up")
        pod = Pod(name, namespace, f"{self.tag}s{index}", netns, veth, f"{self.subnet}.{host}")
        self.pods.append(pod)         # from here on, close() removes it
        ctd.run(pod.sandbox, ("/bin/sleep", "100000"), annotations=pod.annotations("sandbox"),
                netns=netns.name)
        for c in containers:
            cname = f"{pod.sandbox}-{c}"
            pod.containers.append(cname)
            ctd.run(cname, command, annotations=pod.annotations("container", c),
                    netns=netns.name, **limits)
        return pod

    def delete_pod(self, ctd: Containerd, pod: Pod) -> None:
        for name in pod.containers + [pod.sandbox]:
            ctd.remove(name)
        pod.netns.delete()
        self.pods.remove(pod)

    def close(self, ctd: Optional[Containerd] = None) -> None:
        for pod in list(self.pods):
            if ctd is not None:
                for name in pod.containers + [pod.sandbox]:
                    ctd.remove(name)
            pod.netns.delete()       # its veth goes with it
        self.pods.clear()
        run_cmd(["ip", "link", "del", self.bridge], check=False)
