"""systemd's services, over D-Bus, off the agent's loop.

The client is jeepney: pure Python (no C library, no GLib or asyncio loop of its own), in
Debian since bookworm (python3-jeepney) and in every distribution that ships
SecretStorage, and its blocking connection is a plain socket a thread can wait on.
dbus-fast would bring asyncio, which the agent does not run.  The wire protocol is
jeepney's; this file only says what to ask.

One thread owns one connection to the system bus.  It subscribes to systemd's unit
signals (Manager.Subscribe, with match rules for UnitNew, UnitRemoved, Reloading, the
units' PropertiesChanged and systemd leaving or joining the bus), and lists the services
when the loop asks (``list()``: on connecting and every refreshVMs) and soon after a
signal says that a service started or stopped (a burst of signals makes one list, SETTLE
seconds later).  A list is one ListUnitsByPatterns call (ListUnits filtered by systemd:
active *.service units); a service not seen before, or one a signal named, costs five
Gets more (its ControlGroup and the CPU, memory, I/O and block I/O accounting switches),
the others nothing.  The answer is ``Listed``: every loaded, active service and its
cgroup.

The loop never waits on D-Bus: the thread hands its messages over through a socketpair
the loop watches (``virt.handover``).  ``close()`` shuts the bus socket down under the
thread, which ends it at once, even in the middle of a call.
"""

from __future__ import annotations

import collections
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

from .handover import CallFailed, Connected, Handover, Link, Lost, lost

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
SERVICE = "org.freedesktop.systemd1.Service"
UNIT = "org.freedesktop.systemd1.Unit"
PROPERTIES = "org.freedesktop.DBus.Properties"
UNITS_UNDER = "/org/freedesktop/systemd1/unit"
BUS = "org.freedesktop.DBus"
CALL_TIMEOUT = 10.0          # hsflowd's HSP_DBUS_TIMEOUT_mS
SETTLE = 0.5                 # s between a signal and the list it asks for
ACCOUNTING = ("CPUAccounting", "MemoryAccounting", "IOAccounting", "BlockIOAccounting")


@dataclass(frozen=True)
class Unit:
    """One loaded, active service as systemd describes it."""

    name: str                        # "cron.service"
    path: str                        # its D-Bus object
    cgroup: str                      # ControlGroup: "/system.slice/cron.service"
    cpu_accounting: bool = False
    memory_accounting: bool = False
    io_accounting: bool = False      # IOAccounting or BlockIOAccounting


@dataclass(frozen=True)
class Listed:
    units: Tuple[Unit, ...]


@dataclass
class CallCounts:
    """D-Bus calls made (for ``hsflowd status`` and the benchmark), and signals seen."""

    setup: int = 0            # Hello, AddMatch, Subscribe, Version
    lists: int = 0
    gets: int = 0
    signals: int = 0

    def total(self) -> int:
        return self.setup + self.lists + self.gets


# hsflowd reports "active" units; one "reloading" runs on (its processes are there), and
# seen through signals rather than a poll it would vanish and come back at each reload
RUNNING = ["active", "reloading"]


def active_services(rows) -> List[Tuple[str, str]]:
    """(name, object path) of the loaded, running services in a ListUnits answer (rows of
    name, description, load, active, sub, following, path, job id, job type, job path)."""
    return [(row[0], row[6]) for row in rows
            if row[0].endswith(".service") and row[2] == "loaded" and row[3] in RUNNING]


def is_service_path(path: str) -> bool:
    """A unit's object path names a service ("_2eservice" is ".service" escaped)."""
    return path.startswith(UNITS_UNDER + "/") and path.endswith("_2eservice")


class SystemdLink(Link):
    """One connection to the system bus; see the module docstring.  ``bus`` is jeepney's:
    "SYSTEM" (DBUS_SYSTEM_BUS_ADDRESS, else /run/dbus/system_bus_socket) or an address."""

    def __init__(self, bus: str = "SYSTEM"):
        self.bus = bus
        self.calls = CallCounts()
        self.handover = Handover()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._want_list = False
        self._due: Optional[float] = None          # a list asked for by signals, then
        self._known: Dict[str, Unit] = {}
        self._stale: Set[str] = set()              # object paths to read again
        self._all_stale = False
        self._thread = threading.Thread(target=self._run, name="systemd-dbus", daemon=True)

    def start(self) -> "SystemdLink":
        self._thread.start()
        return self



    def list(self) -> None:
        """A list, as soon as the thread is free."""
        self._want_list = True
        self._wake()

    def close(self, wait: float = 0.3) -> None:
        self.handover.closed.set()
        with self._lock:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(wait)
        self._wake_r.close()
        self._wake_w.close()
        self.handover.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"!")
        except OSError:
            pass      # full (the thread will wake anyway) or closed

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        try:
            from jeepney.io.blocking import open_dbus_connection
            conn = open_dbus_connection(bus=self.bus)
            self.calls.setup += 1                  # Hello
        except Exception as e:   # no bus, or it refused us: the module tries again later
            self.handover.post(lost(e))
            return
        with self._lock:
            self._sock = conn.sock
            closed = self.handover.closed.is_set()
        try:
            if not closed:
                self._serve(conn)
        except Exception as e:   # the bus went away, or a call failed for good
            if not self.handover.closed.is_set():
                self.handover.post(lost(e))
        finally:
            with self._lock:
                self._sock = None
            conn.close()

    def _serve(self, conn) -> None:
        from jeepney import MatchRule
        with conn.filter(MatchRule(type="signal"), queue=collections.deque()) as signals:
            self._subscribe_and_serve(conn, signals)

    def _subscribe_and_serve(self, conn, signals) -> None:
        for rule in _match_rules():
            self._call(conn, "setup", BUS, "/org/freedesktop/DBus", BUS, "AddMatch", "s",
                       (rule.serialise(),))
        self._call(conn, "setup", SYSTEMD, MANAGER_PATH, MANAGER, "Subscribe")
        version = self._get(conn, MANAGER_PATH, MANAGER, "Version", kind="setup")
        self.handover.post(Connected(f"systemd {version}"))
        with selectors.DefaultSelector() as waiting:     # descriptors above 1024 too
            waiting.register(conn.sock, selectors.EVENT_READ)
            waiting.register(self._wake_r, selectors.EVENT_READ)
            while not self.handover.closed.is_set():
                self._receive(conn)
                self._signals(conn, signals)
                now = time.monotonic()
                if self._want_list or (self._due is not None and now >= self._due):
                    self._want_list, self._due = False, None
                    self._sync(conn)
                    continue
                ready = waiting.select(None if self._due is None else self._due - now)
                if any(key.fileobj is self._wake_r for key, _ in ready):
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        return

    def _receive(self, conn) -> None:
        """Every message already here (on the socket, or in jeepney's buffer after a
        call), without waiting; the signals land in the filter's queue."""
        while True:
            try:
                conn.recv_messages(timeout=0)
            except TimeoutError:
                return

    def _signals(self, conn, signals) -> None:
        while signals:
            msg = signals.popleft()
            self.calls.signals += 1
            member = _header(msg, "member")
            body = msg.body
            if member in ("UnitNew", "UnitRemoved"):
                if body and str(body[0]).endswith(".service"):
                    self._soon()
            elif member == "Reloading":
                if body and not body[0]:           # a daemon-reload is over
                    self._all_stale = True
                    self._soon()
            elif member == "PropertiesChanged":
                path = _header(msg, "path") or ""
                if len(body) >= 2 and "ActiveState" in body[1] and is_service_path(path):
                    self._stale.add(path)
                    self._soon()
            elif member == "NameOwnerChanged":
                if len(body) >= 3 and body[0] == SYSTEMD and body[2]:
                    # systemd is back on the bus (re-executed): subscribe again
                    self._call(conn, "setup", SYSTEMD, MANAGER_PATH, MANAGER, "Subscribe")
                    self._all_stale = True
                    self._soon()

    def _soon(self) -> None:
        if self._due is None:
            self._due = time.monotonic() + SETTLE

    def _sync(self, conn) -> None:
        """List the services, read what is new or stale, hand the list over."""
        from jeepney.wrappers import DBusErrorResponse
        try:
            rows = self._call(conn, "lists", SYSTEMD, MANAGER_PATH, MANAGER,
                              "ListUnitsByPatterns", "asas", (RUNNING, ["*.service"]))[0]
        except DBusErrorResponse as e:       # systemd before 230
            if e.name != "org.freedesktop.DBus.Error.UnknownMethod":
                raise
            rows = self._call(conn, "lists", SYSTEMD, MANAGER_PATH, MANAGER, "ListUnits")[0]
        fresh: Dict[str, Unit] = {}
        for name, path in active_services(rows):
            unit = self._known.get(name)
            if unit is None or unit.path != path or self._all_stale or path in self._stale:
                unit = self._read_unit(conn, name, path)
            if unit is not None:
                fresh[name] = unit
        self._known = fresh
        self._stale.clear()
        self._all_stale = False
        self.handover.post(Listed(tuple(fresh.values())))

    def _read_unit(self, conn, name: str, path: str) -> Optional[Unit]:
        """A service's cgroup and accounting; None if it went away meanwhile."""
        from jeepney.wrappers import DBusErrorResponse
        try:
            cgroup = self._get(conn, path, SERVICE, "ControlGroup")
        except DBusErrorResponse as e:
            self.handover.post(CallFailed(f"ControlGroup of {name}", str(e)))
            return None
        flags = {}
        for prop in ACCOUNTING:
            try:
                flags[prop] = bool(self._get(conn, path, SERVICE, prop))
            except DBusErrorResponse:      # BlockIOAccounting is gone from systemd 256
                flags[prop] = False
        return Unit(name, path, cgroup or "", flags["CPUAccounting"], flags["MemoryAccounting"],
                    flags["IOAccounting"] or flags["BlockIOAccounting"])

    def _get(self, conn, path: str, interface: str, prop: str, kind: str = "gets"):
        _signature, value = self._call(conn, kind, SYSTEMD, path, PROPERTIES, "Get", "ss",
                                       (interface, prop))[0]
        return value

    def _call(self, conn, kind: str, destination: str, path: str, interface: str, method: str,
              signature: Optional[str] = None, body: tuple = ()):
        """One method call, counted under ``kind``; its answer's body (DBusErrorResponse
        if it is an error)."""
        from jeepney import DBusAddress, new_method_call
        from jeepney.wrappers import unwrap_msg
        setattr(self.calls, kind, getattr(self.calls, kind) + 1)
        address = DBusAddress(path, bus_name=destination, interface=interface)
        reply = conn.send_and_get_reply(new_method_call(address, method, signature, body),
                                        timeout=CALL_TIMEOUT)
        return unwrap_msg(reply)


def _match_rules() -> list:
    """The signals the thread wants (systemd sends its unit signals only to subscribers)."""
    from jeepney import MatchRule
    rules = [MatchRule(type="signal", sender=SYSTEMD, path=MANAGER_PATH, interface=MANAGER,
                       member=member) for member in ("UnitNew", "UnitRemoved", "Reloading")]
    changed = MatchRule(type="signal", sender=SYSTEMD, interface=PROPERTIES,
                        member="PropertiesChanged", path_namespace=UNITS_UNDER)
    changed.add_arg_condition(0, UNIT)
    owner = MatchRule(type="signal", sender=BUS, interface=BUS, member="NameOwnerChanged")
    owner.add_arg_condition(0, SYSTEMD)
    return rules + [changed, owner]


def _header(msg, field: str):
    from jeepney import HeaderFields
    return msg.header.fields.get(getattr(HeaderFields, field))



__all__ = ["CallCounts", "CallFailed", "Connected", "Listed", "Lost", "SystemdLink", "Unit",
           "active_services", "is_service_path"]
