"""Open vSwitch: write hsflowd's sFlow settings into OVSDB and keep them there.

OVS samples its own bridges and sends sFlow straight to our collectors.  As mod_ovs does,
we keep one sFlow row (agent device, header, polling, sampling, targets) and point every
bridge's ``sflow`` at it; but where mod_ovs runs ovs-vsctl once a minute, a live copy of
those columns (the ``ovs`` package's IDL, imported only in start()) lets one thread
re-apply at once when a bridge appears, someone edits the row, or ovsdb-server restarts.
Our row carries ``external_ids:hsflowd=managed`` so a restarted agent finds it again.
sFlow is not a root table: ovsdb-server deletes a row no bridge points at, so detaching
the bridges is all the cleaning up there is.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

log = logging.getLogger("hsflowd.ovs")

__all__ = ["SflowSettings", "OvsSync", "Plan", "plan", "default_remote"]

DATABASE = "Open_vSwitch"
MARK_KEY, MARK_VALUE = "hsflowd", "managed"
COLUMNS = ("agent", "header", "polling", "sampling", "targets")
NO_OVS = "the ovs Python package is not installed (pip install ovs)"

RETRY_MIN, RETRY_MAX = 0.5, 8.0   # seconds between connection attempts, doubling
CONNECT_TIMEOUT = 3.0             # for the schema and the first copy of the tables
STABLE_AFTER = 5.0                # a connection that lasted this long: reconnect at once
TRY_AGAIN_DELAY = 1.0             # a transaction lost a race or the connection
ERROR_DELAY = 30.0                # the server refused a transaction outright


@dataclass(frozen=True)
class SflowSettings:
    """What OVS should be told: the agent's own settings, as mod_ovs writes them."""
    agent: str                      # the elected agent interface's device name
    header: int                     # headerBytes
    polling: int                    # polling interval, seconds
    sampling: int                   # the global sampling= rate
    targets: Tuple[str, ...] = ()   # "ip:port" per collector ("[v6]:port" for IPv6)

    @property
    def active(self) -> bool:
        """hsflowd clears OVS's sFlow when there is nowhere to send or nothing to send."""
        return bool(self.targets) and (self.sampling != 0 or self.polling != 0)

    def columns(self) -> Dict[str, Any]:
        """The sFlow row's columns in the IDL's Python form (optional columns are lists)."""
        return {"agent": [self.agent] if self.agent else [], "header": [self.header],
                "polling": [self.polling], "sampling": [self.sampling],
                "targets": sorted(self.targets)}


def default_remote() -> str:
    """Where ovs-vsctl looks by default: $OVS_RUNDIR/db.sock (empty counts as unset)."""
    rundir = os.environ.get("OVS_RUNDIR") or "/var/run/openvswitch"
    return f"unix:{rundir}/db.sock"


# ---- deciding what to change: a pure function of what OVSDB holds and what we want ----

@dataclass
class Plan:
    """One transaction's worth of changes; false when OVS already matches."""
    row: Optional[uuid.UUID] = None          # the sFlow row to keep; None: insert one
    set_columns: Dict[str, Any] = field(default_factory=dict)
    mark: bool = False                       # add external_ids:hsflowd to the row
    attach: List[str] = field(default_factory=list)   # bridges to point at the row
    detach: List[str] = field(default_factory=list)   # bridges whose sflow to empty

    def __bool__(self) -> bool:
        return bool(self.set_columns or self.mark or self.attach or self.detach)

    def describe(self) -> str:
        """One line for the log, e.g. "set sampling=400; attached br2"."""
        new = self.row is None and self.attach
        parts = [f"created an sFlow row ({_show(self.set_columns)})" if new else "",
                 f"adopted sFlow row {str(self.row)[:8]}" if self.mark and not new else "",
                 f"set {_show(self.set_columns)}" if self.set_columns and not new else "",
                 "attached " + ", ".join(self.attach) if self.attach else "",
                 "removed sFlow from " + ", ".join(self.detach) if self.detach else ""]
        return "; ".join(p for p in parts if p)


def _show(columns: Mapping[str, Any]) -> str:
    return " ".join(f"{name}={','.join(str(v) for v in value) or '[]'}"
                    for name, value in columns.items())


def _is_ours(row: Optional[Mapping[str, Any]]) -> bool:
    return row is not None and MARK_KEY in row.get("external_ids", {})


def plan(bridges: Mapping[str, Optional[uuid.UUID]],
         rows: Mapping[uuid.UUID, Mapping[str, Any]],
         want: Optional[Mapping[str, Any]]) -> Plan:
    """Compare OVSDB (bridge name -> its sFlow row; row -> columns) with ``want``.

    ``want`` None means clear: empty the bridges that point at a row of ours and leave
    every other row alone.  Otherwise keep one row on every bridge: ours if a bridge has
    one, else the first bridge's row (adopted, as mod_ovs adopts the first), else a new
    one.  Bridges are taken in name order so the choice does not depend on hash order.
    """
    names = sorted(bridges)
    if want is None:
        return Plan(detach=[n for n in names if _is_ours(rows.get(bridges[n]))])
    if not names:
        return Plan()     # a row no bridge points at would be garbage-collected at once
    attached = [bridges[n] for n in names if bridges[n] in rows]
    ours = [u for u in attached if _is_ours(rows[u])]
    keep = (ours or attached or [None])[0]
    if keep is None:
        return Plan(set_columns=dict(want), mark=True, attach=names)
    current = rows[keep]
    changed = {k: v for k, v in want.items() if sorted(current.get(k, [])) != sorted(v)}
    return Plan(row=keep, set_columns=changed, mark=not _is_ours(current),
                attach=[n for n in names if bridges[n] != keep])


# ---- the IDL side ----

def _snapshot(idl) -> Tuple[Dict[str, Optional[uuid.UUID]], Dict[uuid.UUID, Dict[str, Any]]]:
    """The replica as plain data for plan()."""
    rows = {r.uuid: {c: getattr(r, c) for c in COLUMNS + ("external_ids",)}
            for r in idl.tables["sFlow"].rows.values()}
    bridges = {}
    for bridge in idl.tables["Bridge"].rows.values():
        ref = [r for r in bridge.sflow if r is not None]
        bridges[bridge.name] = ref[0].uuid if ref else None
    return bridges, rows


def _ovs():
    """The ovs package's modules, imported on first use so that hsflowd runs without it."""
    import ovs.db.idl
    import ovs.jsonrpc
    import ovs.poller
    import ovs.stream
    return ovs


def _begin(idl, todo: Plan):
    """Turn a plan into a transaction and send it.  Bridges we write are verified, so a
    concurrent change by someone else makes the server refuse it and we plan again."""
    txn = _ovs().db.idl.Transaction(idl)
    txn.add_comment("hsflowd: " + todo.describe())
    table = idl.tables["sFlow"]
    bridges = {b.name: b for b in idl.tables["Bridge"].rows.values()}
    row = txn.insert(table) if todo.row is None and todo.attach else table.rows.get(todo.row)
    if row is not None:
        for column, value in todo.set_columns.items():
            setattr(row, column, value)
        if todo.mark and todo.row is None:
            row.external_ids = {MARK_KEY: MARK_VALUE}
        elif todo.mark:
            row.setkey("external_ids", MARK_KEY, MARK_VALUE)
    for name, value in [(n, [row]) for n in todo.attach] + [(n, []) for n in todo.detach]:
        bridges[name].verify("sflow")
        bridges[name].sflow = value
    txn.commit()   # sends it; the loop calls commit() again for the outcome
    return txn


def _fetch_schema(remote: str, wake_fd: int, stopping) -> Tuple[Optional[dict], str]:
    """Ask the server for the Open_vSwitch schema: (schema, "") or (None, why)."""
    ovs = _ovs()
    try:
        error, stream = ovs.stream.Stream.open(remote)
    except (OSError, ValueError) as e:
        return None, str(e)
    if error:
        return None, os.strerror(error)
    rpc = ovs.jsonrpc.Connection(stream)
    request = ovs.jsonrpc.Message.create_request("get_schema", [DATABASE])
    deadline = time.monotonic() + CONNECT_TIMEOUT
    try:
        error = rpc.send(request)
        while not error:
            rpc.run()
            error, msg = rpc.recv()
            if error == errno.EAGAIN:
                if stopping():
                    return None, "stopping"
                if time.monotonic() > deadline:
                    return None, "no reply from the server"
                poller = ovs.poller.Poller()
                rpc.wait(poller)
                rpc.recv_wait(poller)
                poller.fd_wait(wake_fd, ovs.poller.POLLIN)
                poller.timer_wait(_ms_until(deadline))
                poller.block()
                error = 0
            elif msg is not None and msg.id == request.id:
                if msg.type == ovs.jsonrpc.Message.T_ERROR:
                    return None, f"the server said {msg.error}"
                return msg.result, ""
    finally:
        rpc.close()
    return None, os.strerror(error) if error > 0 else "the server closed the connection"


def _ms_until(when: float) -> int:
    return max(0, int((when - time.monotonic()) * 1000))


class OvsSync:
    """Keeps OVS's sFlow table in line with the agent's settings from a thread of its own."""

    def __init__(self, remote: Optional[str] = None):
        self.remote = remote or default_remote()
        self._lock = threading.Lock()
        self._settings: Optional[SflowSettings] = None
        self._stop: Optional[Tuple[bool, float]] = None      # (cleanup, deadline)
        self._status = "connecting"
        self._said: Optional[str] = None                      # last problem logged
        self._thread: Optional[threading.Thread] = None
        self._wake: Optional[Tuple[int, int]] = None          # self-pipe: update/stop

    @property
    def status(self) -> str:
        """connected, connecting, or unavailable: <why>."""
        return self._status

    def start(self) -> None:
        """Start the background thread; returns at once, whatever state OVS is in."""
        if self._thread is not None:
            return
        self._stop = None
        try:
            _ovs()
        except ImportError:
            self._status = "unavailable: " + NO_OVS
            log.warning("%s; ovs {} ignored", NO_OVS)
            return
        self._wake = os.pipe()
        for fd in self._wake:
            os.set_blocking(fd, False)
        self._thread = threading.Thread(target=self._run, name="hsflowd-ovs", daemon=True)
        self._thread.start()

    def update(self, settings: Optional[SflowSettings]) -> None:
        """New settings (None, no targets, or nothing to sample or poll: clear OVS's)."""
        with self._lock:
            self._settings = settings
        self._poke()

    def stop(self, cleanup: bool = True, timeout: float = 5.0) -> None:
        """Detach our row from every bridge (unless cleanup is False), then end the thread."""
        thread = self._thread
        if thread is None:
            return
        with self._lock:
            self._stop = (cleanup, time.monotonic() + max(timeout - 0.5, timeout * 0.8))
        self._poke()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("Open vSwitch: the sync thread did not finish within %.1f s", timeout)
            return
        with self._lock:
            wake, self._wake, self._thread = self._wake, None, None
        for fd in wake or ():
            os.close(fd)
        self._status = "unavailable: stopped"

    # ---- the thread ----

    def _poke(self) -> None:
        with self._lock, contextlib.suppress(BlockingIOError):   # full: already poked
            if self._wake is not None:
                os.write(self._wake[1], b"x")

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake[0], 512):
                pass

    def _want(self) -> Optional[Dict[str, Any]]:
        with self._lock:
            settings = self._settings
        return settings.columns() if settings is not None and settings.active else None

    def _problem(self, why: str) -> None:
        """Say what is wrong once, not at every retry."""
        self._status = "unavailable: " + why
        if why != self._said:
            log.warning("Open vSwitch: %s; will keep trying", why)
            self._said = why

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:   # a bug here must not take the agent down with it
            log.exception("Open vSwitch: sync stopped by an unexpected error")
            self._status = "unavailable: internal error (see the log)"

    def _loop(self) -> None:
        """Connect, serve until the connection drops, reconnect with back-off.

        Every connection starts from scratch (schema, then a new IDL) rather than letting
        the IDL reconnect by itself: that way each failure has a reason to show in status
        and the log, and a server upgraded to a new schema is picked up.
        """
        if self.remote.split(":")[0] not in ("unix", "tcp"):   # ssl: needs certificates
            self._status = f"unavailable: {self.remote} is not a unix: or tcp: remote"
            log.error("Open vSwitch: %s is not a unix:PATH or tcp:IP:PORT remote; ovs {} "
                      "ignored", self.remote)
            return
        delay = RETRY_MIN
        while self._stop is None:
            schema, why = _fetch_schema(self.remote, self._wake[0], lambda: self._stop)
            idl, began = None, time.monotonic()
            if schema is not None:
                idl, why = self._make_idl(schema)
            if idl is not None:
                try:
                    why = self._serve(idl)
                finally:
                    idl.close()
            if why is None and time.monotonic() - began >= STABLE_AFTER:
                delay = RETRY_MIN          # it worked for a while: reconnect at once
                continue
            if self._stop is not None:
                return
            if why is not None:
                self._problem(f"cannot connect to {self.remote}: {why}")
            self._sleep(delay)             # also after a short-lived connection
            delay = min(delay * 2, RETRY_MAX)

    def _make_idl(self, schema: dict):
        """An IDL that copies only Open_vSwitch.bridges, Bridge name/sflow and sFlow."""
        idl_mod = _ovs().db.idl
        helper = idl_mod.SchemaHelper(schema_json=schema)
        try:
            helper.register_columns("Open_vSwitch", ["bridges"])
            helper.register_columns("Bridge", ["name", "sflow"])
            helper.register_columns("sFlow", list(COLUMNS) + ["external_ids"])
            return idl_mod.Idl(self.remote, helper), ""
        except (AssertionError, KeyError, ValueError) as e:   # SchemaHelper asserts
            return None, f"its schema lacks a table or column this agent needs ({e!r})"

    def _sleep(self, seconds: float) -> None:
        """Wait, waking early only to stop (an update does not bring OVS back)."""
        poller_mod = _ovs().poller
        until = time.monotonic() + seconds
        while self._stop is None and time.monotonic() < until:
            poller = poller_mod.Poller()
            poller.fd_wait(self._wake[0], poller_mod.POLLIN)
            poller.timer_wait(_ms_until(until))
            poller.block()
            self._drain()

    def _serve(self, idl) -> Optional[str]:
        """Keep OVSDB matching the settings until the connection drops or stop() is done.

        Returns None if the tables were copied (the connection was good), else why not.
        Planning happens only with no transaction in flight, since a transaction's effect
        shows in the replica only once the server confirms it.
        """
        ovs = _ovs()
        sync_by = time.monotonic() + CONNECT_TIMEOUT
        was_connected = synced = False
        txn, what = None, ""
        seen, applied, retry_at = None, object(), None
        while True:
            self._drain()
            idl.run()
            now, stop = time.monotonic(), self._stop
            connected = idl._session.is_connected()   # the IDL has no public call for this
            if was_connected and not connected:
                if not synced:
                    return "the server closed the connection"
                self._status = "connecting"
                log.warning("Open vSwitch: lost the connection to %s; reconnecting",
                            self.remote)
                return None
            was_connected = was_connected or connected
            if not synced and idl.has_ever_connected():
                synced = True
                self._status, self._said = "connected", None
                log.info("Open vSwitch: connected to %s", self.remote)
            if not synced and (stop is not None or now > sync_by):
                return "no reply from the server"
            if stop is not None and now > stop[1]:
                log.warning("Open vSwitch: ran out of time removing sFlow from OVS")
                return None
            if stop is not None and not stop[0] and txn is None:
                return None               # stop(cleanup=False): leave OVS as it is

            if txn is not None:
                status = txn.commit()
                if status == txn.INCOMPLETE:
                    pass
                elif self._finished(txn, status, what):
                    txn, retry_at = None, None
                else:
                    delay = ERROR_DELAY if status == txn.ERROR else TRY_AGAIN_DELAY
                    txn, retry_at = None, now + delay
            if synced and txn is None:
                want = None if stop is not None else self._want()
                changed = idl.change_seqno != seen or want != applied
                due = retry_at is not None and now >= retry_at
                if changed or due or (stop is not None and retry_at is None):
                    seen, applied, retry_at = idl.change_seqno, want, None
                    todo = plan(*_snapshot(idl), want)
                    if todo:
                        txn, what = _begin(idl, todo), todo.describe()
                    elif stop is not None:
                        return None   # none of our rows is left on any bridge

            poller = ovs.poller.Poller()
            idl.wait(poller)
            poller.fd_wait(self._wake[0], ovs.poller.POLLIN)
            if txn is not None:
                txn.wait(poller)
            for when in (None if synced else sync_by, retry_at, stop and stop[1]):
                if when:
                    poller.timer_wait(_ms_until(when))
            poller.block()

    def _finished(self, txn, status: str, what: str) -> bool:
        """Log a transaction's outcome once; False if it should be tried again later."""
        if status == txn.SUCCESS:
            log.info("Open vSwitch: %s", what)
        elif status == txn.ERROR and f"{what}: {txn.get_error()}" != self._said:
            self._said = f"{what}: {txn.get_error()}"
            log.warning("Open vSwitch: OVSDB refused the change (%s)", self._said)
        # TRY_AGAIN: raced another change or lost the connection; UNCHANGED: stale view
        return status == txn.SUCCESS
