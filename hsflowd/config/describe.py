"""``hsflowd check``: the effective configuration, written back as hsflowd.conf.

Every keyword appears with its effective value, defaults included, so the output answers
"what is this agent really using?" and can be pasted back as a config file.  Keys that are
not set are shown as comments; legacy spellings come out in their current form; keywords
the agent ignores are left out (its warnings say so).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, List, Optional

from . import keywords as K
from .model import Config

_NEEDS_QUOTES = re.compile(r'[\s=;#{}"]')
_SUFFIXES = ((10 ** 15, "P"), (10 ** 12, "T"), (10 ** 9, "G"), (10 ** 6, "M"), (10 ** 3, "K"))


def format_speed(bps: int) -> str:
    """Exact, unlike print_speed: 2500000000 stays "2500M"."""
    for size, unit in _SUFFIXES:
        if bps and bps % size == 0:
            return f"{bps // size}{unit}"
    return str(bps)


def format_speeds(low: int, high: int) -> str:
    if low == high:
        return format_speed(low)
    return format_speed(low) + "-" + ("" if high == K.SPEED_MAX else format_speed(high))


def format_value(keyword: K.Keyword, value: Any) -> str:
    if keyword.kind == K.ONOFF:
        return "on" if value else "off"
    if keyword.kind == K.FLOAT:
        return repr(float(value))
    if keyword.kind == K.REGEX:
        return '"' + value.pattern + '"'
    return _quoted(str(value))


def _quoted(text: str) -> str:
    return f'"{text}"' if not text or _NEEDS_QUOTES.search(text) else text


def _lines(keyword: K.Keyword, value: Any, indent: str) -> List[str]:
    if keyword.repeat:
        if not value:
            return [f"{indent}# {keyword.name} = (none)"]
        return [f"{indent}{keyword.name} = {format_value(keyword, v)}" for v in value]
    if value is None:
        return [f"{indent}# {keyword.name} = (not set)"]
    return [f"{indent}{keyword.name} = {format_value(keyword, value)}"]


def _settings(block: K.Block) -> Iterable[K.Keyword]:
    return (k for k in block.keywords if k.kind != K.BLOCK and not k.ignored and not k.target)


def _block(name: str, get, indent: str = "  ", children: Optional[dict] = None) -> List[str]:
    """``name { ... }`` with each keyword's value from ``get(keyword)``."""
    block = K.BLOCKS[K.BLOCKS["sflow"].keyword(name).block] if name != "port" else K.BLOCKS[name]
    out = [f"{indent}{name} {{"]
    for keyword in _settings(block):
        out += _lines(keyword, get(keyword), indent + "  ")
    for child, instances in (children or {}).items():
        for settings in instances:
            out += _block(child, lambda k, s=settings: s.get(k.name), indent + "  ")
    return out + [f"{indent}}}"]


def _rule_value(rule, keyword: K.Keyword):
    if keyword.kind == K.SPEEDS:
        return None if rule.speed_min is None else format_speeds(rule.speed_min, rule.speed_max)
    return getattr(rule, keyword.attr)


def describe(config: Config) -> str:
    """The effective configuration, in hsflowd.conf syntax."""
    out = [f"# effective configuration read from {config.path}"]
    out += [f"# warning: {w}" for w in config.warnings]
    if config.unsupported:
        out.append("# not supported yet: " + ", ".join(config.unsupported))
    out.append("sflow {")
    for keyword in _settings(K.BLOCKS["sflow"]):
        if keyword.name not in ("DNSSD", "DNSSD_domain"):
            out += _lines(keyword, getattr(config, keyword.attr), "  ")
    for app in config.app_order:
        for prefix, settings in (("sampling.", config.sampling_settings),
                                 ("polling.", config.polling_settings)):
            if app in settings:
                out.append(f"  {_quoted(prefix + app)} = {settings[app]}")
    if config.dns_sd:
        out += _block("dns-sd", lambda k: config.dns_sd_domain if k.name == "domain"
                      else config.dns_sd_start_delay)
    elif config.dns_sd_domain is not None:
        out += ["  DNSSD = off", f"  DNSSD_domain = {_quoted(config.dns_sd_domain)}"]
    for collector in config.collectors:
        out += _block("collector", lambda k, c=collector: getattr(c, k.attr))
    for name in ("pcap", "epcap"):
        for rule in getattr(config, name):
            out += _block(name, lambda k, r=rule: _rule_value(r, k))
    for name in ("nflog", "ulog", "psample", "dropmon", "json", "tcp", "ovs", "docker",
                 "containerd", "k8s", "kvm", "systemd"):
        typed = getattr(config, name)
        if typed is not None:
            out += _block(name, lambda k, t=typed: getattr(t, k.attr))
    for name, settings in config.blocks.items():
        children = {k: v for k, v in settings.items() if isinstance(v, list)}
        out += _block(name, lambda k, s=settings: s.get(k.name), children=children)
    out.append("}")
    return "\n".join(out) + "\n"
