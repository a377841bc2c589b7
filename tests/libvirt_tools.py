"""A libvirtd of the test's own, and a small QEMU domain in it, for the kvm {} tests.

There is no systemd here: virtlogd (QEMU's logs go through it) and libvirtd are started in
the foreground by the test and stopped by their PIDs.  libvirtd runs in its usual system
mode (its sockets are /run/libvirt/libvirt-sock and libvirt-sock-ro, which is what
qemu:///system means), so a libvirtd that already runs here is never touched (the tests
skip), and neither is a host whose libvirt would autostart a network on start-up (that
would add a bridge, dnsmasq and firewall rules).

The domain is QEMU emulation (TCG, ``type='qemu'``), no disk, no kernel, one e1000 NIC whose
tap is ``hsft<pid>v<n>``, no option ROM and boot from a disk that is not there: SeaBIOS
finds nothing to boot and waits, using about 1 % of a CPU.  (Nested KVM works on these
machines but stops SeaBIOS with an emulation failure.)

What libvirtd and virtlogd make under /run/libvirt, /var/lib/libvirt, /var/cache/libvirt
and /var/log/libvirt is noted before they start; whatever is new there is removed in
``stop()``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid as uuidlib
from pathlib import Path
from typing import List, Optional, Set

DIRS = ("/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")
SOCKET = "/run/libvirt/libvirt-sock"
AUTOSTART = "/etc/libvirt/qemu/networks/autostart"

DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='ethernet'>
      <mac address='{mac}'/>
      <target dev='{tap}' managed='yes'/>
      <model type='e1000'/>
      <rom enabled='no'/>
    </interface>
  </devices>
</domain>
"""


class LibvirtUnavailable(Exception):
    """libvirtd or the domain cannot run here (one line: why)."""


def why_not() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root"
    for path in ("/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "/usr/bin/qemu-system-x86_64"):
        if not os.path.exists(path):
            return f"{path} is missing (apt-get install libvirt-daemon-system qemu-system-x86)"
    if os.path.exists(SOCKET):
        return f"a libvirtd may already run ({SOCKET} exists); the tests do not touch it"
    if os.path.isdir(AUTOSTART) and os.listdir(AUTOSTART):
        return f"libvirtd would autostart the networks in {AUTOSTART}"
    try:
        from hsflowd.virt.libvirtapi import LibvirtUnavailable as Missing, load_libvirt
        load_libvirt()
    except Missing as e:
        return str(e)
    return None


def _pids_naming(text: str) -> List[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


def _paths() -> Set[str]:
    out = set()
    for top in DIRS:
        for root, dirs, files in os.walk(top):
            out.add(root)
            out.update(os.path.join(root, name) for name in dirs + files)
    return out


class Libvirtd:
    """virtlogd and libvirtd of our own.  ``start()`` waits until libvirtd answers;
    ``stop()`` (always call it) destroys our domains, stops both by PID and removes what
    they made."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="hsft-libvirt-"))
        self.tag = f"hsft{os.getpid() % 100000}"
        self.before: Optional[Set[str]] = None
        self.procs: List[subprocess.Popen] = []
        self.libvirtd: Optional[subprocess.Popen] = None
        self.domains: List[str] = []
        self._conn = None
        self._count = 0

    def start(self, timeout: float = 30.0) -> "Libvirtd":
        if self.before is None:
            why = why_not()
            if why:
                raise LibvirtUnavailable(why)
            self.before = _paths()
        if not any(p.poll() is None and "virtlogd" in p.args[0] for p in self.procs):
            self.procs.append(self._spawn(["/usr/sbin/virtlogd", "-p",
                                           str(self.dir / "virtlogd.pid")], "virtlogd"))
        self.libvirtd = self._spawn(["/usr/sbin/libvirtd", "-p", str(self.dir / "libvirtd.pid")],
                                    "libvirtd")
        self.procs.append(self.libvirtd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.libvirtd.poll() is not None:
                raise LibvirtUnavailable(f"libvirtd exited ({self.libvirtd.returncode})")
            try:
                self.conn(fresh=True).getVersion()
                return self
            except Exception:
                time.sleep(0.2)
        raise LibvirtUnavailable(f"libvirtd did not answer within {timeout:.0f} s")

    def _spawn(self, cmd: List[str], name: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "a")
        try:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def conn(self, fresh: bool = False):
        from hsflowd.virt.libvirtapi import load_libvirt
        lv = load_libvirt()
        if fresh or self._conn is None:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:
                    pass
            lv.registerErrorHandler(lambda ctx, err: None, None)
            self._conn = lv.open("qemu:///system")
        return self._conn

    def create(self) -> dict:
        """Start a transient domain; its name, UUID, MAC and tap."""
        self._count += 1
        n = self._count
        spec = {"name": f"{self.tag}-vm{n}", "uuid": str(uuidlib.uuid4()),
                "mac": f"52:54:00:{os.getpid() % 256:02x}:{n // 256:02x}:{n % 256:02x}",
                "tap": f"{self.tag}v{n}"[:15]}
        try:
            dom = self.conn().createXML(DOMAIN_XML.format(**spec), 0)
        except Exception as e:
            raise LibvirtUnavailable(f"QEMU domain did not start: {e}") from None
        self.domains.append(spec["name"])
        spec["domain"] = dom
        return spec

    def destroy(self, name: str) -> None:
        try:
            self.conn().lookupByName(name).destroy()
        except Exception:
            pass

    def destroy_all(self) -> None:
        """Destroy every domain made so far: what one test leaves, the next does not find."""
        if self.libvirtd is not None and self.libvirtd.poll() is None:
            for name in self.domains:
                self.destroy(name)

    def restart(self) -> None:
        """libvirtd stopped (SIGTERM by PID) and started again; the domains go on."""
        self._terminate(self.libvirtd)
        self._conn = None
        self.start()

    @staticmethod
    def _terminate(proc: Optional[subprocess.Popen], timeout: float = 15.0) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        if self.libvirtd is not None and self.libvirtd.poll() is None:
            for name in self.domains:
                self.destroy(name)
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        for proc in reversed(self.procs):
            self._terminate(proc)
        for pid in _pids_naming(f"guest={self.tag}-vm"):    # a QEMU that outlived libvirtd
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for name in self.domains:
            subprocess.run(["ip", "link", "del", f"{self.tag}v{name.rsplit('vm', 1)[1]}"[:15]],
                           capture_output=True)
        if self.before is not None:
            for path in sorted(_paths() - self.before, key=len, reverse=True):
                try:
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.unlink(path)
                except OSError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)
