"""The running configuration and what follows from it.

A configuration revision brings new collectors, a new agent address election and a new
.auto file; an interface event may bring a new agent address (and so a new .auto file);
a collector name that resolves late changes what Open vSwitch is told.  Each time, the
modules are told what changed (``AgentState.changed``) and bring themselves in line.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Callable, Dict, FrozenSet, Optional

from . import config as cfg
from .address import AgentAddress, elect_agent_address
from .collectors import Collectors, Destination
from .modules import AgentState, enabled_specs
from .modules.supervisor import Supervisor
from .output import Output
from .privileges import effective_set
from .sources.identity import parse_uuid_text

log = logging.getLogger("hsflowd")

@dataclass
class Options:
    """What the command line adds to the config file."""

    config_path: str = "/etc/hsflowd.conf"
    auto_path: Optional[str] = "/etc/hsflowd.auto"
    uuid: Optional[str] = None
    machine_id: Optional[str] = None
    keep_root: bool = False


def sub_agent_id(config) -> int:
    """hsflowd sends from subAgentId when packets are sampled, subAgentId+1 when only
    counters are (its poll agent), so the sub-agent id a collector sees stays the same."""
    sampling = bool(config.pcap or config.epcap or config.nflog)
    return config.sub_agent_id + (0 if sampling else 1)


def core_privileges(config) -> set:
    """What the agent itself needs besides its modules: joining the network namespace of a
    ``namespace=`` collector (setns, and /run/netns/NAME is mode 0)."""
    if any(c.namespace for c in config.collectors):
        return {"CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH"}
    return set()


class Runtime:
    """Config revisions, the agent address, the .auto file, and telling the modules."""

    def __init__(self, options: Options, interfaces, output: Output, supervisor: Supervisor,
                 machine_uuid, auto_file=None, clock: Callable[[], float] = time.monotonic):
        self.options = options
        self.interfaces = interfaces
        self.output = output
        self.supervisor = supervisor
        self.machine_uuid = machine_uuid   # from DMI or the machine id, read once at start
        self.host_uuid = machine_uuid
        self.auto_file = auto_file
        self.clock = clock
        self.file_config = None     # what the file says
        self.config = None          # what runs: the file's, as sources of settings adjust it
        self.revision = 0
        self._reapply = False       # a source of settings (DNS-SD) has a new answer
        self.address: Optional[AgentAddress] = None
        self.agent_ip: Optional[str] = None
        self.started = clock()
        self.privileges: Optional[FrozenSet[str]] = None   # what was kept when root was dropped
        self._said: set = set()                            # warnings already given

    # ------------------------------------------------------------ revisions
    def apply(self, file_config, stopping: Callable[[], bool] = lambda: False) -> None:
        """Make ``file_config`` (as the modules that are sources of settings adjust it) the
        running configuration: at start, on every reload, and when such a source changes."""
        self._reapply = False
        old = self.config
        self.file_config = file_config
        self._refuse_modules(file_config)      # before any starts: a source of settings too
        self.supervisor.start_sources(file_config)
        config = self._adjusted(file_config)
        self.config = config
        self.revision += 1
        for warning in config.warnings:
            self._say_once(warning)
        interfaces = list(self.interfaces)
        for warning in cfg.missing_devices(file_config, {i.name for i in interfaces},
                                           {i.alias for i in interfaces if i.alias}):
            self._say_once(warning)
        for block in config.unsupported:
            self._say_once(f"{config.path}: {block} {{}} is not supported yet; ignored")
        self._check_core_privileges(config)
        explicit = self.options.uuid or config.uuid
        self.host_uuid = parse_uuid_text(explicit) if explicit else self.machine_uuid
        if not self.host_uuid.int:   # an all-zero uuid= counts as not given, as in hsflowd
            self.host_uuid = self.machine_uuid
        if old is None or _collectors_of(old) != _collectors_of(config):
            self.output.set_collectors(Collectors(Destination(
                host=c.ip, port=c.udpport, dev=c.dev, namespace=c.namespace,
                where=c.origin or f"{config.path}:{c.line}") for c in config.collectors))
        self.agent_ip = self._configured_agent_ip()  # resolved once per revision, not per event
        self._elect()
        self._write_auto()
        self._tell({"config", "interfaces", "agent", "targets"}, stopping)
        if config.suppressed:
            log.info("configuration revision %d: no settings from DNS-SD (yet): nothing is "
                     "sampled, polled or sent", self.revision)
        else:
            log.info("configuration revision %d: %d collector(s), polling %d s, agent %s",
                     self.revision, len(config.collectors), config.polling,
                     self.address.ip if self.address else "none")

    def _adjusted(self, config):
        return self.supervisor.adjust_config(config)

    def config_changed(self) -> None:
        """A source of settings has a new answer: a new revision at the next tick."""
        self._reapply = True

    def reload(self) -> None:
        """SIGHUP: read the file again; a file that does not parse changes nothing."""
        path = self.options.config_path
        try:
            config = cfg.load_config(path)
        except cfg.ConfigError as e:
            log.error("%s; keeping the running configuration (revision %d)", e, self.revision)
            return
        log.info("reloading %s", path)
        collectors = self.output.collectors
        self.apply(config)
        if collectors is not None and self.output.collectors is collectors:
            collectors.resolve_again()    # the same collectors: their names looked up again

    def _say_once(self, text: str) -> None:
        """A warning about the file is given when it first appears, not on every reload."""
        if text not in self._said:
            self._said.add(text)
            log.warning("%s", text)

    def _refuse_modules(self, file_config) -> None:
        """What was given up at start cannot come back: a module that now needs more is
        not run (rather than failing every minute), and the log says to restart.  Which
        modules run is the file's to say (DNS-SD gives collectors and rates, not modules)."""
        kept = self.privileges
        refused = set()
        if kept is not None:
            for spec in enabled_specs(file_config):
                missing = sorted(effective_set(spec.privileges(file_config)) - kept)
                if missing:
                    refused.add(spec.name)
                    self._say_once(f"{file_config.path}: the {spec.name} module needs "
                                   f"{', '.join(missing)}, which the agent gave up at start: "
                                   f"it is not run; restart hsflowd to use it")
        self.supervisor.refuse(frozenset(refused))

    def _check_core_privileges(self, config) -> None:
        """The same for the agent's own sending: a collector in another namespace."""
        if self.privileges is None:
            return
        missing = sorted(effective_set(core_privileges(config)) - self.privileges)
        if missing:
            self._say_once(f"{config.path}: a collector with namespace= needs "
                           f"{', '.join(missing)}, which the agent gave up at start: "
                           f"restart hsflowd to send to it")

    # ------------------------------------------------------------ agent address
    def _configured_agent_ip(self) -> Optional[str]:
        """agentIP as an address (a host name is resolved), or None to elect one."""
        c = self.config
        if c.agent_ip is None:
            return None
        try:
            return str(ip_address(c.agent_ip))
        except ValueError:
            pass
        try:
            return socket.getaddrinfo(c.agent_ip, None)[0][4][0]
        except OSError as e:
            log.warning("%s: agentIP %s does not resolve (%s); electing an address instead",
                        c.path, c.agent_ip, e)
            return None

    def _elect(self) -> bool:
        """Elect the agent address; True if it changed.  A new address (or sub-agent)
        starts a new datagram sequence and uptime, as hsflowd does."""
        c = self.config
        address = elect_agent_address(self.interfaces, agent_ip=self.agent_ip,
                                      agent_device=c.agent_device,
                                      cidrs=[(a.network, a.exclude) for a in c.agent_cidrs])
        old, self.address = self.address, address
        if old is not None and old != address:
            log.info("agent address %s -> %s", old.ip, address.ip if address else "none")
        self.output.set_agent(address.ip if address else None, sub_agent_id(c),
                              c.datagram_bytes, c.path)
        return old != address

    def _write_auto(self) -> None:
        if self.auto_file is None:
            return
        a = self.address
        text = cfg.render_auto(self.config, self.revision, os.uname().nodename,
                               str(a.ip) if a else None, a.device if a else None)
        try:
            self.auto_file.write(text)
        except OSError as e:
            log.warning("cannot write %s: %s", self.auto_file.path, e.strerror or e)

    # ------------------------------------------------------------ events
    def interfaces_changed(self) -> None:
        """The interface table changed: a new election, then the modules."""
        changed = {"interfaces"}
        if self._elect():
            # the effective configuration changed: a new revision, so that sub-agents
            # watching rev_start in the .auto file see it
            changed.add("agent")
            self.revision += 1
            self._write_auto()
            log.info("revision %d: agent address %s", self.revision,
                     self.address.ip if self.address else "none")
        self._tell(changed)

    def tick(self, now: float) -> None:
        if self._reapply:
            self.apply(self.file_config)
        collectors = self.output.collectors
        if collectors is not None and collectors.tick():
            self._tell({"targets"})

    def _tell(self, changed, stopping: Callable[[], bool] = lambda: False) -> None:
        collectors = self.output.collectors
        self.supervisor.reconcile(AgentState(
            config=self.config, revision=self.revision, interfaces=self.interfaces,
            agent=self.address, targets=collectors.targets if collectors else (),
            host_uuid=self.host_uuid, changed=frozenset(changed)), stopping)

    # ------------------------------------------------------------ status
    def status(self) -> Dict[str, Any]:
        modules, samplers = self.supervisor.status()
        return {
            "pid": os.getpid(),
            "config": self.options.config_path,
            "revision": self.revision,
            "uptime": round(self.clock() - self.started, 3),
            "agent_address": str(self.address.ip) if self.address else None,
            "agent_device": self.address.device if self.address else None,
            **self.output.status(),
            "samplers": samplers,
            "modules": modules,
        }


def _collectors_of(config):
    """What makes two collector lists the same (line numbers aside)."""
    return [(c.ip, c.udpport, c.dev, c.namespace) for c in config.collectors]
