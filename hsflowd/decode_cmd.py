"""``hsflowd decode``: show what an sFlow agent sends, from a UDP port or a capture file.

One JSON object per datagram (``--json``) or readable ``key value`` blocks.  A datagram that
does not decode is reported on stderr, with its source, and skipped.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Iterator, Optional, TextIO, Tuple

from .sflow import DecodeError, decode_datagram, to_dict, to_text
from .sflow.pcap import CaptureError, read_udp

MAX_DATAGRAM = 65535
RECEIVE_BUFFER = 8 << 20  # agents send in bursts; the kernel caps this at net.core.rmem_max


def _from_socket(sock: socket.socket) -> Iterator[Tuple[float, str, bytes]]:
    try:
        while True:
            data, addr = sock.recvfrom(MAX_DATAGRAM)
            host = addr[0][7:] if addr[0].startswith("::ffff:") else addr[0]
            source = f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
            yield time.time(), source, data
    finally:
        sock.close()


def _listen(bind: Optional[str], port: int) -> socket.socket:
    """A socket on ``bind`` (default: every IPv4 and IPv6 address) and ``port``."""
    if bind is None:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind(("::", port))
            return sock
        except OSError:
            sock.close()
            bind = "0.0.0.0"
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind((bind, port))
    except OSError:
        sock.close()
        raise
    return sock


def _from_pcap(path: str, port: Optional[int]) -> Iterator[Tuple[float, str, bytes]]:
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")
    with stream:
        for packet in read_udp(stream, port):
            yield packet.timestamp, packet.source, packet.payload


def run(port: int = 6343, bind: Optional[str] = None, pcap: Optional[str] = None,
        as_json: bool = False, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Decode until the input ends or Ctrl-C.  Returns the exit status."""
    # a pcap may hold sFlow sent to any port: filter on --port only when it was given
    if pcap is not None:
        source = _from_pcap(pcap, port if port != 6343 else None)
    else:
        try:
            source = _from_socket(_listen(bind, port))  # listen now: errors belong here
        except OSError as e:
            err.write(f"hsflowd decode: cannot listen on {bind or '*'}:{port}: {e.strerror or e}\n")
            return 1
    try:
        for received, sender, data in source:
            try:
                datagram = to_dict(decode_datagram(data))
            except DecodeError as e:
                err.write(f"{sender}: bad datagram ({len(data)} bytes): {e}\n")
                err.flush()
                continue
            if as_json:
                record = {"source": sender, "size": len(data), "received": round(received, 6)}
                record.update(datagram)
                out.write(json.dumps(record) + "\n")
            else:
                out.write(f"datagram from {sender} ({len(data)} bytes)\n{to_text(datagram)}\n\n")
            out.flush()
    except KeyboardInterrupt:
        pass
    except (CaptureError, OSError) as e:
        if isinstance(e, BrokenPipeError):
            return 0
        err.write(f"hsflowd decode: {pcap or 'socket'}: {getattr(e, 'strerror', None) or e}\n")
        return 1
    return 0
