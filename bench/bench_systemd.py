"""systemd {}'s cost: 200 services, the agent with and without systemd {}, at the default
refreshVMs (60 s) and polling (30 s): its CPU, its resident memory, and the D-Bus calls it
makes a minute.

    sudo python3 bench/bench_systemd.py [--services N] [--seconds S]

A Debian 12 root made by mmdebstrap (or HSFT_NSPAWN_ROOT, one made before) is booted with
systemd-nspawn (tests/nspawn_tools.py); N transient services that only sleep are started
with systemd-run.  Each scenario starts the agent from this tree inside, as a transient
service of its own, waits until every service has been reported (with systemd {}) or the
first datagram (without), then measures over the window: CPU (utime+stime of
/proc/PID/stat) as % of one core, VmRSS and VmHWM, the datagrams and 3:N samples received,
and the D-Bus calls, counted twice: by the module (``hsflowd status``) and by the bus
(``busctl monitor`` on the agent's connection: the method calls it sent).  The start
(every service's cgroup and accounting asked once) is shown apart.  The figures are
printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, REPO)

from counting import Counting  # noqa: E402
from agentproc import Receiver, config_text  # noqa: E402
import nspawn_tools  # noqa: E402

AGENT = "bench-agent"
CONF = "etc/bench-agent.conf"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def module_calls(m) -> Optional[Dict]:
    out = m.run("env", "PYTHONPATH=/src", "python3", "-m", "hsflowd", "status", "-p",
                "/run/bench-agent.pid", "--json", check=False).stdout
    try:
        return next(x for x in json.loads(out)["modules"] if x["name"] == "systemd")["systemd"]
    except (ValueError, StopIteration, KeyError):
        return None


class BusWatch:
    """The calls the agent's bus connection makes, counted by the bus's monitor (busctl
    monitor, inside the container) over ``seconds``: the module's own count, checked."""

    def __init__(self, m, pid_inside: int, seconds: float):
        names = m.run("busctl", "list", "--no-legend", "--unique", check=False).stdout
        self.unique = next((line.split()[0] for line in names.splitlines()
                            if len(line.split()) > 1 and line.split()[1] == str(pid_inside)),
                           None)
        self.proc = None
        if self.unique is not None:
            self.proc = subprocess.Popen(
                ["nsenter", "-t", str(m.init), "-a", "--", "timeout", str(seconds), "busctl",
                 "monitor", "--json=short", self.unique], stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True)

    def calls(self) -> Optional[int]:
        if self.proc is None:
            return None
        out, _ = self.proc.communicate(timeout=30)
        count = 0
        for line in out.splitlines():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            count += message.get("type") == "method_call" and message.get("sender") == self.unique
        return count


def scenario(m, receiver: Receiver, services: int, seconds: float, systemd: bool) -> Dict:
    extra = "systemd { }" if systemd else ""
    (m.root / CONF).write_text(config_text([("127.0.0.1", receiver.port)], polling=None,
                                           extra="agentIP = 127.0.0.1\n" + extra))
    counting = Counting(receiver)
    started = time.monotonic()
    m.run("systemd-run", "--quiet", f"--unit={AGENT}", "-p", "Environment=PYTHONPATH=/src",
          "python3", "-m", "hsflowd", "-d", "-f", "/" + CONF, "-p", "/run/bench-agent.pid",
          "-o", "/run/bench-agent.auto")
    inside = int(m.run("systemctl", "show", "-p", "MainPID", "--value", AGENT).stdout)
    pid = m.host_pid(inside)
    ready = None
    while time.monotonic() - started < 120:
        if systemd:
            s = module_calls(m)
            if s and s["services"] >= services:
                ready = time.monotonic() - started
                break
        elif counting.datagrams:
            ready = time.monotonic() - started
            break
        time.sleep(0.5)
    start_calls = module_calls(m) if systemd else None
    watch = BusWatch(m, inside, seconds) if systemd else None
    c0, d0, v0 = cpu_seconds(pid), counting.datagrams, counting.virt_samples
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    c1, d1, v1 = cpu_seconds(pid), counting.datagrams, counting.virt_samples
    bus = watch.calls() if watch else None
    rss, hwm = memory_kb(pid)
    end_calls = module_calls(m) if systemd else None
    m.run("systemctl", "stop", AGENT, check=False)
    counting.close()
    per_minute = 60 / elapsed
    result = {"systemd": systemd, "ready_s": ready, "cpu": (c1 - c0) / elapsed, "rss_kb": rss,
              "hwm_kb": hwm, "datagrams_min": (d1 - d0) * per_minute,
              "virt_min": (v1 - v0) * per_minute,
              "bus_min": bus * per_minute if bus is not None else None, "window": elapsed}
    if systemd:
        result["start"] = start_calls["dbus_calls"]
        total = end_calls["dbus_calls"]["total"] - start_calls["dbus_calls"]["total"]
        result["module_calls"] = total
        result["module_min"] = total * per_minute
        result["signals_min"] = (end_calls["signals"] - start_calls["signals"]) * per_minute
    return result


def show(r: Dict) -> None:
    line = (f"systemd {{}} {'on ' if r['systemd'] else 'off'}: "
            f"CPU {r['cpu']:6.2%} of a core, RSS {r['rss_kb'] / 1024:5.1f} MiB "
            f"(peak {r['hwm_kb'] / 1024:5.1f}), {r['datagrams_min']:5.1f} datagrams/min, "
            f"{r['virt_min']:6.1f} 3:N samples/min")
    if r["systemd"]:
        bus = f"{r['bus_min']:.1f}" if r["bus_min"] is not None else "n/a"
        line += (f", D-Bus calls {r['module_calls']} in {r['window']:.0f} s = "
                 f"{r['module_min']:.1f}/min (the bus's monitor: {bus}/min), "
                 f"signals/min {r['signals_min']:.1f}; ready in {r['ready_s']:.1f} s after "
                 f"{r['start']['total']} calls ({r['start']['lists']} lists, "
                 f"{r['start']['gets']} Gets, {r['start']['setup']} to set up)")
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=120.0, help="measuring window")
    args = ap.parse_args()
    why = nspawn_tools.why_not()
    if why:
        print(f"bench_systemd: skipped: {why}")
        return
    kept = os.environ.get("HSFT_NSPAWN_ROOT")
    base = Path(tempfile.mkdtemp(prefix="hsft-bench-"))
    root = Path(kept) if kept else base / "root"
    m = nspawn_tools.Machine(root, f"hsftb{os.getpid() % 10000}", binds=[(REPO, "/src")])
    try:
        if not kept:
            t = time.monotonic()
            nspawn_tools.make_root(root)
            print(f"mmdebstrap: {time.monotonic() - t:.0f} s")
        m.start()
        print(f"Python {platform.python_version()} (the container's), "
              f"{m.run('systemctl', '--version').stdout.splitlines()[0]}, {os.cpu_count()} CPUs")
        t = time.monotonic()
        m.sh(f"for i in $(seq {args.services}); do "
             "systemd-run --quiet --unit=bench$i sleep 1000000 || exit 1; done")
        print(f"{args.services} services started in {time.monotonic() - t:.1f} s; window "
              f"{args.seconds:.0f} s, refreshVMs 60 s, polling 30 s")
        sock = m.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("127.0.0.1", 0))
        receiver = Receiver(sock)
        for systemd in (False, True):
            show(scenario(m, receiver, args.services, args.seconds, systemd))
        receiver.close()
    finally:
        m.cleanup(keep_root=bool(kept))
        if kept:
            (m.root / CONF).unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
