"""Running the modules the configuration enables, each isolated from the others.

Every call into a module goes through ``Supervisor.call``.  An exception there is a
failure of that module alone: it is logged with the module's name (at most once a minute,
the traceback at debug level), the module is closed (its descriptors unwatched), and it is
made again after a back-off of 1, 2, 4 ... 60 seconds, then told the current state.  A
module that has run a minute without failing starts its back-off again from one second.
Expected trouble (a device that cannot be opened, a service that is not there) is the
module's own business and never reaches this far.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Optional, Tuple

from ..errors import one_line
from . import EVERYTHING, AgentState, Context, Module, ModuleSpec, enabled_specs
from ..virt.dsindex import DsIndexTable
from .flowhooks import FlowHooks
from .ports import PortBoard

log = logging.getLogger("hsflowd")

BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0
LOG_INTERVAL = 60.0
HEALTHY_AFTER = 60.0


class Slot:
    """One enabled module: its instance (None while it waits to be made again) and books."""

    def __init__(self, spec: ModuleSpec):
        self.spec = spec
        self.module: Optional[Module] = None
        self.ctx: Optional[Context] = None
        self.error: Optional[str] = None      # the last failure, for `hsflowd status`
        self.failures = 0
        self.backoff = BACKOFF_MIN
        self.retry_at = 0.0
        self.started_at = 0.0
        self.next_log = 0.0
        self.unlogged = 0

    @property
    def name(self) -> str:
        return self.spec.name


class Supervisor:
    """The enabled modules, in registry order."""

    def __init__(self, loop, output: Any, link_stats: Callable,
                 interfaces: Any, clock: Callable[[], float] = time.monotonic,
                 config_changed: Callable[[], None] = lambda: None):
        self.loop = loop
        self.output = output          # where samples go: output.emit(sample)
        self.flow_hooks = FlowHooks(output, self._hook_failed)
        self.ds_indexes = DsIndexTable()      # 3:N for every module's containers and VMs
        self.ports = PortBoard()              # taps and port names modules asked for
        self.link_stats = link_stats
        self.interfaces = interfaces
        self.config_changed = config_changed
        self.clock = clock
        self.slots: Dict[str, Slot] = {}
        self.state: Optional[AgentState] = None
        self.refused: FrozenSet[str] = frozenset()   # enabled, but lacking a privilege

    def refuse(self, names: FrozenSet[str]) -> None:
        """Modules the configuration enables that must not run (the agent gave up what they
        need at start); the runtime says why."""
        self.refused = names

    def _wanted(self, config) -> List[ModuleSpec]:
        return [s for s in enabled_specs(config) if s.name not in self.refused]

    # ------------------------------------------------------------ the modules' life
    def reconcile(self, state: AgentState, stopping: Callable[[], bool] = lambda: False) -> None:
        """Start the modules ``state.config`` enables, stop the others, tell the rest.
        ``stopping()`` true (a SIGTERM during start-up) starts nothing more."""
        self.ports.changed = False
        state = replace(state, requested_taps=self.ports.taps,
                                    port_names=self.ports.names)
        self.state = state
        wanted = self._wanted(state.config)
        names = {s.name for s in wanted}
        for name in [n for n in self.slots if n not in names]:
            self._stop(self.slots[name])
            del self.slots[name]
        for spec in wanted:
            if stopping():
                return
            slot = self.slots.get(spec.name)
            if slot is None:
                slot = self.slots[spec.name] = Slot(spec)
                self._start(slot, state)
            elif slot.module is not None:
                self.call(slot, "reconcile", slot.module.reconcile, state)

    def start_sources(self, file_config) -> None:
        """Before a revision is made from ``file_config``: start the sources of settings it
        enables (``Module.adjusts_config``) and stop those it no longer enables, so that
        the revision is theirs from the start (DNS-SD: nothing goes out before DNS answers)
        and a reload that drops one is not adjusted by it any more.  They are told the
        state with the others, once the revision is made."""
        wanted = {s.name: s for s in self._wanted(file_config) if s.cls.adjusts_config}
        for name in [n for n, slot in self.slots.items()
                     if slot.spec.cls.adjusts_config and n not in wanted]:
            self._stop(self.slots[name])
            del self.slots[name]
        for spec in wanted.values():
            if spec.name not in self.slots:
                slot = self.slots[spec.name] = Slot(spec)
                self._start(slot, None)

    def _start(self, slot: Slot, state: Optional[AgentState]) -> None:
        ctx = Context(slot.name, self._watch, self.loop.unwatch, self.flow_hooks.emit, self.send,
                      self.link_stats, self.interfaces, self.flow_hooks, self.config_changed,
                      self.ds_indexes, self.ports)
        slot.ctx = ctx
        slot.started_at = self.clock()
        module = self.call(slot, "start", slot.spec.cls, ctx)
        if module is None:
            return
        slot.module = module
        if state is not None:
            # new to it, all of it: a module started again after a failure, when the last
            # change was only "targets", must still read the configuration
            self.call(slot, "reconcile", module.reconcile, replace(state, changed=EVERYTHING))

    def _stop(self, slot: Slot) -> None:
        """Close the module, then undo what it holds through its context: closing may
        still watch a descriptor (nflog's helper removing its iptables rules)."""
        module, slot.module = slot.module, None
        if module is not None:
            try:
                module.close()
            except Exception as e:  # closing is best effort; say so, never raise
                log.warning("module %s: close failed: %s", slot.name, one_line(e))
                log.debug("module %s: close failed", slot.name, exc_info=True)
        if slot.ctx is not None:
            slot.ctx.release()

    def send(self, sample: bytes) -> None:
        """A sample straight into the datagram, past the flow hooks (``Context.send``)."""
        self.output.emit(sample)

    def _hook_failed(self, owner: str, e: Exception) -> None:
        """A flow hook raised: its module fails (which takes the hook back); the sample
        went on unchanged."""
        slot = self.slots.get(owner)
        if slot is None or slot.module is None:
            self.flow_hooks.set(owner, None)
            return
        self._failed(slot, "flow hook", e)

    def _watch(self, name: str, fd: int, callback: Callable[[], Any]):
        slot = self.slots[name]
        return self.loop.watch(fd, lambda: self.call(slot, "read", callback))

    def tick(self, now: float) -> None:
        for slot in list(self.slots.values()):
            if slot.module is None:
                if now >= slot.retry_at and self.state is not None:
                    log.info("module %s: starting again", slot.name)
                    self._start(slot, self.state)
                continue
            if slot.failures and now - slot.started_at >= HEALTHY_AFTER:
                slot.backoff = BACKOFF_MIN
                slot.failures = 0
            self.call(slot, "tick", slot.module.tick, now)
        if self.ports.changed and self.state is not None:
            self.reconcile(replace(self.state, changed=frozenset({"ports"})))

    def close(self) -> None:
        for slot in reversed(list(self.slots.values())):
            self._stop(slot)
        self.slots.clear()

    # ------------------------------------------------------------ isolation
    def call(self, slot: Slot, what: str, fn: Callable, *args, default=None):
        """``fn(*args)``; if it raises, the module fails (see the module doc) and
        ``default`` is returned."""
        try:
            return fn(*args)
        except Exception as e:
            self._failed(slot, what, e)
            return default

    def _failed(self, slot: Slot, what: str, e: Exception) -> None:
        now = self.clock()
        slot.error = f"{what}: {one_line(e)}"
        slot.failures += 1
        delay = slot.backoff
        slot.backoff = min(BACKOFF_MAX, slot.backoff * 2)
        slot.retry_at = now + delay
        if now >= slot.next_log:
            more = f" ({slot.unlogged} more failures since)" if slot.unlogged else ""
            log.warning("module %s failed in %s: %s; starting it again in %.0f s%s",
                        slot.name, what, one_line(e), delay, more)
            slot.next_log = now + LOG_INTERVAL
            slot.unlogged = 0
        else:
            slot.unlogged += 1
        log.debug("module %s failed in %s", slot.name, what, exc_info=e)
        self._stop(slot)

    # ------------------------------------------------------------ asking the modules
    def running(self) -> Iterator[Tuple[Slot, Module]]:
        for slot in list(self.slots.values()):
            if slot.module is not None:
                yield slot, slot.module

    def adjust_config(self, config: Any) -> Any:
        """``config`` as the sources of settings (DNS-SD) make it (``Module.adjust_config``)."""
        for slot, module in self.running():
            config = self.call(slot, "adjust_config", module.adjust_config, config, default=config)
        return config

    def counter_sources(self) -> Dict[Any, str]:
        """Every data source a running module polls, and the module's name (the first
        module to claim a source owns it)."""
        owners: Dict[Any, str] = {}
        for slot, module in self.running():
            sources = self.call(slot, "counter_sources", lambda m=module: list(m.counter_sources()),
                                default=[])
            for source in sources:
                owners.setdefault(source, slot.name)
        return owners

    def counters(self, owner: str, due: List[Any]) -> Dict[Any, list]:
        """The records of ``owner``'s data sources that are due ({} if it failed)."""
        slot = self.slots.get(owner)
        if slot is None or slot.module is None:
            return {}
        return self.call(slot, "counters", slot.module.counters, due, default={}) or {}

    def host_records(self) -> list:
        """What the running modules add to the host sample (virt_node)."""
        out: list = []
        for slot, module in self.running():
            out.extend(self.call(slot, "host_records", module.host_records, default=[]) or [])
        return out

    def status(self) -> Tuple[List[dict], List[dict]]:
        """(one entry a module: name, running, last error and its own figures; every
        sampler's figures, with its module's name), for ``hsflowd status``."""
        modules, samplers = [], []
        for slot in list(self.slots.values()):
            entry = {"name": slot.name, "running": slot.module is not None, "error": slot.error}
            modules.append(entry)
            if slot.module is not None:
                figures = self.call(slot, "status", slot.module.status, default={}) or {}
                for sampler in figures.get("samplers", ()):
                    samplers.append({"module": slot.name, **sampler})
                entry.update((k, v) for k, v in figures.items() if k != "samplers")
        return modules, samplers
