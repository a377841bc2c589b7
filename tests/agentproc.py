"""The agent as a real process: a config file in a temporary directory, ``python3 -m hsflowd``
started (optionally inside a network namespace) and stopped by its PID, and UDP receivers
that stand in for collectors.

Used by the end-to-end tests (tests/test_agent_*.py) and by bench/bench_agent.py.  Nothing
here uses a broad kill: every process is signalled by the PID this module started or read
from the agent's own pidfile.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hsflowd.sflow import decode_datagram  # noqa: E402


def agent_env() -> dict:
    """The environment for a child ``python3 -m hsflowd``: this checkout first on the path."""
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + old if old else "")
    env.pop("JOURNAL_STREAM", None)     # timestamps on the log lines, as on a terminal
    env["PYTHONUNBUFFERED"] = "1"
    return env


def hsflowd(*args: str) -> List[str]:
    return [sys.executable, "-m", "hsflowd", *args]


def run_hsflowd(*args: str, netns: Optional[str] = None, timeout: float = 20.0,
                **kw) -> subprocess.CompletedProcess:
    """Run one hsflowd command (check, status, stop, ...) to completion."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run(prefix + hsflowd(*args), capture_output=True, text=True,
                          env=agent_env(), timeout=timeout, **kw)


def config_text(collectors: Iterable[Union[Tuple[str, int], str]], polling: Optional[int] = 1,
                extra: str = "") -> str:
    """An hsflowd.conf: one collector block per (ip, port) (a str is used as the block's
    body as it is), ``polling=`` unless None, and ``extra`` lines inside ``sflow { }``."""
    lines = ["sflow {"]
    if polling is not None:
        lines.append(f"  polling = {polling}")
    for c in collectors:
        body = c if isinstance(c, str) else f"ip = {c[0]} udpport = {c[1]}"
        lines.append(f"  collector {{ {body} }}")
    if extra:
        lines.extend("  " + line for line in extra.strip("\n").splitlines())
    lines.append("}")
    return "\n".join(lines) + "\n"


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line of ``text`` that contains ``needle``."""
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    raise ValueError(f"{needle!r} not in the text")


# ---------------------------------------------------------------- the agent process

class AgentProcess:
    """``python3 -m hsflowd -d -f CONFIG -p PIDFILE -o AUTOFILE`` with its files in ``workdir``.

    stderr goes to a file (``stderr()`` reads it at any time), stdout is discarded.  With
    ``netns`` the command runs under ``ip netns exec NS``, which execs the agent in place, so
    ``pid`` is the agent's own PID either way.
    """

    def __init__(self, workdir: Union[str, Path], config: str, name: str = "agent",
                 netns: Optional[str] = None, args: Sequence[str] = ("-d",),
                 auto: bool = True, env: Optional[dict] = None):
        self.dir = Path(workdir)
        self.name = name
        self.netns = netns
        self.args = list(args)
        self.config_path = self.dir / f"{name}.conf"
        self.pidfile = self.dir / f"{name}.pid"
        self.auto_path = self.dir / f"{name}.auto"
        self.stderr_path = self.dir / f"{name}.stderr"
        self.use_auto = auto
        self.env = env or {}          # added to agent_env() (e.g. DOCKER_HOST)
        self.proc: Optional[subprocess.Popen] = None
        self.started = 0.0          # time.monotonic() just before the process was created
        self.write_config(config)

    def write_config(self, text: str) -> None:
        """Replace the config file (in one step, as an editor that renames would)."""
        temp = self.config_path.with_suffix(".tmp")
        temp.write_text(text)
        os.replace(temp, self.config_path)

    @property
    def config(self) -> str:
        return self.config_path.read_text()

    def command(self) -> List[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        cmd = hsflowd(*self.args, "-f", str(self.config_path), "-p", str(self.pidfile))
        if self.use_auto:
            cmd += ["-o", str(self.auto_path)]
        return prefix + cmd

    def start(self) -> "AgentProcess":
        err = open(self.stderr_path, "w")
        try:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         env={**agent_env(), **self.env})
        finally:
            err.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def auto(self) -> str:
        return self.auto_path.read_text()

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def handles_signals(self) -> bool:
        """The agent (not yet ``ip netns exec`` or the interpreter starting) has its SIGHUP
        and SIGTERM handlers in place: /proc/PID/status SigCgt."""
        try:   # neither ip(8) nor a starting interpreter catches either
            with open(f"/proc/{self.pid}/status") as f:
                caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
        except (FileNotFoundError, StopIteration):
            return False
        wanted = (1 << (signal.SIGHUP - 1)) | (1 << (signal.SIGTERM - 1))
        return caught & wanted == wanted

    def wait(self, timeout: float) -> Optional[int]:
        """The exit status, or None if still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        """SIGTERM by PID, then SIGKILL by PID if it does not go; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def wait_for_log(self, needle: str, timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.stderr():
                return True
            time.sleep(0.05)
        return needle in self.stderr()


class AgentFactory:
    """Makes AgentProcess objects and stops every one of them (by PID) at the end.

    Their files go in a directory of their own that ``nobody`` can read (the agent gives up
    root once started and reads its config file again on SIGHUP; pytest's tmp_path is
    root-only), removed at the end."""

    def __init__(self, workdir: Union[str, Path, None] = None):
        self.workdir = Path(tempfile.mkdtemp(prefix="hsft-agent-"))
        os.chmod(self.workdir, 0o755)
        self.agents: List[AgentProcess] = []
        self.extra_pids: List[int] = []     # daemons started by `hsflowd start`

    def __call__(self, config: str, name: Optional[str] = None, start: bool = True,
                 **kw) -> AgentProcess:
        name = name or f"agent{len(self.agents) + 1}"
        agent = AgentProcess(self.workdir, config, name=name, **kw)
        self.agents.append(agent)
        if start:
            agent.start()
        return agent

    def adopt_pid(self, pid: int) -> None:
        self.extra_pids.append(pid)

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        for pid in self.extra_pids:
            kill_pid(pid)
        shutil.rmtree(self.workdir, ignore_errors=True)


def kill_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM one process that is not our child, then SIGKILL if it lingers."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# ---------------------------------------------------------------- collectors

class Received(NamedTuple):
    at: float           # time.monotonic() when it was read from the socket
    data: bytes
    datagram: object    # hsflowd.sflow.Datagram
    extra: object       # whatever the receiver's ``probe`` returned right after receipt


def in_netns(name: str, make: Callable[[], object]) -> object:
    """Run ``make`` in a thread that joined network namespace ``name``; its result.

    A socket made this way stays in that namespace whichever thread uses it afterwards."""
    from pyroute2 import netns as pr_netns

    result: list = []

    def worker():
        try:
            pr_netns.setns(name)
            result.append(make())
        except BaseException as e:  # handed to the caller
            result.append(e)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def udp_socket(host: str = "127.0.0.1", netns: Optional[str] = None) -> socket.socket:
    """A UDP socket bound to a free port on ``host`` (in ``netns`` if given)."""
    def make():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((host, 0))
        return s
    return in_netns(netns, make) if netns else make()


def free_udp_port(host: str = "127.0.0.1", netns: Optional[str] = None) -> int:
    """A port nothing listens on (bound, then closed)."""
    s = udp_socket(host, netns)
    port = s.getsockname()[1]
    s.close()
    return port


class Receiver:
    """A collector: receives and decodes datagrams on one UDP socket.

    ``probe`` (optional) is called right after each datagram is read, with the decoded
    datagram, and its result kept with it: the moment to read /proc or sysfs to compare.
    """

    def __init__(self, sock: socket.socket, probe: Optional[Callable[[object], object]] = None):
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.probe = probe
        self.received: List[Received] = []

    def recv(self, timeout: float) -> Optional[Received]:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65535)
        except (socket.timeout, BlockingIOError):
            return None
        at = time.monotonic()
        dg = decode_datagram(data)
        extra = self.probe(dg) if self.probe else None
        r = Received(at, data, dg, extra)
        self.received.append(r)
        return r

    def first(self, timeout: float) -> Optional[Received]:
        return self.recv(timeout)

    def collect(self, seconds: float, until: Optional[Callable[[List[Received]], bool]] = None
                ) -> List[Received]:
        """Everything that arrives within ``seconds`` (or until ``until(all so far)``)."""
        deadline = time.monotonic() + seconds
        got: List[Received] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r = self.recv(left)
            if r is not None:
                got.append(r)
                if until is not None and until(got):
                    break
        return got

    def drain(self) -> List[Received]:
        """Whatever is queued now, without waiting."""
        got = []
        while True:
            r = self.recv(0.001)
            if r is None:
                return got
            got.append(r)

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------- reading datagrams

def counter_samples(dg) -> list:
    """The counter samples (expanded or compact) of one decoded datagram."""
    return [s for s in dg.samples if hasattr(s, "counters")]


def source_of(sample) -> Tuple[int, int]:
    if hasattr(sample, "source_id_type"):
        return sample.source_id_type, sample.source_id_index
    return sample.source_id >> 24, sample.source_id & 0xFFFFFF


def records_by_tag(sample) -> dict:
    """{format: record} of one counter sample (standard enterprise 0)."""
    from hsflowd.sflow.tlv import split_tag
    out = {}
    for rec in sample.counters:
        tag = getattr(rec, "tag", None)
        if tag is None:
            tag = (rec.enterprise << 12) | rec.format
        enterprise, fmt = split_tag(tag)
        out[fmt if enterprise == 0 else (enterprise, fmt)] = rec
    return out


def record_tags(sample) -> List[int]:
    from hsflowd.sflow.tlv import split_tag
    tags = []
    for rec in sample.counters:
        tag = getattr(rec, "tag", None)
        if tag is None:
            tag = (rec.enterprise << 12) | rec.format
        tags.append(split_tag(tag)[1])
    return tags


def samples_from(received: Iterable[Received], source: Tuple[int, int]):
    """(Received, sample) for every counter sample of ``source``, in arrival order."""
    for r in received:
        for s in counter_samples(r.datagram):
            if source_of(s) == source:
                yield r, s


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def assert_period(times: Sequence[float], period: float, what: str = "samples") -> None:
    """Arrival ``times`` come every ``period`` seconds: the mean gap from the first to the
    last within 20 % of it.  The agent's ticks are anchored (one late tick does not move the
    next), so a busy machine that delays one arrival by up to 20 % of the span (0.6 s over
    three 1-s gaps) stays inside, while half or twice the period (the faults: a setting not
    applied, a sample sent twice) is far outside.  Gaps one by one would measure the
    machine's scheduling instead."""
    assert len(times) >= 3, f"{what}: too few to tell a period: {times}"
    mean = (times[-1] - times[0]) / (len(times) - 1)
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    assert 0.8 * period <= mean <= 1.2 * period, f"{what}: every {mean:.2f} s, not {period} s: {gaps}"


# ---------------------------------------------------------------- process figures

def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_wakeups(pid: int) -> int:
    """Times the process's threads went to sleep of their own accord (voluntary context
    switches, /proc/PID/task/*/status): one per wait in select() or a blocking read."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except FileNotFoundError:   # a thread that ended meanwhile
            pass
    return total


class Held(NamedTuple):
    """What a process holds: its threads and its open file descriptors."""
    threads: int
    fds: int


def held(pid: int) -> Held:
    return Held(len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd")))


def _socket_kinds(pid: int) -> dict:
    """Socket inode -> what it is (its family, and its path or protocol), from the process's
    /proc/PID/net tables, for a failure message that says which socket stayed open."""
    kinds = {}
    tables = {"unix": (6, None), "netlink": (9, 1), "packet": (8, 3), "udp": (9, 1),
              "udp6": (9, 1), "tcp": (9, 1), "tcp6": (9, 1), "raw": (9, 1)}
    for table, (inode_at, what_at) in tables.items():
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) <= inode_at:
                continue
            what = (cols[7] if len(cols) > 7 else "") if what_at is None else cols[what_at]
            kinds[cols[inode_at]] = f"{table} {what}".strip()
    return kinds


def fd_targets(pid: int) -> List[str]:
    """``fd:target`` for each descriptor (a socket with its family and path or protocol),
    for a failure message."""
    kinds = _socket_kinds(pid)
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:   # closed meanwhile
            continue
        if target.startswith("socket:["):
            target += " " + kinds.get(target[8:-1], "?")
        out.append(f"{fd}:{target}")
    return out


def settled(pid: int, seconds: float = 1.5) -> Held:
    """What the process holds between its polls: the fewest threads and descriptors seen
    over ``seconds``.  A poll holds a file (/proc/cpuinfo for the CPU's speed, a cgroup's
    cpu.stat) for a moment, and a look-up may hold a thread; a leak is there at every look."""
    seen = [held(pid)]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
        seen.append(held(pid))
    return Held(min(h.threads for h in seen), min(h.fds for h in seen))


def assert_holds(pid: int, wanted: Held, seconds: float = 5.0,
                 context: Callable[[], str] = lambda: "") -> None:
    """Within ``seconds``, one look sees the process hold exactly ``wanted`` (``settled``'s
    figure before the event, plus what the event should add): what it closes and ends in
    the background has that long, and a poll's file in flight at one look is gone at the next."""
    ok = wait_until(lambda: held(pid) == wanted, seconds, step=0.05)
    assert ok, (f"holds {held(pid)}, not {wanted}:\n" + "\n".join(fd_targets(pid))
                + f"\n{context()}")


@dataclass
class Activity:
    """What a process did over a window: its share of one core and its wake-ups a second."""
    share: float
    wakeups: float

    def __str__(self) -> str:
        return f"{self.share:.1%} of a core, {self.wakeups:.1f} wake-ups/s"


def measure_activity(pid: int, window: float = 5.0) -> Activity:
    return activity_during(pid, lambda: time.sleep(window))[1]


def activity_during(pid: int, fn: Callable[[], object]) -> Tuple[object, Activity]:
    """``fn()``'s result, and what the process did while it ran (a test that waits for
    datagrams can measure the agent at the same time)."""
    c0, w0, t0 = proc_cpu_seconds(pid), proc_wakeups(pid), time.monotonic()
    result = fn()
    elapsed = time.monotonic() - t0
    return result, Activity((proc_cpu_seconds(pid) - c0) / elapsed,
                            (proc_wakeups(pid) - w0) / elapsed)


# An idle agent sleeps in its loop between ticks: one wake-up a second, a few more for
# events.  Its CPU share is bounded loosely on purpose: on these virtual machines a process
# that wakes from a one-second sleep pays milliseconds of cold caches (ten json.dumps calls
# take 2.5 ms after a sleep and 0.01 ms hot), so a tight absolute figure measures the
# machine, not the agent.  The faults this catches are far from the bound: a descriptor
# reported readable and never read spins at ~100 % with no wake-ups at all; a retry timer
# gone wild wakes hundreds of times a second.
IDLE_WAKEUPS_PER_S = 5.0
IDLE_SHARE = 0.25


def assert_idle(pid: int, window: float = 5.0, rest: Optional[Activity] = None,
                context: Callable[[], str] = lambda: "") -> Activity:
    """The process is idle over ``window``; with ``rest`` (its own activity at rest before
    the event), back where it was: no more than twice that share plus 2 points."""
    return check_idle(measure_activity(pid, window), rest, context)


def check_idle(now: Activity, rest: Optional[Activity] = None,
               context: Callable[[], str] = lambda: "") -> Activity:
    """``assert_idle`` of a measure already made."""
    assert now.wakeups <= IDLE_WAKEUPS_PER_S, f"not idle: {now}: {context()}"
    assert now.share < IDLE_SHARE, f"not idle: {now}: {context()}"
    if rest is not None:
        assert now.share <= 2 * rest.share + 0.02, f"not back at rest ({rest}): {now}: {context()}"
    return now


def proc_memory_kb(pid: int) -> Tuple[int, int]:
    """(VmRSS, VmHWM) of one process in kB (/proc/PID/status)."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


# ---------------------------------------------------------------- pytest fixtures

try:
    import pytest
except ImportError:     # the benchmark imports this module without pytest
    pytest = None

if pytest is not None:
    @pytest.fixture
    def agents(tmp_path):
        """Factory: ``agents(config_text, name=..., netns=...)`` starts an agent; every agent
        (and every daemon handed to ``adopt_pid``) is stopped by its PID at the end."""
        factory = AgentFactory(tmp_path)
        yield factory
        factory.close()

    @pytest.fixture
    def receivers():
        """Factory: ``receivers(netns=None, host="127.0.0.1", probe=None)`` -> Receiver;
        every socket is closed at the end."""
        made: List[Receiver] = []

        def make(netns: Optional[str] = None, host: str = "127.0.0.1",
                 probe: Optional[Callable] = None) -> Receiver:
            r = Receiver(udp_socket(host, netns), probe)
            made.append(r)
            return r

        yield make
        for r in made:
            r.close()
