"""Every keyword of the table: its default, a non-default value, and its range edges.

Driven by the table itself, so a keyword added to keywords.py is tested here without
another line of test code.
"""

from __future__ import annotations

import ipaddress
import re
import uuid

import pytest

from hsflowd.config import BLOCKS, ConfigError, parse_config
from hsflowd.config import keywords as K
from hsflowd.config.model import AgentCidr

TYPED = ("nflog", "ulog", "psample", "dropmon", "json", "tcp", "ovs", "docker", "containerd",
         "k8s", "kvm", "systemd")
COLLECTOR = "collector { ip=192.0.2.1 }"


def wrap(block: str, body: str) -> str:
    """A complete file with ``body`` inside ``block``."""
    if block == "sflow" and "nflogprobability" in body.lower():
        body += "\nnflogGroup=1"        # nflog needs a group
    if block == "sflow":
        return f"sflow {{\n{body}\n{COLLECTOR}\n}}\n"
    if block == "collector":
        return f"sflow {{\ncollector {{ ip=192.0.2.1\n{body}\n}}\n}}\n"
    if block == "nflog":
        inner = f"nflog {{ group=1\n{body}\n}}"
    elif block == "port":
        inner = f"opx {{ port {{\n{body}\n}} }}"
    else:
        inner = f"{block} {{\n{body}\n}}"
    return f"sflow {{\n{COLLECTOR}\n{inner}\n}}\n"


def value_in(config, block: str, keyword: K.Keyword):
    """Where the parsed value of ``keyword`` lands in the Config."""
    if keyword.target:
        target, _, name = keyword.target.partition(".")
        return value_in(config, target, BLOCKS[target].keyword(name))
    if block == "sflow":
        return getattr(config, keyword.attr)
    if block == "collector":
        return getattr(config.collectors[0], keyword.attr)
    if block in ("pcap", "epcap"):
        rule = getattr(config, block)[0]
        if keyword.kind == K.SPEEDS:
            return None if rule.speed_min is None else (rule.speed_min, rule.speed_max)
        return getattr(rule, keyword.attr)
    if block == "dns-sd":
        return config.dns_sd_domain if keyword.name == "domain" else config.dns_sd_start_delay
    if block in TYPED:
        return getattr(getattr(config, block), keyword.attr)
    if block == "port":
        return config.blocks["opx"]["port"][0][keyword.name]
    return config.blocks[block][keyword.name]


def ignored(keyword: K.Keyword) -> str:
    """Why the keyword, or the one a legacy key stands for, is ignored ("": it acts)."""
    if keyword.target:
        target, _, name = keyword.target.partition(".")
        return BLOCKS[target].keyword(name).ignored
    return keyword.ignored


def all_keywords(include=lambda k: True):
    return [pytest.param(block.name, keyword, id=f"{block.name}.{keyword.name}")
            for block in BLOCKS.values() for keyword in block.keywords
            if keyword.kind != K.BLOCK and include(keyword)]


SAMPLES = {
    K.FLOAT: ("0.25", 0.25),
    K.STRING: ("xyz", "xyz"),
    K.DEVICE: ("eth9", "eth9"),
    K.PATH: ("/var/tmp/x", "/var/tmp/x"),
    K.HOST: ("2001:DB8::7", "2001:db8::7"),
    K.CIDR: ("10.1.2.3/16", [AgentCidr(ipaddress.ip_network("10.1.0.0/16"))]),
    K.UUID: ("8D9E8F14-1B6C-4A3E-9D61-3F0E5C2A7B10", "8d9e8f14-1b6c-4a3e-9d61-3f0e5c2a7b10"),
    K.REGEX: ('"^eth[0-9]{1,2}$"', re.compile("^eth[0-9]{1,2}$")),
    K.SPEEDS: ("1G-10G", (10 ** 9, 10 ** 10)),
}


def sample(keyword: K.Keyword):
    """A valid value other than the default, and what it parses to."""
    if keyword.name == "db":    # ovs { db }: a remote the agent can use
        return "unix:/run/ovs/db.sock", "unix:/run/ovs/db.sock"
    if keyword.kind == K.ONOFF:
        return ("off", False) if keyword.default else ("on", True)
    if keyword.kind == K.INT:
        lo, hi = keyword.range
        value = hi if keyword.default != hi else lo
        return str(value), value
    return SAMPLES[keyword.kind]


@pytest.mark.parametrize("block,keyword", all_keywords(
    lambda k: not k.ignored and not k.target and not k.required))
def test_default(block, keyword):
    config = parse_config(wrap(block, ""))
    assert value_in(config, block, keyword) == keyword.default
    # the only warnings an empty block brings: a rule with nothing to tap, a json { }
    # without a port, and (with dns-sd) the file's collector that DNS replaces
    assert all(re.search("taps nothing|listens nowhere|collector is not used", w)
               for w in config.warnings)


@pytest.mark.parametrize("block,keyword", all_keywords(lambda k: not ignored(k)))
def test_non_default_value(block, keyword):
    text, expected = sample(keyword)
    config = parse_config(wrap(block, f"{keyword.name} = {text}"))
    assert value_in(config, block, keyword) == expected
    if keyword.prefer:
        assert any("is deprecated" in w for w in config.warnings)


IGNORED_SAMPLES = {K.INT: "1", K.ONOFF: "on", K.DIRECTION: "both", K.PATH: "/x",
                   K.STRING: '"/x/%s"'}


@pytest.mark.parametrize("block,keyword", all_keywords(ignored))
def test_ignored_keyword_is_checked_then_dropped(block, keyword):
    config = parse_config(wrap(block, f"{keyword.name}={IGNORED_SAMPLES[keyword.kind]}"))
    assert any(f"'{keyword.name}' is ignored: {ignored(keyword)}" in w for w in config.warnings)
    if not keyword.target:                             # (a legacy key opens its block)
        assert parse_config(wrap(block, "")) == config     # nothing of it is kept
    if keyword.kind not in (K.PATH, K.STRING):         # any word is a path, or a string
        with pytest.raises(ConfigError):
            parse_config(wrap(block, f"{keyword.name}=bogus"))


def test_the_typed_model_has_a_field_for_each_keyword_that_acts_and_none_for_the_others():
    """What makes an ignored keyword act: the table without ``ignored``, and a field."""
    from dataclasses import fields

    from hsflowd.config import model
    classes = {"sflow": model.Config, "collector": model.Collector, "pcap": model.PcapRule,
               "epcap": model.PcapRule, **{name: getattr(model, f"{name.title()}Config")
                                           for name in TYPED if name != "k8s"},
               "k8s": model.K8sConfig}
    for name, cls in classes.items():
        have = {f.name for f in fields(cls)}
        for keyword in BLOCKS[name].keywords:
            if keyword.kind == K.BLOCK or keyword.target or keyword.kind == K.SPEEDS:
                continue
            if name == "sflow" and keyword.name.startswith("DNSSD"):
                continue                       # dns-sd { } and DNSSD share these fields
            if keyword.ignored:
                assert keyword.attr not in have, (name, keyword.name)
            else:
                assert keyword.attr in have, (name, keyword.name)


def test_readme_table_is_the_keyword_table_s():
    from pathlib import Path

    from hsflowd.config.docs import markdown_table
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    begin = readme.index("\n", readme.index("<!-- made by `python -m hsflowd.config.docs`")) + 1
    end = readme.index("<!-- end of the table made by hsflowd.config.docs -->")
    assert readme[begin:end] == markdown_table(), \
        "README.md's table is out of date: python -m hsflowd.config.docs"


def test_readme_table_rows():
    from hsflowd.config.docs import not_acted_on
    rows = dict(not_acted_on())
    assert rows["`k8s { eof }`"].startswith("ignored: there is no helper process")
    assert rows["`checkAdaptors`"] == ("ignored: this agent follows interface changes through "
                                       "netlink events, so it needs no periodic check")
    assert rows["`samplingDirection`"].endswith(
        "; write `psample { ingress=on|off egress=on|off }` instead")
    blocks = [w for w in rows if w.startswith("`ulog { }`")]
    assert len(blocks) == 1 and "`dropmon { }`" in blocks[0] and "`os10 { }`" in blocks[0]
    assert "`docker { }`" not in blocks[0]


@pytest.mark.parametrize("block,keyword", all_keywords(
    lambda k: k.kind in (K.INT, K.FLOAT) and not ignored(k)))
def test_range_edges(block, keyword):
    lo, hi = keyword.range
    for edge in (lo, hi):
        config = parse_config(wrap(block, f"{keyword.name}={edge}"))
        assert value_in(config, block, keyword) == edge
    beyond = [hi + 1 if keyword.kind == K.INT else 1.5] + ([lo - 1] if lo > 0 else [])
    for bad in beyond:
        with pytest.raises(ConfigError) as caught:
            parse_config(wrap(block, f"{keyword.name}={bad}"))
        assert f"'{keyword.name}' must be {lo}..{hi}, got {bad}" in str(caught.value)


@pytest.mark.parametrize("block,keyword", all_keywords(
    lambda k: k.kind in (K.INT, K.FLOAT, K.ONOFF, K.HOST, K.CIDR, K.UUID, K.SPEEDS)))
def test_wrong_kind_of_value(block, keyword):
    with pytest.raises(ConfigError) as caught:
        parse_config(wrap(block, f"{keyword.name} = -bad-"))
    assert f"'{keyword.name}' needs " in str(caught.value)
    assert "'-bad-'" in str(caught.value)


@pytest.mark.parametrize("block,keyword", all_keywords())
def test_every_spelling_is_case_insensitive(block, keyword):
    for spelling in keyword.spellings:
        if ignored(keyword):
            good = IGNORED_SAMPLES[keyword.kind]
        else:
            good = sample(keyword)[0]
        parse_config(wrap(block, f"{spelling.upper()} = {good}"))


@pytest.mark.parametrize("block,keyword", all_keywords(lambda k: not ignored(k)))
def test_missing_value(block, keyword):
    with pytest.raises(ConfigError, match=f"'{re.escape(keyword.name)}' needs a value$"):
        parse_config(wrap(block, keyword.name + " }"))


def test_model_defaults_come_from_the_table():
    from hsflowd.config import Collector, Config, NflogConfig, PcapRule, PsampleConfig
    from hsflowd.config.model import DropmonConfig
    assert Collector("x").udpport == BLOCKS["collector"].keyword("udpport").default == 6343
    assert Config().sampling == 400 and Config().polling == 30
    assert Config().sub_agent_id == 100000 and Config().header_bytes == 128
    assert Config().datagram_bytes == 1400 and Config().refresh_adaptors == 180
    assert (Config().refresh_vms, Config().forget_vms) == (60, 180)
    assert NflogConfig(group=1).manage_rule is False
    assert PcapRule().promisc is None and PcapRule().vport is None
    assert PsampleConfig() == PsampleConfig(group=1, ingress=True, egress=False)
    d = DropmonConfig()
    assert (d.start, d.sw, d.hw, d.rn, d.hw_unknown, d.sw_passive, d.hw_passive) == (
        True, True, True, True, False, False, False)
    assert (d.limit, d.max, d.max_trip) == (100, 100000, 2)


def test_table_shape():
    for block in BLOCKS.values():
        for keyword in block.keywords:
            assert keyword.kind in (K.INT, K.FLOAT, K.ONOFF, K.STRING, K.DEVICE, K.HOST, K.CIDR,
                                    K.UUID, K.REGEX, K.PATH, K.SPEEDS, K.DIRECTION, K.BLOCK)
            if keyword.kind in (K.INT, K.FLOAT):
                assert keyword.range is not None, keyword
            if keyword.kind == K.BLOCK:
                assert keyword.block in BLOCKS
            if keyword.target:
                target, _, name = keyword.target.partition(".")
                assert BLOCKS[target].lookup(name) is not None
        spellings = [s.lower() for s in block.spellings()]
        assert len(spellings) == len(set(spellings)), block.name
    supported = sorted(b.name for b in BLOCKS.values() if b.supported)
    assert supported == ["collector", "containerd", "dns-sd", "docker", "epcap", "json", "k8s",
                         "kvm", "nflog", "ovs", "pcap", "sflow", "systemd", "tcp"]


def test_uuid_spellings():
    for text in ("8d9e8f141b6c4a3e9d613f0e5c2a7b10", "{8d9e8f14-1b6c-4a3e-9d61-3f0e5c2a7b10}"):
        config = parse_config(wrap("sflow", f'uuid="{text}"'))
        assert config.uuid == str(uuid.UUID(text))
