"""What the container and VM modules share, without a daemon: data source numbers, cgroup
and /proc/net/dev parsing on fixture text, the guest records, forgetting, the Docker and
libvirt answers' parsing, and the markTraffic hook on hand-built flow samples."""

from __future__ import annotations

import ipaddress
import struct
import uuid

import pytest

from hsflowd.modules import Context
from hsflowd.frames import walk_frame, walk_sample
from hsflowd.modules.flowhooks import FlowHooks, Sink
from hsflowd.sflow import FlowSample
from hsflowd.sflow.counters import UNKNOWN32, UNKNOWN64
from hsflowd.sflow.flows import ExtendedEntities, SampledHeader
from hsflowd.sources import cgroups, vnic
from hsflowd.virt import dockerapi, libvirtapi
from hsflowd.virt.dsindex import (FIRST, LAST, DsIndexTable, char_is_signed, hash_uuid,
                                  preferred_ds_index)
from hsflowd.virt.guests import Guest, GuestBook
from hsflowd.virt.records import (DiskIo, GuestReading, NetIo, NodeFacts, VirState,
                                  guest_records, round_half_up, virt_node)

# ---------------------------------------------------------------- ds_index

# (UUID, FNV-1a with x86's signed char, with ARM's unsigned char): computed by a C build of
# hsflowd's hashUUID/assignVM_dsIndex arithmetic (gcc, and gcc -funsigned-char)
VECTORS = [
    ("1df33bae6aef1ea23e455001669b032430121f780bb291d8fce4e810ad480fdb", 2434414001, 2485971633),
    ("00000000000000000000000000000000", 1768495365, 1768495365),
    ("ffffffffffffffffffffffffffffffff", 2711842293, 906459637),
    ("6695eb01-f6a4-8304-79aa-97f2502e193b", 3482659005, 1697585853),
]


def uuid_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace("-", "")[:32])


@pytest.mark.parametrize("text,signed,unsigned", VECTORS)
def test_hash_uuid_matches_hsflowd_on_both_kinds_of_char(text, signed, unsigned):
    u = uuid_bytes(text)
    assert hash_uuid(u, signed_char=True) == signed
    assert hash_uuid(u, signed_char=False) == unsigned
    assert preferred_ds_index(u, True) == 100000 + signed % 50000


def test_hand_computed_fnv1a():
    # FNV-1a of 16 zero bytes, step by step: h = (h ^ 0) * prime each time
    h = 2166136261
    for _ in range(16):
        h = (h * 16777619) & 0xFFFFFFFF
    assert hash_uuid(bytes(16)) == h == 1768495365
    assert preferred_ds_index(bytes(16)) == 145365


def test_char_signedness_by_machine():
    assert char_is_signed("x86_64") and char_is_signed("i686")
    assert not char_is_signed("aarch64") and not char_is_signed("armv7l")
    assert not char_is_signed("ppc64le") and not char_is_signed("s390x")


def test_linear_probing_and_wrap():
    t = DsIndexTable(signed_char=True)
    u0 = bytes(16)                                   # prefers 145365
    assert t.claim(u0, "docker") == 145365
    assert t.claim(u0, "docker") == 145365            # the same guest keeps its number
    # find UUIDs that prefer the same number: they take the next free ones
    twins = [u for u in (i.to_bytes(16, "big") for i in range(1, 400000))
             if preferred_ds_index(u, True) == 145365][:2]
    assert [t.claim(u, "kvm") for u in twins] == [145366, 145367]
    t.release(u0)
    assert t.claim(twins[0], "kvm") == 145366          # held: unchanged
    third = next(u for u in (i.to_bytes(16, "big") for i in range(400000, 900000))
                 if preferred_ds_index(u, True) == 145365)
    assert t.claim(third, "kvm") == 145365            # the freed one is taken first
    # wrap: a guest preferring the last number goes to the first when it is taken
    last = next(u for u in (i.to_bytes(16, "big") for i in range(1, 2000000))
                if preferred_ds_index(u, True) == LAST)
    other = next(u for u in (i.to_bytes(16, "big") for i in range(2000000, 4000000))
                 if preferred_ds_index(u, True) == LAST)
    assert t.claim(last, "docker") == LAST
    assert t.claim(other, "docker") == FIRST
    t.release_owner("kvm")
    assert len(t) == 2 and t.claim(twins[1], "x") == 145365


def test_full_table_gives_zero():
    t = DsIndexTable(signed_char=True)
    t.taken = {n: b"" for n in range(FIRST, LAST + 1)}
    assert t.claim(b"\x01" * 16, "docker") == 0


# ---------------------------------------------------------------- cgroups

MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PROC_CGROUP = """\
9:name=systemd:/docker/abc
4:memory:/docker/abc
2:cpuacct:/docker/abc
1:cpu:/docker/abc
7:blkio:/docker/abc
0::/docker/abc
"""


def test_parse_mountinfo_hybrid_and_v2():
    m = cgroups.parse_mountinfo(MOUNTINFO)
    assert m.v2 == "/sys/fs/cgroup/unified"
    assert m.v1["cpuacct"] == "/sys/fs/cgroup/cpuacct" and m.v1["memory"] == "/sys/fs/cgroup/memory"
    pure = cgroups.parse_mountinfo("25 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n")
    assert pure == cgroups.Mounts({}, "/sys/fs/cgroup")
    spaced = cgroups.parse_mountinfo("1 2 0:1 / /a\\040b rw - cgroup2 cgroup2 rw\n")
    assert spaced.v2 == "/a b"


def test_parse_proc_cgroup():
    groups = cgroups.parse_proc_cgroup(PROC_CGROUP + "5:cpu,cpuacct:/x\n")
    assert groups[""] == "/docker/abc" and groups["memory"] == "/docker/abc"
    assert groups["cpu"] == groups["cpuacct"] == "/x"


@pytest.mark.parametrize("text,expected", [
    ("0-1\n", 2), ("0-3,8,10-11\n", 7), ("5\n", 1), ("\n", 0)])
def test_parse_cpuset(text, expected):
    assert cgroups.parse_cpuset(text) == expected


def test_parse_limits():
    assert cgroups.parse_cfs("50000\n", "100000\n") == 0.5
    assert cgroups.parse_cfs("-1\n", "100000\n") is None
    assert cgroups.parse_cpu_max("max 100000\n") is None
    assert cgroups.parse_cpu_max("150000 100000\n") == 1.5
    assert cgroups.parse_memory_limit("9223372036854771712\n") is None
    assert cgroups.parse_memory_limit("max\n") is None
    assert cgroups.parse_memory_limit("67108864\n") == 67108864
    assert round_half_up(0.5) == 1 and round_half_up(1.49) == 1 and round_half_up(2.5) == 3


def test_parse_io():
    blkio = "254:0 Read 21630976\n254:0 Write 8388608\n254:0 Sync 1\n254:0 Async 2\n" \
            "254:0 Total 30019584\n8:0 Read 4096\n8:0 Write 0\nTotal 30023680\n"
    assert cgroups.parse_blkio(blkio) == (21630976 + 4096, 8388608)
    assert cgroups.parse_blkio("Total 0\n") == (0, 0)
    io = "254:0 rbytes=1000 wbytes=2000 rios=3 wios=4 dbytes=0 dios=0\n" \
         "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n"
    assert cgroups.parse_io_stat(io) == (1010, 2020, 4, 6)
    assert cgroups.parse_cpu_stat_usage("usage_usec 19691\nuser_usec 19691\n") == 19691000


def _tree(tmp_path, files):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_cgroup_v1_hybrid_reading(tmp_path):
    """Debian without systemd (this test machine): v1 controllers, v2 only for cpu.stat."""
    _tree(tmp_path, {
        "proc/42/cgroup": PROC_CGROUP,
        "cg/cpuacct/docker/abc/cpuacct.usage": "296191745\n",
        "cg/cpu/docker/abc/cpu.cfs_quota_us": "50000\n",
        "cg/cpu/docker/abc/cpu.cfs_period_us": "100000\n",
        "cg/memory/docker/abc/memory.usage_in_bytes": "31358976\n",
        "cg/memory/docker/abc/memory.limit_in_bytes": "67108864\n",
        "cg/blkio/docker/abc/blkio.throttle.io_service_bytes_recursive":
            "254:0 Read 100\n254:0 Write 200\n254:0 Total 300\nTotal 300\n",
        "cg/blkio/docker/abc/blkio.throttle.io_serviced_recursive":
            "254:0 Read 1\n254:0 Write 2\n254:0 Total 3\nTotal 3\n",
        "cg/unified/docker/abc/cpu.stat": "usage_usec 1\n",
    })
    root = str(tmp_path / "cg")
    mounts = cgroups.Mounts({c: f"{root}/{c}" for c in ("cpu", "cpuacct", "memory", "blkio")},
                            f"{root}/unified")
    cg = cgroups.Cgroup.of_process(42, mounts, procfs=str(tmp_path / "proc"))
    assert cg.read() == cgroups.CgroupCounters(
        cpu_ns=296191745, cpu_limit=0.5, cpus_allowed=None, memory=31358976,
        memory_limit=67108864, rd_bytes=100, wr_bytes=200, rd_req=1, wr_req=2)
    assert cg.exists()


def test_cgroup_v2_reading(tmp_path):
    _tree(tmp_path, {
        "proc/7/cgroup": "0::/system.slice/docker-abc.scope\n",
        "cg/system.slice/docker-abc.scope/cpu.stat": "usage_usec 2500\nuser_usec 2000\n",
        "cg/system.slice/docker-abc.scope/cpu.max": "max 100000\n",
        "cg/system.slice/docker-abc.scope/cpuset.cpus.effective": "0-3\n",
        "cg/system.slice/docker-abc.scope/memory.current": "4096\n",
        "cg/system.slice/docker-abc.scope/memory.max": "max\n",
        "cg/system.slice/docker-abc.scope/io.stat": "8:0 rbytes=1 wbytes=2 rios=3 wios=4\n",
    })
    mounts = cgroups.Mounts({}, str(tmp_path / "cg"))
    cg = cgroups.Cgroup.of_process(7, mounts, procfs=str(tmp_path / "proc"))
    assert cg.read() == cgroups.CgroupCounters(
        cpu_ns=2500000, cpu_limit=None, cpus_allowed=4, memory=4096, memory_limit=None,
        rd_bytes=1, wr_bytes=2, rd_req=3, wr_req=4)


def test_cgroup_gone_reads_nothing(tmp_path):
    _tree(tmp_path, {"proc/7/cgroup": "0::/gone\n"})
    cg = cgroups.Cgroup.of_process(7, cgroups.Mounts({}, str(tmp_path)), str(tmp_path / "proc"))
    assert cg.read() == cgroups.CgroupCounters()
    assert not cg.exists()
    with pytest.raises(OSError):
        cgroups.Cgroup.of_process(8, cgroups.Mounts({}, str(tmp_path)), str(tmp_path / "proc"))


def test_cgroup_outside_the_agents_namespace_is_out_of_reach(tmp_path):
    """An agent in a cgroup namespace of its own (a pod on a v2 node) sees other pods'
    groups as "/../.."; they are not read (nor taken for gone)."""
    _tree(tmp_path, {"proc/9/cgroup": "0::/../../kubepods/pod1/c1\n"})
    with pytest.raises(OSError):
        cgroups.Cgroup.of_process(9, cgroups.Mounts({}, str(tmp_path)), str(tmp_path / "proc"))


# ---------------------------------------------------------------- /proc/net/dev

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    1096      12    1    2    0     0          0         0      656       8    3    4    0     0       0          0
  eth1: 4294967296 5    0    0    0     0          0         0       10       1    0    0    0     0       0          0
"""


def test_parse_and_sum_net_dev(tmp_path):
    devices = vnic.parse_net_dev(NET_DEV)
    assert devices["eth0"] == vnic.NetDevCounters(1096, 12, 1, 2, 656, 8, 3, 4)
    assert vnic.sum_net_dev(devices) == vnic.NetDevCounters(1096 + 4294967296, 17, 1, 2, 666, 9, 3, 4)
    _tree(tmp_path, {"9/net/dev": NET_DEV})
    assert vnic.read_net_dev(9, procfs=str(tmp_path)) == devices


def test_container_adapters_and_peer():
    from hsflowd.sources.interfaces import Interface
    links = [Interface(1, "lo", loopback=True, admin_up=True),
             Interface(6, "eth0", mac=b"\x02\x42\x0a\x00\x00\x02", kind="veth", link=7,
                       link_netnsid=0, admin_up=True),
             Interface(9, "eth1", mac=b"\x02\x42\x0a\x00\x00\x03", admin_up=False)]
    assert [i.ifindex for i in vnic.container_adapters(links)] == [6]
    assert vnic.peer_ifindex(links[1]) == 7 and vnic.peer_ifindex(links[2]) is None


# ---------------------------------------------------------------- records

def test_guest_records_in_hsflowd_order_with_wrapping_and_unknowns():
    u = uuid_bytes(VECTORS[0][0])
    records = guest_records(GuestReading(
        hostname="x" * 80, uuid=u, state=VirState.RUNNING, cpu_ns=(1 << 32) * 1_000_000 + 5_999_999,
        vcpus=2, memory=10, max_memory=20, disk=DiskIo(rd_req=1, rd_bytes=2),
        net=NetIo(rx_bytes=1, rx_packets=(1 << 32) + 3, tx_bytes=4, tx_packets=5, rx_errs=0,
                  rx_drop=0, tx_errs=0, tx_drop=0),
        adapters=[(6, b"\x02\x42\x0a\x00\x00\x02")], machine_type=3, os_name=2, os_release="6.1"))
    assert [r.tag for r in records] == [2000, 2002, 2104, 2101, 2102, 2103, 2001]
    descr, parent, net, cpu, mem, disk, adapters = records
    assert descr.hostname == "x" * 64 and descr.uuid == uuid.UUID(bytes=u)
    assert (parent.container_type, parent.container_index) == (2, 1)
    assert net.rx_packets == 3 and net.tx_bytes == 4
    assert (cpu.state, cpu.cpuTime, cpu.nrVirtCpu) == (1, 5, 2)
    assert (mem.memory, mem.maxMemory) == (10, 20)
    assert (disk.rd_req, disk.rd_bytes, disk.wr_req, disk.wr_bytes, disk.errs) == \
        (1, 2, UNKNOWN32, UNKNOWN64, UNKNOWN32)
    assert adapters.adapters[0].ifIndex == 6
    # and they encode and decode as a counter sample would carry them
    from hsflowd.sflow import CountersSample
    blob = CountersSample(sequence_number=1, source_id_type=3, source_id_index=114001,
                          counters=records).encode()
    assert blob


def test_a_service_sends_no_virt_net_io_and_no_host_adapters():
    records = guest_records(GuestReading(hostname="cron.service", uuid=bytes(16), net=None,
                                         adapters=None, cpu_ns=None))
    assert [r.tag for r in records] == [2000, 2002, 2101, 2102, 2103]
    assert records[2].cpuTime == UNKNOWN32


def test_virt_node():
    node = virt_node(3, NodeFacts(mhz=2600, cpus=2, memory=100, memory_free=40))
    assert (node.mhz, node.cpus, node.memory, node.memory_free, node.num_domains) == \
        (2600, 2, 100, 40, 3)


def test_guest_book_forgets_after_forget_vms():
    table = DsIndexTable(signed_char=True)
    now = [1000.0]
    book = GuestBook(lambda u: table.claim(u, "t"), table.release, clock=lambda: now[0])
    a = book.add(Guest(key="a", uuid=bytes(16)))
    b = book.add(Guest(key="b", uuid=b"\x01" * 16))
    assert a.source == (3, 145365) and len(table) == 2
    book.stopped(a)
    now[0] += 59.9
    assert book.expire(60) == [] and a in list(book)
    book.started(a)                     # back before forgetVMs: keeps its number
    book.stopped(a)
    now[0] += 60
    assert book.expire(60) == [a]
    assert book.get("a") is None and len(table) == 1 and book.sources() == [b.source]


# ---------------------------------------------------------------- Docker's answers

INSPECT = {
    "Id": "1df33bae6aef1ea23e455001669b032430121f780bb291d8fce4e810ad480fdb",
    "Name": "/bb2",
    "State": {"Status": "running", "Running": True, "Pid": 8342},
    "Config": {"Hostname": "h2"},
    "HostConfig": {"Memory": 67108864, "NanoCpus": 500000000},
    "NetworkSettings": {"Networks": {"bridge": {
        "MacAddress": "02:42:0a:e7:fa:03", "IPAddress": "10.231.250.3",
        "GlobalIPv6Address": ""}}},
}


def test_parse_inspect():
    info = dockerapi.parse_inspect(INSPECT)
    assert (info.name, info.hostname, info.pid, info.status) == ("bb2", "h2", 8342, "running")
    assert (info.memory_limit, info.nano_cpus) == (67108864, 500000000)
    assert info.macs == (bytes.fromhex("02420ae7fa03"),)
    assert info.ips == (ipaddress.ip_address("10.231.250.3").packed,)
    stopped = dict(INSPECT, State={"Status": "exited", "Running": False, "Pid": 0},
                   NetworkSettings={"Networks": {"none": {"MacAddress": ""}}})
    assert dockerapi.parse_inspect(stopped).status == "exited"
    assert dockerapi.parse_inspect(stopped).macs == ()


def test_parse_events_and_list():
    ev = {"status": "start", "id": "abc", "from": "hsft/busybox", "Type": "container",
          "Action": "start", "Actor": {"ID": "abc", "Attributes": {"name": "bb1"}},
          "time": 1, "timeNano": 1}
    assert dockerapi.parse_event(ev) == dockerapi.Event("start", "abc", "bb1")
    assert dockerapi.parse_event(dict(ev, Action="exec_start: sh -c x")).action == "exec_start"
    assert dockerapi.parse_event({"Type": "network", "Action": "connect", "id": "n"}) is None
    assert dockerapi.parse_event({"status": "die", "id": "abc"}) == dockerapi.Event("die", "abc")
    listed = dockerapi.parse_list([{"Id": "abc", "Names": ["/bb1"], "State": "running"}])
    assert listed.containers == (("abc", "bb1", "running"),)


def test_docker_uuid_and_vcpus():
    from hsflowd.modules.docker import uuid_of
    from hsflowd.virt.records import vcpus_of
    assert uuid_of(INSPECT["Id"]) == bytes.fromhex("1df33bae6aef1ea23e455001669b0324")
    assert vcpus_of(0.5, None, 8) == 1        # C's round(0.5), as hsflowd
    assert vcpus_of(2.5, None, 8) == 3
    assert vcpus_of(None, 2, 8) == 2
    assert vcpus_of(None, None, 8) == 8


# ---------------------------------------------------------------- libvirt's answers

DOMAIN_XML = """<domain type='kvm' id='1'>
  <name>vm1</name><uuid>6695eb01-f6a4-8304-79aa-97f2502e193b</uuid>
  <devices>
    <disk type='file' device='disk'><source file='/v/vm1.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><source file='/v/x.iso'/><target dev='hdc'/><readonly/></disk>
    <interface type='bridge'><mac address='52:54:00:aa:bb:01'/><source bridge='br0'/>
      <target dev='vnet0'/><model type='virtio'/></interface>
    <interface type='network'><mac address='52:54:00:aa:bb:02'/></interface>
  </devices></domain>"""


def test_parse_domain_xml():
    interfaces, disks = libvirtapi.parse_domain_xml(DOMAIN_XML)
    assert interfaces == (("vnet0", bytes.fromhex("525400aabb01")),)
    assert disks == ("vda",)


def test_sum_prefixed_stats():
    stats = {"net.count": 2, "net.0.rx.bytes": 10, "net.1.rx.bytes": 5, "net.0.tx.pkts": 1,
             "block.count": 0}
    net = libvirtapi.sum_prefixed(stats, "net", ("rx.bytes", "tx.pkts", "tx.drop"))
    assert net == {"rx.bytes": 15, "tx.pkts": 1, "tx.drop": None}
    assert libvirtapi.sum_prefixed(stats, "block", ("rd.reqs",)) == {"rd.reqs": 0}
    assert libvirtapi.sum_prefixed({}, "block", ("rd.reqs",)) == {"rd.reqs": None}


def test_kvm_reading_of_stats():
    from hsflowd.modules.kvm import Domain, reading_of
    info = libvirtapi.DomainInfo(uuid_bytes(VECTORS[3][0]), "vm1",
                                 (("vnet0", bytes.fromhex("525400aabb01")),), ("vda",))
    d = Domain(key="k", uuid=info.uuid, info=info, stats={
        "state.state": 1, "cpu.time": 4304443000, "balloon.current": 65536,
        "balloon.maximum": 131072, "vcpu.current": 1, "net.count": 1, "net.0.rx.bytes": 90,
        "net.0.rx.pkts": 1, "block.count": 1, "block.0.rd.reqs": 3, "block.0.capacity": 100,
        "block.0.allocation": 40})
    r = reading_of(d, lambda dev: {"vnet0": 12}.get(dev, 0))
    assert (r.hostname, r.state, r.cpu_ns, r.vcpus) == ("vm1", 1, 4304443000, 1)
    assert (r.memory, r.max_memory) == (65536 * 1024, 131072 * 1024)
    assert (r.disk.capacity, r.disk.allocation, r.disk.available, r.disk.rd_req) == (100, 40, 60, 3)
    assert (r.net.rx_bytes, r.net.rx_packets, r.net.tx_bytes) == (90, 1, None)
    assert r.adapters == ((12, bytes.fromhex("525400aabb01")),)
    d.stopped_at = 1.0
    assert reading_of(d, lambda dev: 0).state == VirState.SHUTOFF


# ---------------------------------------------------------------- markTraffic

class _Ctx(Context):
    def __init__(self, hooks, table):
        super().__init__("docker", lambda *a: None, lambda t: None, hooks.emit, hooks.output.emit,
                         lambda i: {}, None, hooks, ds_indexes=table)


def _frame(src_mac: bytes, dst_mac: bytes, src_ip: str, dst_ip: str) -> bytes:
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                     ipaddress.ip_address(src_ip).packed, ipaddress.ip_address(dst_ip).packed)
    return dst_mac + src_mac + b"\x08\x00" + ip + bytes(8)


def _sample(frame: bytes, in_if: int, out_if: int) -> bytes:
    return FlowSample(sequence_number=1, source_id_type=0, source_id_index=4, sampling_rate=1,
                      sample_pool=1, drops=0, input=in_if, output=out_if,
                      flow_records=[SampledHeader(header_protocol=1, frame_length=len(frame) + 4,
                                                  stripped=4, header=frame)]).encode()


def test_mark_traffic_hook(monkeypatch):
    from hsflowd.config import parse_config
    from hsflowd.modules import AgentState
    from hsflowd.modules.docker import Container, DockerModule
    from hsflowd.virt.process import ContainerProcess
    sent = []
    table = DsIndexTable(signed_char=True)
    hooks = FlowHooks(Sink(sent.append))
    monkeypatch.setattr(DockerModule, "_connect", lambda self, now: None)
    module = DockerModule(_Ctx(hooks, table))
    config = parse_config("sflow { collector { ip=127.0.0.1 } docker { markTraffic=on } }")
    module.reconcile(AgentState(config=config, revision=1, interfaces=None))
    mac_a, mac_b, mac_x = (bytes.fromhex(m) for m in ("02420a000002", "02420a000003", "020000000099"))
    a = module.book.add(Container(key="a" * 64, uuid=b"\xaa" * 16, name="a",
                                  proc=ContainerProcess(peers=(7,)), macs=(mac_a,), ips=(ipaddress.ip_address("10.0.0.2").packed,)))
    b = module.book.add(Container(key="b" * 64, uuid=b"\xbb" * 16, name="b", macs=(mac_b,)))
    module._marks_changed()
    # by port (a's veth is 7), by MAC (b), and nothing for a stranger
    hooks.emit(_sample(_frame(mac_a, mac_b, "10.0.0.2", "10.0.0.3"), 7, 9))
    hooks.emit(_sample(_frame(mac_x, mac_b, "10.9.9.9", "10.0.0.3"), 3, 9))
    hooks.emit(_sample(_frame(mac_x, mac_x, "10.9.9.9", "10.0.0.2"), 3, 9))   # by IP
    hooks.emit(_sample(_frame(mac_x, mac_x, "10.9.9.9", "10.9.9.8"), 3, 9))
    # by IP behind a 0x9100 tag and an 802.1Q one (the walk every hook shares)
    plain = _frame(mac_x, mac_x, "10.9.9.9", "10.0.0.2")
    hooks.emit(_sample(plain[:12] + b"\x91\x00\x00\x07\x81\x00\x00\x05" + plain[12:], 3, 9))
    entities = []
    for blob in sent:
        records = FlowSample.decode_body(blob, 8).flow_records
        found = [r for r in records if isinstance(r, ExtendedEntities)]
        entities.append(found[0] if found else None)
        assert walk_sample(blob) is not None
    assert (entities[0].src_dsClass, entities[0].src_dsIndex, entities[0].dst_dsIndex) == \
        (3, a.ds_index, b.ds_index)
    assert (entities[1].src_dsClass, entities[1].src_dsIndex, entities[1].dst_dsIndex) == \
        (0, 0, b.ds_index)
    assert entities[2].dst_dsIndex == a.ds_index
    assert entities[3] is None
    assert entities[4].dst_dsIndex == a.ds_index
    # markTraffic off on reload: the hook goes
    module.reconcile(AgentState(config=parse_config(
        "sflow { collector { ip=127.0.0.1 } docker { } }"), revision=2, interfaces=None))
    assert hooks.chain == ()
    module.close()
    assert len(table) == 0


def test_mark_traffic_hook_only_while_a_container_is_known(monkeypatch):
    """A hook that can add nothing is not run: markTraffic on, no container, no hook."""
    from hsflowd.config import parse_config
    from hsflowd.modules import AgentState
    from hsflowd.modules.docker import Container, DockerModule
    hooks = FlowHooks(Sink(lambda s: None))
    monkeypatch.setattr(DockerModule, "_connect", lambda self, now: None)
    module = DockerModule(_Ctx(hooks, DsIndexTable(signed_char=True)))
    module.reconcile(AgentState(config=parse_config(
        "sflow { collector { ip=127.0.0.1 } docker { markTraffic=on } }"), revision=1, interfaces=None))
    assert hooks.chain == ()
    c = module.book.add(Container(key="a" * 64, uuid=b"\xaa" * 16, name="a",
                                  macs=(bytes.fromhex("02420a000002"),)))
    module._marks_changed()
    assert [owner for owner, _ in hooks.chain] == ["docker"]
    module._stopped(c, VirState.SHUTDOWN)
    assert hooks.chain == ()
    module.close()


def test_container_whose_cgroup_vanished_is_stopped(tmp_path, monkeypatch):
    """dockerd away, the container gone: its cgroup says so; the last counters stand."""
    from hsflowd.config import parse_config
    from hsflowd.modules import AgentState
    from hsflowd.modules.docker import Container, DockerModule
    from hsflowd.virt.process import ContainerProcess
    table = DsIndexTable(signed_char=True)
    monkeypatch.setattr(DockerModule, "_connect", lambda self, now: None)
    module = DockerModule(_Ctx(FlowHooks(Sink(lambda s: None)), table), procfs=str(tmp_path / "proc"))
    module.reconcile(AgentState(config=parse_config(
        "sflow { collector { ip=127.0.0.1 } docker { } }"), revision=1, interfaces=None))
    _tree(tmp_path, {"cg/x/memory.current": "4096\n", "cg/x/cpu.stat": "usage_usec 7000\n"})
    c = module.book.add(Container(key="c" * 64, uuid=b"\xcc" * 16, name="c",
                                  state=VirState.RUNNING, proc=ContainerProcess(
                                      pid=0, own_netns=False,
                                      cgroup=cgroups.Cgroup({}, str(tmp_path / "cg" / "x")))))
    first = module.counters([c.source])[c.source]
    assert (first[3].state, first[3].cpuTime, first[4].memory) == (1, 7, 4096)
    for f in (tmp_path / "cg" / "x").iterdir():
        f.unlink()
    (tmp_path / "cg" / "x").rmdir()
    again = module.counters([c.source])[c.source]
    assert (again[3].state, again[3].cpuTime, again[4].memory) == (VirState.SHUTDOWN, 7, 4096)
    assert not c.running
    module.close()


def test_one_module_sends_virt_node_as_hsflowd_decides():
    """hsflowd's VNode role: kvm before docker before systemd, whichever are enabled."""
    from hsflowd.config import parse_config
    from hsflowd.modules.guests import sends_virt_node

    def conf(blocks):
        return parse_config("sflow {\n collector { ip=192.0.2.1 }\n" + blocks + "\n}\n")
    both = conf("docker { }\nsystemd { }")
    assert sends_virt_node("docker", both) and not sends_virt_node("systemd", both)
    every = conf("docker { }\nkvm { }\nsystemd { }")
    assert [n for n in ("systemd", "docker", "kvm") if sends_virt_node(n, every)] == ["kvm"]
    alone = conf("systemd { }")
    assert sends_virt_node("systemd", alone)
    assert not sends_virt_node("docker", conf(""))


def test_an_error_is_said_in_one_line():
    from hsflowd.errors import one_line
    assert one_line(OSError(2, "No such file or directory")) == \
        "FileNotFoundError: [Errno 2] No such file or directory"
    assert one_line(ValueError("first\nsecond\n")) == "ValueError: first"
    assert one_line(RuntimeError("")) == "RuntimeError"
    assert one_line(RuntimeError("  libvirt says\nmore"), kind=False) == "libvirt says"
