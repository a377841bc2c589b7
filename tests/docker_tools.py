"""A private dockerd for the container tests: started by the test, stopped by its PID, and
everything it leaves behind removed.

How it runs here (docs: /work/shared/reference/environment.md, "1. Docker"): no systemd, so
dockerd is started directly and spawns its own containerd.  Everything it has is its own,
so that it can run next to a dockerd the machine already has and cleaning up touches
nothing the test did not make: its socket, data and state live in a temporary directory
(``-H unix://DIR/docker.sock``, ``--data-root``, ``--exec-root``, the pid file; the agent
is pointed at the socket with DOCKER_HOST), its bridge is one the test makes
(``hsft<pid>br`` on a test-only subnet, given with ``-b``: the role docker0 plays), its
containers' cgroups go under a parent named after this test run (``--cgroup-parent``), and
it makes no iptables rules and changes no sysctl (``--iptables=false --ip-forward=false``).

The image is busybox-static in a tar stream, imported as ``hsft/busybox`` (no registry).
Containers run ``sleep`` under docker-init, so a stop is quick.

Left behind by dockerd and removed in ``stop()``: the cgroup parent in every hierarchy,
/var/run/docker (its plugins directory), /run/containerd and /etc/docker/key.json (each only
if this dockerd made it), and the bind mount of its data root; the test's bridge goes too.  A dockerd that cannot be stopped cleanly (killed, and not started again) leaves
containerd-shim processes and the containers' processes: those are found by PID (the
shims name our exec root, the containers are in our cgroup parent) and killed.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

IMAGE = "hsft/busybox"
CGROUP_ROOT = Path("/sys/fs/cgroup")


class DockerUnavailable(Exception):
    """dockerd cannot run here (one line: why)."""


def why_not() -> Optional[str]:
    """Why a private dockerd cannot be started here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for path in ("/usr/sbin/dockerd", "/usr/bin/docker-init"):
        if not os.path.exists(path):
            return f"{path} is missing (apt-get install docker.io)"
    if not shutil.which("busybox"):
        return "busybox is missing (apt-get install busybox-static)"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker Python package is missing (pip install docker)"
    return None


def busybox_tar() -> bytes:
    """A root file system with busybox and a link per applet, as a tar stream."""
    busybox = shutil.which("busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for d in ("bin", "proc", "sys", "dev", "etc", "tmp"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
    return out.getvalue()


class Dockerd:
    """One dockerd of our own.  ``start()`` waits until it answers; ``stop()`` (always
    call it) stops it by PID and removes what it left behind."""

    def __init__(self, tag: Optional[str] = None, debug: bool = False):
        self.tag = tag or f"hsft{os.getpid() % 100000}"
        self.dir = Path(tempfile.mkdtemp(prefix="hsft-docker-"))
        self.pidfile = self.dir / "dockerd.pid"
        self.log = self.dir / "dockerd.log"
        self.debug = debug
        self.proc: Optional[subprocess.Popen] = None
        self.cgroup_parent = f"/{self.tag}"
        self.bridge = f"{self.tag}br"[:15]
        # a test-only subnet, different per run, so that two runs can share a machine
        self.bridge_ip = f"10.231.{200 + os.getpid() % 50}.1/24"
        self.socket = self.dir / "docker.sock"
        self.url = f"unix://{self.socket}"
        self._made_run_containerd = not os.path.exists("/run/containerd")
        self._made_var_run_docker = not os.path.exists("/var/run/docker")
        self._made_key = not os.path.exists("/etc/docker/key.json")
        self._made_etc_docker = not os.path.exists("/etc/docker")
        self._client = None

    # ---------------------------------------------------------------- the daemon
    def command(self) -> List[str]:
        cmd = ["/usr/sbin/dockerd", "--iptables=false", "--ip6tables=false",
               "--ip-forward=false", "--ip-masq=false", "--userland-proxy=false",
               "--storage-driver=overlay2", f"--bridge={self.bridge}",
               # cgroupfs, so that --cgroup-parent is a path on v1 and v2 alike (with
               # systemd as init on v2, dockerd would pick its systemd driver and slices)
               "--exec-opt", "native.cgroupdriver=cgroupfs",
               f"--cgroup-parent={self.cgroup_parent}",
               f"--data-root={self.dir / 'data'}", f"--exec-root={self.dir / 'exec'}",
               f"--pidfile={self.pidfile}", "-H", self.url]
        if self.debug:
            cmd.append("--debug")
        return cmd

    def start(self, timeout: float = 30.0) -> "Dockerd":
        why = why_not()
        if why:
            raise DockerUnavailable(why)
        if not os.path.exists(f"/sys/class/net/{self.bridge}"):
            for cmd in (f"ip link add {self.bridge} type bridge",
                        f"ip addr add {self.bridge_ip} dev {self.bridge}",
                        f"ip link set {self.bridge} up"):
                subprocess.run(cmd.split(), check=True, capture_output=True)
        # a containerd that died with its dockerd may stay a zombie here (PID 1 is not an
        # init that reaps): dockerd would take its pid file for a live containerd and wait
        stale = self.dir / "exec" / "containerd" / "containerd.pid"
        try:
            if not _alive(int(stale.read_text().strip() or 0)):
                stale.unlink()
        except (OSError, ValueError):
            pass
        log = open(self.log, "a")
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DockerUnavailable(f"dockerd exited ({self.proc.returncode}): "
                                        f"{self.log_tail()}")
            if self._ping():
                return self
            time.sleep(0.1)
        raise DockerUnavailable(f"dockerd did not answer within {timeout:.0f} s: {self.log_tail()}")

    def _ping(self) -> bool:
        """dockerd answers /_ping on its socket (asked by hand: a docker-py client made
        while dockerd is not up yet leaves its socket open behind the exception)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(str(self.socket))
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return s.recv(64).split(b" ", 2)[1:2] == [b"200"]     # HTTP/1.x 200 OK
        except OSError:
            return False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def client(self, fresh: bool = False):
        import docker
        if fresh or self._client is None:
            if self._client is not None:
                self._client.close()
            self._client = docker.APIClient(base_url=self.url, version="auto", timeout=30)
        return self._client

    def kill(self) -> None:
        """What a crash of the engine looks like: SIGKILL dockerd (by PID); the containerd
        it started notices and exits within a second or two (SIGKILLed by PID if not)."""
        if self.proc is not None and self.proc.poll() is None:
            children = _children(self.proc.pid)
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            deadline = time.monotonic() + 10
            while any(_alive(p) for p in children) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in children:
                _kill(pid)
        if self._client is not None:
            self._client.close()
            self._client = None

    def terminate(self, timeout: float = 20.0) -> None:
        """SIGTERM dockerd by PID (it stops its containers and containerd), then SIGKILL."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    # ---------------------------------------------------------------- images, containers
    def import_busybox(self) -> str:
        self.client().import_image_from_data(busybox_tar(), repository=IMAGE, tag="latest")
        return IMAGE

    def run(self, name: str, memory: Optional[int] = None, cpus: Optional[float] = None,
            hostname: Optional[str] = None, command: Optional[List[str]] = None,
            network_mode: Optional[str] = None) -> Dict:
        """Create and start a container; its inspect answer."""
        c = self.client()
        host_config = c.create_host_config(
            init=True, mem_limit=memory, nano_cpus=int(cpus * 1e9) if cpus else None,
            network_mode=network_mode)
        made = c.create_container(IMAGE, command=command or ["sleep", "100000"], name=name,
                                  hostname=hostname, host_config=host_config)
        c.start(made["Id"])
        return c.inspect_container(made["Id"])

    def stop_container(self, ident: str) -> None:
        self.client().stop(ident, timeout=2)

    def remove_container(self, ident: str) -> None:
        try:
            self.client().remove_container(ident, force=True)
        except Exception:
            pass

    def exec(self, ident: str, command: List[str]) -> str:
        c = self.client()
        e = c.exec_create(ident, command)
        return c.exec_start(e["Id"]).decode(errors="replace")

    # ---------------------------------------------------------------- cleaning up
    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None and self._ping():
            c = self.client()
            for container in c.containers(all=True):
                try:
                    c.remove_container(container["Id"], force=True)
                except Exception:
                    pass
        self.terminate()
        self._sweep()

    def _sweep(self) -> None:
        # what a dockerd that did not stop cleanly leaves running: shims, then containers
        end_leftovers(self.dir, self.cgroup_dirs())
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        if self._made_run_containerd:
            shutil.rmtree("/run/containerd", ignore_errors=True)
        if self._made_var_run_docker:
            shutil.rmtree("/var/run/docker", ignore_errors=True)
        if self._made_key:
            try:
                os.unlink("/etc/docker/key.json")
            except OSError:
                pass
        if self._made_etc_docker:
            try:
                os.rmdir("/etc/docker")
            except OSError:
                pass
        # overlay mounts under the data root are gone with dockerd; unmount what is not
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1]
            if target.startswith(str(self.dir)):
                subprocess.run(["umount", "-l", target], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def cgroup_dirs(self) -> List[Path]:
        return cgroup_dirs(self.cgroup_parent.lstrip("/"))

    def cgroup_file(self, ident: str, v1_controller: str, v1_name: str, v2_name: str) -> Path:
        """A container's cgroup file: the v1 controller's where there is one, else v2's."""
        name = self.cgroup_parent.lstrip("/")
        v1 = CGROUP_ROOT / v1_controller / name / ident / v1_name
        if v1.exists() or not (CGROUP_ROOT / "cgroup.controllers").exists():
            return v1
        return CGROUP_ROOT / name / ident / v2_name



def _children(pid: int) -> List[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def cgroup_dirs(name: str) -> List[Path]:
    """A cgroup parent in every hierarchy: /sys/fs/cgroup/NAME on a pure v2 host,
    /sys/fs/cgroup/CONTROLLER/NAME (and unified/NAME) on a v1 or hybrid one."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        candidates = [CGROUP_ROOT / name]
    else:
        candidates = [h / name for h in CGROUP_ROOT.iterdir()] if CGROUP_ROOT.is_dir() else []
    return [p for p in candidates if p.is_dir()]


def processes_in(dirs: List[Path]) -> List[int]:
    """The processes in these cgroups and those below them."""
    pids: set = set()
    for parent in dirs:
        for procs in parent.glob("**/cgroup.procs"):
            try:
                pids.update(int(x) for x in procs.read_text().split())
            except OSError:
                pass
    return sorted(pids)


def end_leftovers(workdir: Path, cgroups: List[Path]) -> None:
    """What a daemon of ours that did not stop cleanly leaves: the shims (their command
    lines name its directory), what runs in its cgroups (three rounds: a shim may be
    starting one), then the cgroups themselves."""
    for pid in _pids_naming(str(workdir)):
        _kill(pid)
    for _ in range(3):
        for pid in processes_in(cgroups):
            _kill(pid)
    for parent in cgroups:
        for child in sorted(parent.glob("**/"), key=lambda p: -len(p.parts)):
            try:
                child.rmdir()
            except OSError:
                pass


def _pids_naming(text: str) -> List[int]:
    """Processes whose command line contains ``text`` (our exec root: only ours)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


