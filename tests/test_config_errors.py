"""Broken files: each error is one line, ``FILE:LINE: what is wrong``, with the exact text."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hsflowd.config import ConfigError, load_config, parse_config

C = "  collector { ip=192.0.2.1 }\n"

CASES = [
    # (name, file text, expected str(ConfigError))
    ("misspelt keyword", "sflow {\n  samplng = 10\n" + C + "}\n",
     "b.conf:2: unknown keyword 'samplng' in sflow { }; did you mean 'sampling'?"),
    ("misspelt camelCase", "sflow {\n" + C + "  headerbyte=64\n}\n",
     "b.conf:3: unknown keyword 'headerbyte' in sflow { }; did you mean 'headerBytes'?"),
    ("misspelt inside a block", "sflow {\n  collector { ip=192.0.2.1 udport=6343 }\n}\n",
     "b.conf:2: unknown keyword 'udport' in collector { }; did you mean 'udpport'?"),
    ("misspelt block", "sflow {\n" + C + "  colector { ip=192.0.2.2 }\n}\n",
     "b.conf:3: unknown keyword 'colector' in sflow { }; did you mean 'collector'?"),
    ("misspelt wildcard", "sflow {\n" + C + "  samplng.1G=1000\n}\n",
     "b.conf:3: unknown keyword 'samplng.1G' in sflow { }; did you mean 'sampling.1G'?"),
    ("unknown, nothing close", "sflow {\n" + C + "  frobnicate on\n}\n",
     "b.conf:3: unknown keyword 'frobnicate' in sflow { }"),
    ("keyword of another block", "sflow {\n  ip=192.0.2.1\n}\n",
     "b.conf:2: 'ip' is not a setting of sflow { }; it belongs in collector { }"),
    ("keyword of several blocks", "sflow {\n" + C + "  promisc=on\n}\n",
     "b.conf:3: 'promisc' is not a setting of sflow { }; it belongs in pcap { }, epcap { }"),
    ("a '}' is missing", "sflow {\n  collector { ip=192.0.2.1\n  sampling=10\n}\n",
     "b.conf:3: 'sampling' is not a setting of collector { } (opened at line 2); "
     "is a '}' missing before it?"),
    ("a '}' is missing before a wildcard", "sflow {\n  pcap { dev=eth0\n  sampling.1G=1\n}\n",
     "b.conf:3: 'sampling.1G' is not a setting of pcap { } (opened at line 2); "
     "is a '}' missing before it?"),
    ("out of range", "sflow {\n" + C + "  sampling = 10000001\n}\n",
     "b.conf:3: 'sampling' must be 0..10000000, got 10000001"),
    ("out of range with a suffix", "sflow {\n" + C + "  packetSamplingRate = 1G\n}\n",
     "b.conf:3: 'packetSamplingRate' must be 0..10000000, got 1000000000"),
    ("out of range in a block", "sflow {\n  collector { ip=192.0.2.1 udpport=0 }\n}\n",
     "b.conf:2: 'udpport' must be 1..65535, got 0"),
    ("probability above 1", "sflow {\n" + C + "  nflog { group=5 probability=1.5 }\n}\n",
     "b.conf:3: 'probability' must be 0..1, got 1.5"),
    ("value on the next line is the offender", "sflow {\n" + C + "  polling =\n  301\n}\n",
     "b.conf:4: 'polling' must be 0..300, got 301"),
    ("missing value before '}'", "sflow {\n" + C + "  sampling }\n",
     "b.conf:3: 'sampling' needs a value"),
    ("missing value at the end", "sflow {\n" + C + "  agent",
     "b.conf:3: 'agent' needs a value"),
    ("empty quoted value", 'sflow {\n' + C + '  agent = ""\n}\n',
     "b.conf:3: 'agent' needs a value, got an empty string"),
    ("not a number", "sflow {\n" + C + "  sampling = often\n}\n",
     "b.conf:3: 'sampling' needs an integer, got 'often'"),
    ("trailing junk", "sflow {\n" + C + "  polling = 20s\n}\n",
     "b.conf:3: 'polling' needs an integer, got '20s'"),
    ("negative", "sflow {\n" + C + "  polling = -1\n}\n",
     "b.conf:3: 'polling' needs an integer, got '-1'"),
    ("octal trap", "sflow {\n" + C + "  polling = 09\n}\n",
     "b.conf:3: 'polling' needs an integer, got '09' (a leading 0 means octal, as in C)"),
    ("float without leading digit", "sflow {\n" + C + "  nflog { group=1 probability=.5 }\n}\n",
     "b.conf:3: 'probability' needs a number like 0.01, got '.5'"),
    ("not on/off", "sflow {\n" + C + "  pcap { dev=eth0 promisc=yes }\n}\n",
     "b.conf:3: 'promisc' needs on or off, got 'yes'"),
    ("bad agent.cidr", "sflow {\n" + C + "  agent.cidr = 10.0.0.256/8\n}\n",
     "b.conf:3: 'agent.cidr' needs address/prefix like 10.0.0.0/8 or !fe80::/10, "
     "got '10.0.0.256/8'"),
    ("bad agentIP", "sflow {\n" + C + "  agentIP = 10.0.0.256\n}\n",
     "b.conf:3: 'agentIP' needs an IP address or host name, got '10.0.0.256'"),
    ("bad uuid", "sflow {\n" + C + "  uuid = 1234\n}\n",
     "b.conf:3: 'uuid' needs a UUID like 8d9e8f14-1b6c-4a3e-9d61-3f0e5c2a7b10, got '1234'"),
    ("bad regex", 'sflow {\n' + C + '  pcap { dev.pattern="eth(" }\n}\n',
     "b.conf:3: 'dev.pattern' needs a regular expression, got 'eth(' "
     "(missing ), unterminated subpattern at position 3)"),
    ("stray '}'", "sflow {\n" + C + "}\n}\n",
     "b.conf:4: unexpected '}': more '}' than '{'"),
    ("stray '{'", "sflow {\n" + C + "  { sampling=1 }\n}\n",
     "b.conf:3: unexpected '{': a block name must come before it"),
    ("block without '{'", "sflow {\n  collector ip=192.0.2.1\n}\n",
     "b.conf:2: expected '{' after 'collector'"),
    ("block at the very end", "sflow {\n" + C + "  pcap",
     "b.conf:3: expected '{' after 'pcap'"),
    ("missing sflow {", "collector { ip=192.0.2.1 }\n",
     "b.conf:1: the file must start with 'sflow {', not 'collector'"),
    ("missing sflow after comments", "# hello\n\n  sampling=1\n",
     "b.conf:3: the file must start with 'sflow {', not 'sampling'"),
    ("sflow without brace", "sflow\n  collector { ip=192.0.2.1 }\n",
     "b.conf:2: expected '{' after 'sflow'"),
    ("empty file", "", "b.conf:1: the file is empty: it must start with 'sflow {'"),
    ("only comments", "# one\n# two\n\n", "b.conf:3: the file is empty: it must start with "
     "'sflow {'"),
    ("second sflow block", "sflow {\n" + C + "}\nsflow {\n}\n",
     "b.conf:4: only one 'sflow { }' block is allowed"),
    ("junk after sflow", "sflow {\n" + C + "}\nsampling=1\n",
     "b.conf:4: unexpected 'sampling' after the end of 'sflow { }'"),
    ("no collector", "sflow {\n  sampling=400\n}\n# end\n",
     "b.conf:4: no collector is defined: add collector { ip=... } (or dns-sd { } to learn "
     "them from DNS)"),
    ("no collector, dns-sd turned off", "sflow {\n  dns-sd { }\n  DNSSD = off\n}\n",
     "b.conf:4: no collector is defined: add collector { ip=... } (or dns-sd { } to learn "
     "them from DNS)"),
    ("collector without ip", "sflow {\n  collector {\n    udpport=6343\n  }\n}\n",
     "b.conf:2: 'collector { }' needs ip="),
    ("nflog without group", "sflow {\n" + C + "  nflog { probability=0.01 }\n}\n",
     "b.conf:3: 'nflog { }' needs group="),
    ("dns-sd with eapi", "sflow {\n  dns-sd { }\n  eapi { }\n}\n",
     "b.conf:3: dns-sd cannot be combined with eapi { }"),
    ("sonic with DNSSD", "sflow {\n  sonic { }\n  DNSSD = on\n}\n",
     "b.conf:3: dns-sd cannot be combined with sonic { }"),
    ("empty wildcard", "sflow {\n" + C + "  sampling. = 5\n}\n",
     "b.conf:3: 'sampling.' needs a name after the dot, like sampling.1G or sampling.http"),
    ("wildcard out of range", "sflow {\n" + C + "  polling.http = 400\n}\n",
     "b.conf:3: 'polling.http' must be 0..300, got 400"),
    ("sub-block in the wrong place", "sflow {\n" + C + "  port { dev=swp1 }\n}\n",
     "b.conf:3: 'port' is not a setting of sflow { }; it belongs in opx { }"),
    ("top-level block nested", "sflow {\n  collector { ip=192.0.2.1 pcap { } }\n}\n",
     "b.conf:2: 'pcap' is not a setting of collector { } (opened at line 2); "
     "is a '}' missing before it?"),
    # a file cut short: the line is where the block the file never closes was opened
    ("cut inside sflow { }", "# pushed\nsflow {\n" + C + "  sampling=100\n",
     "b.conf:2: 'sflow {' is not closed: the file ends at line 4 before its '}' "
     "(was it cut short?)"),
    ("cut right after sflow {", "sflow {", "b.conf:1: 'sflow {' is not closed: the file ends "
     "at line 1 before its '}' (was it cut short?)"),
    ("cut after collector {", "sflow {\n" + C + "  collector {\n",
     "b.conf:3: 'collector {' is not closed: the file ends at line 3 before its '}', and "
     "before that of 'sflow {' on line 1 (was it cut short?)"),
    ("cut inside a collector", "sflow {\n" + C + "  collector {\n    ip = 192.0.2.2\n"
     "    udpport = 63\n\n# end\n",
     "b.conf:3: 'collector {' is not closed: the file ends at line 7 before its '}', and "
     "before that of 'sflow {' on line 1 (was it cut short?)"),
    ("cut inside a nested block", "sflow {\n" + C + "  opx {\n    port { dev=swp1",
     "b.conf:4: 'port {' is not closed: the file ends at line 4 before its '}', and before "
     "that of 'opx {' on line 3, and before that of 'sflow {' on line 1 (was it cut short?)"),
    ("cut after a nested block", "sflow {\n" + C + "  opx {\n    port { dev=swp1 }\n",
     "b.conf:3: 'opx {' is not closed: the file ends at line 4 before its '}', and before "
     "that of 'sflow {' on line 1 (was it cut short?)"),
    ("cut without any collector", "sflow {\n  collector {",
     "b.conf:2: 'collector {' is not closed: the file ends at line 2 before its '}', and "
     "before that of 'sflow {' on line 1 (was it cut short?)"),
]


@pytest.mark.parametrize("text,expected", [pytest.param(t, e, id=n) for n, t, e in CASES])
def test_broken_file(text, expected):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "b.conf")
    assert str(caught.value) == expected
    assert "\n" not in str(caught.value)
    assert caught.value.path == "b.conf"
    assert str(caught.value).startswith(f"b.conf:{caught.value.line}: ")


def test_a_file_cut_short_at_any_point_is_an_error():
    """Every prefix of a good file that stops before its last '}' is refused, never run on
    with the collectors after the cut dropped."""
    text = "sflow {\n" + C + "  collector { ip=192.0.2.2 udpport=6400 }\n  pcap { dev=eth0 }\n}\n"
    assert len(parse_config(text, "b.conf").collectors) == 2
    for cut in range(len(text.rstrip("\n"))):     # up to the last "}", not with it
        with pytest.raises(ConfigError):
            parse_config(text[:cut], "b.conf")


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: cannot read the file: No such file or directory"
    assert caught.value.line is None


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(ConfigError, match=": not a regular file$"):
        load_config(str(tmp_path))


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    path = tmp_path / "fifo.conf"
    os.mkfifo(path)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))            # would block for ever in open() without O_NONBLOCK
    assert str(caught.value) == f"{path}: not a regular file"


def test_device_is_refused_not_read_until_memory_runs_out():
    with pytest.raises(ConfigError) as caught:
        load_config("/dev/zero")
    assert str(caught.value) == "/dev/zero: not a regular file"


def test_oversized_file_is_one_line(tmp_path):
    path = tmp_path / "big.conf"
    path.write_bytes(b"sflow {\n" + b"# padding\n" * 200_000 + b"}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value).startswith(f"{path}: ") and "too big" in str(caught.value)


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.conf"
    path.write_bytes(b"\xef\xbb\xbfsflow {\n collector { ip = 192.0.2.1 }\n}\n")
    assert load_config(str(path)).collectors[0].ip == "192.0.2.1"


READ_AS_NOBODY = """
import sys
from hsflowd.config import ConfigError, load_config
try:
    load_config(sys.argv[1])
except ConfigError as e:
    print(e)
"""


def test_unreadable_file(tmp_path):
    """Root reads anything, so as root (CI) the file is read by a child run as nobody."""
    if os.geteuid() != 0:
        path = tmp_path / "secret.conf"
        path.write_text("sflow { }")
        path.chmod(0)
        with pytest.raises(ConfigError, match="cannot read the file: Permission denied"):
            load_config(str(path))
        return
    workdir = Path(tempfile.mkdtemp(prefix="hsft-unreadable-"))   # tmp_path is root-only
    try:
        workdir.chmod(0o755)
        path = workdir / "secret.conf"
        path.write_text("sflow { }")
        path.chmod(0)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        child = subprocess.run([sys.executable, "-c", READ_AS_NOBODY, str(path)], user=65534,
                               group=65534, extra_groups=[], env=env, cwd="/",
                               capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == f"{path}: cannot read the file: Permission denied"


def test_load_config_names_the_file_in_errors(tmp_path):
    path = tmp_path / "hsflowd.conf"
    path.write_text("sflow {\n  sampling = lots\n}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == f"{path}:2: 'sampling' needs an integer, got 'lots'"


NOT_UTF8 = [
    # (name, file bytes, expected line and column, byte)
    ("in a value", b"sflow {\n  collector { ip=192.0.2.1 }\n  agent = eth\xe9\xff\n}\n",
     "3", "14", "e9"),
    ("in a comment", b"# caf\xe9\nsflow { collector { ip=192.0.2.1 } }\n", "1", "6", "e9"),
    ("after a byte order mark", b"\xef\xbb\xbfsflow { # \xff\n collector { ip=192.0.2.1 } }\n",
     "1", "11", "ff"),
    ("after CRLF and CR line ends", b"sflow {\r\n\r collector { ip=192.0.2.1 }\r\n"
     b"# na\xc3\xafve, then \x80\r\n}\r\n", "4", "15", "80"),
    ("a character cut in two at the end", b"sflow { collector { ip=192.0.2.1 } }\n# caf\xc3",
     "2", "6", "c3"),
]


@pytest.mark.parametrize("data,line,column,byte",
                         [pytest.param(*case[1:], id=case[0]) for case in NOT_UTF8])
def test_bytes_that_are_not_utf8_are_an_error(tmp_path, data, line, column, byte):
    path = tmp_path / "hsflowd.conf"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == (f"{path}:{line}: byte 0x{byte} (column {column}) is not "
                                 "UTF-8: save the file as UTF-8")


def test_utf8_beyond_ascii_is_accepted(tmp_path):
    path = tmp_path / "hsflowd.conf"
    path.write_bytes("# café, naïve\nsflow { collector { ip=192.0.2.1 } }\n".encode())
    assert load_config(str(path)).collectors[0].ip == "192.0.2.1"
