"""systemd {} without systemd: the UUID, the cgroup and /proc readings, the D-Bus answers'
filter, the socket marks with a stand-in for the kernel, and the module fed lists by hand
over a cgroup tree and /proc made in a temporary directory.  The real thing (systemd 252
booted with systemd-nspawn) is test_systemd_e2e.py; the packaged unit, test_packaging_systemd.py."""

from __future__ import annotations

import hashlib
import logging
import struct
import time
import uuid
from ipaddress import ip_address
from pathlib import Path
from types import SimpleNamespace

import pytest

from hsflowd.config import parse_config
from hsflowd.daemon import JournalFormatter
from hsflowd.frames import walk_sample
from hsflowd.modules import AgentState, Context
from hsflowd.modules.flowhooks import FlowHooks
from hsflowd.modules.systemd import SystemdModule, v1_controllers
from hsflowd.sflow import ExtendedEntities, FlowSample, SampledHeader
from hsflowd.sflow.counters import UNKNOWN32
from hsflowd.sflow.tlv import SAMPLES
from hsflowd.sources import cgroups
from hsflowd.sources.processes import (PAGE_SIZE, TICKS_PER_SECOND, ProcessTotals, parse_io,
                                       parse_stat, parse_statm_resident)
from hsflowd.sources.sockowner import Owner
from hsflowd.virt import marks as marksmod
from hsflowd.virt.dsindex import DsIndexTable, name_uuid
from hsflowd.virt.systemdapi import Listed, Unit, active_services, is_service_path

HOST_UUID = uuid.UUID("399dc12c-6991-5002-b99d-c12c69915002")
LOCAL, PEER = ip_address("10.99.0.1").packed, ip_address("10.99.0.2").packed


# ---------------------------------------------------------------- identity

def test_service_uuid_is_hsflowds_type_5_uuid():
    # without an address it is RFC 4122's name-based UUID (Python's uuid5)
    assert name_uuid(HOST_UUID, "cron.service", b"") == \
        uuid.uuid5(HOST_UUID, "cron.service").bytes
    made = uuid.UUID(bytes=name_uuid(HOST_UUID, "cron.service", bytes([127, 0, 0, 1])))
    digest = hashlib.sha1(HOST_UUID.bytes + b"cron.service\x7f\x00\x00\x01").digest()
    assert made.bytes[:6] == digest[:6] and made.bytes[9:] == digest[9:16]
    assert made.version == 5 and made.variant == uuid.RFC_4122
    assert made.bytes != name_uuid(HOST_UUID, "cron.service", bytes([127, 0, 0, 2]))


def test_v1_groups_follow_the_units_accounting():
    unit = Unit("a.service", "/p", "/system.slice/a.service", cpu_accounting=True,
                io_accounting=True)
    assert v1_controllers(unit) == ("cpu", "cpuacct", "blkio")
    assert v1_controllers(Unit("b.service", "/p", "/x")) == ()


# ---------------------------------------------------------------- D-Bus answers

def row(name, load="loaded", active="active", path=None):
    return (name, "", load, active, "running", "", path or f"/u/{name}", 0, "", "/")


def test_active_services_are_the_loaded_active_services():
    rows = [row("cron.service"), row("ssh.socket"), row("gone.service", load="not-found"),
            row("dead.service", active="inactive"), row("getty@tty1.service"),
            row("nginx.service", active="reloading"), row("new.service", active="activating")]
    # a service being reloaded runs on: it is not dropped and found again at each reload
    assert active_services(rows) == [("cron.service", "/u/cron.service"),
                                     ("getty@tty1.service", "/u/getty@tty1.service"),
                                     ("nginx.service", "/u/nginx.service")]
    assert is_service_path("/org/freedesktop/systemd1/unit/cron_2eservice")
    assert not is_service_path("/org/freedesktop/systemd1/unit/ssh_2esocket")
    assert not is_service_path("/org/freedesktop/systemd1/job/12")


# ---------------------------------------------------------------- /proc

def stat_line(pid, name, ticks, started):
    fields = ["S", "1", pid, pid, 0, -1, 0, 0, 0, 0, 0, ticks, 0, 0, 0, 20, 0, 1, 0, started]
    return f"{pid} ({name}) " + " ".join(str(f) for f in fields) + "\n"


def test_proc_parsers():
    assert parse_stat(stat_line(7, "a) b (c", 250, 9999)) == (250, 9999)
    assert parse_statm_resident("1000 300 20 1 0 50 0\n") == 300
    io = "rchar: 9\nwchar: 8\nsyscr: 1\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 8192\n" \
         "cancelled_write_bytes: 0\n"
    assert parse_io(io) == (4096, 8192)


def put_process(procfs: Path, pid, ticks, started=100, pages=10, io=(0, 0)):
    d = procfs / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text(stat_line(pid, "p", ticks, started))
    (d / "statm").write_text(f"500 {pages} 0 0 0 0 0\n")
    if io is None:
        (d / "io").unlink(missing_ok=True)
    else:
        (d / "io").write_text(f"read_bytes: {io[0]}\nwrite_bytes: {io[1]}\n")


def test_process_totals_never_go_back(tmp_path):
    procfs = tmp_path / "proc"
    t = ProcessTotals()
    put_process(procfs, 10, 100, io=(1000, 10))
    put_process(procfs, 11, 50, io=(0, 0))
    first = t.read([10, 11], str(procfs))
    assert first.cpu_ns == 150 * 1_000_000_000 // TICKS_PER_SECOND
    assert (first.memory, first.rd_bytes, first.wr_bytes) == (20 * PAGE_SIZE, 1000, 10)
    # 11 exits (what it used stays counted), 10 goes on, 12 is new, and a PID 13 is used
    # again by a new process with less time than the old one had
    put_process(procfs, 10, 130, io=(1500, 10))
    put_process(procfs, 12, 5, io=(0, 0))
    put_process(procfs, 13, 40, started=100)
    t.read([10, 12, 13], str(procfs))
    put_process(procfs, 13, 2, started=200)
    third = t.read([10, 12, 13], str(procfs))
    assert third.cpu_ns == (150 + 30 + 5 + 40 + 2) * 1_000_000_000 // TICKS_PER_SECOND
    assert third.rd_bytes == 1500
    # another user's process without root: its io cannot be read, so disk is unknown
    put_process(procfs, 12, 5, io=None)
    assert t.read([10, 12], str(procfs)).rd_bytes is None
    assert t.read([99], str(procfs)) == (None, None, None, None)


# ---------------------------------------------------------------- cgroups

def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_units_groups_where_systemd_keeps_them(tmp_path):
    v2, v1mem = tmp_path / "unified", tmp_path / "memory"
    mounts = cgroups.Mounts({"memory": str(v1mem), "name=systemd": str(tmp_path / "systemd")},
                            str(v2))
    unit = "/system.slice/web.service"
    write(v2 / "system.slice/web.service/cpu.stat", "usage_usec 2500\nuser_usec 2000\n")
    write(v2 / "system.slice/web.service/cpu.max", "50000 100000\n")
    write(v2 / "system.slice/web.service/io.stat", "254:0 rbytes=4096 wbytes=512 rios=1 wios=2\n")
    write(v1mem / "system.slice/web.service/memory.usage_in_bytes", "777\n")
    write(v2 / "system.slice/web.service/cgroup.procs", "5\n")
    write(v2 / "system.slice/web.service/worker/cgroup.procs", "6\n7\n")   # delegated
    group = cgroups.Cgroup.of_unit(unit, mounts, ["memory"])
    k = group.read()
    assert (k.cpu_ns, k.cpu_limit, k.memory) == (2_500_000, 0.5, 777)
    assert (k.rd_bytes, k.wr_bytes, k.rd_req, k.wr_req) == (4096, 512, 1, 2)
    assert cgroups.Cgroup.of_unit(unit, mounts).read().memory is None   # no accounting: not v1's
    where = cgroups.tracking_dir(unit, mounts)
    assert where == str(v2 / "system.slice/web.service")
    assert sorted(cgroups.read_pids(where)) == [5, 6, 7]
    assert cgroups.read_pids(str(tmp_path / "nothing")) == []
    legacy = cgroups.Mounts({"name=systemd": "/sys/fs/cgroup/systemd"}, None)
    assert cgroups.tracking_dir(unit, legacy) == "/sys/fs/cgroup/systemd/system.slice/web.service"


# ---------------------------------------------------------------- the journal

def test_log_lines_carry_their_priority_for_the_journal():
    formatter = JournalFormatter("%(levelname)s %(message)s")

    def line(level, text):
        return formatter.format(logging.LogRecord("hsflowd", level, "", 0, text, (), None))
    assert line(logging.WARNING, "lost it") == "<4>WARNING lost it"
    assert line(logging.ERROR, "a\nb") == "<3>ERROR a\n<3>b"
    assert line(logging.INFO, "x").startswith("<6>") and line(logging.DEBUG, "x").startswith("<7>")


# ---------------------------------------------------------------- socket marks

def tcp_sample(src, dst, sport, dport):
    tcp = struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x18, 1024, 0, 0)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, src, dst) + tcp
    frame = bytes(6) + bytes.fromhex("020000000001") + b"\x08\x00" + ip
    return FlowSample(sequence_number=1, source_id_type=0, source_id_index=3, sampling_rate=1,
                      sample_pool=1, input=3, output=0x3FFFFFFF,
                      flow_records=[SampledHeader(header_protocol=1, frame_length=len(frame) + 4,
                                                  header=frame)]).encode()


def entities(sample: bytes):
    decoded = SAMPLES.classes[3].decode_body(sample, 8)
    return next((r for r in decoded.flow_records if isinstance(r, ExtendedEntities)), None)


class Kernel:
    """Stands in for inet_diag: endpoints -> Owner."""

    def __init__(self, owners):
        self.owners = owners
        self.asked = []

    def __call__(self, ds, key):
        self.asked.append(key)
        return self.owners.get(key)


def wait_answers(m: marksmod.SocketMarks, count: int) -> None:
    deadline = time.monotonic() + 5
    while m.asked and time.monotonic() < deadline:
        time.sleep(0.01)
        m.answers()
    assert not m.asked


def test_socket_marks_look_up_on_a_miss_and_mark_the_packets_after(monkeypatch):
    watched = []
    web, client = (6, LOCAL, 8080, PEER, 40000), (6, LOCAL, 51000, PEER, 9000)
    kernel = Kernel({web: Owner(111, b""), client: Owner(222, None)})
    m = marksmod.SocketMarks(lambda fd, cb: watched.append(cb) or "token", lambda t: None,
                             find=kernel, open_diag=lambda: SimpleNamespace(close=lambda: None))
    m.local = frozenset({LOCAL})
    m.set_services({111: 100001, 222: 100002})
    inbound = tcp_sample(PEER, LOCAL, 40000, 8080)
    assert m.mark(inbound, walk_sample(inbound)) is inbound        # a miss: sent as it is
    again = tcp_sample(PEER, LOCAL, 40002, 8080)
    assert m.mark(again, walk_sample(again)) is again      # that port is being looked up
    outbound = tcp_sample(LOCAL, PEER, 51000, 9000)
    m.mark(outbound, walk_sample(outbound))
    wait_answers(m, 2)
    assert kernel.asked == [web, client] and len(watched) == 1
    got = entities(m.mark(inbound, walk_sample(inbound)))
    assert (got.src_dsClass, got.src_dsIndex, got.dst_dsClass, got.dst_dsIndex) == (0, 0, 3, 100001)
    # the listener's answer serves another client of the same port, with no look-up
    other = tcp_sample(LOCAL, PEER, 8080, 40001)
    got = entities(m.mark(other, walk_sample(other)))
    assert (got.src_dsIndex, got.dst_dsIndex) == (100001, 0)
    got = entities(m.mark(outbound, walk_sample(outbound)))
    assert (got.src_dsIndex, got.dst_dsIndex) == (100002, 0)
    assert len(kernel.asked) == 2
    # passing through: neither end is this host's
    transit = tcp_sample(PEER, PEER, 1, 2)
    assert m.mark(transit, walk_sample(transit)) is transit and len(kernel.asked) == 2
    # the client service stopped: its socket is forgotten (asked again), the web's is not
    m.set_services({111: 100001})
    assert entities(m.mark(inbound, walk_sample(inbound))).dst_dsIndex == 100001
    assert m.mark(outbound, walk_sample(outbound)) is outbound
    wait_answers(m, 1)
    assert kernel.asked[-1] == client
    # an answer given before its cgroup was a service's serves once it is, with no look-up
    m.set_services({111: 100001, 222: 100003})
    assert entities(m.mark(outbound, walk_sample(outbound))).src_dsIndex == 100003
    assert len(kernel.asked) == 3
    # answers expire
    m.tick(time.monotonic() + marksmod.CACHE_SECONDS + 1)
    assert not m.connected and not m.bound
    m.close()


def test_socket_marks_ask_at_most_the_budget_a_second():
    m = marksmod.SocketMarks(lambda fd, cb: "t", lambda t: None, find=lambda ds, key: None,
                             open_diag=lambda: SimpleNamespace(close=lambda: None))
    m.local = frozenset({LOCAL})
    m.set_services({1: 100001})
    for port in range(marksmod.LOOKUPS_PER_SECOND + 10):
        s = tcp_sample(PEER, LOCAL, 80, 1000 + port)
        m.mark(s, walk_sample(s))
    assert m.lookups == marksmod.LOOKUPS_PER_SECOND and m.over_budget == 10
    m.tick(time.monotonic())
    assert m.budget == marksmod.LOOKUPS_PER_SECOND
    m.close()


# ---------------------------------------------------------------- the module, by hand

MOUNTINFO = ("30 25 0:26 / {root}/unified rw - cgroup2 cgroup2 rw\n"
             "31 25 0:27 / {root}/memory rw - cgroup cgroup rw,memory\n")


@pytest.fixture
def box(tmp_path):
    """A cgroup tree, a /proc, and a module with a context of its own."""
    procfs = tmp_path / "proc"
    write(procfs / "self/mountinfo", MOUNTINFO.format(root=tmp_path))
    hooks = FlowHooks(lambda s: None)
    table = DsIndexTable(signed_char=True)
    ctx = Context("systemd", lambda name, fd, cb: object(), lambda t: None, lambda s: None,
                  lambda s: None, lambda i: {}, [], hooks, ds_indexes=table)
    module = SystemdModule(ctx, procfs=str(procfs))
    config = parse_config("sflow {\n collector { ip=192.0.2.1 }\n systemd { markTraffic=on }\n}\n")
    module.reconcile(AgentState(config=config, revision=1, interfaces=[], host_uuid=HOST_UUID,
                                agent=SimpleNamespace(ip=ip_address("127.0.0.1"))))
    return SimpleNamespace(module=module, root=tmp_path, procfs=procfs, hooks=hooks,
                           table=table)


def service(box, name, pids, cpu_usec=None, slice_="system.slice", memory=None):
    base = box.root / "unified" / slice_ / name
    write(base / "cgroup.procs", "".join(f"{p}\n" for p in pids))
    if cpu_usec is not None:
        write(base / "cpu.stat", f"usage_usec {cpu_usec}\n")
    if memory is not None:
        write(box.root / "memory" / slice_ / name / "memory.usage_in_bytes", f"{memory}\n")
    return Unit(name, f"/u/{name}", f"/{slice_}/{name}", memory_accounting=memory is not None)


def test_services_with_processes_in_system_slice_are_reported(box):
    for pid, ticks in ((20, 300), (21, 100), (30, 7)):
        put_process(box.procfs, pid, ticks, pages=25, io=(4096, 0))
    units = (service(box, "web.service", [20, 21], cpu_usec=1_500_000),
             service(box, "db.service", [30], memory=123456),
             service(box, "empty.service", []),
             service(box, "user@1000.service", [30], slice_="user.slice"))
    box.module._handle(Listed(units))
    names = {s.key for s in box.module.book}
    assert names == {"web.service", "db.service"}
    web = box.module.book.get("web.service")
    assert web.uuid == name_uuid(HOST_UUID, "web.service", ip_address("127.0.0.1").packed)
    assert web.ds_index == box.table.claim(web.uuid, "x")
    records = box.module.counters([web.source])[web.source]
    assert [r.tag for r in records] == [2000, 2002, 2101, 2102, 2103]
    descr, parent, cpu, memory, disk = records
    assert descr.hostname == "web.service" and descr.uuid == uuid.UUID(bytes=web.uuid)
    assert (parent.container_type, parent.container_index) == (2, 1)
    assert (cpu.state, cpu.cpuTime) == (1, 1500)          # the cgroup's, not /proc's
    assert memory.memory == 50 * PAGE_SIZE                # no memory accounting: /proc
    assert (disk.rd_bytes, disk.rd_req) == (8192, UNKNOWN32)
    db = box.module.book.get("db.service")
    cpu_db, memory_db = box.module.counters([db.source])[db.source][2:4]
    assert memory_db.memory == 123456                     # v1 memory, as its accounting is on
    assert cpu_db.cpuTime == 7 * 1000 // TICKS_PER_SECOND  # no cpu.stat: /proc
    assert box.module.host_records()[0].num_domains == 2
    # a service whose group emptied goes away at its next poll, without a last sample
    write(box.root / "unified/system.slice/db.service/cgroup.procs", "")
    assert box.module.counters([db.source]) == {}
    assert box.module.book.get("db.service") is None and len(box.table) == 1
    # one that is no longer listed goes at once
    box.module._handle(Listed(units[2:]))
    assert len(box.module.book) == 0


def test_a_new_agent_address_gives_new_uuids(box):
    put_process(box.procfs, 20, 1)
    box.module._handle(Listed((service(box, "web.service", [20], cpu_usec=1),)))
    before = box.module.book.get("web.service").uuid
    state = AgentState(config=SimpleNamespace(), revision=1, interfaces=[], host_uuid=HOST_UUID,
                       agent=SimpleNamespace(ip=ip_address("192.0.2.1")), changed=frozenset({"agent"}))
    box.module.reconcile(state)
    after = box.module.book.get("web.service").uuid
    assert after != before and after == name_uuid(HOST_UUID, "web.service",
                                                      ip_address("192.0.2.1").packed)
    assert len(box.table) == 1


def test_the_flow_hook_is_there_only_while_a_service_is(box):
    assert "systemd" not in box.hooks.hooks
    put_process(box.procfs, 20, 1)
    box.module._handle(Listed((service(box, "web.service", [20], cpu_usec=1),)))
    assert "systemd" in box.hooks.hooks
    box.module._handle(Listed(()))
    assert "systemd" not in box.hooks.hooks
    box.module.close()
