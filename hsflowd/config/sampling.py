"""Which 1-in-N sampling rate and polling interval apply where (hsflowconfig.c's
lookupPacketSamplingRate and lookupApplicationSettings).

The surprise for most people: on an interface whose speed is known, ``sampling=N`` is not
used.  The rate comes from ``sampling.<speed>``, else ``sampling.bps_ratio``, else
speed/1,000,000 with a floor of 100 (hsflowd GitHub issues #53 and #75).  Setting
``sampling.bps_ratio=0`` makes such interfaces use ``sampling=N`` again.
"""

from __future__ import annotations

from typing import Dict, Optional

from .model import Config

BPS_RATIO = "bps_ratio"
SPEED_RATIO = 1_000_000    # default: one sample per 1 Mbit/s of link speed...
SPEED_MIN_RATE = 100       # ...but never denser than 1-in-100
MAX_RATE = 0xFFFFFFFF      # the sampling_rate field of a flow sample is 32 bits

_UNITS = ((10 ** 12, "T"), (10 ** 9, "G"), (10 ** 6, "M"), (10 ** 3, "K"))


def print_speed(bps: int) -> str:
    """A speed as hsflowd names it in ``sampling.<speed>`` keys: cut down to the largest
    unit and truncated, so 1e9 is "1G" and 2.5e9 is "2G" (not "2500M")."""
    for size, unit in _UNITS:
        if bps >= size:
            return f"{bps // size}{unit}"
    return str(bps)


def sampling_rate_for(config: Config, if_speed: Optional[int], oper_up: bool = True,
                      rule_sampling: Optional[int] = None) -> int:
    """The 1-in-N rate for one interface.  0 means "do not sample".

    ``rule_sampling`` is a pcap/epcap rule's own ``sampling=``; like mod_pcap we look at it
    before anything else, so it applies even to an interface that is down.
    """
    if rule_sampling is not None:
        return rule_sampling
    if not oper_up:
        return 0
    if not if_speed:
        return config.sampling
    by_speed = config.sampling_settings.get(print_speed(if_speed))
    if by_speed is not None:
        return by_speed
    ratio = config.sampling_settings.get(BPS_RATIO)
    if ratio is not None:
        if ratio == 0:
            return config.sampling
        return min(MAX_RATE, max(1, if_speed // ratio))
    return min(MAX_RATE, max(SPEED_MIN_RATE, if_speed // SPEED_RATIO))


def lookup_app(settings: Dict[str, int], app: str) -> Optional[int]:
    """The deepest dotted-prefix match for ``app``: with sampling.app.x=10 and
    sampling.app=20, app "app.x.y" gets 10 and "app.z" gets 20.  Case-sensitive.

    Each of sampling.* and polling.* is searched on its own, so polling.app.x does not
    hide sampling.app (upstream searches both together, and also copies a matched
    polling value into the sampling result: both look unintended).
    """
    best, best_len = None, -1
    for name, value in settings.items():
        if len(name) > best_len and (app == name or app.startswith(name + ".")):
            best, best_len = value, len(name)
    return best


def app_sampling_rate(config: Config, app: str) -> int:
    """The 1-in-N rate for an application (http, app.<name>...): sampling.<app> or sampling."""
    found = lookup_app(config.sampling_settings, app)
    return config.sampling if found is None else found


def polling_interval_for(config: Config, app: Optional[str] = None) -> int:
    """Counter polling seconds: polling.<app> for an application, else polling."""
    if app is None:
        return config.polling
    found = lookup_app(config.polling_settings, app)
    return config.polling if found is None else found
