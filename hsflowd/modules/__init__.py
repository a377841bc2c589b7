"""Modules: every part of the agent that the configuration turns on, behind one interface.

A module is one file in this package and one class, registered by name with the
configuration test that enables it and the privileges it needs (node_exporter's collector
registry is the model).  The agent walks the registry; it never imports a module's
internals, and no module reaches into another's state.

What a module is given (``Context``): ``watch(fd, callback)`` for the descriptors it reads,
``emit(sample)`` for encoded flow samples (``writer()``: the datagram a sampler may pack them
straight into, while no hook needs to see them), ``link_stats(ifindexes)`` for interface counters
read once per tick, the interface table, ``add_flow_hook`` to add records to other modules'
flow samples (``flowhooks``), ``claim_ds_index`` for a container's or VM's data source 3:N
(one table for every module, ``virt.dsindex``), and ``config_changed()`` for a source of
settings.  What it is asked (``Module``):

- ``reconcile(state)``: the configuration, the interfaces, the agent address or the
  collectors changed (``state.changed`` says which); bring what it runs in line.
- ``adjust_config(config)``: only a module that is a source of settings (DNS-SD) changes
  the file's configuration into the running one.
- ``tick(now)``: once a second.
- ``counter_sources()`` / ``counters(due)``: the data sources it polls, and their records
  when the schedule says they are due; ``host_records()``: records it adds to the host
  sample (2:1), as hsflowd's modules add theirs to the csample event.
- ``status()``: figures for ``hsflowd status``; ``close()``: release everything it made.

Isolation lives in ``supervisor.py``: a module that raises is logged with its name, closed,
and started again with back-off, and the others go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import (Any, Callable, ClassVar, Dict, FrozenSet, Iterable, List, Mapping, Sequence,
                    Tuple, Type)

from ..privileges import ROOT   # in a module's privileges: it cannot run without uid 0
from ..sflow import Record

DataSource = Tuple[int, int]   # (class, index): 2:1 the host, 0:ifIndex, 3:N a container/VM
HOST_SOURCE: DataSource = (2, 1)


EVERYTHING = frozenset({"config", "interfaces", "agent", "targets", "ports"})


@dataclass(frozen=True)
class AgentState:
    """What modules are told on every change: the running configuration and the facts of
    this host they depend on.  ``changed`` names what changed since the last call:
    "config", "interfaces", "agent" (address), "targets" (resolved collectors), "ports"
    (what modules asked of the ports: ``requested_taps``, ``port_names``)."""

    config: Any                       # hsflowd.config.Config
    revision: int
    interfaces: Any                   # hsflowd.sources.interfaces.InterfaceTable
    agent: Any = None                 # hsflowd.address.AgentAddress, None until elected
    targets: Tuple[Tuple[str, int], ...] = ()   # collectors as resolved (address, port)
    host_uuid: Any = None             # uuid.UUID of this host, decided once by the agent
    changed: FrozenSet[str] = EVERYTHING
    # what modules asked of the ports ("ports" in changed: ``modules.ports``)
    requested_taps: FrozenSet[int] = frozenset()     # ifindexes for dynamic = on rules
    port_names: Mapping[int, str] = field(default_factory=dict)   # ifindex -> name (1005)


class Context:
    """What the agent lends one module.  The supervisor makes one per module and takes back
    its watches and flow hooks when the module is closed or fails."""

    def __init__(self, name: str, watch: Callable, unwatch: Callable, emit: Callable[[bytes], None],
                 send: Callable[[bytes], None], link_stats: Callable, interfaces: Any,
                 flow_hooks: Any = None, config_changed: Callable[[], None] = lambda: None,
                 ds_indexes: Any = None, ports: Any = None):
        self.name = name
        self.log = logging.getLogger(f"hsflowd.{name}")
        self._watch, self._unwatch = watch, unwatch
        self.emit = emit                  # a flow sample: through other modules' hooks, out
        self.send = send                  # a sample straight into the datagram (no hooks)
        # the open datagram, while no hook needs to see flow samples (samplers.flow)
        self.writer = flow_hooks.writer if flow_hooks is not None else (lambda: None)
        self.link_stats = link_stats
        self.interfaces = interfaces
        self.config_changed = config_changed
        self._flow_hooks = flow_hooks
        self._ds_indexes = ds_indexes
        self._ports = ports
        self.watches: List[Any] = []

    def watch(self, fd: int, callback: Callable[[], Any]):
        """Call ``callback()`` from the loop whenever ``fd`` is readable; returns a token."""
        token = self._watch(self.name, fd, callback)
        self.watches.append(token)
        return token

    def unwatch(self, token) -> None:
        if token is None:
            return
        self._unwatch(token)
        try:
            self.watches.remove(token)
        except ValueError:
            pass

    def add_flow_hook(self, hook: Callable[[bytes, Any], Any]) -> None:
        """See ``flowhooks``: ``hook(sample, packet)`` sees every flow sample on its way
        out, from now on (it replaces this module's hook, if it had one).  Have one only
        while it can add something: a hook costs every sample its walk."""
        self._flow_hooks.set(self.name, hook)

    def remove_flow_hooks(self) -> None:
        """This module has no flow hook from now on."""
        if self._flow_hooks is not None:
            self._flow_hooks.set(self.name, None)

    def claim_ds_index(self, uuid16: bytes) -> int:
        """The data source index N (3:N) of the guest with this UUID: hsflowd's
        100000 + hash mod 50000 with linear probing, the same while it is held; 0 if
        none is free."""
        return self._ds_indexes.claim(bytes(uuid16), self.name)

    def release_ds_index(self, uuid16: bytes) -> None:
        self._ds_indexes.release(bytes(uuid16))

    def request_taps(self, ifindexes: Iterable[int]) -> None:
        """These devices (and no others of this module's) are offered to the ``dynamic =
        on`` rules of pcap {} and epcap {}, as hsflowd's modules ask for a tap
        (``modules.ports``)."""
        self._ports.request_taps(self.name, ifindexes)

    def name_ports(self, names: Mapping[int, str]) -> None:
        """Report these ports (ifindex -> name) under these names in their counter
        samples (1005), as hsflowd does with an alias and setIfName."""
        self._ports.name_ports(self.name, names)

    def release(self) -> None:
        """Undo every watch, hook, data source claim and port request (the module is
        closed or failed)."""
        for token in self.watches:
            self._unwatch(token)
        self.watches.clear()
        self.remove_flow_hooks()
        if self._ds_indexes is not None:
            self._ds_indexes.release_owner(self.name)
        if self._ports is not None:
            self._ports.release(self.name)


class Module:
    """The interface; every method has a do-nothing default."""

    name: ClassVar[str] = ""
    # a source of settings (adjust_config): started before each revision is made from the
    # file, so what it says applies from the first revision on (Supervisor.start_sources)
    adjusts_config: ClassVar[bool] = False

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.log = ctx.log

    def reconcile(self, state: AgentState) -> None:
        """Bring what this module runs in line with ``state``."""

    def tick(self, now: float) -> None:
        """Once a second."""

    def counter_sources(self) -> Iterable[DataSource]:
        """The data sources whose counters this module polls."""
        return ()

    def counters(self, due: Sequence[DataSource]) -> Dict[DataSource, List[Record]]:
        """Records for the sources that are due (a source left out sends nothing)."""
        return {}

    def host_records(self) -> List[Record]:
        """Records this module adds to the host sample (2:1)."""
        return []

    def adjust_config(self, config: Any) -> Any:
        """For a module that is a source of configuration (DNS-SD, ``adjusts_config``): the
        running configuration made from ``config`` (what the file says).  When its answer
        would change, the module calls ``ctx.config_changed()`` and is asked again."""
        return config

    def status(self) -> Dict[str, Any]:
        """Figures for ``hsflowd status`` (e.g. ``{"samplers": [...]}``)."""
        return {}

    def close(self) -> None:
        """Release everything: sockets, programs, rules, rows."""


@dataclass(frozen=True)
class ModuleSpec:
    """One registry entry: the class, when the config enables it, what it needs."""

    name: str
    cls: Type[Module]
    enabled: Callable[[Any], bool]
    privileges: Callable[[Any], FrozenSet[str]]
    order: int


REGISTRY: Dict[str, ModuleSpec] = {}

# Every module, in the order the agent starts them and runs their flow hooks: tunnels and
# the modules that mark a packet's guests before tcp, whose hook keeps samples and sends
# them later past the hooks after it.
ORDER: Tuple[str, ...] = ("host", "interfaces", "pcap", "epcap", "nflog", "ovs", "tunnels",
                          "docker", "containerd", "k8s", "kvm", "systemd", "dns-sd", "json",
                          "tcp")


def register(name: str, enabled: Callable[[Any], bool],
             privileges: Callable[[Any], Iterable[str]] = lambda config: ()):
    """Class decorator: add a module to the registry (a name used twice is a bug).

    ``privileges(config)`` names the capabilities the module needs once the agent has
    dropped root ("CAP_NET_RAW", ...) or ``ROOT`` if it must keep uid 0."""
    def decorate(cls: Type[Module]) -> Type[Module]:
        if name in REGISTRY:
            raise ValueError(f"module {name!r} is registered twice")
        if name not in ORDER:
            raise ValueError(f"module {name!r} has no place in modules.ORDER")
        cls.name = name
        REGISTRY[name] = ModuleSpec(name, cls, enabled,
                                    lambda config: frozenset(privileges(config)),
                                    ORDER.index(name))
        return cls
    return decorate


def enabled_specs(config) -> List[ModuleSpec]:
    """The modules this configuration turns on, in registry order."""
    _load_all()
    return [s for s in sorted(REGISTRY.values(), key=lambda s: s.order) if s.enabled(config)]


def privileges_for(config) -> FrozenSet[str]:
    """Every capability the enabled modules need (ROOT among them if one must keep root)."""
    out: set = set()
    for spec in enabled_specs(config):
        out |= spec.privileges(config)
    return frozenset(out)


_LOADED = False


def _load_all() -> None:
    """Import every module file once; each registers itself.  Module files import their
    heavy libraries (bcc, ovs, docker, libvirt) only when the module is made."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    # ORDER, not the order of these imports, decides the order of modules and hooks
    from . import (host, interfaces, pcap, epcap, nflog, ovs, tunnels, docker,  # noqa: F401
                   containerd, k8s, kvm, systemd, dnssd, jsonapp, tcp)


__all__ = ["EVERYTHING", "AgentState", "Context", "DataSource", "HOST_SOURCE", "Module",
           "ModuleSpec", "ORDER", "REGISTRY", "ROOT", "enabled_specs", "privileges_for", "register"]
