"""Settings from DNS-SD: what SRV and TXT records under ``_sflow._udp.<domain>`` make of the
file's configuration.  Pure functions; the DNS queries are the dnssd module's.

As hsflowd does it (mod_dnssd.c, hsflowconfig.c ``dynamic_config_line``, hsflowd.c
``evt_config_end``):

- each SRV record is a collector: its target and port;
- each TXT string ``key=value`` is a setting: ``sampling``, ``sampling.<x>``, ``polling``,
  ``polling.<x>``, ``agentIP``, ``agent``, ``agent.cidr``, ``headerBytes`` (over 256 is
  256); ``txtvers`` and ``dropLimit`` are known and have no effect here; keys are matched
  without regard to case, ``<x>`` keeps its case;
- the settings start from hsflowd's defaults, not from the file: the file's collectors,
  ``sampling``, ``polling``, ``headerBytes`` and ``sampling.*``/``polling.*`` are not
  used while DNS-SD is on.  ``agentIP``, ``agent`` and ``agent.cidr`` from DNS win, and the
  file's apply where DNS gives none; ``datagramBytes`` and every module block come from the
  file;
- no SRV record (the name does not exist, or has no SRV data) turns sampling, polling and
  sending off; so does having no answer yet (hsflowd waits for its first config);
- a failed query changes nothing (the module keeps the last answer).

Where this differs from hsflowd, on purpose: a value that is not a number in range is
ignored with a message (hsflowd's strtol reads "abc" as 0, which would turn sampling
off); a TXT string without "=" is ignored with a message; SRV targets "." ("no service",
RFC 2782) and port 0 are left out; collectors are sorted, so an answer that only comes in
another order is no change (hsflowd sorts them too, for the same reason).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from . import keywords as K
from .model import Collector, Config
from .values import Bad, read_value

MIN_DELAY = 10        # hsflowd HSP_DEFAULT_DNSSD_MINDELAY: never query more often
RETRY_DELAY = 300     # HSP_DEFAULT_DNSSD_RETRYDELAY: when no record gave a TTL
SERVICE = "_sflow._udp"

_SFLOW = K.BLOCKS["sflow"]
_DEFAULT = Config()


@dataclass(frozen=True)
class DnsSdAnswer:
    """What one round of queries found under ``name`` (the SRV name that answered).

    ``servers``: (target, port) of each SRV record, in answer order; ``records`` counts the
    SRV records, those left out of ``servers`` included ("." targets); ``settings`` are the
    TXT key=value pairs in order; ``ttl`` is the smallest TTL seen (0: none); ``problems``
    name the TXT strings that were not key=value."""

    name: str
    servers: Tuple[Tuple[str, int], ...] = ()
    records: int = 0
    settings: Tuple[Tuple[str, str], ...] = ()
    ttl: int = 0
    problems: Tuple[str, ...] = ()


def parse_txt(strings: Iterable[bytes]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """The key=value pairs of TXT character-strings, and one message per string skipped."""
    pairs, problems = [], []
    for raw in strings:
        text = raw.decode("utf-8", "replace")
        key, eq, value = text.partition("=")
        if not eq or not key.strip():
            problems.append(f"TXT {text!r} is not key=value; ignored")
            continue
        pairs.append((key.strip(), value.strip()))
    return pairs, problems


def srv_target(name: str) -> Optional[str]:
    """A collector host from an SRV target ("collector.example.com." -> without the final
    dot); None for the root, which RFC 2782 uses to say "no such service here"."""
    host = name.rstrip(".")
    return host or None


def latch_ttl(current: int, ttl: int) -> int:
    """hsflowd keeps the smallest TTL of all records, where 0 means "none yet" (so a record
    with TTL 0 is replaced by any later one)."""
    return ttl if current == 0 or ttl < current else current


def next_query_delay(ttl: int) -> int:
    """Seconds until the next query: the smallest TTL, else 300, and never under 10."""
    return max(MIN_DELAY, ttl or RETRY_DELAY)


def retry_delay(last_delay: int, failures: int) -> int:
    """After the ``failures``-th failed query in a row: the last answer's delay (10 s if
    there was none), doubled for each further failure, at most 300 s.  hsflowd always
    waits 300 s, which leaves a DNS server that comes back unseen for five minutes."""
    base = max(MIN_DELAY, min(RETRY_DELAY, last_delay or MIN_DELAY))
    return min(RETRY_DELAY, base << min(max(failures - 1, 0), 8))


def switched_off(config: Config) -> Config:
    """``config`` with nothing to sample, poll or send: the modules that sample, the ones
    that push settings elsewhere (ovs) and the application inputs are left out, so they
    close and cost nothing; DNS-SD itself stays on."""
    return dataclasses.replace(
        config, collectors=[], sampling=0, polling=0, sampling_settings={}, polling_settings={},
        app_order=(), pcap=[], epcap=[], nflog=None, ulog=None, psample=None, dropmon=None,
        json=None, tcp=None, ovs=None, suppressed=True)


def _read(keyword: K.Keyword, key: str, value: str, problems: List[str]):
    try:
        return read_value(value, keyword, key)
    except Bad as e:
        problems.append(f"TXT {key}={value}: {e}; ignored")
        return None


def dynamic_config(file_config: Config, answer: Optional[DnsSdAnswer]
                   ) -> Tuple[Config, List[str]]:
    """The running configuration DNS-SD makes of ``file_config``, and a message for each
    record it could not use."""
    if answer is None or answer.records == 0:
        return switched_off(file_config), []
    problems: List[str] = []
    sampling, polling, header = _DEFAULT.sampling, _DEFAULT.polling, _DEFAULT.header_bytes
    apps = {"sampling.": {}, "polling.": {}}
    order: List[str] = []
    agent_ip = agent_device = None
    cidrs = []
    for key, value in answer.settings:
        lower = key.lower()
        if lower in ("txtvers", "droplimit"):
            continue
        prefix = next((p for p in K.APP_PREFIXES if lower.startswith(p)), None)
        if prefix is not None and len(key) > len(prefix):
            keyword = K.APP_SAMPLING if prefix == "sampling." else K.APP_POLLING
            got = _read(keyword, key, value, problems)
            if got is not None:
                app = key[len(prefix):]
                apps[prefix][app] = got
                if app not in order:
                    order.append(app)
            continue
        keyword = _SFLOW.lookup(key)
        name = keyword.name if keyword is not None else None
        if name == "headerBytes" and value.strip().isdigit() and int(value) > K.MAX_HEADER_BYTES:
            header = K.MAX_HEADER_BYTES          # hsflowd clamps this one
            continue
        if name not in ("sampling", "polling", "headerBytes", "agentIP", "agent", "agent.cidr"):
            problems.append(f"TXT {key}={value}: not a setting DNS-SD can give; ignored")
            continue
        got = _read(keyword, key, value, problems)
        if got is None:
            continue
        if name == "sampling":
            sampling = got
        elif name == "polling":
            polling = got
        elif name == "headerBytes":
            header = got
        elif name == "agentIP":
            agent_ip = got
        elif name == "agent":
            agent_device = got
        else:
            cidrs.append(got)
    where = f"DNS-SD {answer.name}"
    servers = sorted({(host, port) for host, port in answer.servers if port})
    collectors = [Collector(ip=host, udpport=port, origin=where) for host, port in servers]
    config = dataclasses.replace(
        file_config, collectors=collectors, sampling=sampling, polling=polling,
        header_bytes=header, sampling_settings=apps["sampling."],
        polling_settings=apps["polling."], app_order=tuple(order),
        agent_ip=agent_ip if agent_ip is not None else file_config.agent_ip,
        agent_device=agent_device if agent_device is not None else file_config.agent_device,
        agent_cidrs=cidrs or file_config.agent_cidrs, suppressed=False)
    return config, problems


__all__ = ["DnsSdAnswer", "MIN_DELAY", "RETRY_DELAY", "SERVICE", "dynamic_config", "latch_ttl",
           "next_query_delay", "parse_txt", "retry_delay", "srv_target", "switched_off"]
