"""``promisc`` in pcap {} and epcap {}: not set means on for a bridge, off for the rest.

A bridge hands its own device only the frames for the host unless it is promiscuous, so
``pcap { dev = docker0 }`` would miss every frame one container sends another.  Written
``on`` or ``off`` is taken as written, whatever the device.  Pure: the config and the
helper the agent asks when it builds a tap (tests/test_bridge_e2e.py runs it for real).
"""

from __future__ import annotations

import pytest

from hsflowd.config import parse_config
from hsflowd.config.describe import describe
from hsflowd.config.model import PcapRule


def rule(body: str, block: str = "pcap") -> PcapRule:
    config = parse_config("sflow {\n collector { ip = 127.0.0.1 }\n %s { dev = docker0 %s }\n}\n"
                          % (block, body))
    return getattr(config, block)[0]


@pytest.mark.parametrize("block", ["pcap", "epcap"])
@pytest.mark.parametrize("body, bridge, other", [
    ("", True, False),
    ("promisc = off", False, False),
    ("promisc = on", True, True),
])
def test_promisc_for_bridges_and_other_devices(block, body, bridge, other):
    r = rule(body, block)
    assert r.promisc == {"": None, "promisc = off": False, "promisc = on": True}[body]
    assert r.promisc_for(is_bridge=True) is bridge
    assert r.promisc_for(is_bridge=False) is other


def test_default_rule_is_not_set():
    assert PcapRule().promisc is None
    assert PcapRule().promisc_for(True) and not PcapRule().promisc_for(False)


def test_check_shows_it_as_not_set_or_as_written():
    text = describe(parse_config("sflow {\n collector { ip = 127.0.0.1 }\n pcap { dev = docker0 }\n"
                                 " pcap { dev = eth0 promisc = off }\n}\n"))
    blocks = [line.strip() for line in text.splitlines() if "promisc" in line]
    assert blocks == ["# promisc = (not set)", "promisc = off"]


def test_rules_with_and_without_it_differ():
    # a reload that adds promisc = off re-opens the bridge's tap (the rule changed)
    assert rule("") != rule("promisc = off") and rule("") == rule("")
