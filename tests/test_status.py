"""`hsflowd status`: the running agent's own figures, compared with what a collector got."""

from __future__ import annotations

import json
import os
import re
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


@pytest.mark.netns
def test_many_refusing_collectors_make_one_line_and_keep_their_counts(netns, agents, receivers):
    """2,000 collectors on ports where nothing listens, between two that listen, in a
    namespace of the test's own (icmp_ratemask=0 there: every refusal is answered).  For a
    few seconds of a datagram a second: one summary line, naming the count, where there
    were 2,000 lines a minute; the listening two get every datagram; ``hsflowd status``
    has exactly one error per datagram for each refusing collector and none for the two."""
    ns = netns()
    ns.run("sysctl -q -w net.ipv4.icmp_ratemask=0")
    good = [receivers(netns=ns.name) for _ in range(2)]
    ports = [p for p in range(20000, 22002) if p not in {r.port for r in good}][:2000]
    collectors = ([("127.0.0.1", good[0].port)] + [("127.0.0.1", p) for p in ports[:1000]]
                  + [("127.0.0.1", good[1].port)] + [("127.0.0.1", p) for p in ports[1000:]])
    agent = agents(config_text(collectors, polling=1, extra="agentIP = 127.0.0.1"),
                   netns=ns.name)
    got = [r.collect(15.0, until=lambda got: len(got) >= 4) for r in good]
    assert all(len(g) >= 4 for g in got), agent.stderr()
    before = [len(g) + len(r.drain()) for g, r in zip(got, good)]
    s = status(agent)
    after = [b + len(r.drain()) for b, r in zip(before, good)]
    for r in good:                          # every datagram, in order
        seqs = [x.datagram.sequence_number for x in r.received]
        assert seqs == list(range(1, len(seqs) + 1))
    cs = s["collectors"]
    for c, b, a in zip((cs[0], cs[1001]), before, after):
        assert c["errors"] == 0 and b <= c["datagrams"] <= a, (c, b, a)
    refusing = cs[1:1001] + cs[1002:]
    assert all(c["errors"] == c["datagrams"] >= 4 for c in refusing), \
        [c for c in refusing if c["errors"] != c["datagrams"]][:3]
    lines = [l for l in agent.stderr().splitlines() if "collectors had errors" in l]
    assert len(lines) == 1, lines       # the next comes a minute after the first
    assert re.search(r" 2000 of 2002 collectors had errors in the last \d+ s \((\d+) in all",
                     lines[0]), lines[0]
    assert int(re.search(r"\((\d+) in all", lines[0]).group(1)) % 2000 == 0
    assert "ECONNREFUSED" in lines[0] and "and 1997 more" in lines[0]
    assert len(agent.stderr().splitlines()) < 20, agent.stderr()[-2000:]


def test_status_of_an_agent_that_does_not_run(tmp_path):
    res = run_hsflowd("status", "--json", "-p", str(tmp_path / "none.pid"))
    assert res.returncode == 3 and json.loads(res.stdout) == {"running": False}
