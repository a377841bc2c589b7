"""``hsflowd decode``: show what an sFlow agent sends, from a UDP port or a capture file.

Output forms: ``key value`` blocks (default), one JSON object per datagram (``-j``),
sflowtool's ``-l`` and ``-g`` lines (hsflowd.decode.sflowtool), or sFlow-RT's metrics every
interval (``--metrics``, ``--summary``; hsflowd.decode.metrics).  A datagram that does not
decode is one line on stderr, with its source, and is skipped; so is a capture that cannot
be read.  Nothing the input holds gets a traceback.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from ipaddress import ip_address
from typing import Iterator, NamedTuple, Optional, TextIO

from .decode.capture import CaptureError, read_udp
from .sflow import DecodeError, decode_datagram, to_dict, to_text

MAX_DATAGRAM = 65535
RECEIVE_BUFFER = 8 << 20  # agents send in bursts; the kernel caps this at net.core.rmem_max
TICK = 0.5  # how often a quiet socket lets --metrics look at the clock


class Arrival(NamedTuple):
    """One datagram and where it came from."""

    nanoseconds: int          # receive time (socket) or capture time (pcap)
    sender: str               # "ip:port"
    address: Optional[object]  # the sender's IP address (None from a capture, as sflowtool)
    data: bytes


def _from_socket(sock: socket.socket, ticks: bool) -> Iterator[Optional[Arrival]]:
    """Datagrams as they arrive; with ``ticks``, None every TICK seconds of silence."""
    if ticks:
        sock.settimeout(TICK)
    try:
        while True:
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except socket.timeout:
                yield None
                continue
            host = addr[0][7:] if addr[0].startswith("::ffff:") else addr[0]
            source = f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
            yield Arrival(time.time_ns(), source, ip_address(host.split("%")[0]), data)
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


def _from_pcap(path: str, port: Optional[int]) -> Iterator[Arrival]:
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")
    with stream:
        for packet in read_udp(stream, port):
            yield Arrival(packet.nanoseconds, packet.source, None, packet.payload)


def run(port: int = 6343, bind: Optional[str] = None, pcap: Optional[str] = None,
        mode: str = "text", interval: float = 10.0, summary: bool = False,
        out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Decode until the input ends or Ctrl-C.  Returns the exit status."""
    # a pcap may hold sFlow sent to any port: filter on --port only when it was given
    if pcap is not None:
        source = _from_pcap(pcap, port if port != 6343 else None)
    else:
        try:
            sock = _listen(bind, port)  # listen now: errors belong here
        except OSError as e:
            err.write(f"hsflowd decode: cannot listen on {bind or '*'}:{port}: {e.strerror or e}\n")
            return 1
        source = _from_socket(sock, ticks=mode == "metrics")
    view = _View(mode, pcap is not None, interval, summary, out, err)
    try:
        for arrival in source:
            view.show(arrival)
            out.flush()
        view.finish()
        out.flush()
    except KeyboardInterrupt:
        pass
    except (CaptureError, OSError) as e:
        if isinstance(e, BrokenPipeError):
            return 0
        err.write(f"hsflowd decode: {pcap or 'socket'}: {getattr(e, 'strerror', None) or e}\n")
        return 1
    return 0


class _View:
    """One output form; ``show`` each arrival (None: time passed), ``finish`` at the end."""

    def __init__(self, mode: str, from_pcap: bool, interval: float, summary: bool,
                 out: TextIO, err: TextIO):
        self.mode, self.from_pcap, self.out, self.err = mode, from_pcap, out, err
        self.interval, self.summary = interval, summary
        self.table = None
        self.next_report: Optional[float] = None
        if mode == "metrics":
            from .decode.metrics import MetricsTable
            self.table = MetricsTable(timeout=max(3 * interval, 60.0))

    def bad(self, arrival: Arrival, error: str) -> None:
        self.err.write(f"{arrival.sender}: bad datagram ({len(arrival.data)} bytes): {error}\n")
        self.err.flush()

    def show(self, arrival: Optional[Arrival]) -> None:
        if self.mode in ("line", "grep"):
            self._sflowtool(arrival)
        elif self.mode == "metrics":
            self._metrics(arrival)
        else:
            self._datagram(arrival)

    def _datagram(self, arrival: Arrival) -> None:
        from .decode.packet import add_decoded
        try:
            datagram = decode_datagram(arrival.data)
        except DecodeError as e:
            self.bad(arrival, str(e))
            return
        plain = to_dict(datagram)
        add_decoded(plain, datagram)
        if self.mode == "json":
            record = {"source": arrival.sender, "size": len(arrival.data),
                      "received": round(arrival.nanoseconds / 1e9, 6)}
            record.update(plain)
            self.out.write(json.dumps(record) + "\n")
        else:
            self.out.write(f"datagram from {arrival.sender} ({len(arrival.data)} bytes)\n"
                           f"{to_text(plain)}\n\n")

    def _sflowtool(self, arrival: Arrival) -> None:
        from .decode.sflowtool import Received, datagram_lines
        if self.from_pcap:
            received = Received(pcap_ns=arrival.nanoseconds)
        else:
            received = Received(source_ip=arrival.address, read_ns=arrival.nanoseconds)
        lines, error = datagram_lines(arrival.data, "l" if self.mode == "line" else "g", received)
        if lines:
            self.out.write("\n".join(lines) + "\n")
        if error is not None:
            self.bad(arrival, error)

    def _metrics(self, arrival: Optional[Arrival]) -> None:
        now = time.time() if arrival is None else arrival.nanoseconds / 1e9
        if arrival is None and self.from_pcap:
            return
        if self.next_report is None:
            self.next_report = now + self.interval
        while now >= self.next_report:
            self._report(self.next_report)
            self.next_report += self.interval
        if arrival is None:
            return
        try:
            datagram = decode_datagram(arrival.data)
        except DecodeError as e:
            self.bad(arrival, str(e))
            return
        self.table.add(datagram, now)

    def _report(self, now: float) -> None:
        from .decode.metrics import summary
        rows = self.table.rows(now)
        for row in rows:
            self.out.write(json.dumps(row) + "\n")
        if self.summary:
            for stats in summary(rows, now):
                self.out.write(json.dumps(stats) + "\n")

    def finish(self) -> None:
        """At the end of a capture, report the interval under way."""
        if self.mode == "metrics" and self.next_report is not None:
            self._report(self.next_report)
