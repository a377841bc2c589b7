"""Which interfaces a ``pcap {}`` / ``epcap {}`` rule selects, as hsflowd matches them.

A rule names a device (``dev``), a pattern (``dev.pattern``, a regular expression searched
in the name, as regexec does) or a speed range (``speed``).  Matches by pattern or speed skip what
hsflowd's automatic matching skips: bond masters, VLAN sub-interfaces, veths, and Open
vSwitch ports.  A device named with ``dev=`` is taken whatever its kind.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional

SKIPPED_KINDS = {"bond", "vlan", "veth", "openvswitch", "vif"}


def rule_matches(rule, iface) -> bool:
    if rule.dev is not None:
        return iface.name == rule.dev
    if iface.loopback or iface.kind in SKIPPED_KINDS:
        return False
    if rule.dev_pattern is not None:
        return rule.dev_pattern.search(iface.name) is not None
    return rule.matches_speed(iface.speed)


def select_interfaces(rules: Iterable, interfaces: Iterable) -> Dict[int, object]:
    """ifindex -> the first rule that selects that interface."""
    chosen: Dict[int, object] = {}
    rules = list(rules)
    for iface in interfaces:
        rule: Optional[object] = next((r for r in rules if rule_matches(r, iface)), None)
        if rule is not None:
            chosen[iface.ifindex] = rule
    return chosen
