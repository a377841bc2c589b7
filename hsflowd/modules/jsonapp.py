"""``json { udpport=N }``: applications send their metrics and transactions as JSON over
local UDP, and the agent sends them as sFlow (hsflowd's mod_json).

The messages and what each becomes are in ``sources.jsonmsg``.  Here: the sockets, and per
application (by ``app_name``) its data source, sequence numbers, sampling and counters:

- the data source is 3:service_port, or 3:150000 and up for an application without one;
- "counter_sample" goes out at once, on that data source: host_parent (2:1), app_workers,
  app_resources and app_operations (hsflowd's order on the wire); when an application
  sends no app_operations, the counts the agent keeps from its transactions stand in;
- "flow_sample" transactions are counted by status (scaled by the application's own
  sampling rate), and sampled again down to ``sampling.app.<name>`` (else ``sampling``):
  the flow sample's rate is the application's rate times that sub-sampling.  The client
  side of a transaction is input "internal", the server side output "internal";
- an application that stops sending counters (2 minutes) gets the kept app_operations
  every ``polling.app.<name>`` (else ``polling``) seconds; one silent for 2 hours is
  forgotten;
- "rtmetric" and "rtflow" go out as InMon's samples 4300:1002 and 4300:1003.

Sockets: UDP on 127.0.0.1 and ::1 only, watched by the loop; each wake-up reads at most
100 datagrams of at most 10,000 bytes (as hsflowd), so a flood costs CPU, not memory: the
kernel's socket buffer (2 MB asked) holds the backlog and drops the rest, nothing queues
in the agent, and at most 1,000 applications are kept.  A message that is not JSON, or not
what the agent can use, is counted and logged at most once a minute.

Unlike hsflowd: ``sampling`` 0 (or ``sampling.app.<name>=0``) sends no transaction
samples (hsflowd would send every one); a service_port another application already has is
refused every time (hsflowd refuses the first three times, then lets two applications share
a data source); ``fifo=`` is not supported.
"""

from __future__ import annotations

import errno
import random
import socket
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

from ..config import app_sampling_rate, polling_interval_for
from ..sflow import AppOperations, CountersSample, FlowSample, HostParent
from ..sflow.flows import APP_STATUS_FIELDS
from ..sflow.samples import INTERNAL
from ..sources.jsonmsg import (MAX_MESSAGE, BadMessage, counter_sample, flow_sample,
                               parse_message, rtflow, rtmetric)
from . import AgentState, Module, register

BATCH = 100                   # datagrams per wake-up (hsflowd HSP_READJSON_BATCH)
RCVBUF = 2_000_000            # hsflowd HSP_JSON_RCV_BUF
COUNTERS_TIMEOUT = 120        # s: an application quiet this long gets its counts sent for it
APP_TIMEOUT = 7200            # s: an application quiet this long is forgotten
MAX_APPS = 1000
FIRST_INDEX = 150000          # hsflowd HSP_DEFAULT_APP_DSINDEX_START
LOG_INTERVAL = 60.0
RETRY_BIND = 30.0
LOGICAL_ENTITY = 3
_MASK32 = 0xFFFFFFFF


class App:
    """One application, by name."""

    __slots__ = ("name", "index", "port", "sampling", "polling", "ops", "pool", "flow_seq",
                 "counter_seq", "heard", "counters_heard", "json_counters", "json_ops",
                 "countdown", "port_warned")

    def __init__(self, name: str, index: int, port: int, now: float):
        self.name, self.index, self.port = name, index, port
        self.sampling = self.polling = 0
        self.ops = [0] * len(APP_STATUS_FIELDS)   # transactions by status, scaled by their rate
        self.pool = self.flow_seq = self.counter_seq = 0
        self.heard = self.counters_heard = now
        self.json_counters = True       # it sends its own counters (assumed at first)
        self.json_ops: Optional[bool] = None
        self.countdown = 0
        self.port_warned = False

    def kept_operations(self) -> AppOperations:
        return AppOperations(application=self.name, **dict(zip(APP_STATUS_FIELDS, self.ops)))


@register("json", enabled=lambda config: config.json is not None and bool(config.json.udpport),
          privileges=lambda config: {"CAP_NET_BIND_SERVICE"}
          if config.json is not None and 0 < (config.json.udpport or 0) < 1024 else set())
class JsonModule(Module):
    def __init__(self, ctx, clock: Callable[[], float] = time.monotonic,
                 rng: Optional[random.Random] = None):
        super().__init__(ctx)
        self.clock = clock
        self.rng = rng or random.Random()
        self.config = None
        self.port: Optional[int] = None
        self.socks: List[socket.socket] = []
        self.watches: List[Any] = []
        self.retry_at: Optional[float] = None
        self.apps: "OrderedDict[str, App]" = OrderedDict()   # least recently heard first
        self.by_index: Dict[int, App] = {}
        self.next_index = FIRST_INDEX
        self.messages = self.bad = self.unlogged = 0
        self.last_bad = ""
        self.next_log = 0.0

    # ------------------------------------------------------------ life
    def reconcile(self, state: AgentState) -> None:
        self.config = state.config
        if "config" in state.changed:
            for app in self.apps.values():
                self._settings(app)
        port = state.config.json.udpport
        if port != self.port:
            self._close_sockets()
            self.port = port
            self._open()

    def _open(self) -> None:
        self.retry_at = None
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            try:
                sock = socket.socket(family, socket.SOCK_DGRAM)
            except OSError:
                continue                          # no IPv6 here
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, self.port))
            except OSError as e:
                sock.close()
                if family == socket.AF_INET6 and e.errno in (errno.EADDRNOTAVAIL,
                                                             errno.EAFNOSUPPORT):
                    continue                      # ::1 is not configured: IPv4 only
                self.log.error("json: cannot listen on %s port %d: %s; trying again in %d s",
                               host, self.port, e.strerror or e, RETRY_BIND)
                self.retry_at = self.clock() + RETRY_BIND
                continue
            self.socks.append(sock)
            self.watches.append(self.ctx.watch(sock.fileno(), lambda s=sock: self._read(s)))
        if self.socks:
            where = " and ".join(str(s.getsockname()[0]) for s in self.socks)
            self.log.info("json: listening on %s port %d", where, self.port)

    def _close_sockets(self) -> None:
        for token in self.watches:
            self.ctx.unwatch(token)
        self.watches = []
        for sock in self.socks:
            sock.close()
        self.socks = []

    def close(self) -> None:
        self._close_sockets()
        self.apps.clear()
        self.by_index.clear()

    # ------------------------------------------------------------ input
    def _read(self, sock: socket.socket) -> None:
        now = self.clock()
        for _ in range(BATCH):
            try:
                data = sock.recv(MAX_MESSAGE)
            except OSError:     # nothing more to read (EAGAIN), or the socket's error
                return
            self.handle(data, now)

    def handle(self, data: bytes, now: float) -> None:
        """One datagram: every part of it that is good is sent; a bad part is counted."""
        self.messages += 1
        try:
            msg = parse_message(data)
        except BadMessage as e:
            self._bad(str(e), now)
            return
        problem = None
        used = False
        for key, handler in (("flow_sample", self._transaction),
                             ("counter_sample", self._counters),
                             ("rtmetric", self._rtmetric), ("rtflow", self._rtflow)):
            if key in msg:
                used = True
                try:
                    handler(msg[key], now)
                except BadMessage as e:
                    problem = problem or str(e)
        if not used:
            problem = "none of flow_sample, counter_sample, rtmetric, rtflow"
        if problem:
            self._bad(problem, now)

    def _bad(self, reason: str, now: float) -> None:
        self.bad += 1
        self.unlogged += 1
        self.last_bad = reason
        if now >= self.next_log:
            self._log_bad(now)

    def _log_bad(self, now: float) -> None:
        self.log.warning("json: %d bad message(s) on port %s%s; the last: %s", self.unlogged,
                         self.port, "" if self.bad == self.unlogged else " in the last minute",
                         self.last_bad)
        self.unlogged = 0
        self.next_log = now + LOG_INTERVAL

    # ------------------------------------------------------------ applications
    def _app(self, name: str, port: int, now: float) -> App:
        app = self.apps.get(name)
        if app is not None:
            self.apps.move_to_end(name)
            if port != app.port and not app.port_warned:
                app.port_warned = True
                self.log.warning("json: application %r has service_port %d, not %d; "
                                 "keeping its data source 3:%d", name, app.port, port, app.index)
        else:
            if len(self.apps) >= MAX_APPS:
                raise BadMessage(f"more than {MAX_APPS} applications: {name!r} refused")
            if port:
                other = self.by_index.get(port)
                if other is not None:
                    raise BadMessage(f"application {name!r}: service_port {port} is "
                                     f"{other.name!r}'s")
                index = port
            else:
                while self.next_index in self.by_index:
                    self.next_index += 1
                index = self.next_index
                self.next_index += 1
            app = self.apps[name] = self.by_index[index] = App(name, index, port, now)
            self._settings(app)
        app.heard = now
        return app

    def _settings(self, app: App) -> None:
        c = self.config
        app.sampling = app_sampling_rate(c, f"app.{app.name}")
        polling = polling_interval_for(c, f"app.{app.name}")
        if polling != app.polling:
            app.polling = polling
            app.countdown = self.rng.randint(1, polling) if polling > 0 else 0

    def _forget(self, app: App) -> None:
        del self.apps[app.name]
        del self.by_index[app.index]
        if app.index >= FIRST_INDEX:
            self.next_index = min(self.next_index, app.index)

    # ------------------------------------------------------------ messages
    def _transaction(self, body: Any, now: float) -> None:
        t = flow_sample(body)
        app = self._app(t.application, t.service_port, now)
        if t.records is None:
            return
        app.ops[t.status] = (app.ops[t.status] + t.sampling_rate) & _MASK32
        if app.sampling <= 0:
            return
        sub = max(1, app.sampling // t.sampling_rate)
        if sub > 1 and self.rng.randint(1, sub * 16) > 16:   # 1 in sub, as hsflowd draws it
            return
        rate = min(t.sampling_rate * sub, _MASK32)
        app.pool = (app.pool + rate) & _MASK32
        app.flow_seq = (app.flow_seq + 1) & _MASK32
        self.ctx.send(FlowSample(
            sequence_number=app.flow_seq, source_id_type=LOGICAL_ENTITY,
            source_id_index=app.index, sampling_rate=rate, sample_pool=app.pool, drops=0,
            input=INTERNAL if t.client else 0, output=0 if t.client else INTERNAL,
            flow_records=t.records).encode())

    def _counters(self, body: Any, now: float) -> None:
        m = counter_sample(body)
        app = self._app(m.application, m.service_port, now)
        app.counters_heard = now
        own_ops = m.operations is not None
        if own_ops != app.json_ops:
            app.json_ops = own_ops
            app.counter_seq = 0          # the sample's make-up changed: a new sequence
        records: List[Any] = [HostParent(container_type=2, container_index=1)]
        if m.workers is not None:
            records.append(m.workers)
        if m.resources is not None:
            records.append(m.resources)
        records.append(m.operations if own_ops else app.kept_operations())
        self._send_counters(app, records)

    def _send_counters(self, app: App, records: List[Any]) -> None:
        app.counter_seq = (app.counter_seq + 1) & _MASK32
        self.ctx.send(CountersSample(sequence_number=app.counter_seq,
                                     source_id_type=LOGICAL_ENTITY, source_id_index=app.index,
                                     counters=records).encode())

    def _rtmetric(self, body: Any, now: float) -> None:
        self.ctx.send(rtmetric(body).encode())

    def _rtflow(self, body: Any, now: float) -> None:
        self.ctx.send(rtflow(body).encode())

    # ------------------------------------------------------------ every second
    def tick(self, now: float) -> None:
        if self.retry_at is not None and now >= self.retry_at:
            self._close_sockets()
            self._open()
        if self.unlogged and now >= self.next_log:
            self._log_bad(now)
        while self.apps:
            oldest = next(iter(self.apps.values()))
            if now - oldest.heard <= APP_TIMEOUT:
                break
            self.log.info("json: application %r silent for %d s: forgotten", oldest.name,
                          APP_TIMEOUT)
            self._forget(oldest)
        for app in self.apps.values():
            if app.polling <= 0:
                continue
            app.countdown -= 1
            if app.countdown > 0:
                continue
            app.countdown = app.polling
            sends_its_own = now - app.counters_heard < COUNTERS_TIMEOUT
            if sends_its_own != app.json_counters:
                app.json_counters = sends_its_own
                app.counter_seq = 0
            if not sends_its_own:
                self._send_counters(app, [app.kept_operations()])

    def status(self) -> Dict[str, Any]:
        return {"json": {"port": self.port, "listening": len(self.socks),
                         "messages": self.messages, "bad": self.bad,
                         "applications": len(self.apps)}}
