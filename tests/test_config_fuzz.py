"""Random input: the parser raises ConfigError or returns a Config, never anything else;
and whatever it accepts, ``describe`` writes back as a file that parses to the same Config."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsflowd.config import BLOCKS, ConfigError, describe, parse_config
from hsflowd.config import keywords as K

WORDS = sorted({s for b in BLOCKS.values() for s in b.spellings()} | {"sflow"})
VALUES = ["0", "1", "5", "32", "400", "0x10", "010", "08", "1K", "2M", "1G", "99999999999",
          "-1", "0.5", "1.5", ".5", "on", "off", "ON", "in", "both", "eth0", "192.0.2.1",
          "2001:db8::1", "10.0.0.0/8", "!fe80::/10", "10.0.0.0/33", "host.example.com",
          "1G-", "1G-10G", "10G-1G", "^eth[0-9]+$", "[[:digit:]]", "(", "/tmp/x",
          "8d9e8f14-1b6c-4a3e-9d61-3f0e5c2a7b10", "sampling.1G", "polling.http",
          "sampling.", "sampling.bps_ratio", "sampling.1g", "''"]
TOKENS = st.one_of(st.sampled_from(WORDS), st.sampled_from(VALUES),
                   st.sampled_from(["{", "}", "{", "}", "sflow {", "collector { ip=192.0.2.1 }"]))
SEPARATORS = st.sampled_from([" ", "\t", "=", ";", "\n", " = ", "\r\n", "\n# comment\n"])

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def soup(tokens, seps, prefix=""):
    out = [prefix]
    for i, token in enumerate(tokens):
        out.append(token)
        out.append(seps[i % len(seps)])
    return "".join(out)


@FAST
@given(st.lists(TOKENS, max_size=40), st.lists(SEPARATORS, min_size=1, max_size=5))
def test_token_soup_only_raises_config_error(tokens, seps):
    try:
        parse_config(soup(tokens, seps, "sflow { collector { ip=192.0.2.1 } "), "f.conf")
    except ConfigError as exc:
        assert str(exc).startswith("f.conf:") and "\n" not in str(exc)


@FAST
@given(st.text(max_size=300))
def test_any_text_only_raises_config_error(text):
    for candidate in (text, "sflow {" + text, "sflow { collector { ip=192.0.2.1 } " + text):
        try:
            parse_config(candidate, "f.conf")
        except ConfigError as exc:
            assert str(exc).startswith("f.conf:") and "\n" not in str(exc)


@FAST
@given(st.lists(TOKENS, max_size=40), st.lists(SEPARATORS, min_size=1, max_size=5))
def test_whatever_parses_round_trips_through_describe(tokens, seps):
    try:
        config = parse_config(soup(tokens, seps, "sflow { collector { ip=192.0.2.1 } "))
    except ConfigError:
        return
    assert parse_config(describe(config)) == config


# -- well-formed files built from the keyword table -------------------------------------

GOOD = {
    K.FLOAT: ["0", "0.25", "1", "1e-3"], K.ONOFF: ["on", "off", "On"],
    K.STRING: ["x", '"a b"', '"{}#;="'], K.DEVICE: ["eth0", "bond0.100"],
    K.PATH: ["/tmp/x"], K.HOST: ["192.0.2.9", "2001:DB8::9", "c.example.com"],
    K.CIDR: ["10.1.2.3/8", "!fe80::/10", "192.168.0.0/255.255.0.0"],
    K.UUID: ["8D9E8F14-1B6C-4A3E-9D61-3F0E5C2A7B10"], K.REGEX: ['"^eth[0-9]+$"', "swp.*"],
    K.SPEEDS: ["1G", "1G-", "100M-10G", "2500M"], K.DIRECTION: ["in", "both"],
}


def good_values(keyword):
    if keyword.name == "db":    # ovs { db }: an OVSDB remote the agent can use
        return st.sampled_from(["unix:/run/openvswitch/db.sock", '"tcp:127.0.0.1:6640"'])
    if keyword.kind == K.INT:
        lo, hi = keyword.range
        return st.sampled_from([str(lo), str(hi), hex(hi), str((lo + hi) // 2)])
    return st.sampled_from(GOOD[keyword.kind])


def settings_of(block_name):
    keywords = [k for k in BLOCKS[block_name].keywords if k.kind != K.BLOCK]
    if not keywords:
        return st.just([])
    pairs = st.sampled_from(keywords).flatmap(
        lambda k: good_values(k).map(lambda v, k=k: f"{k.name}={v}"))
    return st.lists(pairs, max_size=6)


BLOCK_NAMES = [k.name for k in BLOCKS["sflow"].keywords if k.kind == K.BLOCK]
REQUIRED = {"collector": "ip=192.0.2.1 ", "nflog": "group=3 "}


def blocks():
    return st.sampled_from(BLOCK_NAMES).flatmap(lambda name: settings_of(
        BLOCKS["sflow"].keyword(name).block).map(
        lambda body, name=name: f"{name} {{ {REQUIRED.get(name, '')}{' '.join(body)} }}"))


APP = st.tuples(st.sampled_from(["sampling.", "polling."]),
                st.sampled_from(["1G", "10G", "bps_ratio", "http", "app.x", "app.x.y"]),
                st.integers(0, 300)).map(lambda t: f"{t[0]}{t[1]}={t[2]}")


@FAST
@given(settings_of("sflow"), st.lists(blocks(), max_size=6), st.lists(APP, max_size=4))
def test_generated_configs_round_trip(top, inner, apps):
    text = "sflow {\n" + "\n".join(["collector { ip=192.0.2.1 }"] + top + inner + apps) + "\n}\n"
    try:
        config = parse_config(text)
    except ConfigError as exc:
        # the only errors a well-formed file can have
        assert "dns-sd cannot be combined" in str(exc) or "needs group=" in str(exc), text
        return
    again = parse_config(describe(config))
    assert again == config, text
