"""hsflowd.conf syntax: tokens, numbers, quotes, comments, aliases, warnings, legacy keys."""

from __future__ import annotations

import ipaddress
import re

import pytest

from hsflowd.config import (AgentCidr, Collector, ConfigError, ContainerdConfig, DockerConfig,
                            K8sConfig, KvmConfig, NflogConfig, OvsConfig, PcapRule, SystemdConfig,
                            TcpConfig, parse_config)
from hsflowd.config.grammar import Token, tokenize
from hsflowd.config.keywords import SPEED_MAX
from hsflowd.config.values import Bad, parse_number


def conf(body: str, path: str = "t.conf"):
    return parse_config("sflow {\n" + body + "\n}\n", path)


def with_collector(body: str):
    return conf("collector { ip=192.0.2.1 }\n" + body)


# -- tokens -----------------------------------------------------------------------------

def test_separators_are_space_tab_equals_semicolon():
    tokens, lines = tokenize("a b\tc=d;e==;;f")
    assert [t.text for t in tokens] == list("abcdef")
    assert lines == 1


def test_braces_are_tokens_even_against_words():
    tokens, _ = tokenize("sflow{collector{ip=1.2.3.4}}")
    assert [t.text for t in tokens] == ["sflow", "{", "collector", "{", "ip", "1.2.3.4", "}", "}"]


def test_comments_run_to_the_end_of_the_line():
    tokens, _ = tokenize("a # b { c\nd#e\n# whole line\nf")
    assert [(t.text, t.line) for t in tokens] == [("a", 1), ("d", 2), ("f", 4)]


def test_quotes_keep_separators_braces_and_hashes():
    tokens, _ = tokenize('x="a b=c;{d}#e" y')
    assert tokens == [Token("x", 1), Token("a b=c;{d}#e", 1, quoted=True), Token("y", 1)]


def test_quoted_brace_is_a_value_not_a_brace():
    assert not Token("}", 1, quoted=True).is_("}")
    assert Token("}", 1).is_("}")


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_numbers_for_every_line_ending(newline):
    tokens, lines = tokenize(newline.join(["a", "", "b", "c"]) + newline)
    assert [t.line for t in tokens] == [1, 3, 4]
    assert lines == 4


def test_form_feed_is_not_a_line_break():
    tokens, lines = tokenize("a\x0cb\nc")
    assert [(t.text, t.line) for t in tokens] == [("a\x0cb", 1), ("c", 2)]
    assert lines == 2


def test_unterminated_quote():
    with pytest.raises(ConfigError) as caught:
        parse_config('sflow {\n  agent = "eth0\n}', "q.conf")
    assert str(caught.value) == ("q.conf:2: unterminated quote: a '\"' opens a value that the "
                                 "end of the line does not close")


# -- numbers ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("0", 0), ("400", 400), ("1K", 1000), ("1k", 1000), ("2M", 2_000_000),
    ("1G", 10 ** 9), ("0x10", 16), ("0X1f", 31), ("010", 8), ("0x10K", 16000), ("00", 0),
])
def test_numbers_follow_strtol_base_0_with_suffixes(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "K", "-1", "+5", "1.5", "12abc", "0x", "1KB", "1T",
                                  "١٢", "1_000", " 1", "0b101"])
def test_not_numbers(text):
    with pytest.raises(Bad):
        parse_number(text)


def test_octal_hint():
    with pytest.raises(Bad, match=r"'sampling' needs an integer, got '08' \(a leading 0 "
                                  r"means octal, as in C\)"):
        parse_number("08", what="'sampling'")


def test_suffixes_and_hex_in_a_file():
    config = with_collector("sampling=1K polling=0x1e headerBytes=0200 datagramBytes=1k")
    assert (config.sampling, config.polling, config.header_bytes, config.datagram_bytes) == (
        1000, 30, 128, 1000)


@pytest.mark.parametrize("text,low,high", [
    ("1G", 10 ** 9, 10 ** 9), ("100M-10G", 10 ** 8, 10 ** 10), ("1G-", 10 ** 9, SPEED_MAX),
    ("1g-1t", 10 ** 9, 10 ** 12), ("1T-2P", 10 ** 12, 2 * 10 ** 15), ("0", 0, 0),
    ("0x10-0x20", 16, 32),
])
def test_speed_ranges(text, low, high):
    rule = with_collector(f"pcap {{ speed={text} }}").pcap[0]
    assert (rule.speed_min, rule.speed_max) == (low, high)


def test_speed_matching():
    exact, open_, ranged = with_collector(
        "pcap { speed=1G } pcap { speed=10G- } pcap { speed=1G-10G }").pcap
    assert exact.matches_speed(10 ** 9) and not exact.matches_speed(10 ** 10)
    assert open_.matches_speed(100 * 10 ** 9) and not open_.matches_speed(10 ** 9)
    assert ranged.matches_speed(10 ** 9) and ranged.matches_speed(10 ** 10)
    assert not ranged.matches_speed(25 * 10 ** 9)
    assert not PcapRule(dev="eth0").matches_speed(10 ** 9)


@pytest.mark.parametrize("text,message", [
    ("10G-1G", "'speed' range '10G-1G' has its minimum above its maximum"),
    ("fast", "'speed' needs a speed like 1G, 100M-10G or 1G-, got 'fast'"),
    ("-1G", "'speed' needs a speed like 1G, 100M-10G or 1G-, got '-1G'"),
    ("1G-2G-3G", "'speed' needs a speed like 1G, 100M-10G or 1G-, got '1G-2G-3G'"),
    ("10000P", "'speed' must be at most 9223372036854775807 bits/s, got '10000P'"),
])
def test_bad_speeds(text, message):
    with pytest.raises(ConfigError) as caught:
        with_collector(f"pcap {{ speed={text} }}")
    assert str(caught.value) == f"t.conf:3: {message}"


# -- keywords ---------------------------------------------------------------------------

def test_keywords_ignore_case_but_app_names_do_not():
    config = parse_config("SFLOW { COLLECTOR { IP=192.0.2.1 UDPPORT=7000 } "
                          "Sampling=10 SAMPLING.1G=5 Polling.App.X=20 AGENTip=10.0.0.1 }")
    assert config.collectors == [Collector("192.0.2.1", 7000)]
    assert config.sampling == 10 and config.agent_ip == "10.0.0.1"
    assert config.sampling_settings == {"1G": 5}
    assert config.polling_settings == {"App.X": 20}


def test_aliases():
    config = with_collector("packetSamplingRate=500 counterPollingInterval=15\n"
                            "json { jsonPort=36343 jsonFIFO=/tmp/fifo }\n"
                            "ovs { socket=unix:/tmp/db.sock }\n"
                            "nflog { nflogGroup=5 nflogProbability=0.01 }")
    assert (config.sampling, config.polling) == (500, 15)
    assert config.json.udpport == 36343
    assert config.ovs == OvsConfig(db="unix:/tmp/db.sock")
    assert config.nflog == NflogConfig(group=5, probability=0.01)
    assert [w.split(": ", 1)[1] for w in config.warnings] == [
        "'jsonPort' is deprecated: write json { udpport=N }",
        "'jsonFIFO' is deprecated: write json { fifo=/path }",
        "'jsonFIFO' is ignored: not supported yet (applications send JSON to udpport)",
        "'nflogGroup' is deprecated: write nflog { group=N }",
        "'nflogProbability' is deprecated: write nflog { probability=0.nn }"]


def test_quoted_values():
    config = with_collector('pcap { dev.pattern = "^(eth|en)[0-9]{1,2}#?$" }\n'
                            'agent = "my agent;dev"')
    assert config.pcap[0].dev_pattern.pattern == "^(eth|en)[0-9]{1,2}#?$"
    assert config.pcap[0].dev_pattern.search("eth12#")
    assert config.agent_device == "my agent;dev"


def test_posix_classes_in_regexes():
    config = with_collector('pcap { dev.pattern="^eth[[:digit:]]+$" }')
    assert config.pcap[0].dev_pattern.search("eth10")
    assert not config.pcap[0].dev_pattern.search("ethX")


def test_a_whole_config_on_one_line():
    config = parse_config("sflow{collector{ip=192.0.2.1}pcap{dev=eth0}nflog{group=5}}")
    assert config.collectors == [Collector("192.0.2.1")]
    assert config.pcap == [PcapRule(dev="eth0")]
    assert config.nflog == NflogConfig(group=5)
    assert config.warnings == []


def test_comments_can_hide_braces():
    config = parse_config("# top\nsflow { # }\n collector { ip=192.0.2.1 } # {\n}\n")
    assert config.collectors == [Collector("192.0.2.1")]
    assert config.warnings == []


def test_collectors_keep_their_order_and_lines():
    config = conf("collector { ip=192.0.2.2 udpport=7000 dev=vrf-mgmt }\n"
                  "collector { ip=2001:DB8::1 namespace=blue }\n"
                  "collector { ip=collector.example.com }")
    assert config.collectors == [Collector("192.0.2.2", 7000, dev="vrf-mgmt"),
                                 Collector("2001:db8::1", namespace="blue"),
                                 Collector("collector.example.com")]
    assert [c.line for c in config.collectors] == [2, 3, 4]


def test_agent_cidrs():
    config = with_collector("agent.cidr=10.1.2.3/8\nagent.cidr = !fe80::/10\n"
                            "agent.cidr=192.168.0.0/255.255.0.0 agent.cidr=fd00::/ffff::")
    assert config.agent_cidrs == [
        AgentCidr(ipaddress.ip_network("10.0.0.0/8")),
        AgentCidr(ipaddress.ip_network("fe80::/10"), exclude=True),
        AgentCidr(ipaddress.ip_network("192.168.0.0/16")),
        AgentCidr(ipaddress.ip_network("fd00::/16"))]
    assert [c.line for c in config.agent_cidrs] == [3, 4, 5, 5]
    assert str(config.agent_cidrs[1]) == "!fe80::/10"


@pytest.mark.parametrize("text", ["10.0.0.0", "10.0.0.300/8", "10.0.0.0/33", "fe80::/129",
                                  "10.0.0.0/255.0.255.0", "10.0.0.0/ffff::", "!", "10.0.0.0/x",
                                  "10.0.0.0/8/8", "host.example.com/24", "10.0.0.0/0x8"])
def test_bad_agent_cidr(text):
    with pytest.raises(ConfigError) as caught:
        with_collector(f"agent.cidr = {text}")
    assert str(caught.value) == (f"t.conf:3: 'agent.cidr' needs address/prefix like 10.0.0.0/8 "
                                 f"or !fe80::/10, got '{text}'")


@pytest.mark.parametrize("text", ["300.1.1.1", "1.2.3", "a..b", "-x.com", "under score!",
                                  "x" * 64 + ".com", "1.2.3.4.5", "::g"])
def test_bad_hosts(text):
    with pytest.raises(ConfigError) as caught:
        conf(f'collector {{ ip="{text}" }}')
    assert str(caught.value) == f"t.conf:2: 'ip' needs an IP address or host name, got '{text}'"


def test_equality_ignores_lines_paths_and_warnings():
    a = parse_config("sflow { collector { ip=192.0.2.1 } sampling=5 sampling=5 }", "a")
    b = parse_config("sflow {\n\n collector { ip=192.0.2.1 }\n sampling=5\n}\n", "b")
    assert a == b and a.warnings and not b.warnings
    assert a != parse_config("sflow { collector { ip=192.0.2.1 } sampling=6 }")


# -- warnings ---------------------------------------------------------------------------

def test_repeated_keys_warn_and_the_last_wins():
    config = conf("sampling=100\ncollector { ip=192.0.2.1 udpport=1 udpport=2 }\n"
                  "packetSamplingRate=300\nsampling.1G=1\nsampling.1G=2")
    assert config.sampling == 300
    assert config.collectors[0].udpport == 2
    assert config.sampling_settings == {"1G": 2}
    assert config.warnings == [
        "t.conf:3: 'udpport' is set again (first at line 3): the last value wins",
        "t.conf:4: 'packetSamplingRate' is set again (first at line 2): the last value wins",
        "t.conf:6: 'sampling.1G' is set again (first at line 5): the last value wins"]


def test_repeated_singleton_block_merges():
    config = with_collector("nflog { group=5 }\nnflog { probability=0.5 }")
    assert config.nflog == NflogConfig(group=5, probability=0.5)
    assert config.warnings == [
        "t.conf:4: 'nflog { }' appears again (first at line 3): its settings are merged, "
        "the last value wins"]


def test_ignored_keys_warn_with_the_reason():
    config = with_collector("loopback=on\nsamplingDirection=both\n"
                            "dropmon { group=1 hw_function=off }\n"
                            "checkAdaptors=20 modules=/usr/lib/hsflowd\n"
                            "pcap { dev=eth0 }\ntcp { udp=on }")
    assert config.warnings == [
        "t.conf:3: 'loopback' is ignored: loopback devices are always read, as in hsflowd",
        "t.conf:4: 'samplingDirection' is ignored: hsflowd ignores it too; use psample { "
        "ingress=on|off egress=on|off } instead",
        "t.conf:5: 'group' is ignored: hsflowd ignores it too",
        "t.conf:5: 'hw_function' is ignored: hsflowd ignores it too",
        "t.conf:6: 'checkAdaptors' is ignored: this agent follows interface changes through "
        "netlink events, so it needs no periodic check",
        "t.conf:6: 'modules' is ignored: every module is built in, so there are no module "
        "files to load",
        "t.conf:8: 'udp' is ignored: not supported yet (only TCP sockets are looked up)"]
    assert config.pcap == [PcapRule(dev="eth0")] and config.tcp == TcpConfig()


def test_sampling_keys_that_never_match_a_speed_warn():
    config = with_collector("sampling.1g=1000\nsampling.2500M=2500\nsampling.1000M=9\n"
                            "sampling.10G=1 sampling.100M=1 sampling.http=1 sampling.0=1")
    assert [w.split(": ", 1)[1] for w in config.warnings] == [
        "'sampling.1g' never matches: a link of that speed is looked up as 'sampling.1G' "
        "(case matters)",
        "'sampling.2500M' never matches: a link of that speed is looked up as 'sampling.2G' "
        "(case matters)",
        "'sampling.1000M' never matches: a link of that speed is looked up as 'sampling.1G' "
        "(case matters)"]


def test_pcap_rule_warnings():
    config = with_collector('pcap { promisc=on }\npcap { dev=eth0 dev.pattern="eth" }')
    assert config.warnings == [
        "t.conf:3: 'pcap { }' has no dev, dev.pattern or speed, so it taps nothing",
        "t.conf:4: 'pcap { }' has both dev and dev.pattern: dev wins"]


# -- blocks hsflowd has but this agent does not (yet) ----------------------------------

def test_unsupported_blocks_are_parsed_and_listed_in_order():
    config = with_collector("xen { dsk=off }\nnvml { }\npsample { egress=on }\n"
                            "xen { vbd=/x }\nos10 { port { dev=swp1 } port { dev=swp2 } }\n"
                            "tcp { tunnel=on }\ndbus { }")
    assert config.unsupported == ["xen", "nvml", "psample", "os10", "dbus"]
    assert config.tcp == TcpConfig()
    assert "t.conf:8: 'tunnel' is ignored: not supported yet (the inner packets of tunnels " \
        "are not looked up)" in config.warnings
    assert config.blocks["xen"]["dsk"] is False and config.blocks["xen"]["vbd"] == "/x"
    assert config.blocks["os10"]["port"] == [{"dev": "swp1"}, {"dev": "swp2"}]
    assert config.psample.egress is True and config.psample.ingress is True
    assert "nflog" not in config.unsupported


def test_containerd_and_k8s_blocks():
    config = with_collector("containerd { markTraffic=on unixsock=/run/c.sock }\n"
                            "k8s { eof=on setIfName=off }\npcap { dynamic=on }")
    assert config.unsupported == []
    assert config.containerd == ContainerdConfig(mark_traffic=True, unixsock="/run/c.sock")
    # hsflowd turns setIfAlias and setIfName on with the block; eof has nothing to do here
    assert config.k8s == K8sConfig(set_if_alias=True, set_if_name=False)
    assert config.warnings == ["t.conf:4: 'eof' is ignored: there is no helper process to "
                               "lose: the module connects to containerd again"]
    assert config.pcap[0].dynamic       # a dynamic rule names no device: no warning for it


def test_docker_and_kvm_blocks_are_typed_and_supported():
    config = with_collector("docker { markTraffic=on }\nkvm { uri=test:///default }\n"
                            "docker { hostname=on forgetVMs=120 }")
    assert config.unsupported == []
    assert config.docker == DockerConfig(refresh_vms=None, forget_vms=120, hostname=True,
                                         mark_traffic=True)
    assert config.kvm == KvmConfig(uri="test:///default")
    assert "docker" not in config.blocks and "kvm" not in config.blocks
    assert with_collector("").docker is None


def test_systemd_block_is_typed_and_its_old_path_formats_are_ignored():
    config = with_collector("systemd { refreshVMs=10 markTraffic=on\n"
                            "  cgroup_procs=\"/sys/fs/cgroup/systemd/%s/cgroup.procs\" }")
    assert config.unsupported == []
    assert config.systemd == SystemdConfig(refresh_vms=10, drop_priv=False, mark_traffic=True)
    assert "systemd" not in config.blocks
    assert any("'cgroup_procs' is ignored" in w for w in config.warnings), config.warnings
    with pytest.raises(ConfigError, match="refreshVMs"):
        with_collector("systemd { refreshVMs=5 }")


def test_legacy_flat_keys_turn_their_block_on():
    config = with_collector("ulogGroup=3 ulogProbability=0.5 xen.dsk=off jsonPort=36343\n"
                            "nflogGroup=7")
    assert (config.ulog.group, config.ulog.probability) == (3, 0.5)
    assert config.blocks["xen"]["dsk"] is False
    assert config.json.udpport == 36343
    assert config.nflog == NflogConfig(group=7)
    assert config.unsupported == ["ulog", "xen"]


def test_legacy_and_block_forms_write_the_same_setting():
    config = with_collector("nflogGroup=7\nnflog { group=8 }")
    assert config.nflog.group == 8
    assert "t.conf:4: 'group' is set again (first at line 3): the last value wins" in \
        config.warnings


def test_dns_sd_forms():
    assert conf("dns-sd { }").dns_sd is True
    config = conf("DNSSD=on DNSSD_domain=.example.com")
    assert (config.dns_sd, config.dns_sd_domain, config.dns_sd_start_delay, config.unsupported) == (
        True, ".example.com", 30, [])
    config = conf("dns-sd { domain=.a.example DNSSD_domain=.b.example }")
    assert config.dns_sd_domain == ".b.example"
    config = conf("dns-sd { startDelay=0 } DNSSD_domain=.c.example dns-sd { domain=.d.example }")
    assert (config.dns_sd_domain, config.dns_sd_start_delay) == (".d.example", 0)
    assert conf("collector { ip=192.0.2.1 } dns-sd { } DNSSD=off").dns_sd is False
    assert conf("DNSSD=off dns-sd { }").dns_sd is True


def test_eapi_or_sonic_need_no_collector():
    assert conf("eapi { }").unsupported == ["eapi"]
    assert conf("sonic { waitReady=0 }").blocks["sonic"]["waitReady"] == 0


def test_nflog_new_options():
    config = with_collector("nflog { group=5 iptables=on dev=eth0 }")
    assert config.nflog == NflogConfig(group=5, probability=None, manage_rule=True, dev="eth0")


def test_app_order_is_first_appearance():
    config = with_collector("polling.b=1 sampling.a=2 sampling.b=3 sampling.a=4")
    assert config.app_order == ("b", "a")


def test_regex_values_compile():
    config = with_collector('dropmon { hide="^(tcp|udp)_" }')
    assert config.dropmon.hide == re.compile("^(tcp|udp)_")
