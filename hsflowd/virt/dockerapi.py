"""The Docker Engine API, off the agent's loop: the event stream, list and inspect.

The agent's loop is one thread and must never wait on dockerd (a daemon that hangs would
stop the sampling and the SIGTERM handling with it).  So the API is used from two threads
of its own, through the maintained client (the ``docker`` package, Debian's
python3-docker), and everything they learn is handed to the loop as messages through a
socketpair the loop watches:

- the events thread opens the connection (the API version is negotiated once), starts the
  container event stream, says ``Connected``, then hands over each event; when the stream
  ends or fails it says ``Lost`` and ends;
- the calls thread makes the calls the loop asks for (``list()``, ``inspect(id)``), each
  with a timeout, and hands over the answers.

One ``DockerLink`` is one connection: after ``Lost`` the module closes it and makes a new
one when the socket is back.  ``close()`` shuts the event stream's socket down, which ends
its blocking read at once, and tells the calls thread to stop; neither is waited for more
than a moment.  The ``parse_*`` functions turn the API's JSON into the few facts the
module uses, and are what the tests call.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .handover import CallFailed, Connected, Handover, Link, Lost, Worker, call_failed, lost

log = logging.getLogger("hsflowd.docker")

DEFAULT_URL = "unix:///var/run/docker.sock"
CALL_TIMEOUT = 10.0


def docker_url() -> str:
    """Where dockerd is: DOCKER_HOST as the docker CLI reads it, else the usual socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_URL


def socket_path(url: str) -> Optional[str]:
    """The file of a unix:// URL (None for tcp:// and the like)."""
    if url.startswith("unix://"):
        return url[len("unix://"):]
    return None


# ---------------------------------------------------------------- what the API says

@dataclass(frozen=True)
class ContainerInfo:
    """The facts of one inspect answer the module uses."""

    id: str
    name: str                 # without Docker's leading "/"
    hostname: str
    pid: int                  # 0 when it is not running
    status: str               # "running", "paused", "exited", "created", ...
    memory_limit: int = 0     # HostConfig.Memory, 0 = none
    nano_cpus: int = 0        # HostConfig.NanoCpus, 0 = none
    macs: Tuple[bytes, ...] = ()
    ips: Tuple[bytes, ...] = ()       # packed IPv4 and IPv6 addresses


@dataclass(frozen=True)
class Listed:
    """The containers running now: (id, name, status) each."""

    containers: Tuple[Tuple[str, str, str], ...]


@dataclass(frozen=True)
class Event:
    """One container event: what happened (Docker's ``Action``) to which container."""

    action: str
    id: str
    name: str = ""


@dataclass(frozen=True)
class Inspected:
    info: ContainerInfo
    ticket: int = 0           # the caller's, handed back


@dataclass(frozen=True)
class Gone:
    """inspect said 404: the container was removed."""

    id: str
    ticket: int = 0


def _mac(text: Optional[str]) -> Optional[bytes]:
    try:
        raw = bytes.fromhex((text or "").replace(":", ""))
    except ValueError:
        return None
    return raw if len(raw) == 6 and any(raw) else None


def _ip(text: Optional[str]) -> Optional[bytes]:
    import ipaddress
    try:
        return ipaddress.ip_address(text).packed if text else None
    except ValueError:
        return None


def parse_inspect(d: Dict[str, Any]) -> ContainerInfo:
    """GET /containers/{id}/json."""
    state = d.get("State") or {}
    config = d.get("Config") or {}
    host = d.get("HostConfig") or {}
    networks = ((d.get("NetworkSettings") or {}).get("Networks") or {}).values()
    macs = tuple(m for m in (_mac(n.get("MacAddress")) for n in networks if n) if m)
    ips = tuple(a for n in networks if n for a in (_ip(n.get("IPAddress")),
                                                  _ip(n.get("GlobalIPv6Address"))) if a)
    status = state.get("Status") or ""
    if state.get("Running") and status not in ("paused", "restarting"):
        status = "running"        # as hsflowd: Running=true wins over the Status string
    return ContainerInfo(
        id=d.get("Id") or "", name=(d.get("Name") or "").lstrip("/"),
        hostname=config.get("Hostname") or "", pid=int(state.get("Pid") or 0),
        status=status, memory_limit=int(host.get("Memory") or 0),
        nano_cpus=int(host.get("NanoCpus") or 0), macs=macs, ips=ips)


def parse_list(items: List[Dict[str, Any]]) -> Listed:
    """GET /containers/json (running containers only)."""
    out = []
    for c in items:
        names = c.get("Names") or [""]
        out.append((c.get("Id") or "", (names[0] or "").lstrip("/"), c.get("State") or ""))
    return Listed(tuple(out))


def parse_event(d: Dict[str, Any]) -> Optional[Event]:
    """One object of GET /events; None for what is not about a container."""
    if (d.get("Type") or "container") != "container":
        return None
    action = d.get("Action") or d.get("status") or ""
    ident = d.get("id") or (d.get("Actor") or {}).get("ID") or ""
    if not action or not ident:
        return None
    name = ((d.get("Actor") or {}).get("Attributes") or {}).get("name") or ""
    # "exec_start: sh -c ..." and "health_status: healthy" carry their detail after a colon
    return Event(action.split(":", 1)[0].strip(), ident, name)


# ---------------------------------------------------------------- the connection

@dataclass
class CallCounts:
    """API calls made, by kind (for ``hsflowd status`` and the benchmark)."""

    version: int = 0
    events: int = 0
    list: int = 0
    inspect: int = 0

    def total(self) -> int:
        return self.version + self.events + self.list + self.inspect


class DockerLink(Link):
    """One connection to dockerd; see the module docstring."""

    def __init__(self, url: str, timeout: float = CALL_TIMEOUT):
        self.url = url
        self.timeout = timeout
        self.calls = CallCounts()
        self.api_version: Optional[str] = None
        self.handover = Handover()
        self.worker = Worker("docker-calls", self.handover, self._failed)
        self._lock = threading.Lock()
        self._stream = None
        self._clients: list = []
        self._events = threading.Thread(target=self._read_events, name="docker-events",
                                        daemon=True)

    def start(self) -> "DockerLink":
        self._events.start()
        return self



    # ---- what the loop asks
    def list(self) -> None:
        self.worker.submit("list", self._list)

    def inspect(self, ident: str, ticket: int = 0) -> None:
        self.worker.submit(f"inspect {ident[:12]}", lambda: self._inspect(ident, ticket))

    def close(self, wait: float = 0.3) -> None:
        """End both threads: the event stream's socket is shut down under its reader."""
        self.handover.closed.set()
        self.worker.close(wait)
        with self._lock:
            stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:   # already closed, or a client without a socket to shut
                pass
        if self._events.is_alive() and self._events is not threading.current_thread():
            self._events.join(wait)
        for client in self._clients:
            try:
                client.close()
            except Exception:
                pass
        self.handover.close()

    # ---- the threads
    def _client(self, version: str = "auto"):
        import docker
        client = docker.APIClient(base_url=self.url, version=version, timeout=self.timeout,
                                  max_pool_size=1)
        self._clients.append(client)
        return client

    def _read_events(self) -> None:
        try:
            self.calls.version += 1
            client = self._client()
            self.api_version = client.api_version
            self.calls.events += 1
            stream = client.events(decode=True, filters={"type": "container"})
            with self._lock:
                self._stream = stream
            if self.handover.closed.is_set():
                stream.close()
                return
            self._calls_client = self._client(client.api_version)
            self.worker.start()
            self.handover.post(Connected(client.api_version))
            for raw in stream:
                event = parse_event(raw) if isinstance(raw, dict) else None
                if event is not None:
                    self.handover.post(event)
            self.handover.post(Lost("dockerd closed the event stream"))
        except Exception as e:  # any failure ends this connection; the module makes another
            self.handover.post(lost(e))

    def _list(self) -> Listed:
        self.calls.list += 1
        try:
            return parse_list(self._calls_client.containers())
        finally:
            self._idle()

    def _inspect(self, ident: str, ticket: int):
        self.calls.inspect += 1
        try:
            return Inspected(parse_inspect(self._calls_client.inspect_container(ident)), ticket)
        except Exception as e:
            if getattr(getattr(e, "response", None), "status_code", None) == 404:
                return Gone(ident, ticket)
            raise
        finally:
            self._idle()

    def _idle(self) -> None:
        """Close the calls' connection: docker-py keeps a connection pool per URL (per
        container inspected), so a host with 50 containers would otherwise keep dozens of
        idle connections to dockerd open.  A call is then one connect on a local socket."""
        self._calls_client.close()

    @staticmethod
    def _failed(what: str, e: BaseException) -> "CallFailed":
        return call_failed(what, e)



__all__ = ["CallCounts", "CallFailed", "Connected", "ContainerInfo", "DockerLink", "Event",
           "Gone", "Inspected", "Listed", "Lost", "docker_url", "parse_event", "parse_inspect",
           "parse_list", "socket_path"]
