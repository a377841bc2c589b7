"""Real sFlow collectors that nobody here wrote, started and stopped by the tests.

- ``Sfacctd``: pmacct's sfacctd with ``sfacctd_renormalize: true`` (it weights each sample
  by delta(sample_pool) / delta(sequence_number) of its data source) and the print plugin,
  aggregated by src_host, dst_host, proto, src_port, dst_port, writing JSON lines to a file
  every ``refresh`` seconds (one line per flow and interval: ``flows()`` sums them).
- ``Sfcapd``: nfdump's sfcapd writing nfcapd files (it scales each sample by the stated
  sampling rate); ``flows()`` reads them back with ``nfdump -r FILE -A ...``.

Both count a flow's bytes as the sum of frame_length (Ethernet frame plus its 4-byte FCS)
times the weight.  Each runs under ``ip netns exec`` (which execs it: the PID is the
collector's own) and is stopped by that PID: SIGTERM, then SIGKILL after a timeout (sfacctd
has been seen to hang after SIGTERM), and the processes it forked (pmacct's plugin and
cache writers) are then stopped by their PIDs too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

Key = Tuple[str, str, str, int, int]     # src, dst, proto ("udp", "tcp"), sport, dport
Counts = Tuple[int, int]                 # packets, bytes

SFACCTD = shutil.which("sfacctd") or (os.path.exists("/usr/sbin/sfacctd") and "/usr/sbin/sfacctd")
SFCAPD = shutil.which("sfcapd")
NFDUMP = shutil.which("nfdump")


def missing() -> List[str]:
    """The collectors' programs that are not installed (apt-get install pmacct nfdump-sflow)."""
    return [name for name, path in (("sfacctd", SFACCTD), ("sfcapd", SFCAPD), ("nfdump", NFDUMP))
            if not path]


def children_of(pid: int) -> List[int]:
    """Every descendant of ``pid`` (from /proc: no broad kill)."""
    parents: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> Optional[int]:
    """SIGTERM by PID, SIGKILL by PID after ``timeout``; then its descendants the same way."""
    if proc is None:
        return None
    family = children_of(proc.pid)
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    family += [p for p in children_of(proc.pid) if p not in family]
    for pid in family:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout
    for pid in family:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return proc.returncode


def socket_drops(ns, port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to ``port`` (its buffer was
    full): /proc/net/udp's last column, read in the namespace."""
    text = ns.run(["cat", "/proc/net/udp"]).stdout if ns else Path("/proc/net/udp").read_text()
    for line in text.splitlines()[1:]:
        cols = line.split()
        if int(cols[1].split(":")[1], 16) == port:
            return int(cols[-1])
    return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


class Sfacctd:
    def __init__(self, workdir, port: int, ns=None, host: str = "127.0.0.1", refresh: int = 2):
        self.dir = Path(workdir) / f"sfacctd-{port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.ns, self.host, self.refresh = port, ns, host, refresh
        self.output = self.dir / "flows.json"
        self.log = self.dir / "sfacctd.log"
        self.conf = self.dir / "sfacctd.conf"
        self.conf.write_text("\n".join([
            "daemonize: false",
            f"sfacctd_ip: {host}",
            f"sfacctd_port: {port}",
            "sfacctd_renormalize: true",
            f"sfacctd_pipe_size: {4 << 20}",    # the socket's receive buffer (rmem_max caps it)
            f"logfile: {self.log}",
            "plugins: print[p]",
            "aggregate[p]: src_host,dst_host,proto,src_port,dst_port",
            "print_output[p]: json",
            f"print_output_file[p]: {self.output}",
            "print_output_file_append[p]: true",
            f"print_refresh_time[p]: {refresh}",
        ]) + "\n")
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Sfacctd":
        cmd = [SFACCTD, "-f", str(self.conf)]
        stdout = open(self.dir / "stdout", "w")
        self.proc = (self.ns.popen(cmd, stdout=stdout, stderr=subprocess.STDOUT) if self.ns
                     else subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT))
        stdout.close()
        deadline = time.monotonic() + 10
        while "waiting for sFlow data" not in self.log_text():
            assert self.proc.poll() is None, f"sfacctd exited: {self.log_text()}"
            assert time.monotonic() < deadline, f"sfacctd did not start: {self.log_text()}"
            time.sleep(0.1)
        return self

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def flows(self) -> Dict[Key, Counts]:
        totals: Dict[Key, Counts] = {}
        try:
            lines = self.output.read_text().splitlines()
        except FileNotFoundError:
            return totals
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue        # a line being written
            key = (row["ip_src"], row["ip_dst"], row["ip_proto"], int(row["port_src"]),
                   int(row["port_dst"]))
            packets, nbytes = totals.get(key, (0, 0))
            totals[key] = (packets + int(row["packets"]), nbytes + int(row["bytes"]))
        return totals

    def settle(self, timeout: float = 20) -> Dict[Key, Counts]:
        """The totals once two refreshes in a row changed nothing."""
        last, stable_since = None, time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.flows()
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since > 2 * self.refresh + 0.5:
                break
            time.sleep(0.25)
        return last or {}

    def stop(self) -> None:
        stop_process(self.proc, timeout=3)


class Sfcapd:
    def __init__(self, workdir, port: int, ns=None, host: str = "127.0.0.1"):
        self.dir = Path(workdir) / f"sfcapd-{port}"
        self.flowdir = self.dir / "flows"
        self.flowdir.mkdir(parents=True, exist_ok=True)
        self.port, self.ns, self.host = port, ns, host
        self.stdout = self.dir / "stdout"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Sfcapd":
        cmd = [SFCAPD, "-b", self.host, "-p", str(self.port), "-w", str(self.flowdir),
               "-t", "3600", "-B", str(4 << 20)]
        out = open(self.stdout, "w")
        self.proc = (self.ns.popen(cmd, stdout=out, stderr=subprocess.STDOUT) if self.ns
                     else subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))
        out.close()
        deadline = time.monotonic() + 10
        while "Startup" not in self.output():
            assert self.proc.poll() is None, f"sfcapd exited: {self.output()}"
            assert time.monotonic() < deadline, f"sfcapd did not start: {self.output()}"
            time.sleep(0.1)
        return self

    def output(self) -> str:
        try:
            return self.stdout.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """sfcapd writes its file when it terminates."""
        stop_process(self.proc, timeout=5)

    def files(self) -> List[Path]:
        return sorted(p for p in self.flowdir.rglob("nfcapd.*") if not p.name.endswith("current"))

    def flows(self) -> Dict[Key, Counts]:
        """Read back with nfdump -r, aggregated by the 5-tuple: (packets, bytes)."""
        totals: Dict[Key, Counts] = {}
        for path in self.files():
            out = subprocess.run([NFDUMP, "-r", str(path), "-A",
                                  "srcip,dstip,proto,srcport,dstport", "-o", "csv", "-N", "-q"],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            for line in out.stdout.splitlines():
                cols = line.split(",")
                if len(cols) < 13 or cols[0] == "ts":
                    continue
                key = (cols[3], cols[4], cols[7].strip().lower(), int(cols[5]), int(cols[6]))
                packets, nbytes = totals.get(key, (0, 0))
                totals[key] = (packets + int(cols[11]), nbytes + int(cols[12]))
        return totals
