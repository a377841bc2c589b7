"""Open vSwitch sync: the planning rules on plain data, then against a real ovsdb-server.

Every OVSDB test runs its own ovsdb-server on a fresh database under /tmp (ovs_helpers) and
checks the result the way a person would, with ovs-vsctl.  The last test adds ovs-vswitchd
in a namespace and checks that OVS really sends sFlow with what we configured.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from hsflowd import ovs as hovs
from hsflowd.ovs import OvsSync, SflowSettings, default_remote, plan
from hsflowd.sflow import decode_datagram
from hsflowd.sflow.samples import FlowSampleCompact

from netns import unique, veth
from ovs_helpers import OvsdbServer, Vswitchd, missing_tools, stop_pid, wait_for

try:
    import ovs.db.idl  # noqa: F401
    WHY_SKIP = missing_tools()
except ImportError:
    WHY_SKIP = "the ovs Python package is not installed (pip install ovs)"
needs_ovsdb = pytest.mark.skipif(WHY_SKIP is not None, reason=str(WHY_SKIP))

S = SflowSettings(agent="eth0", header=128, polling=20, sampling=400, targets=("10.0.0.1:6343",))
U1, U2 = uuid.UUID(int=1), uuid.UUID(int=2)


def row(settings=S, **external_ids):
    return dict(settings.columns(), external_ids=external_ids)


# ---- plan(): what to change, decided from plain data ----

def test_plan_creates_one_row_for_every_bridge():
    p = plan({"br1": None, "br0": None}, {}, S.columns())
    assert p.row is None and p.mark and p.attach == ["br0", "br1"]
    assert p.set_columns == S.columns()


def test_plan_adopts_the_first_bridges_row_and_repoints_the_rest():
    rows = {U1: dict(row(), sampling=[5]), U2: row()}
    p = plan({"br0": U2, "br1": U1, "br2": None}, rows, S.columns())
    assert p.row == U2 and p.mark and p.attach == ["br1", "br2"] and not p.set_columns


def test_plan_prefers_our_row_and_writes_only_changed_columns():
    theirs, ours = row(), dict(row(hsflowd="managed"), sampling=[7])
    p = plan({"br0": U1, "br1": U2}, {U1: theirs, U2: ours}, S.columns())
    assert p.row == U2 and not p.mark and p.attach == ["br0"]
    assert p.set_columns == {"sampling": [400]}
    assert "set sampling=400" in p.describe()


def test_plan_is_empty_when_ovs_matches_and_with_no_bridges():
    assert not plan({"br0": U1, "br1": U1}, {U1: row(hsflowd="managed")}, S.columns())
    assert not plan({}, {}, S.columns())


def test_plan_clear_detaches_only_bridges_on_our_row():
    rows = {U1: row(hsflowd="managed"), U2: row(owner="ops")}
    p = plan({"br0": U1, "br1": U2, "br2": U1, "br3": None}, rows, None)
    assert p.detach == ["br0", "br2"] and not p.attach and not p.set_columns


def test_settings_columns_and_when_they_mean_clear():
    s = SflowSettings("", 64, 0, 0, ("[2001:db8::1]:6343", "10.0.0.2:6343"))
    assert s.columns() == {"agent": [], "header": [64], "polling": [0], "sampling": [0],
                           "targets": ["10.0.0.2:6343", "[2001:db8::1]:6343"]}
    assert not s.active                                         # sampling and polling 0
    assert not SflowSettings("eth0", 128, 20, 400, ()).active   # nowhere to send
    assert SflowSettings("eth0", 128, 0, 400, ("a:1",)).active


def test_default_remote_follows_ovs_rundir_like_ovs_vsctl(monkeypatch):
    monkeypatch.delenv("OVS_RUNDIR", raising=False)
    assert default_remote() == "unix:/var/run/openvswitch/db.sock"
    monkeypatch.setenv("OVS_RUNDIR", "/tmp/x")
    assert default_remote() == "unix:/tmp/x/db.sock"
    assert OvsSync().remote == "unix:/tmp/x/db.sock"


def test_without_the_ovs_package_it_says_so_once_and_does_nothing(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "ovs", None)    # makes "import ovs..." fail
    sync = OvsSync("unix:/nonexistent/db.sock")
    with caplog.at_level(logging.WARNING, logger="hsflowd.ovs"):
        sync.start()
        sync.update(S)
        sync.stop()
    assert sync.status == "unavailable: " + hovs.NO_OVS
    assert [r.getMessage() for r in caplog.records] == [
        "the ovs Python package is not installed (pip install ovs); ovs {} ignored"]


# ---- against a real ovsdb-server ----

@pytest.fixture
def server():
    srv = OvsdbServer()
    try:
        srv.start()
        srv.vsctl("init", "--", "add-br", "br0", "--", "add-br", "br1")
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture
def make_sync():
    made = []

    def make(remote, settings=S):
        sync = OvsSync(remote)
        made.append(sync)
        sync.update(settings)
        sync.start()
        return sync

    yield make
    for sync in made:
        sync.stop(cleanup=False, timeout=2)


def as_list(value):
    return value if isinstance(value, list) else [value]


def matches(r, s=S):
    return (r["agent"] == s.agent and r["header"] == s.header and r["polling"] == s.polling
            and r["sampling"] == s.sampling and sorted(as_list(r["targets"])) == sorted(s.targets)
            and r["external_ids"].get("hsflowd") == "managed")


def applied(server, s=S, bridges=("br0", "br1")):
    """The one row, if OVSDB holds exactly one, it matches s and every bridge points at it."""
    rows = server.sflow_rows()
    if len(rows) != 1:
        return None
    (uid, r), = rows.items()
    ok = matches(r, s) and all(server.bridge_sflow(b) == uid for b in bridges)
    return uid if ok else None


@needs_ovsdb
def test_start_creates_one_row_on_both_bridges_then_idles(server, make_sync, monkeypatch):
    sync = make_sync(server.remote)
    wait_for(lambda: applied(server), what="the sFlow row on br0 and br1")
    assert sync.status == "connected"
    turns = []
    monkeypatch.setattr(sync, "_drain", lambda: turns.append(1))   # once per loop turn
    time.sleep(0.5)
    assert len(turns) <= 2                                          # asleep, not spinning


@needs_ovsdb
def test_update_changes_columns_of_the_same_row(server, make_sync):
    sync = make_sync(server.remote)
    first = wait_for(lambda: applied(server))
    new = SflowSettings("eth1", 256, 30, 1000, ("10.0.0.2:6343", "[2001:db8::1]:6343"))
    sync.update(new)
    assert wait_for(lambda: applied(server, new)) == first


@needs_ovsdb
def test_new_bridge_is_attached(server, make_sync):
    make_sync(server.remote)
    first = wait_for(lambda: applied(server))
    server.vsctl("add-br", "br2")
    assert wait_for(lambda: applied(server, bridges=("br0", "br1", "br2")), 2) == first


@needs_ovsdb
def test_foreign_edits_are_undone(server, make_sync):
    make_sync(server.remote)
    first = wait_for(lambda: applied(server))
    server.vsctl("set", "sflow", first, "sampling=7")
    assert wait_for(lambda: applied(server), 2) == first
    server.vsctl("clear", "bridge", "br0", "sflow")          # br1 still has our row
    assert wait_for(lambda: applied(server), 2) == first
    server.vsctl("clear", "bridge", "br0", "sflow", "--", "clear", "bridge", "br1", "sflow")
    assert wait_for(lambda: applied(server), 2) != first     # row collected: a new one


@needs_ovsdb
def test_existing_row_is_adopted_not_duplicated(server, make_sync):
    theirs = server.vsctl("--", "--id=@s", "create", "sflow", "agent=lo",
                          'targets="192.0.2.1:6343"', "sampling=5", "external_ids:owner=ops",
                          "--", "set", "bridge", "br1", "sflow=@s")
    make_sync(server.remote)
    assert wait_for(lambda: applied(server)) == theirs
    assert server.sflow_rows()[theirs]["external_ids"] == {"owner": "ops", "hsflowd": "managed"}


@needs_ovsdb
def test_rows_on_bridges_we_do_not_manage_are_left_alone(server, make_sync):
    """With settings cleared the agent manages no bridge, so someone else's row stays.
    (An sFlow row on no bridge at all cannot exist: sFlow is not a root table, so
    ovsdb-server deletes it in the transaction that creates it.)"""
    theirs = server.vsctl("--", "--id=@s", "create", "sflow", "agent=lo",
                          'targets="192.0.2.1:6343"', "sampling=5",
                          "--", "set", "bridge", "br0", "sflow=@s")
    before = server.sflow_rows()
    sync = make_sync(server.remote, None)
    wait_for(lambda: sync.status == "connected")
    server.vsctl("add-br", "br2")              # give it a reason to look again
    time.sleep(0.3)
    sync.stop()
    assert server.sflow_rows() == before and server.bridge_sflow("br0") == theirs


@needs_ovsdb
def test_a_restarted_agent_finds_its_row(server, make_sync):
    sync = make_sync(server.remote)
    first = wait_for(lambda: applied(server))
    sync.stop(cleanup=False)
    assert applied(server) == first
    make_sync(server.remote)
    time.sleep(0.3)
    assert applied(server) == first


@needs_ovsdb
def test_ovsdb_server_restart_reapplies(server, make_sync):
    sync = make_sync(server.remote)
    first = wait_for(lambda: applied(server))
    server.kill()                                                     # like a crash
    wait_for(lambda: sync.status.startswith("unavailable: cannot connect"))
    assert sync.status.endswith("Connection refused")
    subprocess.run(["ovsdb-tool", "transact", server.db, '["Open_vSwitch", {"op": "update",'
                    ' "table": "sFlow", "where": [], "row": {"sampling": 7}}]'],
                   check=True, capture_output=True)                  # edited while down
    new = SflowSettings("eth0", 128, 10, 400, S.targets)
    sync.update(new)                                                  # changed while down
    server.start()
    assert wait_for(lambda: applied(server, new), 10) == first
    assert sync.status == "connected"


@needs_ovsdb
def test_stop_detaches_every_bridge_and_the_row_goes(server, make_sync):
    sync = make_sync(server.remote)
    wait_for(lambda: applied(server))
    t = time.monotonic()
    sync.stop()
    assert time.monotonic() - t < 2
    assert server.sflow_rows() == {} and server.bridge_sflow("br0") is None
    assert server.bridge_sflow("br1") is None


@needs_ovsdb
@pytest.mark.parametrize("cleared", [None, SflowSettings("eth0", 128, 0, 0, ("10.0.0.1:6343",)),
                                     SflowSettings("eth0", 128, 20, 400, ())])
def test_nothing_to_send_clears_ovs(server, make_sync, cleared):
    sync = make_sync(server.remote)
    wait_for(lambda: applied(server))
    sync.update(cleared)
    wait_for(lambda: server.sflow_rows() == {}, 2)
    sync.update(S)
    wait_for(lambda: applied(server), 2)


@needs_ovsdb
def test_ovs_absent_is_reported_once_and_stop_is_prompt(tmp_path, caplog, monkeypatch):
    remote = f"unix:{tmp_path}/db.sock"
    tries = []
    fetch = hovs._fetch_schema
    monkeypatch.setattr(hovs, "_fetch_schema", lambda *a: tries.append(1) or fetch(*a))
    sync = OvsSync(remote)
    with caplog.at_level(logging.INFO, logger="hsflowd.ovs"):
        sync.start()
        sync.update(S)
        time.sleep(1.7)                                       # three tries
        assert sync.status == (f"unavailable: cannot connect to {remote}: "
                               "No such file or directory")
        t = time.monotonic()
        sync.stop()
    assert time.monotonic() - t < 0.5
    assert sync.status == "unavailable: stopped"
    assert 2 <= len(tries) <= 4                               # at 0, 0.5 and 1.5 s: back-off
    assert [r.getMessage() for r in caplog.records] == [
        f"Open vSwitch: cannot connect to {remote}: No such file or directory; will keep trying"]


# ---- end to end: ovs-vswitchd really sends what we configured ----

RECEIVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); s.settimeout(0.5)
print(s.getsockname()[1], flush=True)
end, got = time.monotonic() + float(sys.argv[1]), 0
while time.monotonic() < end and got < int(sys.argv[2]):
    try:
        print(s.recv(65535).hex(), flush=True); got += 1
    except socket.timeout:
        pass
"""


@needs_ovsdb
@pytest.mark.skipif(shutil.which("ovs-vswitchd") is None or shutil.which("ping") is None,
                    reason="needs ovs-vswitchd and ping (openvswitch-switch, iputils-ping)")
def test_vswitchd_sends_sflow_as_configured(server, netns):
    sw, a, b = netns(), netns(), netns()
    o1, o2, agent_dev = unique("o"), unique("o"), unique("ag")
    veth(a, unique("a"), sw, o1, a_addr="10.231.7.1/24")
    veth(b, unique("b"), sw, o2, a_addr="10.231.7.2/24")
    sw.run(["ip", "link", "add", agent_dev, "type", "veth", "peer", "name", unique("ap")])
    sw.run(["ip", "addr", "add", "10.231.8.9/32", "dev", agent_dev])
    sw.run(["ip", "link", "set", agent_dev, "up"])
    server.vsctl("set", "bridge", "br0", "datapath_type=netdev", "--", "add-port", "br0", o1,
                 "--", "add-port", "br0", o2, "--", "del-br", "br1")
    switch = Vswitchd(server, sw.prefix())
    sync = None
    try:
        receiver = sw.popen([sys.executable, "-c", RECEIVER, "10", "40"],
                            stdout=subprocess.PIPE, text=True)
        port = int(receiver.stdout.readline())
        settings = SflowSettings(agent_dev, 128, 1, 10, (f"127.0.0.1:{port}",))
        sync = OvsSync(server.remote)
        sync.update(settings)
        sync.start()
        wait_for(lambda: applied(server, settings, bridges=("br0",)))
        for _ in range(10):            # until the receiver has its fill (or gives up)
            ping = a.run(["ping", "-f", "-c", "1000", "-q", "-w", "3", "10.231.7.2"], check=False)
            if receiver.poll() is not None:
                break
        assert ping.returncode == 0, ping.stdout + ping.stderr
        out, _ = receiver.communicate(timeout=15)
    finally:
        if sync is not None:
            sync.stop()
        switch.stop()
    datagrams = [decode_datagram(bytes.fromhex(line)) for line in out.split()]
    assert datagrams, "no sFlow from ovs-vswitchd"
    assert {d.agent_address for d in datagrams} == {ipaddress.ip_address("10.231.8.9")}
    rates = {s.sampling_rate for d in datagrams for s in d.samples
             if isinstance(s, FlowSampleCompact)}
    assert rates == {10}


# ---------------------------------------------------------------- the agent process with ovs {}

def test_agent_process_configures_ovs_and_cleans_up(tmp_path):
    """hsflowd -d with ovs { db=... }: rows after start, updated on reload, gone on SIGTERM."""
    import signal

    why = missing_tools()
    if why:
        pytest.skip(why)
    server = OvsdbServer().start()
    agent = None
    try:
        server.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=dummy")
        conf = tmp_path / "hsflowd.conf"
        body = ("sflow {\n  agentIP = 127.0.0.1\n  sampling = %d\n  polling = 20\n"
                "  collector { ip = 127.0.0.1 udpport = 16360 }\n  ovs { db = %s }\n}\n")
        conf.write_text(body % (512, server.remote))
        with open(tmp_path / "log", "w") as log:
            agent = subprocess.Popen([sys.executable, "-m", "hsflowd", "-d", "-f", str(conf),
                                      "-p", str(tmp_path / "pid"), "-o", str(tmp_path / "auto")],
                                     stdout=subprocess.DEVNULL, stderr=log)

        def row():
            rows = server.sflow_rows()
            return next(iter(rows.values())) if len(rows) == 1 else None

        wait_for(lambda: row() and row()["sampling"] == 512, what="the agent's sFlow row")
        assert row()["targets"] == "127.0.0.1:16360" and row()["polling"] == 20  # a one-element set
        assert server.bridge_sflow("br0") is not None
        conf.write_text(body % (1024, server.remote))
        agent.send_signal(signal.SIGHUP)
        wait_for(lambda: row() and row()["sampling"] == 1024, what="the reloaded sampling rate")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=5) == 0
        assert server.sflow_rows() == {} and server.bridge_sflow("br0") is None
    finally:
        if agent is not None:
            stop_pid(agent)
        server.cleanup()
