"""The agent: the loop, the runtime and the modules, put together and run.

Start-up order matters: the loop first (its signal handlers see a SIGTERM or SIGHUP that
comes during start-up), then what needs root (the host UUID from DMI, the .auto file, the
control socket), then root is given up, then the collectors and the modules start, each
already holding no more than the capabilities the configuration needs.

Each second the tick runs, in order: the modules (samplers frame what the kernel handed
over; their sample pools read the interface counters, once per tick for everyone), the
counter polling that is due, and the flush of the open datagram, so no sample waits more
than a second (the spec's limit).  Netlink events keep the interface table current between
ticks; a failure there costs a full re-read of the table, never the agent.
"""

from __future__ import annotations

import errno
import gc
import logging
import resource
import time
from typing import Callable, Dict, Iterable, Optional

from . import config as cfg
from . import privileges
from .libc import libc
from .loop import Loop
from .modules import privileges_for
from .modules.supervisor import Supervisor
from .output import Output
from .pollers import CounterPolling
from .runtime import Options, Runtime, core_privileges
from .sources.cgroups import join_init_cgroup_namespace
from .sources.identity import choose_uuid, parse_uuid_text
from .sources.interfaces import InterfaceTable

log = logging.getLogger("hsflowd")

__all__ = ["Agent", "Options", "StartupError"]


class StartupError(RuntimeError):
    """The agent cannot start (one line for the operator)."""


def raise_fd_limit() -> None:
    """Each tapped interface costs two descriptors (its socket, and the one Python's mmap
    keeps of it): lift the soft limit (1,024 outside systemd) to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


class MemoryTrim:
    """Gives freed heap back to the system after interface churn.

    Hundreds of interfaces that come and go leave free heap behind: glibc keeps what the
    tables of a thousand entries used, for the next burst.  After a burst of hundreds of
    changes, at most once every 30 s, collect cycles (pyroute2, which some modules still
    use, leaves them) and return the free heap with malloc_trim.  (Python's own arenas of
    small objects go back only when empty: what an interface costs, and what is kept after
    a burst, is in docs/design.md.)"""

    INTERVAL = 30.0
    EVENTS = 200          # interface changes that make a burst worth a trim (a collection
                          # costs tens of milliseconds: not for a link going down and up)

    def __init__(self):
        self.changes = 0
        self.next_at = 0.0
        try:
            self._trim = libc().malloc_trim
        except (OSError, AttributeError):   # not glibc
            self._trim = None

    def count(self, changes: int) -> None:
        self.changes += changes

    def tick(self, now: float) -> None:
        if self.changes >= self.EVENTS and now >= self.next_at:
            self.changes = 0
            self.next_at = now + self.INTERVAL
            gc.collect()
            if self._trim is not None:
                self._trim(0)


class LinkStats:
    """Interface counters, read from the kernel at most once per tick for everyone."""

    def __init__(self, interfaces: InterfaceTable):
        self.interfaces = interfaces
        self.cache: Dict = {}

    def __call__(self, ifindexes: Iterable[int]) -> Dict:
        missing = [i for i in ifindexes if i not in self.cache]
        if missing:
            self.cache.update(self.interfaces.read_counters(missing))
        return self.cache

    def clear(self) -> None:
        self.cache = {}


class Agent:
    """The running agent.  ``Agent(config, options)`` starts everything; ``run()`` serves
    until SIGTERM or SIGINT and then removes everything it made."""

    def __init__(self, config: cfg.Config, options: Options, loop: Optional[Loop] = None,
                 control_path: Optional[str] = None):
        self.clock = time.monotonic
        self.loop = loop or Loop()
        self.options = options
        self.auto_file = None
        self.control = None
        self.interfaces: Optional[InterfaceTable] = None
        self.supervisor: Optional[Supervisor] = None
        self.output: Optional[Output] = None
        try:
            self._start(config, control_path)
        except BaseException:
            self.shutdown()
            raise

    def _start(self, config: cfg.Config, control_path: Optional[str]) -> None:
        options = self.options
        try:   # the DMI UUID is readable by root only: decided now, kept for the session
            if options.uuid or config.uuid:
                parse_uuid_text(options.uuid or config.uuid)
            machine_uuid = choose_uuid(None, options.machine_id)
        except ValueError as e:  # -u, uuid= or -m that is not 32 hex digits
            where = "-u" if options.uuid else f"{config.path}: uuid" if config.uuid else "-m"
            raise StartupError(f"{where}: {e}") from None
        if options.auto_path:
            try:
                self.auto_file = cfg.AutoFile(options.auto_path)
            except OSError as e:
                why = "it is a symbolic link" if e.errno == errno.ELOOP else e.strerror or e
                log.warning("cannot write %s: %s; the effective config will not be written",
                            options.auto_path, why)
        if control_path:
            from .control import ControlServer
            try:
                self.control = ControlServer(control_path, self.loop, self.status)
            except OSError as e:
                log.warning("no status socket at %s: %s", control_path, e.strerror or e)
        raise_fd_limit()
        try:      # before any thread starts: only the calling thread joins
            if join_init_cgroup_namespace():
                log.info("joined PID 1's cgroup namespace: containers' groups are read as the "
                         "host sees them")
        except OSError as e:
            log.warning("this agent has a cgroup namespace of its own and cannot join PID 1's "
                        "(%s): containers' CPU, memory and disk counters are not read", e.strerror or e)
        self.interfaces = InterfaceTable()
        self.link_stats = LinkStats(self.interfaces)
        self.memory = MemoryTrim()
        self.output = Output(self.clock)
        self.supervisor = Supervisor(self.loop, self.output, self.link_stats, self.interfaces,
                                     self.clock, config_changed=lambda: self.runtime.config_changed())
        self.polling = CounterPolling()
        self.runtime = Runtime(options, self.interfaces, self.output, self.supervisor,
                               machine_uuid, self.auto_file, self.clock)
        needed = privileges_for(config) | core_privileges(config)
        try:
            self.runtime.privileges = privileges.drop(needed, keep_root=options.keep_root)
        except OSError as e:
            raise StartupError(f"cannot give up root: {e.strerror or e}") from None
        self.loop.watch(self.interfaces.fileno(), self._on_netlink)
        self.runtime.apply(config, stopping=lambda: self.loop.stopping)
        self.next_refresh = self.clock() + config.refresh_adaptors
        if self.runtime.address is None and not self.loop.stopping:
            raise StartupError("no usable agent address: no interface has an IP address "
                               "(set agentIP= in the config)")

    # ------------------------------------------------------------ events
    def _on_netlink(self) -> None:
        try:
            changed = self.interfaces.handle_events()
        except Exception as e:  # a netlink failure costs a full re-read, never the agent
            log.warning("reading interface events failed (%s); re-reading every interface", e)
            self.next_refresh = 0.0
            return
        if changed:
            self.memory.count(len(changed))
            self.runtime.interfaces_changed()

    def _refresh_interfaces(self, now: float) -> None:
        self.next_refresh = now + self.runtime.config.refresh_adaptors
        try:
            changed = self.interfaces.refresh()
        except Exception as e:
            log.warning("re-reading the interfaces failed (%s); trying again in 10 s", e)
            self.next_refresh = now + 10
            return
        self.memory.count(len(changed))
        self.runtime.interfaces_changed()

    def tick(self, now: float) -> None:
        self.link_stats.clear()
        if now >= self.next_refresh:
            self._refresh_interfaces(now)
        self.runtime.tick(now)
        self.supervisor.tick(now)
        self.polling.tick(self.supervisor, self.runtime.config.polling, self.output.emit)
        self.output.flush()
        self.output.report_oversized(now)
        self.memory.tick(now)

    def reload(self) -> None:
        self.runtime.reload()

    def status(self) -> dict:
        return self.runtime.status()

    # ------------------------------------------------------------ running
    def run(self, ready: Optional[Callable[[], None]] = None) -> int:
        """Serve until SIGTERM/SIGINT.  ``ready()`` is called once the first tick is done."""
        def started() -> None:
            # what start-up made (modules, libraries, tables) lives as long as the agent:
            # out of the collector's sight, a full collection costs a fraction of it
            gc.collect()
            gc.freeze()
            if ready is not None:
                ready()

        try:
            self.loop.run(self.tick, self.reload, started)
        finally:
            self.shutdown()
        log.info("stopped")
        return 0

    def shutdown(self) -> None:
        """Remove what the agent made (tc filters, iptables rules, OVS rows) and close."""
        if self.supervisor is not None:
            self.supervisor.close()
            self.supervisor = None
        if self.output is not None:
            self.output.close()
            self.output = None
        if self.interfaces is not None:
            self.interfaces.close()
            self.interfaces = None
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.auto_file is not None:
            self.auto_file.close()
            self.auto_file = None
        self.loop.close()
