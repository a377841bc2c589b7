"""pcapng input: files written by editcap, tshark and dumpcap, and broken ones.

The three Wireshark tools write pcapng the way operators get it; each file is made at run
time from the vectors (or, for dumpcap, captured live on the loopback of a namespace made
for the test) and must give back the same datagrams as the classic pcap.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

import pytest

from hsflowd.decode.capture import CaptureError, read_udp

VECTORS = os.path.join(os.path.dirname(__file__), "vectors")
HSFLOWD_PCAP = os.path.join(VECTORS, "hsflowd-2.1.25.pcap")
OVS_PCAP = os.path.join(VECTORS, "ovs-3.1.0.pcap")


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian: apt-get install tshark)")


def datagrams(path):
    with open(path, "rb") as f:
        return list(read_udp(f))


def hsflowd(*args):
    return subprocess.run([sys.executable, "-m", "hsflowd", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("vector", [HSFLOWD_PCAP, OVS_PCAP], ids=["hsflowd", "ovs"])
def test_editcap_pcapng(tmp_path, vector):
    need("editcap")
    out = tmp_path / "e.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", vector, str(out)], check=True, capture_output=True)
    assert out.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert datagrams(out) == datagrams(vector)  # the same payloads, sources and times


def test_tshark_pcapng_and_the_command(tmp_path):
    need("tshark")
    out = tmp_path / "t.pcapng"
    subprocess.run(["tshark", "-r", HSFLOWD_PCAP, "-F", "pcapng", "-w", str(out)], check=True,
                   capture_output=True)
    assert datagrams(out) == datagrams(HSFLOWD_PCAP)
    got = hsflowd("decode", "--json", "--pcap", str(out))
    assert got.returncode == 0 and got.stderr == ""
    assert got.stdout == hsflowd("decode", "--json", "--pcap", HSFLOWD_PCAP).stdout != ""


def test_dumpcap_live_capture_on_a_namespace_loopback(tmp_path, netns):
    """dumpcap writes pcapng by default; capture three datagrams sent inside a namespace."""
    need("dumpcap")
    ns = netns()
    out = tmp_path / "live.pcapng"
    cap = ns.popen(["dumpcap", "-q", "-i", "lo", "-f", "udp port 16343", "-c", "3",
                    "-w", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sender = ("import socket, sys, time\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "for i in range(200):\n"
              "    s.sendto(bytes.fromhex(sys.argv[1]), ('127.0.0.1', 16343))\n"
              "    time.sleep(0.05)\n")
    from test_decode_cmd import a_datagram
    payload = a_datagram(7)
    deadline = time.time() + 30
    while cap.poll() is None and time.time() < deadline:  # dumpcap needs a moment to start
        ns.run([sys.executable, "-c", sender, payload.hex()], check=False, timeout=30)
    if cap.poll() is None:
        cap.kill()
    _, err = cap.communicate(timeout=10)
    assert cap.returncode == 0, err.decode()
    assert out.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    got = datagrams(out)
    assert len(got) == 3 and all(g.payload == payload for g in got)
    assert all(g.source.startswith("127.0.0.1:") and g.destination_port == 16343 for g in got)
    assert abs(got[0].timestamp - time.time()) < 120
    decoded = hsflowd("decode", "--json", "--pcap", str(out))
    assert decoded.returncode == 0 and decoded.stderr == ""
    assert '"agent_address": "10.0.0.1"' in decoded.stdout.splitlines()[0]


# ---------------------------------------------------------------- broken files: one line

def shb(length=28, bom=b"\x4d\x3c\x2b\x1a"):
    return struct.pack("<II", 0x0A0D0D0A, length) + bom + struct.pack("<HHq", 1, 0, -1) + \
        struct.pack("<I", length)


@pytest.mark.parametrize("data, message", [
    (struct.pack("<II", 0x0A0D0D0A, 8) + b"\x4d\x3c\x2b\x1a" + bytes(8), "invalid pcapng header"),
    (struct.pack("<II", 0x0A0D0D0A, 0) + b"\x4d\x3c\x2b\x1a", "invalid pcapng header"),
    (struct.pack("<II", 0x0A0D0D0A, 28) + b"XXXX" + bytes(20), "unknown endianness"),
    (shb(), "IDB not found"),
    (shb() + struct.pack("<II", 1, 4), "bad pcapng file"),
    (shb() + struct.pack("<II", 1, 13), "header cut short"),
    (b"", "the file is empty"),
    (b"\xd4\xc3\xb2\xa1" + bytes(10), "pcap file header cut short"),
])
def test_bad_capture_is_a_capture_error(data, message):
    with pytest.raises(CaptureError, match=message):
        list(read_udp(io.BytesIO(data)))


def test_truncated_pcapng(tmp_path):
    """Cut inside its header blocks, a file is one error; cut later, it ends quietly after its
    last whole packet (a capture stopped while it was written)."""
    need("editcap")
    out = tmp_path / "e.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", HSFLOWD_PCAP, str(out)], check=True)
    data = out.read_bytes()
    first_packet = 0
    while struct.unpack_from("<I", data, first_packet)[0] != 6:   # the first EPB
        first_packet += struct.unpack_from("<I", data, first_packet + 4)[0]
    for cut in (4, 8, 27, 28, first_packet - 1):
        with pytest.raises(CaptureError):
            list(read_udp(io.BytesIO(data[:cut])))
    whole = [g.payload for g in datagrams(HSFLOWD_PCAP)]
    for cut in (first_packet, first_packet + 5, len(data) // 2, len(data) - 1):
        got = list(read_udp(io.BytesIO(data[:cut])))
        assert [g.payload for g in got] == whole[:len(got)]
    assert len(list(read_udp(io.BytesIO(data[:len(data) - 1])))) == len(whole) - 1


def test_bad_pcapng_through_the_command_is_one_line(tmp_path):
    path = tmp_path / "bad.pcapng"
    path.write_bytes(struct.pack("<II", 0x0A0D0D0A, 4) + b"\x4d\x3c\x2b\x1a")
    got = hsflowd("decode", "--pcap", str(path))
    assert got.returncode == 1 and got.stdout == ""
    assert got.stderr == f"hsflowd decode: {path}: bad pcapng file: invalid pcapng header\n"


def test_big_endian_pcapng(tmp_path):
    """A section in big-endian order (as written on some routers): the byte-order magic decides."""
    payload = bytes.fromhex("00000005")
    udp = struct.pack(">HHHH", 1234, 6343, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton("192.0.2.1"), socket.inet_aton("192.0.2.2")) + udp
    frame = bytes(12) + b"\x08\x00" + ip
    pad = bytes(-len(frame) % 4)
    head = struct.pack(">II", 0x0A0D0D0A, 28) + b"\x1a\x2b\x3c\x4d" + struct.pack(">HHq", 1, 0, -1) + \
        struct.pack(">I", 28)
    idb_opts = struct.pack(">HHB3x", 9, 1, 9) + struct.pack(">HH", 0, 0)  # nanoseconds
    idb = struct.pack(">IIHHI", 1, 20 + len(idb_opts), 1, 0, 0) + idb_opts + \
        struct.pack(">I", 20 + len(idb_opts))
    ticks = 1_700_000_000_123_456_789
    epb_len = 32 + len(frame) + len(pad)
    epb = struct.pack(">IIIIIII", 6, epb_len, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame),
                      len(frame)) + frame + pad + struct.pack(">I", epb_len)
    got = list(read_udp(io.BytesIO(head + idb + epb)))
    assert len(got) == 1 and got[0].payload == payload and got[0].source == "192.0.2.1:1234"
    # dpkt gives the time as a float, which keeps it to the microsecond
    assert got[0].nanoseconds == 1_700_000_000_123_457_000
