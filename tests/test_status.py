"""`hsflowd status`: the running agent's own figures, compared with what a collector got."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from agentproc import agents, config_text, free_udp_port, receivers, run_hsflowd  # noqa: F401
from lifecycle import Rig

KEYS = {"revision", "uptime", "agent_address", "collectors", "samplers", "modules"}


def status(agent) -> dict:
    res = run_hsflowd("status", "--json", "-p", str(agent.pidfile))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.netns
def test_status_figures_match_what_the_collector_received(netns, agents):
    rig = Rig(netns, agents, "pcap", rate=10, polling=0)   # no counters: quiet when idle
    try:
        rig.check_sampling(rig.agent.started, 10)
        time.sleep(1.5)                 # the last samples flushed
        rig.receiver.drain()
        got = rig.receiver.received
        s = status(rig.agent)
        assert KEYS <= set(s)
        assert s["revision"] == 1 and s["uptime"] > 0
        assert s["agent_address"] == "10.231.20.1"
        [collector] = s["collectors"]
        assert collector["port"] == rig.receiver.port
        assert collector["datagrams"] == len(got) and collector["errors"] == 0
        flows = [x for r in got for x in r.datagram.samples if hasattr(x, "flow_records")]
        [sampler] = s["samplers"]
        assert (sampler["ifname"], sampler["sampling_rate"]) == ("vh", 10)
        assert sampler["samples"] == len(flows) == max(f.sequence_number for f in flows)
        assert sampler["drops"] == 0
        assert {m["name"] for m in s["modules"]} == {"host", "interfaces", "pcap", "tunnels"}
        assert all(m["error"] is None for m in s["modules"])
        rig.reload(rig.config(rate=20))
        time.sleep(1.0)
        s = status(rig.agent)
        assert s["revision"] == 2 and s["samplers"][0]["sampling_rate"] == 20
        sock = str(rig.agent.pidfile)[:-4] + ".sock"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600   # root only
    finally:
        rig.close()


def test_status_counts_errors_of_a_collector_on_a_closed_port(agents, receivers):
    r = receivers()
    closed = free_udp_port()
    agent = agents(config_text([("127.0.0.1", closed), ("127.0.0.1", r.port)], polling=1))
    assert r.first(10.0) is not None
    assert agent.wait_for_log("ECONNREFUSED", 10.0), agent.stderr()
    s = status(agent)
    dead, alive = s["collectors"]
    assert dead["errors"] >= 1 and "ECONNREFUSED" in dead["last_error"]
    assert alive["errors"] == 0 and alive["datagrams"] >= 1
    text = run_hsflowd("status", "-p", str(agent.pidfile))
    assert text.returncode == 0 and f"collector 127.0.0.1:{closed}" in text.stdout


def test_status_of_an_agent_that_does_not_run(tmp_path):
    res = run_hsflowd("status", "--json", "-p", str(tmp_path / "none.pid"))
    assert res.returncode == 3 and json.loads(res.stdout) == {"running": False}
