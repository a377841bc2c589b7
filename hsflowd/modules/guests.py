"""What ``docker {}``, ``containerd {}``, ``k8s {}``, ``kvm {}`` and ``systemd {}`` share: a
book of guests, each a data source 3:N, and one connection to the daemon that knows them
(dockerd, containerd, libvirtd, systemd over D-Bus), made again with back-off.

The connection (``virt.dockerapi.DockerLink``, ``virt.containerdapi.ContainerdLink``,
``virt.libvirtapi.LibvirtLink``, ``virt.systemdapi.SystemdLink``) talks to the daemon on
threads of its own and hands its messages over through a descriptor the loop watches;
``_handle`` gets them one by one, on the loop's thread.  The calls each connection made are
added up across connections (``closed_calls``, ``calls_made``) for ``hsflowd status``.
When it says it is connected the guests are listed, and again every ``refresh`` seconds;
when it is lost it is made again 1, 2, 4 ... seconds later (``RETRY_MIN`` to
``RETRY_MAX``).  A guest that stops is reported as it last was until
``forget`` seconds have passed.

virt_node (2100) goes in the host sample once, from one module: of those enabled, the one
last in ``VNODE_ROLE`` (hsflowd's requestVNodeRole priorities: a KVM host's domains are
its guests before its containers, its containers before its services).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import Any, Callable, Dict, Optional

from ..virt.guests import Guest, GuestBook
from ..virt.records import virt_node
from . import Module

# hsflowd's VNode roles (requestVNodeRole), weakest first: of the guest modules that run,
# the last one here sends virt_node (2100) in the host sample, the others none
VNODE_ROLE = ("systemd", "docker", "containerd", "k8s", "kvm")
SHORT_ID = 12    # characters of a container id that name it, as docker ps shows them


@dataclasses.dataclass
class Books:
    """A container module's figures for ``hsflowd status`` and the benchmark."""

    events: int = 0
    connects: int = 0


def unique_names(base: Dict[str, str], short_id: Callable[[str], str]) -> Dict[str, str]:
    """key -> name, where a name used twice gets ".<short id>" (as hsflowd)."""
    counts = collections.Counter(base.values())
    return {key: f"{name}.{short_id(key)[:SHORT_ID]}" if counts[name] > 1 else name
            for key, name in base.items()}


def docker_socket_present(config) -> Optional[str]:
    """Docker's socket, when docker {} is on and the socket is there: containerd {} and
    k8s {} then stand down, as hsflowd's do (dockerd's containers are docker {}'s)."""
    if config.docker is None:
        return None
    from ..virt.dockerapi import docker_url, socket_path
    path = socket_path(docker_url())
    return path if path is not None and os.path.exists(path) else None


def sends_virt_node(name: str, config) -> bool:
    """Whether module ``name`` has the VNode role under ``config`` (containerd {} and k8s {}
    standing down for docker {} have none)."""
    running = [n for n in VNODE_ROLE if getattr(config, n, None) is not None
               and not (n in ("containerd", "k8s") and docker_socket_present(config))]
    return bool(running) and running[-1] == name


def add_counts(total: Any, more: Any) -> None:
    """Add the counts of one dataclass of counts to another of the same kind."""
    for f in dataclasses.fields(total):
        setattr(total, f.name, getattr(total, f.name) + getattr(more, f.name))


class GuestsModule(Module):
    RETRY_MIN, RETRY_MAX = 1.0, 10.0

    def __init__(self, ctx, clock: Callable[[], float] = time.monotonic):
        super().__init__(ctx)
        self.clock = clock
        self.book: GuestBook = GuestBook(ctx.claim_ds_index, ctx.release_ds_index, clock)
        self.refresh = 60                 # refreshVMs: seconds between lists
        self.forget = 180                 # forgetVMs
        self.link: Any = None
        self.watch = None
        self.connected = False
        self.retry_at = 0.0
        self.retry = self.RETRY_MIN
        self.next_list = 0.0
        self.said: set = set()            # what _once has said
        self.unavailable: Optional[str] = None   # why it cannot work at all (no library)
        self.vnode = False                # it sends virt_node (``sends_virt_node``)
        self.closed_calls: Any = None     # the calls of the connections closed so far:
                                          # its link's CallCounts, set by the module

    # ------------------------------------------------------------ what each says its own way
    def _connect(self, now: float) -> None:
        """Make a link (``_open_link`` it), or say why not and set ``retry_at``."""
        raise NotImplementedError

    def _handle(self, message: Any) -> None:
        """One message from the link; ``_connected``/``_lost`` for the shared ones."""
        raise NotImplementedError

    def _forgotten(self, guest: Guest) -> None:
        """``guest`` stopped ``forget`` seconds ago and is no longer reported."""

    def _link_closed(self, link: Any) -> None:
        """``link`` is closed: its calls are kept in ``closed_calls``."""
        if self.closed_calls is not None:
            add_counts(self.closed_calls, link.calls)

    def _say_lost(self, reason: str) -> None:
        """A connection that was up went away."""

    def _say_unreachable(self, reason: str) -> None:
        """No connection could be made (said once, until one is)."""

    # ------------------------------------------------------------ life cycle
    def set_intervals(self, refresh: int, forget: int) -> None:
        """refreshVMs and forgetVMs from a (re)loaded config; a shorter refresh applies now."""
        if refresh != self.refresh and self.connected:
            self.next_list = min(self.next_list, self.clock() + refresh)
        self.refresh, self.forget = refresh, forget

    def set_vnode_role(self, config) -> None:
        self.vnode = sends_virt_node(self.name, config)

    def host_records(self):
        return [virt_node(self.book.running_count())] if self.vnode else []

    def tick(self, now: float) -> None:
        if self.link is None:
            if now >= self.retry_at and self.unavailable is None:
                self._connect(now)
        elif self.connected and now >= self.next_list:
            self._ask_list()
            self.next_list = now + self.refresh
        for gone in self.book.expire(self.forget):
            self._forgotten(gone)

    def close(self) -> None:
        self._drop_link()
        self.book.clear()

    def calls_made(self) -> Any:
        """The calls of every connection so far, the open one's included (a new count)."""
        total = dataclasses.replace(self.closed_calls)
        if self.link is not None:
            add_counts(total, self.link.calls)
        return total

    def _hook_marks(self, active: bool) -> None:
        """The flow hook that marks samples (2210), only while it has something to find."""
        if active:
            self.ctx.add_flow_hook(self.marks.mark)
        else:
            self.ctx.remove_flow_hooks()

    # ------------------------------------------------------------ the connection
    def _once(self, key: str, message: str, *args) -> None:
        if key not in self.said:
            self.said.add(key)
            self.log.warning(message, *args)

    def _open_link(self, link: Any) -> None:
        self.link = link.start()
        self.watch = self.ctx.watch(self.link.fileno(), self._on_link)

    def _drop_link(self) -> None:
        if self.link is not None:
            self.ctx.unwatch(self.watch)
            self.watch = None
            self.link.close()
            self._link_closed(self.link)
            self.link = None
        self.connected = False

    def _on_link(self) -> None:
        link = self.link
        if link is None:
            return
        for message in link.drain():
            if self.link is not link:
                return      # lost: the rest is from the old connection
            self._handle(message)

    def _ask_list(self) -> None:
        """Ask the link for the guests (its answer comes through ``_handle``)."""
        self.link.list()

    def _connected(self) -> None:
        """The link is up (after the module has said so): list the guests now."""
        self.connected = True
        self.retry = self.RETRY_MIN
        self.said.discard("unreachable")
        self._ask_list()
        self.next_list = self.clock() + self.refresh

    def _lost(self, reason: str) -> None:
        was = self.connected
        self._drop_link()
        if was:
            self._say_lost(reason)
            self.said.discard("unreachable")
            self.retry = self.RETRY_MIN
        else:
            self._say_unreachable(reason)
        self.retry_at = self.clock() + self.retry
        self.retry = min(self.RETRY_MAX, self.retry * 2)
