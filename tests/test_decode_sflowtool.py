"""sflowtool's -l and -g forms, line for line against sflowtool 6.11's own output of the two
captures (tests/vectors/*.sflowtool-l.txt and -g.txt), and hostile input.

The -g lines begin with the capture time in local time; the vectors were made with TZ=UTC,
so the commands here run with TZ=UTC too.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsflowd.decode.sflowtool import Received, datagram_lines, fmt_percentage, signed
from hsflowd.decode.capture import read_udp

VECTORS = os.path.join(os.path.dirname(__file__), "vectors")
CAPTURES = ["hsflowd-2.1.25", "ovs-3.1.0"]
FUZZ = settings(max_examples=300, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def vector(name):
    path = os.path.join(VECTORS, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not found")
    return path


def payloads(capture):
    with open(vector(capture + ".pcap"), "rb") as f:
        return list(read_udp(f))


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("form", ["l", "g"])
def test_command_matches_sflowtool_line_for_line(capture, form):
    with open(vector(f"{capture}.sflowtool-{form}.txt")) as f:
        want = f.read()
    got = subprocess.run([sys.executable, "-m", "hsflowd", "decode", f"-{form}", "--pcap",
                          vector(capture + ".pcap")], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "TZ": "UTC"})
    assert got.returncode == 0 and got.stderr == ""
    got_lines, want_lines = got.stdout.splitlines(), want.splitlines()
    for i, (a, b) in enumerate(zip(got_lines, want_lines)):
        assert a == b, f"line {i + 1}"
    assert len(got_lines) == len(want_lines)
    assert got.stdout == want


@pytest.mark.parametrize("capture", CAPTURES)
def test_in_process_datagram_lines(capture, utc):
    with open(vector(f"{capture}.sflowtool-g.txt")) as f:
        want = f.read().splitlines()
    got = []
    for p in payloads(capture):
        lines, error = datagram_lines(p.payload, "g", Received(pcap_ns=p.nanoseconds))
        assert error is None
        got += lines
    assert got == want


def test_socket_input_prints_the_source_and_read_time(utc):
    from ipaddress import ip_address
    payload = payloads("ovs-3.1.0")[0].payload
    lines, _ = datagram_lines(payload, "g", Received(source_ip=ip_address("::ffff:10.1.2.3"),
                                                    read_ns=1_700_000_000_250_000_000))
    assert lines[0].startswith("2023-11-14T22:13:20+0000 - 0 0 0:0 0:0 0:0 startDatagram")
    assert lines[1].endswith("datagramSourceIP 0000:0000:0000:0000:0000:ffff:0a01:0203")
    assert lines[3].endswith(" unixSecondsUTC 1700000000")
    assert lines[4].endswith(" unixSecondsUTC_uS 250000")
    assert lines[5].endswith(" localtime 2023-11-14T22:13:20+0000")
    assert "pcapTimestamp" not in lines[6]


def test_sflowtool_number_formats():
    assert signed(0xFFFFFFFF) == -1 and signed(1073741823) == 1073741823
    assert fmt_percentage(-1) == "unknown" and fmt_percentage(0xFFFFFFFF) == "unknown"
    assert fmt_percentage(5012) == "50.12" and fmt_percentage(1) == "0.01"


def test_a_datagram_cut_short_shows_the_samples_before_the_cut(utc):
    """sflowtool prints what it read before the error; -l keeps the samples that completed."""
    payload = payloads("hsflowd-2.1.25")[0].payload   # host sample, then interface sample
    full, _ = datagram_lines(payload, "l", Received(pcap_ns=1))
    cut, error = datagram_lines(payload[:-20], "l", Received(pcap_ns=1))
    assert len(full) == 2 and cut == full[:1]
    assert "says" in error
    g, error = datagram_lines(payload[:-20], "g", Received(pcap_ns=1))
    assert g[-1].endswith("endDatagram   =================================")


def test_bad_datagrams_through_the_command(tmp_path):
    from test_decode_cmd import a_datagram, pcap_of
    path = tmp_path / "mixed.pcap"
    good = a_datagram(1)
    pcap_of([good, good[:-5], b"\x00\x00\x00\x04garbage", b"", a_datagram(2)], path)
    for form in ("-l", "-g"):
        out = subprocess.run([sys.executable, "-m", "hsflowd", "decode", form, "--pcap", str(path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "Traceback" not in out.stderr
        assert len(out.stderr.splitlines()) == 3
        if form == "-l":
            assert out.stdout.splitlines() == ["CNTR,10.0.0.1,3,6,0,0,0,99" + ",0" * 13] * 2


# ---------------------------------------------------------------- any bytes, never a traceback

def _no_raise(data: bytes):
    for form in ("l", "g", "text"):
        lines, error = datagram_lines(data, form, Received(pcap_ns=1_000_000_000))
        assert all(isinstance(line, str) for line in lines)
        assert error is None or isinstance(error, str)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data):
    _no_raise(data)
    _no_raise(b"\x00\x00\x00\x05\x00\x00\x00\x01" + data)


def _flipped():
    out = []
    for capture in CAPTURES:
        out += [p.payload for p in payloads(capture)]
    return out


@FUZZ
@given(st.data())
def test_real_datagrams_with_bytes_changed(data):
    originals = _flipped()
    raw = bytearray(data.draw(st.sampled_from(originals)))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    _no_raise(bytes(raw[:cut]))
    _no_raise(bytes(raw))


def test_every_prefix_of_a_flow_datagram():
    payload = next(p.payload for p in payloads("hsflowd-2.1.25") if len(p.payload) > 1200)
    for n in range(len(payload) + 1):
        _no_raise(payload[:n])


def test_unknown_records_and_samples_are_skipped_as_sflowtool_does():
    """An unknown counter record and an unknown sample: sflowtool's 'skipping unknown' lines."""
    record = struct.pack(">II", (0 << 12) | 2999, 4) + b"\0\0\0\1"
    counters = struct.pack(">IIII", 1, 0, 7, 1) + record
    unknown_sample = struct.pack(">II", 9, 4) + b"abcd"
    head = struct.pack(">II4sIIII", 5, 1, bytes([10, 0, 0, 1]), 0, 1, 5, 2)
    data = head + struct.pack(">II", 4, len(counters)) + counters + unknown_sample
    lines, error = datagram_lines(data, "text", Received())
    assert error is None
    assert "skipping unknown counters_sample_element: 0:2999 len=4" in lines
    assert "skipping unknown sample: 0:9 len=4" in lines
    l_lines, _ = datagram_lines(data, "l", Received())
    assert l_lines == ["CNTR,10.0.0.1," + ",".join(["0"] * 19)]
