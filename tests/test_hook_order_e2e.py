"""Flow hooks in one fixed order, whatever order their modules start, reload or restart in
(issue 16, item 1), with the agent as a real process.

The host talks TCP to a container of a dockerd of the test's own (tests/docker_tools.py);
the agent samples the dockerd's bridge 1-in-1 with ``tcp {}`` on.  tcp's hook keeps the
samples of local connections until the kernel's tcp_info comes, then sends them past the
hooks after it: docker's markTraffic (2210) must run before it, or the samples tcp keeps
go out without 2210.  docker's hook comes into being after tcp's twice here: when a reload
turns markTraffic on (tcp's hook is there from the start), and when the docker module is
restarted after its hook failed once (``failpoint.py`` makes the real agent's
Marks.mark raise one time).  After each step: host-container samples arrive, some carry
2209, and every one that carries 2209 carries 2210 too.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest

import docker_tools
from agentproc import (AgentProcess, Receiver, assert_idle, config_text, udp_socket,
                       wait_until)
from hsflowd.frames import TCP, walk_frame
from hsflowd.sflow import FlowSample

pytestmark = [pytest.mark.netns, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
PORT = 8080


@pytest.fixture(scope="module")
def dockerd():
    why = docker_tools.why_not()
    if why:
        pytest.skip(f"dockerd cannot run here: {why}")
    d = docker_tools.Dockerd()
    try:
        d.start()
        d.import_busybox()
        yield d
    finally:
        d.stop()


class FailpointAgent(AgentProcess):
    """The agent, with ``target`` made to fail once whenever ``trigger`` is created."""

    def __init__(self, *args, target: str, trigger: Path, **kw):
        self.target, self.trigger = target, trigger
        super().__init__(*args, **kw)

    def command(self):
        cmd = super().command()
        i = cmd.index("-m")
        return cmd[:i] + [str(HERE / "failpoint.py"), self.target, str(self.trigger), "--"] + cmd[i + 2:]


class Talker(threading.Thread):
    """One TCP connection from the host to the container's echo server, a line every 20 ms."""

    def __init__(self, address: str):
        super().__init__(daemon=True)
        self.sock = socket.create_connection((address, PORT), timeout=10)
        self.local = self.sock.getsockname()
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            try:
                self.sock.sendall(b"hsflowd hook order\n")
                self.sock.recv(4096)
            except OSError:
                return
            time.sleep(0.02)

    def stop(self) -> None:
        self.stopping = True
        self.join(5)
        self.sock.close()


def conversation(received, since: float, host: bytes, box: bytes):
    """The flow samples of the host-container connection that arrived after ``since``:
    [(has 2209, has 2210)]."""
    out = []
    for r in received:
        if r.at < since:
            continue
        for s in r.datagram.samples:
            if not isinstance(s, FlowSample):
                continue
            tags = {rec.tag for rec in s.flow_records}
            header = next((rec for rec in s.flow_records if rec.tag == 1), None)
            if header is None:
                continue
            pkt = walk_frame(header.header, 0, len(header.header), header.header_protocol)
            if pkt.ip_protocol == TCP and {pkt.src_ip, pkt.dst_ip} == {host, box}:
                out.append((2209 in tags, 2210 in tags))
    return out


def test_tcp_and_marks_in_order_across_reload_and_restart(dockerd, tmp_path):
    box = dockerd.run("hook-order", command=["nc", "-ll", "-p", str(PORT), "-e", "cat"])
    box_ip = next(n["IPAddress"] for n in box["NetworkSettings"]["Networks"].values())
    host_ip = dockerd.bridge_ip.split("/")[0]
    receiver = Receiver(udp_socket())
    conf = lambda mark: config_text([("127.0.0.1", receiver.port)], polling=20, extra=(
        f"pcap {{ dev = {dockerd.bridge} sampling = 1 }}\n"
        f"tcp {{ }}\ndocker {{ markTraffic = {mark} }}\n"))
    trigger = tmp_path / "fail-now"
    agent = FailpointAgent(tmp_path, conf("off"), target="hsflowd.virt.marks:Marks.mark",
                           trigger=trigger, env={"DOCKER_HOST": dockerd.url})
    agent.start()
    talker = None
    try:
        assert wait_until(lambda: socket_answers(box_ip), 15), "the echo server does not answer"
        talker = Talker(box_ip)
        talker.start()
        host, boxp = socket.inet_aton(host_ip), socket.inet_aton(box_ip)

        def step(why: str, marked: bool) -> None:
            receiver.drain()      # what was sent before this step (read late, stamped late)
            since = time.monotonic()

            def enough(_got=None) -> bool:
                seen = conversation(receiver.received, since, host, boxp)
                return sum(t for t, _ in seen) >= 20 and (not marked or sum(m for _, m in seen) >= 20)
            receiver.collect(20, until=enough)
            seen = conversation(receiver.received, since, host, boxp)
            with_2209 = [m for t, m in seen if t]
            assert with_2209, f"{why}: no sample with 2209 in {len(seen)}: {status(agent)}"
            if marked:
                assert all(with_2209), (f"{why}: {with_2209.count(False)} of {len(with_2209)} "
                                        f"samples with 2209 lack 2210: {status(agent)}")
                assert sum(m for _, m in seen) >= 20, f"{why}: too few samples with 2210"
            else:
                assert not any(m for _, m in seen), f"{why}: 2210 with markTraffic off"

        step("start, markTraffic off", marked=False)
        agent.write_config(conf("on"))
        agent.signal(signal.SIGHUP)
        assert agent.wait_for_log("configuration revision 2", 10)
        time.sleep(1.5)          # samples tcp held from before the reload have gone out
        step("reload turned markTraffic on (docker's hook added after tcp's)", marked=True)
        trigger.write_text("")
        assert wait_until(lambda: not trigger.exists(), 10), "the hook was never called"
        assert agent.wait_for_log("module docker failed in flow hook", 5), agent.stderr()
        assert agent.wait_for_log("module docker: starting again", 10), agent.stderr()
        time.sleep(2)            # restarted: connected and listed again
        step("docker restarted after its hook failed", marked=True)
        assert agent.alive()
        talker.stop()
        talker = None
        time.sleep(2)            # the conversation's last samples and tcp's last look-ups
        assert_idle(agent.pid, context=agent.stderr)
    finally:
        if talker is not None:
            talker.stop()
        agent.stop()
        receiver.close()
        dockerd.remove_container(box["Id"])


def status(agent) -> str:
    """What the agent says of itself (for a failure's message)."""
    from agentproc import run_hsflowd
    return run_hsflowd("status", "-p", str(agent.pidfile)).stdout + agent.stderr()[-1500:]


def socket_answers(address: str) -> bool:
    try:
        with socket.create_connection((address, PORT), timeout=1) as s:
            s.sendall(b"x\n")
            return s.recv(16) == b"x\n"
    except OSError:
        return False
