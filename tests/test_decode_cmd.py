"""`hsflowd decode`: the command an operator runs, as a real process."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

VECTORS = os.path.join(os.path.dirname(__file__), "vectors")
HSFLOWD_PCAP = os.path.join(VECTORS, "hsflowd-2.1.25.pcap")


def hsflowd(*args, **kw):
    return subprocess.run([sys.executable, "-m", "hsflowd", *args], capture_output=True,
                          text=True, timeout=30, **kw)


def pcap_of(payloads, path, port=6343, ipv6=False):
    """A classic pcap of Ethernet/IP/UDP frames carrying ``payloads`` (checksums 0)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, payload in enumerate(payloads):
            udp = struct.pack(">HHHH", 40000 + i, port, 8 + len(payload), 0) + payload
            if ipv6:
                ip = struct.pack(">IHBB16s16s", 6 << 28, len(udp), 17, 64,
                                 socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
                                 socket.inet_pton(socket.AF_INET6, "2001:db8::2")) + udp
                eth = b"\0" * 12 + b"\x86\xdd"
            else:
                ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                                 socket.inet_aton("192.0.2.1"), socket.inet_aton("192.0.2.2")) + udp
                eth = b"\0" * 12 + b"\x08\x00"
            frame = eth + ip
            f.write(struct.pack("<IIII", 1700000000 + i, 0, len(frame), len(frame)) + frame)


def a_datagram(seq=1):
    from hsflowd.sflow import CountersSample, Datagram, IfCounters
    from ipaddress import ip_address
    return Datagram(agent_address=ip_address("10.0.0.1"), sub_agent_id=7, sequence_number=seq,
                    uptime=1000, samples=[CountersSample(sequence_number=seq, source_id_type=0,
                                                         source_id_index=3,
                                                         counters=[IfCounters(ifIndex=3, ifInOctets=99)])]).encode()


@pytest.mark.skipif(not os.path.exists(HSFLOWD_PCAP), reason="the shared vectors are not here")
def test_pcap_json_one_object_per_datagram_with_the_spec_names():
    out = hsflowd("decode", "--json", "--pcap", HSFLOWD_PCAP)
    assert out.returncode == 0 and out.stderr == ""
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 20                                  # 20 datagrams in the capture
    first = lines[0]
    assert first["agent_address"] == "192.0.2.2" and first["sub_agent_id"] == 100000
    assert first["sequence_number"] == 1 and first["size"] == 852
    host = first["samples"][0]
    assert (host["struct"], host["source_id_type"], host["source_id_index"]) == \
        ("counters_sample_expanded", 2, 1)
    assert [c["tag"] for c in host["counters"]][:3] == ["0:2001", "0:2010", "0:2009"]
    cpu = next(c for c in host["counters"] if c["struct"] == "host_cpu")
    assert cpu["cpu_num"] == 2 and cpu["load_one"] == pytest.approx(0.07)


@pytest.mark.skipif(not os.path.exists(HSFLOWD_PCAP), reason="the shared vectors are not here")
def test_pcap_text_is_key_value_blocks():
    out = hsflowd("decode", "--pcap", HSFLOWD_PCAP)
    assert out.returncode == 0
    text = out.stdout
    assert text.count("datagram from ") == 20
    assert "\nagent_address 192.0.2.2\n" in text
    assert "  host_cpu 0:2003\n    load_one 0.07\n" in text
    assert "    hostname vm\n" in text


def test_ipv6_capture_and_port_filter(tmp_path):
    path = tmp_path / "v6.pcap"
    pcap_of([a_datagram(1), a_datagram(2)], path, port=16343, ipv6=True)
    out = hsflowd("decode", "--json", "--pcap", str(path))
    got = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["sequence_number"] for d in got] == [1, 2]
    assert got[0]["source"] == "[2001:db8::1]:40000"
    assert got[0]["samples"][0]["counters"][0]["ifInOctets"] == 99
    # --port given: only datagrams to that port
    assert hsflowd("decode", "--json", "--port", "6343", "--pcap", str(path)).stdout.count("\n") == 2
    assert hsflowd("decode", "--json", "--port", "9999", "--pcap", str(path)).stdout == ""


def test_bad_datagram_reported_on_stderr_and_skipped(tmp_path):
    path = tmp_path / "mixed.pcap"
    good = a_datagram(1)
    pcap_of([good, good[:-5], b"\x00\x00\x00\x04garbage", a_datagram(2)], path)
    out = hsflowd("decode", "--json", "--pcap", str(path))
    assert out.returncode == 0
    assert [json.loads(line)["sequence_number"] for line in out.stdout.splitlines()] == [1, 2]
    errors = out.stderr.splitlines()
    assert len(errors) == 2 and "Traceback" not in out.stderr
    assert errors[0] == ("192.0.2.1:40001: bad datagram (143 bytes): sample 0:4 says 112 bytes "
                         "but only 107 are left")
    assert "version 4, expected 5" in errors[1]


def test_not_a_capture_is_one_line():
    out = hsflowd("decode", "--pcap", "/etc/passwd")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == "hsflowd decode: /etc/passwd: not a pcap or pcapng file"


def test_listening_socket_and_ctrl_c(tmp_path):
    port = 16391
    proc = subprocess.Popen([sys.executable, "-m", "hsflowd", "decode", "--json", "--bind",
                             "127.0.0.1", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        deadline = time.time() + 10
        first = ""
        while not first and time.time() < deadline:  # send until the listener is up
            s.sendto(b"junk", ("127.0.0.1", port))
            s.sendto(a_datagram(1), ("127.0.0.1", port))
            if select.select([proc.stdout], [], [], 0.2)[0]:
                first = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=5)
        out = first + out
    finally:
        s.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and all(d["sequence_number"] == 1 and d["source"].startswith("127.0.0.1:")
                         for d in lines)
    assert "bad datagram (4 bytes)" in err


def test_port_in_use_is_one_line():
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    try:
        out = hsflowd("decode", "--bind", "127.0.0.1", "--port", str(busy.getsockname()[1]))
    finally:
        busy.close()
    assert out.returncode == 1
    assert out.stderr.startswith("hsflowd decode: cannot listen on 127.0.0.1:") and \
        out.stderr.count("\n") == 1
