"""containerd's API, off the agent's loop: namespaces, containers, tasks and the event stream.

containerd speaks gRPC on its socket.  The messages are described by containerd's own .proto
files (a descriptor set made when the package is built: packaging/containerd_api.py) and
built at run time by protobuf; grpclib, a maintained pure-Python gRPC client, carries them
over HTTP/2.  grpclib runs on asyncio, so one ``ContainerdLink`` is one thread running one
event loop: the event stream and the calls the agent's loop asks for share it, and an idle
link sleeps until containerd says something (grpcio's client wakes some twenty times a
second with a stream open, and costs 17 MB against grpclib's 2).

What the link hands over (``virt.handover``), in order:

- ``Connected`` once containerd answered its version and the event stream is open;
- ``Listed``: every container with a live task, in every namespace (``list(ticket)``: when
  connected and every refreshVMs), with the caller's ticket;
- ``TaskEvent``: a task started, exited, was deleted, paused or resumed, or a container was
  deleted; ``Started`` when the spec of a started container, asked for with ``fetch``,
  comes;
- ``Lost`` when the connection fails or the stream ends; the module makes another link.

The calls run as coroutines of their own and the event stream does not wait for them: a
list (three calls or more) can be answered after events that came later than its snapshot,
and a fetch's ``Started`` before a list asked earlier.  The ticket lets the module tell
(``modules.containerd``: a list decides nothing for a container that has had an event since
it was asked).

``parse_*`` turn containerd's messages into the few facts the modules use; the tests call
them with messages they build.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .handover import Connected, Handover, Link, Lost, call_failed, lost
from .records import VirState

log = logging.getLogger("hsflowd.containerd")

DEFAULT_SOCKET = "/run/containerd/containerd.sock"
CALL_TIMEOUT = 10.0
DESCRIPTORS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "data", "containerd-api.pb")
SERVICES = "containerd.services"
NAMESPACE_HEADER = "containerd-namespace"
# the events the modules act on (containerd's filter syntax: any of them)
EVENT_FILTERS = ('topic~="^/tasks/"', 'topic=="/containers/delete"')

# containerd's task status (containerd.v1.types.Status) as virt_cpu's state
TASK_STATES = {1: VirState.NOSTATE, 2: VirState.RUNNING, 3: VirState.SHUTOFF,
               4: VirState.PAUSED, 5: VirState.PAUSED}
LIVE = (2, 4, 5)             # running, paused, pausing: it has a process to read

# the CRI annotations containerd keeps in a Kubernetes container's OCI spec
CONTAINER_TYPE = "io.kubernetes.cri.container-type"      # "sandbox" or "container"
CONTAINER_NAME = "io.kubernetes.cri.container-name"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"


class ContainerdUnavailable(Exception):
    """The client cannot work here (one line: why)."""


# ---------------------------------------------------------------- what containerd says

@dataclass(frozen=True)
class ContainerInfo:
    """One container with a live task: the facts the modules use."""

    namespace: str
    id: str
    pid: int
    state: int = VirState.RUNNING
    hostname: str = ""                              # the OCI spec's
    annotations: Dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.id}"


@dataclass(frozen=True)
class Listed:
    containers: Tuple[ContainerInfo, ...]
    ticket: int = 0                 # the caller's, handed back


@dataclass(frozen=True)
class Started:
    info: ContainerInfo


@dataclass(frozen=True)
class TaskEvent:
    """A container's task started ("start", with its pid: ``fetch`` its spec), stopped
    ("exit", "delete"), paused or resumed, or the container was removed ("removed")."""

    what: str
    namespace: str
    id: str
    pid: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.id}"


def parse_spec(raw: bytes) -> Tuple[str, Dict[str, str]]:
    """The OCI runtime spec containerd keeps as JSON: its hostname and annotations."""
    try:
        spec = json.loads(raw or b"{}")
    except ValueError:
        return "", {}
    if not isinstance(spec, dict):
        return "", {}
    annotations = spec.get("annotations") or {}
    return (str(spec.get("hostname") or ""),
            {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict)
            else {})


def parse_container(namespace: str, container, pid: int, status: int = 2) -> ContainerInfo:
    """A containers.v1.Container message and its task's pid and status."""
    hostname, annotations = parse_spec(container.spec.value if container.HasField("spec") else b"")
    return ContainerInfo(namespace=namespace, id=container.id, pid=pid,
                         state=TASK_STATES.get(status, VirState.NOSTATE), hostname=hostname,
                         annotations=annotations)


def parse_event(envelope, event) -> Optional[TaskEvent]:
    """One events.v1.Envelope (``event``: its payload, decoded) as what the modules act on,
    or None."""
    topic, ns = envelope.topic, envelope.namespace
    if topic == "/tasks/start":
        return TaskEvent("start", ns, event.container_id, event.pid)
    if topic == "/tasks/exit":
        # an exec'd process exits too: only the task's own process stops the container
        if event.id and event.id != event.container_id:
            return None
        return TaskEvent("exit", ns, event.container_id)
    if topic in ("/tasks/delete", "/tasks/paused", "/tasks/resumed"):
        return TaskEvent(topic.rsplit("/", 1)[1], ns, event.container_id)
    if topic == "/containers/delete":
        return TaskEvent("removed", ns, event.id)
    return None


# ---------------------------------------------------------------- the API description

class Api:
    """containerd's messages and methods, from the descriptor set made at build time."""

    def __init__(self, path: str = DESCRIPTORS):
        try:
            from google.protobuf import descriptor_pb2, descriptor_pool
            import grpclib.client  # noqa: F401
        except ImportError as e:
            raise ContainerdUnavailable(
                f"the Python package {e.name!r} is not installed "
                "(pip install 'hsflowd[containerd]': grpclib and protobuf)") from None
        try:
            with open(path, "rb") as f:
                files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        except OSError:
            raise ContainerdUnavailable(
                f"containerd's API description {path} was not built with the package "
                "(needs golang-github-containerd-containerd-dev and protoc when it is built: "
                "packaging/containerd_api.py)") from None
        self.pool = descriptor_pool.DescriptorPool()
        for proto in files.file:
            self.pool.Add(proto)
        self._classes: Dict[str, type] = {}
        self._methods: Dict[Tuple[str, str], Tuple[str, type, type]] = {}

    def message(self, full_name: str) -> type:
        cls = self._classes.get(full_name)
        if cls is None:
            descriptor = self.pool.FindMessageTypeByName(full_name)
            cls = self._classes[full_name] = _message_class(descriptor)
        return cls

    def method(self, service: str, name: str) -> Tuple[str, type, type]:
        """(path, request class, reply class) of ``SERVICES.<service>/<name>``."""
        found = self._methods.get((service, name))
        if found is None:
            s = self.pool.FindServiceByName(f"{SERVICES}.{service}")
            m = s.methods_by_name[name]
            found = self._methods[service, name] = (
                f"/{s.full_name}/{m.name}", self.message(m.input_type.full_name),
                self.message(m.output_type.full_name))
        return found

    def unpack(self, any_message) -> Optional[Any]:
        """An Any's payload, if the description knows its type."""
        name = any_message.type_url.rsplit("/", 1)[-1]
        try:
            return self.message(name).FromString(any_message.value)
        except KeyError:
            return None


def _message_class(descriptor) -> type:
    from google.protobuf import message_factory
    make = getattr(message_factory, "GetMessageClass", None)    # protobuf 4.22 and later
    if make is not None:
        return make(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


# ---------------------------------------------------------------- the connection

@dataclass
class CallCounts:
    """API calls made, by kind (for ``hsflowd status`` and the benchmark)."""

    version: int = 0
    events: int = 0
    namespaces: int = 0
    containers: int = 0
    tasks: int = 0

    def total(self) -> int:
        return self.version + self.events + self.namespaces + self.containers + self.tasks


class ContainerdLink(Link):
    """One connection to containerd; see the module docstring."""

    def __init__(self, path: str, api: Api, timeout: float = CALL_TIMEOUT):
        self.path = path
        self.api = api
        self.timeout = timeout
        self.calls = CallCounts()
        self.handover = Handover()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._channel = None
        self._thread = threading.Thread(target=self._run, name="containerd", daemon=True)

    def start(self) -> "ContainerdLink":
        self._thread.start()
        return self


    # ---- what the loop asks
    def list(self, ticket: int = 0) -> None:
        """Every container with a live task: ``Listed`` with ``ticket``, or ``CallFailed``
        with it."""
        self._submit("list", lambda: self._list(ticket), ticket)

    def fetch(self, namespace: str, ident: str, pid: int) -> None:
        """The container's spec, for a task that started: ``Started`` when it comes."""
        self._submit(f"fetch {ident[:12]}", lambda: self._fetch(namespace, ident, pid))

    def close(self, wait: float = 0.5) -> None:
        """End the thread: its event loop is told to stop, which closes the connection."""
        self.handover.closed.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:      # the loop has already ended
                pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(wait)
        self.handover.close()

    def _submit(self, what: str, make: Callable[[], Any], ticket: Optional[int] = None) -> None:
        loop = self._loop
        if loop is None or self.handover.closed.is_set():
            return

        async def call():
            try:
                answer = await make()
            except Exception as e:    # one call failed: said, the link goes on
                answer = call_failed(what, e, ticket)
            if answer is not None:
                self.handover.post(answer)
        try:
            asyncio.run_coroutine_threadsafe(call(), loop)
        except RuntimeError:
            pass

    # ---- the thread
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as e:  # whatever ends the loop ends this connection
            self.handover.post(lost(e))

    async def _main(self) -> None:
        from grpclib.client import Channel
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.handover.closed.is_set():
            return
        self._channel = Channel(path=self.path)
        stop = asyncio.ensure_future(self._stop.wait())
        step = None
        try:
            # each step races close(): a containerd that does not answer holds up nothing
            self.calls.version += 1
            step = asyncio.ensure_future(self._unary("version.v1.Version", "Version", {}))
            await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if self._stop.is_set():
                return
            step = asyncio.ensure_future(self._read_events(step.result().version))
            await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not self._stop.is_set():
                step.result()          # raises what ended the stream
                self.handover.post(Lost("containerd closed the event stream"))
        except asyncio.CancelledError:
            pass
        except Exception as e:  # a failed connection or stream: the module makes another
            if not self._stop.is_set():
                self.handover.post(lost(e))
        finally:
            stop.cancel()
            if step is not None:
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
            self._channel.close()

    async def _unary(self, service: str, method: str, request: Dict[str, Any],
                     namespace: Optional[str] = None):
        from grpclib.const import Cardinality
        path, request_type, reply_type = self.api.method(service, method)
        metadata = {NAMESPACE_HEADER: namespace} if namespace else None
        async with self._channel.request(path, Cardinality.UNARY_UNARY, request_type,
                                         reply_type, timeout=self.timeout,
                                         metadata=metadata) as stream:
            await stream.send_message(request_type(**request), end=True)
            return await stream.recv_message()

    async def _read_events(self, version: str) -> None:
        from grpclib.const import Cardinality
        path, request_type, reply_type = self.api.method("events.v1.Events", "Subscribe")
        self.calls.events += 1
        async with self._channel.request(path, Cardinality.UNARY_STREAM, request_type,
                                         reply_type) as stream:
            await stream.send_message(request_type(filters=list(EVENT_FILTERS)), end=True)
            # containerd sends the stream's headers only with its first event: the stream
            # is open once the request is sent
            self.handover.post(Connected(version))
            async for envelope in stream:
                self._event(envelope)

    def _event(self, envelope) -> None:
        payload = self.api.unpack(envelope.event)
        if payload is None:
            return
        event = parse_event(envelope, payload)
        if event is not None:
            self.handover.post(event)

    async def _fetch(self, namespace: str, ident: str, pid: int) -> Optional[Started]:
        self.calls.containers += 1
        reply = await self._unary("containers.v1.Containers", "Get", {"id": ident}, namespace)
        return Started(parse_container(namespace, reply.container, pid))

    async def _list(self, ticket: int) -> Listed:
        self.calls.namespaces += 1
        names = [n.name for n in (await self._unary("namespaces.v1.Namespaces", "List",
                                                    {})).namespaces]
        found: List[ContainerInfo] = []
        for ns in names:
            self.calls.tasks += 1
            tasks = (await self._unary("tasks.v1.Tasks", "List", {}, ns)).tasks
            live = {t.id: t for t in tasks if t.status in LIVE and t.pid}
            if not live:
                continue
            self.calls.containers += 1
            containers = (await self._unary("containers.v1.Containers", "List", {},
                                            ns)).containers
            for c in containers:
                task = live.get(c.id)
                if task is not None:
                    found.append(parse_container(ns, c, task.pid, task.status))
        return Listed(tuple(found), ticket)


__all__ = ["Api", "CallCounts", "ContainerInfo", "ContainerdLink", "ContainerdUnavailable",
           "Listed", "Started", "TaskEvent", "parse_container", "parse_event", "parse_spec",
           "DEFAULT_SOCKET"]
