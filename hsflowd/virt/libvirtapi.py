"""libvirt, off the agent's loop: a read-only connection, domain lifecycle events, the
domain list with each domain's interfaces and disks, and bulk statistics.

The binding is libvirt-python: the one on the path (pip's libvirt-python), else Debian's
python3-libvirt loaded from /usr/lib/python3/dist-packages.  Debian builds it for its own
Python 3 (libvirtmod.cpython-311-x86_64-linux-gnu.so on Debian 12), which is the Python
the agent runs on there, and pip's would have to be compiled against libvirt-dev; so the
extension is loaded by its file name when its ABI tag is this interpreter's (as
``samplers.ebpf`` loads Debian's bcc), and never otherwise.

Threads: the calls thread (``handover.Worker``) opens the connection and makes every
call; the events thread runs libvirt's default event loop, which delivers lifecycle
events and keepalives (a libvirtd that dies is noticed within ~15 s even when idle).
The loop asks for the list and hears the answers as messages, and waits at most
``STATS_TIMEOUT`` for the statistics a poll needs.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .handover import (CallFailed, Connected, Handover, Link, Lost, Worker,  # noqa: F401 (kvm)
                       call_failed, lost)

DIST = "/usr/lib/python3/dist-packages"
DEFAULT_URI = "qemu:///system"
STATS_TIMEOUT = 0.5
KEEPALIVE = (5, 3)        # a probe every 5 s, 3 unanswered: the connection is dead

# virDomainEventType
EVENT_DEFINED, EVENT_UNDEFINED, EVENT_STARTED, EVENT_SUSPENDED, EVENT_RESUMED, \
    EVENT_STOPPED, EVENT_SHUTDOWN, EVENT_PMSUSPENDED, EVENT_CRASHED = range(9)


class LibvirtUnavailable(Exception):
    """libvirt-python cannot be imported (one line: why)."""


_EVENT_IMPL = False
_EVENT_LOCK = threading.Lock()


def load_libvirt():
    """The libvirt module: importable as it is, or Debian's from its own directory."""
    try:
        import libvirt
        return libvirt
    except ImportError:
        pass
    so = os.path.join(DIST, "libvirtmod" + importlib.machinery.EXTENSION_SUFFIXES[0])
    py = os.path.join(DIST, "libvirt.py")
    if not (os.path.exists(so) and os.path.exists(py)):
        raise LibvirtUnavailable("libvirt-python is not installed (Debian: apt-get install "
                                 "python3-libvirt; pip: pip install libvirt-python)")
    loaded = []
    try:
        for name, path in (("libvirtmod", so), ("libvirt", py)):
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            loaded.append(name)
            spec.loader.exec_module(module)
    except Exception as e:  # an incompatible or broken package, libvirt.so.0 missing
        for name in loaded:
            sys.modules.pop(name, None)
        raise LibvirtUnavailable(f"cannot load libvirt-python from {DIST}: {e}") from None
    return sys.modules["libvirt"]


# ---------------------------------------------------------------- what libvirt says

@dataclass(frozen=True)
class DomainInfo:
    """One domain of the list: identity and devices (from its XML)."""

    uuid: bytes
    name: str
    interfaces: Tuple[Tuple[str, bytes], ...] = ()    # (host device, guest MAC)
    disks: Tuple[str, ...] = ()                       # target devices


@dataclass(frozen=True)
class Domains:
    """The active domains now."""

    domains: Tuple[DomainInfo, ...]


@dataclass(frozen=True)
class Lifecycle:
    uuid: bytes
    event: int
    detail: int


def parse_domain_xml(text: str) -> Tuple[Tuple[Tuple[str, bytes], ...], Tuple[str, ...]]:
    """The interfaces (host device, MAC) and the writable disks (target dev) of a domain
    XML, as hsflowd's mod_kvm reads them (a disk needs a source file and a target; a
    read-only one is left out)."""
    root = ET.fromstring(text)
    interfaces = []
    for iface in root.findall("./devices/interface"):
        target = iface.find("target")
        mac = iface.find("mac")
        dev = target.get("dev") if target is not None else None
        raw = _mac(mac.get("address") if mac is not None else None)
        if dev and raw:
            interfaces.append((dev, raw))
    disks = []
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        if disk.find("readonly") is not None or target is None or source is None:
            continue
        if target.get("dev") and (source.get("file") or source.get("dev")):
            disks.append(target.get("dev"))
    return tuple(interfaces), tuple(disks)


def _mac(text: Optional[str]) -> Optional[bytes]:
    try:
        raw = bytes.fromhex((text or "").replace(":", ""))
    except ValueError:
        return None
    return raw if len(raw) == 6 else None


def sum_prefixed(stats: Dict[str, Any], group: str, fields: Tuple[str, ...]) -> Dict[str, Optional[int]]:
    """``group.N.field`` summed over N (net.0.rx.bytes + net.1.rx.bytes ...).  A domain
    with no such device sums to 0; a field no device has, or a group libvirt did not
    report, is None (unknown)."""
    if f"{group}.count" not in stats:
        return {name: None for name in fields}
    count = int(stats[f"{group}.count"] or 0)
    out: Dict[str, Optional[int]] = {}
    for name in fields:
        values = [stats[k] for k in (f"{group}.{i}.{name}" for i in range(count)) if k in stats]
        out[name] = sum(int(v) for v in values) if values or not count else None
    return out


# ---------------------------------------------------------------- the connection

class LibvirtLink(Link):
    """One read-only connection; see the module docstring."""

    def __init__(self, libvirt, uri: str):
        self.libvirt = libvirt
        self.uri = uri
        self.handover = Handover()
        self.worker = Worker("libvirt-calls", self.handover, self._failed)
        self.conn = None
        self.calls = 0
        self._callback = None
        self._list_queued = False
        self._stop_events = threading.Event()
        self._wake_timer: Optional[int] = None   # off until close() fires it
        self._events = threading.Thread(target=self._run_events, name="libvirt-events",
                                        daemon=True)

    def start(self) -> "LibvirtLink":
        self.worker.start()
        self.worker.submit("connect", self._connect)
        return self



    def list(self) -> None:
        """A list of the domains, unless one asked for has not begun yet (a burst of
        lifecycle events asks once, not once a domain: each list reads every domain's XML)."""
        if not self._list_queued:
            self._list_queued = True
            self.worker.submit("list", self._list)

    def stats(self, domains: List[DomainInfo], timeout: float = STATS_TIMEOUT) -> Dict[bytes, Dict[str, Any]]:
        """uuid -> libvirt's statistics of each domain asked for that is running (Busy,
        from ``handover``, if libvirtd does not answer in time)."""
        return self.worker.call(lambda: self._stats(domains), timeout)

    def close(self, wait: float = 0.2) -> None:
        """Close the connection (on the calls thread, after what it is doing) and end both
        threads; a thread stuck in a call to a hung libvirtd is left to end by itself."""
        self.worker.submit("close", self._disconnect)
        self.worker.close(wait)
        self.handover.closed.set()
        self._stop_events.set()
        if self._wake_timer is not None:     # the events thread sleeps until then
            self.libvirt.virEventUpdateTimeout(self._wake_timer, 0)
        if self._events.is_alive():
            self._events.join(wait)
        self.handover.close()

    # ---- on the calls thread
    def _connect(self):
        lv = self.libvirt
        lv.registerErrorHandler(lambda ctx, err: None, None)   # no libvirt lines on stderr
        global _EVENT_IMPL
        with _EVENT_LOCK:
            if not _EVENT_IMPL:      # once per process, before the first connection
                lv.virEventRegisterDefaultImpl()
                _EVENT_IMPL = True
        # the events thread needs no timer of its own to see that it should stop: close()
        # fires this one (not a wake-up every half second for the connection's life)
        self._wake_timer = lv.virEventAddTimeout(-1, lambda t, opaque: None, None)
        self._events.start()
        self.calls += 1
        try:
            conn = lv.openReadOnly(self.uri)
        except lv.libvirtError as e:
            return lost(e, kind=False)
        self.conn = conn
        try:
            conn.setKeepAlive(*KEEPALIVE)
        except lv.libvirtError:
            pass      # the test driver has no keepalive: nothing to watch
        conn.registerCloseCallback(lambda c, reason, opaque: self.handover.post(
            Lost(f"libvirt closed the connection (reason {reason})")), None)
        self._callback = conn.domainEventRegisterAny(
            None, lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            lambda c, dom, event, detail, opaque: self.handover.post(
                Lifecycle(dom.UUID(), event, detail)), None)
        try:
            version = conn.getLibVersion()
            text = f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}"
        except lv.libvirtError:
            text = "?"
        return Connected(text)

    def _disconnect(self):
        conn, self.conn = self.conn, None
        if conn is None:
            return None
        try:
            if self._callback is not None:
                conn.domainEventDeregisterAny(self._callback)
            conn.unregisterCloseCallback()
        except Exception:
            pass
        try:
            conn.close()
        except Exception:
            pass
        return None

    def _list(self) -> Domains:
        self._list_queued = False     # a list asked for from here on sees what this one may not
        lv = self.libvirt
        out = []
        self.calls += 1
        for dom in self.conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            self.calls += 1
            try:
                interfaces, disks = parse_domain_xml(dom.XMLDesc(0))
            except (lv.libvirtError, ET.ParseError):
                interfaces, disks = (), ()
            out.append(DomainInfo(dom.UUID(), dom.name(), interfaces, disks))
        return Domains(tuple(out))

    def _stats(self, domains: List[DomainInfo]) -> Dict[bytes, Dict[str, Any]]:
        lv = self.libvirt
        found = []
        for info in domains:
            try:
                found.append((self.conn.lookupByUUID(info.uuid), info))
            except lv.libvirtError:
                pass       # gone: its lifecycle event is on its way
        if not found:
            return {}
        groups = (lv.VIR_DOMAIN_STATS_STATE | lv.VIR_DOMAIN_STATS_CPU_TOTAL
                  | lv.VIR_DOMAIN_STATS_BALLOON | lv.VIR_DOMAIN_STATS_VCPU
                  | lv.VIR_DOMAIN_STATS_INTERFACE | lv.VIR_DOMAIN_STATS_BLOCK)
        self.calls += 1
        by_uuid = {dom.UUID(): info for dom, info in found}
        out = {}
        for dom, stats in self.conn.domainListGetStats([d for d, _ in found], groups):
            stats = dict(stats)
            if "cpu.time" not in stats:
                self._per_call(dom, by_uuid[dom.UUID()], stats)
            out[dom.UUID()] = stats
        return out

    def _per_call(self, dom, info: DomainInfo, stats: Dict[str, Any]) -> None:
        """For a driver without bulk statistics (the test driver, old libvirt): the calls
        hsflowd's mod_kvm makes, virDomainGetInfo, InterfaceStats and BlockStats/Info,
        written into the bulk statistics' names."""
        lv = self.libvirt
        self.calls += 1
        state, max_kib, kib, vcpus, cpu_ns = dom.info()
        stats.setdefault("state.state", state)
        stats.update({"cpu.time": cpu_ns, "balloon.current": kib, "balloon.maximum": max_kib,
                      "vcpu.current": vcpus})
        nets = 0
        for dev, _mac in info.interfaces:
            try:
                self.calls += 1
                values = dom.interfaceStats(dev)
            except lv.libvirtError:
                continue
            for name, value in zip(("rx.bytes", "rx.pkts", "rx.errs", "rx.drop", "tx.bytes",
                                    "tx.pkts", "tx.errs", "tx.drop"), values):
                if value >= 0:
                    stats[f"net.{nets}.{name}"] = value
            nets += 1
        stats["net.count"] = nets
        disks = 0
        for dev in info.disks:
            try:
                self.calls += 2
                values = dom.blockStats(dev)
                capacity, allocation, _physical = dom.blockInfo(dev)
            except lv.libvirtError:
                continue
            for name, value in zip(("rd.reqs", "rd.bytes", "wr.reqs", "wr.bytes", "errors"),
                                   values):
                if value >= 0:
                    stats[f"block.{disks}.{name}"] = value
            stats[f"block.{disks}.capacity"] = capacity
            stats[f"block.{disks}.allocation"] = allocation
            disks += 1
        stats["block.count"] = disks

    @staticmethod
    def _failed(what: str, e: BaseException):
        return call_failed(what, e, kind=False)

    # ---- on the events thread
    def _run_events(self) -> None:
        lv = self.libvirt
        try:
            while not self._stop_events.is_set():
                if lv.virEventRunDefaultImpl() < 0:
                    break
        finally:
            lv.virEventRemoveTimeout(self._wake_timer)
