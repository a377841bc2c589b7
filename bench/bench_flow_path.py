"""The sampled packet's path through the whole agent: CPU per flow sample, and capacity.

    sudo python3 bench/bench_flow_path.py [--only NAME ...] [--packets N] [--rate PPS]
    sudo HSFLOWD=/path/to/hsflowd python3 bench/bench_flow_path.py     # hsflowd beside it

The agent runs as a real process (``python -m hsflowd -d``) in a network namespace of its
own, pinned to one CPU, sampling one end of a veth pair; the other end is in a second
namespace where a packet generator (UDP, sendmmsg(2) through ctypes, pinned to the other
CPU) sends a known number of packets to a sink that never reads them.  The collector is a
UDP socket on the agent namespace's loopback with a receive buffer large enough to hold a
whole run, read in bursts by a reader that never sleeps in recv(): nothing it does slows
the agent down or wakes up on the agent's time.

For each scenario: a warm-up burst (until samples arrive), a pause, then the measured burst;
CPU is the time on a CPU of all the process's threads (/proc/PID/task/*/schedstat, in ns)
from just before the burst until the last sample of
it has arrived (the agent then idles: a second of that costs it about a millisecond), and
samples are the flow samples the collector received in between.  "delivered" divides them
by the packets the sampled interface counted (its rx_packets), scaled by N.

Scenarios (``--only`` picks some):
  pcap-N1 pcap-N10 pcap-N100     pcap {}, no other module
  epcap-N1 epcap-N10 epcap-N100  epcap {} (eBPF through bcc)
  tcp-N10                        pcap {} and tcp {} (its hook on every sample)
  docker-N10                     pcap {} and docker { markTraffic=on } with a container
                                 running (its marks on every sample; needs dockerd)
  vxlan-N10                      pcap {} with a VXLAN device on the sampled veth (the
                                 tunnels hook on every sample)
  all-N10                        tcp, docker marks and the VXLAN device together
  capacity                       the highest rate at N=1 with under 1 % of samples lost:
                                 flat out first, then by bisection over paced bursts of
                                 --capacity-seconds; the frames are addressed to another
                                 MAC, so the stack drops them after the taps and the
                                 generator (whose CPU pays for delivery) goes further

With HSFLOWD (hsflowd built from source, see environment.md) the pcap scenarios and the
capacity search also run hsflowd, with the same config file, in the same run.  CI does not
run this; ``make bench`` does.  Needs root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

from agentproc import AgentProcess, in_netns, proc_cpu_seconds  # noqa: E402


def system_seconds(pid: int) -> float:
    """stime of the process (all its threads), /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[12]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Time on a CPU of all the process's threads, in ns from /proc/PID/task/*/schedstat
    (stat's utime+stime count 10 ms ticks: too coarse for a 0.2 s burst)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
    except FileNotFoundError:
        return proc_cpu_seconds(pid)
    return total / 1e9
from netns import Namespace, veth  # noqa: E402

SENDER_IP, AGENT_IP = "10.77.0.1", "10.77.0.2"
SINK_PORT = 9
PAYLOAD = 64                     # UDP payload bytes: a 106-byte frame, all of it sampled
AGENT_CPU, SENDER_CPU = 1, 0

# The generator: sendmmsg(2) of up to 256 datagrams a call, paced to PPS (0: as fast as it
# goes); prints how many the kernel took.
GENERATOR = r"""
import ctypes, os, socket, sys, time
dst, port, count, size, pps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((dst, port))
payload = ctypes.create_string_buffer(b"x" * size, size)
iov = iovec(ctypes.addressof(payload), size)
BATCH = 256
msgs = (mmsghdr * BATCH)()
for m in msgs:
    m.hdr.iov = ctypes.pointer(iov)
    m.hdr.iovlen = 1
sent, start = 0, time.monotonic()
while sent < count:
    n = min(BATCH, count - sent)
    if pps:
        ahead = sent / pps - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        n = min(n, max(1, int(pps / 1000)))
    done = libc.sendmmsg(s.fileno(), msgs, n, 0)
    if done < 0:
        time.sleep(0.0001)
        continue
    sent += done
print(sent, round(time.monotonic() - start, 4), flush=True)
"""


@dataclass
class Figures:
    label: str
    rate: int
    packets: int          # that crossed the sampled interface
    samples: int          # flow samples the collector received from the burst
    cpu: float            # agent seconds (user + system) over the burst
    seconds: float        # how long the generator took
    system: float = 0.0   # the part of cpu spent in the kernel (stat's ticks: coarse)

    @property
    def us_per_sample(self) -> float:
        return self.cpu / self.samples * 1e6 if self.samples else float("nan")

    @property
    def delivered(self) -> float:
        expected = self.packets / self.rate
        return self.samples / expected if expected else float("nan")

    def line(self) -> str:
        kernel = self.system / self.samples * 1e6 if self.samples else float("nan")
        return (f"  {self.label:34s} N={self.rate:<4d} {self.packets:8,d} packets "
                f"{self.samples:7,d} samples  {self.us_per_sample:6.2f} us/sample "
                f"({kernel:4.2f} in the kernel)  delivered {self.delivered:6.1%}  "
                f"({self.packets / self.seconds / 1000:5.0f} kpps)")


class Collector(threading.Thread):
    """Counts flow samples (expanded 3, or compact 1) in the datagrams on one socket."""

    def __init__(self, sock: socket.socket):
        super().__init__(daemon=True)
        self.sock = sock
        self.samples = 0
        self.datagrams = 0
        self.last = time.monotonic()
        self.stopping = False

    def run(self) -> None:
        buf = bytearray(65536)
        sock = self.sock
        sock.setblocking(False)
        word = struct.Struct(">I").unpack_from
        while not self.stopping:
            # read in bursts, never waiting in recv(): a sleeping reader would make every
            # datagram the agent sends wake it up, a cost a remote collector does not add
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                time.sleep(0.05)
                continue
            except OSError:
                return
            if n < 28:
                continue
            off = 28 if word(buf, 4)[0] == 1 else 40       # the agent address's size
            count = word(buf, off - 4)[0]
            flows = 0
            for _ in range(count):
                if off + 8 > n:
                    break
                tag, length = word(buf, off)[0], word(buf, off + 4)[0]
                if tag in (1, 3):
                    flows += 1
                off += 8 + length
            self.datagrams += 1
            if flows:
                self.samples += flows
                self.last = time.monotonic()

    def quiet(self, seconds: float, timeout: float = 30.0) -> None:
        """Until no flow sample has come for ``seconds``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and time.monotonic() - self.last < seconds:
            time.sleep(0.05)


class Bench:
    """The two namespaces, the sink and the collector socket; agents come and go."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.sender = Namespace()
        self.agent_ns = Namespace()
        try:
            self._build()
        except BaseException:
            self.sender.delete()
            self.agent_ns.delete()
            raise

    def _build(self) -> None:
        self.ifname = "fpa0"
        veth(self.sender, "fps0", self.agent_ns, self.ifname, f"{SENDER_IP}/24", f"{AGENT_IP}/24")
        self.agent_ns.run(["ip", "neigh", "replace", SENDER_IP, "lladdr",
                           self.sender.mac("fps0"), "dev", self.ifname])
        self.sender.run(["ip", "neigh", "replace", AGENT_IP, "lladdr",
                         self.agent_ns.mac(self.ifname), "dev", "fps0"])

        def sink():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.bind((AGENT_IP, SINK_PORT))
            return s
        self.sink = in_netns(self.agent_ns.name, sink)

        def collector():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, 33, 256 << 20)    # SO_RCVBUFFORCE: a whole run
            s.bind(("127.0.0.1", 0))
            return s
        self.collector_sock = in_netns(self.agent_ns.name, collector)
        self.port = self.collector_sock.getsockname()[1]
        self.collector = Collector(self.collector_sock)
        self.collector.start()

    def rx_packets(self) -> int:
        return int(self.agent_ns.run(["cat", f"/sys/class/net/{self.ifname}/statistics/rx_packets"]).stdout)

    def send(self, count: int, pps: float = 0) -> float:
        out = self.sender.run(["taskset", "-c", str(SENDER_CPU), sys.executable, "-c", GENERATOR,
                               AGENT_IP, str(SINK_PORT), str(count), str(PAYLOAD), str(pps)]).stdout
        return float(out.split()[1])

    def close(self) -> None:
        self.collector.stopping = True
        self.collector.join(2)
        self.collector_sock.close()
        self.sink.close()
        self.sender.delete()
        self.agent_ns.delete()


def config(port: int, ifname: str, rate: int, sampler: str = "pcap", extra: str = "") -> str:
    return (f"sflow {{\n  collector {{ ip = 127.0.0.1 udpport = {port} }}\n  polling = 300\n"
            f"  {sampler} {{ dev = {ifname} sampling = {rate} }}\n{extra}}}\n")


class Reference:
    """hsflowd built from source, run the way AgentProcess runs ours."""

    def __init__(self, binary: str, workdir: str, conf: str, netns: str):
        self.binary = os.path.abspath(binary)
        self.dir = workdir
        self.conf = os.path.join(workdir, "hsflowd-ref.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.netns = netns
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Reference":
        cmd = ["ip", "netns", "exec", self.netns, "taskset", "-c", str(AGENT_CPU), self.binary, "-d",
               "-f", self.conf, "-p", os.path.join(self.dir, "ref.pid"),
               "-o", os.path.join(self.dir, "ref.auto"), "-l", os.path.dirname(self.binary)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "ref.stderr"), "w"))
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def agent_process(bench: Bench, conf: str, name: str):
    agent = AgentProcess(bench.workdir, conf, name=name, netns=bench.agent_ns.name)
    agent.command = _pinned(agent.command)
    return agent.start()


def _pinned(command: Callable[[], List[str]]) -> Callable[[], List[str]]:
    def pinned() -> List[str]:
        cmd = command()
        i = cmd.index(sys.executable)
        return cmd[:i] + ["taskset", "-c", str(AGENT_CPU)] + cmd[i:]
    return pinned


def measure(bench: Bench, process, label: str, rate: int, packets: int, pps: float = 0) -> Figures:
    """Warm up until samples come, then one measured burst."""
    c = bench.collector
    deadline = time.monotonic() + 60
    before = c.samples
    while c.samples == before and time.monotonic() < deadline:
        bench.send(max(200 * rate, 2000), pps=50_000)
        c.quiet(1.2, timeout=5)
    if c.samples == before:
        raise RuntimeError(f"{label}: no samples arrived")
    c.quiet(1.2)
    s0, p0, cpu0, sys0 = c.samples, bench.rx_packets(), cpu_seconds(process.pid), system_seconds(process.pid)
    took = bench.send(packets, pps)
    c.quiet(1.5)
    cpu = cpu_seconds(process.pid) - cpu0
    return Figures(label, rate, bench.rx_packets() - p0, c.samples - s0, cpu, took,
                   system_seconds(process.pid) - sys0)


def run_ours(bench: Bench, label: str, conf: str, rate: int, packets: int, pps: float = 0) -> Figures:
    agent = agent_process(bench, conf, label.replace(" ", "-"))
    try:
        return measure(bench, agent, label, rate, packets, pps)
    finally:
        agent.stop()


def run_reference(bench: Bench, label: str, conf: str, rate: int, packets: int, pps: float = 0) -> Figures:
    ref = Reference(os.environ["HSFLOWD"], bench.workdir, conf, bench.agent_ns.name).start()
    try:
        return measure(bench, ref, label, rate, packets, pps)
    finally:
        ref.stop()


# ---------------------------------------------------------------- the scenarios' extras

def vxlan_device(bench: Bench) -> None:
    bench.agent_ns.run(["ip", "link", "add", "fpvx0", "type", "vxlan", "id", "42", "dev", bench.ifname,
                        "remote", SENDER_IP, "dstport", "4789"])
    bench.agent_ns.run(["ip", "link", "set", "fpvx0", "up"])


def remove_vxlan(bench: Bench) -> None:
    bench.agent_ns.run(["ip", "link", "del", "fpvx0"], check=False)


class Docker:
    """A private dockerd with one running container (tests/docker_tools.py), for marks."""

    def __init__(self):
        import docker_tools
        why = docker_tools.why_not()
        if why:
            raise RuntimeError(why)
        self.daemon = docker_tools.Dockerd()
        self.daemon.start()
        self.daemon.import_busybox()
        self.daemon.run("fpc1")
        self.env = {"DOCKER_HOST": self.daemon.url}

    def close(self) -> None:
        self.daemon.stop()


def capacity(run: Callable[[str, str, int, int, float], Figures], conf: str, label: str,
             seconds: float) -> str:
    """The highest rate at N=1 with under 1 % of samples lost: first as fast as the
    generator goes (if nothing is lost there, the agent keeps up with the generator: the
    figure is a floor), else by bisection over paced bursts below that rate."""
    f = run(f"{label} flat out", conf, 1, int(250_000 * seconds), 0)
    top = f.packets / f.seconds
    print(f"    {f.line()}  {'ok' if f.delivered >= 0.99 else 'LOSS'}", flush=True)
    if f.delivered >= 0.99:
        return f"at least {top / 1000:.0f} kpps (the generator's most: nothing lost)"
    low, high, best = 10_000.0, top, None
    for _ in range(5):
        rate = (low + high) / 2
        f = run(f"{label} @{rate / 1000:.0f}k", conf, 1, int(rate * seconds), rate)
        ok = f.delivered >= 0.99
        print(f"    {f.line()}  {'ok' if ok else 'LOSS'}", flush=True)
        if ok:
            best, low = f.packets / f.seconds, rate
        else:
            high = rate
    return f"{best / 1000:.0f} kpps" if best else f"under {low / 1000:.0f} kpps"


def passing_traffic(bench: Bench) -> None:
    """Frames to a MAC that is not the agent's: its interface still hands them to the taps
    (a veth filters no MAC), and the stack drops them at once, so the generator's CPU,
    which also pays for delivering what it sends, goes further."""
    bench.sender.run(["ip", "neigh", "replace", AGENT_IP, "lladdr", "02:00:00:00:77:77",
                      "dev", "fps0"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="scenarios to run (default: all)")
    ap.add_argument("--packets", type=int, default=100_000, help="packets at N=1 (x3 at N=10, x10 at N=100)")
    ap.add_argument("--rate", type=float, default=0, help="packets a second (0: as fast as the generator goes)")
    ap.add_argument("--capacity-seconds", type=float, default=3.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 1
    if not shutil.which("taskset"):
        print("needs taskset (util-linux)", file=sys.stderr)
        return 1
    reference = os.environ.get("HSFLOWD")
    wanted = set(args.only or ())

    def want(name: str) -> bool:
        return not wanted or name in wanted

    print(f"bench_flow_path: agent on CPU {AGENT_CPU}, generator on CPU {SENDER_CPU}, "
          f"{PAYLOAD}-byte UDP payloads, Python {sys.version.split()[0]}"
          + (f", reference {reference}" if reference else ""), flush=True)
    workdir = tempfile.mkdtemp(prefix="bench-flow-")
    os.chmod(workdir, 0o755)
    bench = Bench(workdir)
    docker: Optional[Docker] = None
    try:
        def ours(label, conf, rate, packets, pps=0.0):
            return run_ours(bench, label, conf, rate, packets, pps)

        def theirs(label, conf, rate, packets, pps=0.0):
            return run_reference(bench, label, conf, rate, packets, pps)

        for rate in (1, 10, 100):
            packets = args.packets * {1: 1, 10: 3, 100: 10}[rate]
            if want(f"pcap-N{rate}"):
                conf = config(bench.port, bench.ifname, rate)
                print(ours("this agent, pcap", conf, rate, packets, args.rate).line(), flush=True)
                if reference:
                    print(theirs("hsflowd, pcap", conf, rate, packets, args.rate).line(), flush=True)
            if want(f"epcap-N{rate}"):
                conf = config(bench.port, bench.ifname, rate, "epcap")
                print(ours("this agent, epcap", conf, rate, packets, args.rate).line(), flush=True)
        packets = 3 * args.packets
        base = config(bench.port, bench.ifname, 10)
        if want("tcp-N10"):
            print(ours("this agent, pcap + tcp {}", base.replace("}\n}", "}\n  tcp { }\n}"), 10,
                       packets, args.rate).line(), flush=True)
        if want("vxlan-N10"):
            vxlan_device(bench)
            try:
                print(ours("this agent, pcap + a VXLAN device", base, 10, packets, args.rate).line(),
                      flush=True)
            finally:
                remove_vxlan(bench)
        if want("docker-N10") or want("all-N10"):
            try:
                docker = Docker()
            except Exception as e:
                print(f"  (no docker scenarios: {e})")
        if docker is not None:
            marks = base.replace("}\n}", "}\n  docker { markTraffic = on }\n}")
            if want("docker-N10"):
                f = run_with_env(bench, "this agent, pcap + docker marks", marks, 10, packets,
                                 args.rate, docker.env)
                print(f.line(), flush=True)
            if want("all-N10"):
                vxlan_device(bench)
                try:
                    everything = marks.replace("}\n}", "}\n  tcp { }\n}")
                    f = run_with_env(bench, "this agent, pcap + tcp, marks, VXLAN", everything, 10,
                                     packets, args.rate, docker.env)
                    print(f.line(), flush=True)
                finally:
                    remove_vxlan(bench)
        if want("capacity"):
            conf = config(bench.port, bench.ifname, 1)
            passing_traffic(bench)
            print("  capacity at N=1 (under 1 % of samples lost, one core; frames passing "
                  "through, to another MAC):", flush=True)
            mine = capacity(ours, conf, "this agent", args.capacity_seconds)
            print(f"  this agent: {mine}", flush=True)
            if reference:
                ref = capacity(theirs, conf, "hsflowd", args.capacity_seconds)
                print(f"  hsflowd:    {ref}", flush=True)
    finally:
        if docker is not None:
            docker.close()
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run_with_env(bench: Bench, label: str, conf: str, rate: int, packets: int, pps: float,
                 env: dict) -> Figures:
    agent = AgentProcess(bench.workdir, conf, name=label.replace(" ", "-"), netns=bench.agent_ns.name,
                         env=env)
    agent.command = _pinned(agent.command)
    agent.start()
    try:
        return measure(bench, agent, label, rate, packets, pps)
    finally:
        agent.stop()


if __name__ == "__main__":
    sys.exit(main())
