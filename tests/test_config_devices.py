"""Devices the file names that the host does not have: a warning each, saying what the agent
does until the device appears; never for patterns, other namespaces or unused collectors."""

from __future__ import annotations

import socket

from hsflowd.config import host_interfaces, missing_devices, parse_config

HOST = {"lo", "eth0", "br0"}


def conf(body: str):
    return parse_config("sflow {\n" + body + "\n}\n", "d.conf")


def test_each_kind_of_missing_device_in_line_order():
    config = conf("  collector { ip=192.0.2.1 dev=vrf9 }\n"
                  "  pcap { dev = eth9 }\n"
                  "  agent = eth7\n"
                  "  epcap { dev = eth8 }")
    assert missing_devices(config, HOST) == [
        "d.conf:2: collector { dev = vrf9 }: no such interface now; nothing is sent to "
        "192.0.2.1 until it appears",
        "d.conf:3: pcap { dev = eth9 }: no such interface now; it is tapped when it appears",
        "d.conf:4: agent = eth7: no interface has that name or alias now; the agent address "
        "is elected without it until one does",
        "d.conf:5: epcap { dev = eth8 }: no such interface now; it is tapped when it appears"]


def test_devices_that_exist_are_not_said():
    config = conf("  collector { ip=192.0.2.1 dev=br0 }\n  pcap { dev = eth0 }\n  agent = lo")
    assert missing_devices(config, HOST) == []


def test_the_agent_device_may_be_an_alias_but_a_tap_may_not():
    config = conf("  collector { ip=192.0.2.1 }\n  agent = uplink\n  pcap { dev = uplink }")
    assert missing_devices(config, HOST, aliases={"uplink"}) == [
        "d.conf:4: pcap { dev = uplink }: no such interface now; it is tapped when it appears"]


def test_the_last_agent_setting_is_the_one_said():
    config = conf("  collector { ip=192.0.2.1 }\n  agent = eth0\n  agent = eth5")
    assert missing_devices(config, HOST) == [
        "d.conf:4: agent = eth5: no interface has that name or alias now; the agent address "
        "is elected without it until one does"]


def test_not_said_where_the_name_is_not_looked_up_here():
    config = conf("  agentIP = 192.0.2.9\n  agent = eth5\n"           # agentIP decides
                  "  collector { ip=192.0.2.1 dev=vrf9 namespace=blue }\n"   # blue's device
                  '  pcap { dev.pattern = "^nosuch[0-9]+$" }\n'      # a pattern
                  "  pcap { dynamic = on dev = veth9 }")               # a filter on requests
    assert missing_devices(config, HOST) == []


def test_collectors_are_not_said_while_dns_sd_replaces_them():
    config = conf("  dns-sd { }\n  collector { ip=192.0.2.1 dev=vrf9 }")
    assert missing_devices(config, HOST) == []


def test_host_interfaces_are_this_namespace_names_and_their_aliases(tmp_path):
    (tmp_path / "lo").mkdir()
    (tmp_path / "lo" / "ifalias").write_text("loopy\n")
    names, aliases = host_interfaces(str(tmp_path))
    assert names == {name for _, name in socket.if_nameindex()} and "lo" in names
    assert aliases == {"loopy"}
