"""The only reasons a test may skip in CI: what the kernel CI runs on cannot do.

With ``CI=true`` in the environment (``.ci/run`` sets it), a test that skips for any other
reason fails the run (tests/conftest.py): a missing dockerd, bcc, Open vSwitch, tshark,
pmacct, nfdump, libvirt, dnsmasq ... means the install step (.ci/deps) broke, and a green
run without those tests would hide it.  Outside CI, skips stay skips.

Each limit is a named constant and the check that proves it: the kernel's own build
configuration (/proc/config.gz) has the option neither built in nor as a module.  A test
calls ``kernel_limit(NO_IPVLAN)`` before it needs the feature: the test skips only when
the check proves the limit, and otherwise goes on (and fails if the kernel cannot after
all).  Where /proc/config.gz cannot be read nothing is proven and nothing skips.

Keep this list short: a new entry is a kernel feature CI's kernel (Firecracker's 6.1,
/work/shared/reference/environment.md) was built without, never a missing package.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import pytest

CONFIG = "/proc/config.gz"
PREFIX = "kernel limit "


@lru_cache(maxsize=None)
def kernel_config() -> Optional[str]:
    """The running kernel's build configuration, or None where it cannot be read."""
    try:
        with gzip.open(CONFIG, "rt") as f:
            return f.read()
    except OSError:
        return None


def config_option(option: str) -> Optional[str]:
    """"y", "m" or "" (not set) for ``option`` (``CONFIG_...``), None without a config."""
    text = kernel_config()
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith(option + "="):
            return line.split("=", 1)[1]
    return ""


@dataclass(frozen=True)
class Limit:
    name: str       # the constant's own name
    option: str     # the Kconfig option whose absence is the limit
    what: str       # what a test cannot do because of it

    def holds(self) -> bool:
        """Proven: the option is in neither form (y, m) in the running kernel's config."""
        return config_option(self.option) == ""

    @property
    def reason(self) -> str:
        return f"{PREFIX}{self.name}: {self.what} ({self.option} is not set in {CONFIG})"


NO_IPVLAN = Limit("NO_IPVLAN", "CONFIG_IPVLAN", "no ipvlan devices")
NO_VLAN = Limit("NO_VLAN", "CONFIG_VLAN_8021Q", "no 802.1Q VLAN devices")
NO_DROP_MONITOR = Limit("NO_DROP_MONITOR", "CONFIG_NET_DROP_MONITOR",
                        "no drop monitor (the NET_DM generic netlink family)")
NO_PSAMPLE = Limit("NO_PSAMPLE", "CONFIG_PSAMPLE", "no psample generic netlink family")

LIMITS = (NO_IPVLAN, NO_VLAN, NO_DROP_MONITOR, NO_PSAMPLE)


def kernel_limit(limit: Limit) -> None:
    """Skip the calling test if ``limit`` holds on this kernel; otherwise do nothing."""
    assert limit in LIMITS, f"{limit} is not in tests/kernel_limits.py's LIMITS"
    if limit.holds():
        pytest.skip(limit.reason)


def allowed_in_ci(reason: str) -> bool:
    """A skip with this reason may pass in CI: one of LIMITS, and it holds here."""
    return any(reason == limit.reason and limit.holds() for limit in LIMITS)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
