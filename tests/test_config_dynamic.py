"""DNS-SD answers -> the running configuration (hsflowd.config.dynamic): which settings the
records give, which the file keeps, and what no answer does.  Pure functions, no DNS."""

from __future__ import annotations

import ipaddress

from hsflowd.config import AgentCidr, Collector, parse_config, render_auto
from hsflowd.config.dynamic import (DnsSdAnswer, dynamic_config, latch_ttl, next_query_delay,
                                    parse_txt, retry_delay, srv_target, switched_off)

FILE = """sflow {
  sampling = 7  polling = 3  headerBytes = 64  datagramBytes = 1200
  sampling.1G = 5
  agent = eth0
  agent.cidr = 192.168.0.0/16
  dns-sd { domain = .example.test }
  collector { ip = 192.0.2.1 }
  pcap { dev = eth0 }
  json { udpport = 36343 }
  tcp { }
}
"""


def file_config():
    return parse_config(FILE, "f.conf")


def test_no_answer_yet_or_no_srv_record_turns_everything_off():
    for answer in (None, DnsSdAnswer("_sflow._udp.example.test", records=0,
                                     settings=(("sampling", "10"),))):
        config, problems = dynamic_config(file_config(), answer)
        assert problems == []
        assert config.suppressed and config.dns_sd
        assert (config.collectors, config.sampling, config.polling) == ([], 0, 0)
        assert (config.pcap, config.json, config.tcp, config.ovs) == ([], None, None, None)
        assert config.datagram_bytes == 1200 and config.agent_device == "eth0"


def test_records_replace_the_files_collectors_and_settings():
    answer = DnsSdAnswer(
        "_sflow._udp.example.test",
        servers=(("c2.example.test", 6343), ("c1.example.test", 7000), ("c1.example.test", 7000),
                 ("c3.example.test", 0)),
        records=5,
        settings=(("txtvers", "1"), ("sampling", "1000"), ("polling", "20"),
                  ("sampling.http", "50"), ("polling.app.x", "5"), ("agentIP", "10.0.0.9"),
                  ("agent.cidr", "10.0.0.0/8"), ("headerBytes", "300"), ("dropLimit", "5"),
                  ("Foo", "1"), ("sampling", "abc")),
        ttl=60)
    config, problems = dynamic_config(file_config(), answer)
    assert config.collectors == [Collector("c1.example.test", 7000),
                                 Collector("c2.example.test", 6343)]
    assert config.collectors[0].origin == "DNS-SD _sflow._udp.example.test"
    assert (config.sampling, config.polling, config.header_bytes) == (1000, 20, 256)
    assert config.sampling_settings == {"http": 50}          # the file's sampling.1G is gone
    assert config.polling_settings == {"app.x": 5}
    assert config.app_order == ("http", "app.x")
    assert config.agent_ip == "10.0.0.9" and config.agent_device == "eth0"
    assert config.agent_cidrs == [AgentCidr(ipaddress.ip_network("10.0.0.0/8"))]
    # what DNS-SD does not set comes from the file
    assert config.datagram_bytes == 1200 and [r.dev for r in config.pcap] == ["eth0"]
    assert config.json.udpport == 36343 and config.tcp is not None
    assert not config.suppressed
    assert problems == ["TXT Foo=1: not a setting DNS-SD can give; ignored",
                        "TXT sampling=abc: 'sampling' needs an integer, got 'abc'; ignored"]


def test_without_txt_records_the_settings_are_hsflowds_defaults():
    answer = DnsSdAnswer("_sflow._udp.example.test", servers=(("10.0.0.7", 6343),), records=1)
    config, problems = dynamic_config(file_config(), answer)
    assert (config.sampling, config.polling, config.header_bytes) == (400, 30, 128)
    assert config.sampling_settings == {} and config.polling_settings == {}
    assert config.agent_ip is None
    assert config.agent_cidrs == file_config().agent_cidrs    # the file's, as hsflowd
    assert config.collectors == [Collector("10.0.0.7", 6343)] and problems == []


def test_keys_ignore_case_and_names_keep_it():
    answer = DnsSdAnswer("x", servers=(("c", 6343),), records=1,
                         settings=(("SAMPLING", "100"), ("Sampling.App.X", "3"),
                                   ("POLLING.App.X", "9"), ("Agent", "eth1")))
    config, _ = dynamic_config(file_config(), answer)
    assert config.sampling == 100 and config.agent_device == "eth1"
    assert config.sampling_settings == {"App.X": 3} and config.polling_settings == {"App.X": 9}


def test_out_of_range_values_are_ignored():
    answer = DnsSdAnswer("x", servers=(("c", 6343),), records=1,
                         settings=(("polling", "301"), ("sampling", "-1"), ("agent.cidr", "nope")))
    config, problems = dynamic_config(file_config(), answer)
    assert (config.polling, config.sampling) == (30, 400)
    assert len(problems) == 3


def test_a_root_target_is_no_collector_but_still_a_record():
    # RFC 2782: target "." says the service is not here; hsflowd counts the record
    assert srv_target(".") is None and srv_target("c.example.") == "c.example"
    config, _ = dynamic_config(file_config(), DnsSdAnswer("x", servers=(), records=1))
    assert config.collectors == [] and not config.suppressed and config.polling == 30


def test_parse_txt():
    pairs, problems = parse_txt([b"txtvers=1", b"noequals", b"=x", b"k=v=w", b" sampling = 5 "])
    assert pairs == [("txtvers", "1"), ("k", "v=w"), ("sampling", "5")]
    assert problems == ["TXT 'noequals' is not key=value; ignored",
                        "TXT '=x' is not key=value; ignored"]


def test_ttl_and_query_delays_as_hsflowd_bounds_them():
    ttl = 0
    for record_ttl in (0, 600, 300):
        ttl = latch_ttl(ttl, record_ttl)
    assert ttl == 300
    assert latch_ttl(600, 0) == 0            # as coded in hsflowd: a TTL of 0 wins if last
    assert [next_query_delay(t) for t in (0, 5, 10, 600, 86400)] == [300, 10, 10, 600, 86400]
    assert [retry_delay(0, n) for n in (1, 2, 3, 4, 5, 6, 7, 50)] == [10, 20, 40, 80, 160, 300,
                                                                    300, 300]
    assert [retry_delay(d, 1) for d in (5, 20, 3600)] == [10, 20, 300]
    assert [retry_delay(60, n) for n in (1, 2, 3, 4)] == [60, 120, 240, 300]


def test_switched_off_config_writes_no_settings_to_the_auto_file():
    off = switched_off(file_config())
    text = render_auto(off, 4, "host", "10.0.0.1", "eth0")
    assert text.splitlines()[1:] == ["rev_start=4", "rev_end=4"]
    on, _ = dynamic_config(file_config(), DnsSdAnswer("x", servers=(("10.9.9.9", 6343),),
                                                      records=1, settings=(("polling", "20"),)))
    text = render_auto(on, 5, "host", "10.0.0.1", "eth0")
    assert "collector=10.9.9.9" in text and "polling=20" in text and "jsonPort=36343" in text


def test_the_file_says_what_dns_sd_replaces():
    warnings = [w.split(": ", 1)[1] for w in file_config().warnings]
    assert warnings == [
        "this collector is not used: with dns-sd on, the collectors come from DNS SRV records "
        "(as in hsflowd)",
        "sampling, polling, headerBytes, sampling.1G not used: with dns-sd on, DNS TXT records "
        "set sampling and polling (else 400 and 30 s, as in hsflowd)"]
    legacy = parse_config("sflow {\n DNSSD = on\n DNSSD_domain = .example.test\n}\n")
    assert legacy.dns_sd and legacy.dns_sd_domain == ".example.test"
