"""Devices the file names that this host does not have now: warnings, not errors.

An interface may come after the agent starts (a VRF, a bond, a VM's tap) and the agent uses
it then, so a name that matches nothing is said, not refused; what each warning says is what
the agent does meanwhile.  Apart from the parser, which reads only the text: the caller
gives the names (``hsflowd check`` from the host, the agent from its interface table).
"""

from __future__ import annotations

import os
import socket
from typing import Collection, List, Set, Tuple

from .model import Config


def missing_devices(config: Config, names: Collection[str],
                    aliases: Collection[str] = ()) -> List[str]:
    """``FILE:LINE: ...`` for each agent=, pcap/epcap dev= and collector dev= that names no
    interface in ``names`` (``agent`` may name an alias too, as in hsflowd), in line order."""
    found: List[Tuple[int, str]] = []
    path = config.path
    agent = config.agent_device
    # agentIP, when given, decides the address: agent= is not looked at then
    if agent and config.agent_ip is None and agent not in names and agent not in aliases:
        line = config.lines.get("agent", 0)
        found.append((line, f"{path}:{line}: agent = {agent}: no interface has that name or "
                      "alias now; the agent address is elected without it until one does"))
    for block, rules in (("pcap", config.pcap), ("epcap", config.epcap)):
        for rule in rules:
            # a dynamic rule taps only what a module asks for: its dev= is a filter
            if rule.dev is not None and not rule.dynamic and rule.dev not in names:
                found.append((rule.line, f"{path}:{rule.line}: {block} {{ dev = {rule.dev} }}: "
                              "no such interface now; it is tapped when it appears"))
    if not config.dns_sd:      # with dns-sd on, the file's collectors are not used
        for c in config.collectors:
            # dev= of a collector in another namespace is that namespace's: not looked at
            if c.dev is not None and c.namespace is None and c.dev not in names:
                found.append((c.line, f"{path}:{c.line}: collector {{ dev = {c.dev} }}: no such "
                              f"interface now; nothing is sent to {c.ip} until it appears"))
    return [text for _, text in sorted(found)]


def host_interfaces(sysfs: str = "/sys/class/net") -> Tuple[Set[str], Set[str]]:
    """The names of this network namespace's interfaces, and their aliases (read from
    sysfs, best effort: a name that cannot be read there has none)."""
    names = {name for _, name in socket.if_nameindex()}
    aliases: Set[str] = set()
    for name in names:
        try:
            with open(os.path.join(sysfs, name, "ifalias"), encoding="utf-8",
                      errors="replace") as f:
                alias = f.read().strip("\n")
        except OSError:
            continue
        if alias:
            aliases.add(alias)
    return names, aliases
