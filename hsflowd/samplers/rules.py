"""Which interfaces a ``pcap {}`` / ``epcap {}`` rule selects, as hsflowd matches them.

A rule names a device (``dev``), a pattern (``dev.pattern``, a regular expression searched
in the name, as regexec does) or a speed range (``speed``).  Matches by pattern or speed skip what
hsflowd's automatic matching skips: bond masters, VLAN sub-interfaces, veths, and Open
vSwitch ports.  A device named with ``dev=`` is taken whatever its kind.

A rule with ``dynamic = on`` selects nothing by itself: it takes the devices a module asks
to have tapped (``requested``: k8s {}'s pod veths, see ``modules.ports``) that its dev,
pattern and speed (those it has) match, whatever their kind, as hsflowd's GET_TAP does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Collection, Dict, Iterable, Optional

if TYPE_CHECKING:
    from . import Tap

SKIPPED_KINDS = {"bond", "vlan", "veth", "openvswitch", "vif"}


def rule_matches(rule, iface, requested: bool = False) -> bool:
    if rule.dynamic:
        return requested and dynamic_rule_matches(rule, iface)
    if rule.dev is not None:
        return iface.name == rule.dev
    if iface.loopback or iface.kind in SKIPPED_KINDS:
        return False
    if rule.dev_pattern is not None:
        return rule.dev_pattern.search(iface.name) is not None
    return rule.matches_speed(iface.speed)


def dynamic_rule_matches(rule, iface) -> bool:
    """A requested device against a dynamic rule: every criterion the rule has."""
    if rule.dev is not None and iface.name != rule.dev:
        return False
    if rule.dev_pattern is not None and rule.dev_pattern.search(iface.name) is None:
        return False
    return rule.speed_min is None or rule.matches_speed(iface.speed)


def select_interfaces(rules: Iterable, interfaces: Iterable,
                      requested: Collection[int] = ()) -> Dict[int, object]:
    """ifindex -> the first rule that selects that interface (``requested``: the devices
    modules asked to have tapped, for the dynamic rules)."""
    chosen: Dict[int, object] = {}
    rules = list(rules)
    for iface in interfaces:
        wanted = iface.ifindex in requested
        rule: Optional[object] = next((r for r in rules if rule_matches(r, iface, wanted)), None)
        if rule is not None:
            chosen[iface.ifindex] = rule
    return chosen


def wanted_taps(config, interfaces, rules: Iterable, exclude: Iterable[int] = (),
                requested: Collection[int] = ()) -> Dict[int, "Tap"]:
    """ifindex -> the Tap each selected interface should have: its rate by hsflowd's rules
    (0 while a link without a rule rate is down), headerBytes, promiscuous mode (on for a
    bridge unless promisc = off, so it sees what it forwards between its ports), bridge."""
    from ..config import sampling_rate_for
    from . import Tap

    skip = set(exclude)
    out: Dict[int, Tap] = {}
    for ifindex, rule in select_interfaces(rules, interfaces, requested).items():
        if ifindex in skip:
            continue
        iface = interfaces.get(ifindex)
        rate = sampling_rate_for(config, iface.speed, iface.oper_up, rule.sampling)
        bridge = iface.kind == "bridge"
        out[ifindex] = Tap(ifindex, iface.name, rate, config.header_bytes,
                           rule.promisc_for(bridge), bridge)
    return out
