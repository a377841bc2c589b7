"""kvm {} end to end: the agent as a real process, against libvirt's test driver (the real
libvirt API with made-up domains, inside the agent) and against a libvirtd of the test's
own running a small QEMU domain (tests/libvirt_tools.py).

Tolerances (the agent reads a moment before the probe asks libvirt the same): CPU time
0..CPU_MS_SLACK ms behind; interface counters 0..NET_PKTS_SLACK packets behind.  What is
due within a polling interval is waited for SOON: five polling intervals.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import libvirt_tools
from agentproc import (agents, config_text, receivers, records_by_tag,  # noqa: F401 (fixtures)
                       samples_from)
from hsflowd.virt.dsindex import preferred_ds_index

POLLING = 2
SOON = 5 * POLLING
CPU_MS_SLACK = 1000
NET_PKTS_SLACK = 10
ORDER = [2000, 2002, 2104, 2101, 2102, 2103, 2001]

NODE_XML = """<node>
  <domain type='test'>
    <name>hsft-web</name>
    <uuid>0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0</uuid>
    <memory unit='MiB'>512</memory>
    <currentMemory unit='MiB'>384</currentMemory>
    <vcpu>2</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <interface type='network'>
        <mac address='52:54:00:11:22:33'/>
        <source network='default'/>
        <target dev='hsfttap0'/>
      </interface>
      <disk type='file' device='disk'>
        <source file='/guests/web.img'/>
        <target dev='vda'/>
      </disk>
    </devices>
  </domain>
  <domain type='test'>
    <name>hsft-db</name>
    <uuid>8c7b6a59-4837-2615-0f1e-2d3c4b5a6978</uuid>
    <memory unit='MiB'>1024</memory>
    <vcpu>4</vcpu>
    <os><type>hvm</type></os>
  </domain>
</node>
"""


def ds_of(text: str):
    return 3, preferred_ds_index(bytes.fromhex(text.replace("-", "")))


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])
    raise AssertionError("no Uid line")


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _wait(receiver, until, timeout: float) -> bool:
    receiver.collect(timeout, until=lambda _got: until())
    return bool(until())


def _samples(receiver, source, since: float = 0.0):
    return [s for r, s in samples_from(receiver.received, source) if r.at >= since]


def test_kvm_test_driver(agents, receivers):  # noqa: F811
    """libvirt's test driver: 3:N from each domain's UUID, the records, and 2100; the
    test driver needs no privilege, so the agent runs as nobody."""
    try:
        from hsflowd.virt.libvirtapi import LibvirtUnavailable, load_libvirt
        load_libvirt()
    except LibvirtUnavailable as e:
        pytest.skip(str(e))
    r = receivers()
    factory_dir = agents.workdir
    node = factory_dir / "node.xml"
    node.write_text(NODE_XML)
    os.chmod(node, 0o644)
    agent = agents(config_text([("127.0.0.1", r.port)], polling=POLLING,
                               extra=f'kvm {{ uri = "test://{node}" }}'))
    web, db = ds_of("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"), ds_of("8c7b6a59-4837-2615-0f1e-2d3c4b5a6978")
    assert _wait(r, lambda: _samples(r, web) and _samples(r, db), 10), agent.stderr()
    if os.geteuid() == 0:
        assert _uid(agent.pid) == 65534, "the test driver needs no privilege"
    w, d = records_by_tag(_samples(r, web)[-1]), records_by_tag(_samples(r, db)[-1])
    assert list(w) == ORDER and list(d) == ORDER
    assert (w[2000].hostname, str(w[2000].uuid)) == ("hsft-web", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    assert (d[2000].hostname, str(d[2000].uuid)) == ("hsft-db", "8c7b6a59-4837-2615-0f1e-2d3c4b5a6978")
    assert (w[2000].machine_type, w[2000].os_name, w[2000].os_release) == (0, 0, "")
    assert (w[2002].container_type, w[2002].container_index) == (2, 1)
    assert (w[2101].state, w[2101].nrVirtCpu) == (1, 2)
    assert (d[2101].state, d[2101].nrVirtCpu) == (1, 4)
    assert (w[2102].memory, w[2102].maxMemory) == (384 << 20, 512 << 20)
    assert (d[2102].memory, d[2102].maxMemory) == (1 << 30, 1 << 30)
    # the test driver's interface and block statistics are made-up but present
    assert w[2104].rx_bytes not in (0, 2 ** 64 - 1) and w[2103].rd_bytes not in (0, 2 ** 64 - 1)
    assert w[2103].capacity > 0
    assert (d[2104].rx_bytes, d[2104].tx_packets) == (0, 0)     # no interfaces: nothing
    assert [(a.ifIndex, a.mac_addresses[0].hex()) for a in w[2001].adapters] == [(0, "525400112233")]
    assert d[2001].adapters == []
    assert _wait(r, lambda: any(records_by_tag(s)[2100].num_domains == 2
                                for s in _samples(r, (2, 1))), SOON)
    assert "Traceback" not in agent.stderr()


def test_kvm_without_libvirtd_costs_one_line(agents, receivers):  # noqa: F811
    try:
        from hsflowd.virt.libvirtapi import LibvirtUnavailable, load_libvirt
        load_libvirt()
    except LibvirtUnavailable as e:
        pytest.skip(str(e))
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1, extra=(
        'kvm { uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock" }')))
    got = r.collect(5)          # attempts at 0, 2 and 6 s
    assert any(s for rr in got for s in rr.datagram.samples), agent.stderr()
    assert agent.stderr().count("cannot open") == 1, agent.stderr()
    assert not [s for rr in got for s in rr.datagram.samples
                if getattr(s, "source_id_type", None) == 3]
    deadline = time.monotonic() + 10
    while _threads(agent.pid) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _threads(agent.pid) == 1


@pytest.mark.netns
@pytest.mark.slow
def test_kvm_qemu_domain(libvirtd, agents, receivers):  # noqa: F811
    """A QEMU domain in a real libvirtd: reported with libvirt's numbers; stopped (a
    lifecycle event, not a list read); libvirtd restarted; a domain started afterwards."""
    try:
        vm = libvirtd.create()
    except libvirt_tools.LibvirtUnavailable as e:
        pytest.skip(str(e))
    truths = {}
    ds = ds_of(vm["uuid"])

    def probe(dg):
        for s in dg.samples:
            if (getattr(s, "source_id_type", None), getattr(s, "source_id_index", None)) == ds:
                try:
                    stats = libvirtd.conn().domainListGetStats([vm["domain"]], 0)[0][1]
                    truths[id(s)] = stats
                except Exception:
                    pass
        return None

    r = receivers(probe=probe)
    agent = agents(config_text([("127.0.0.1", r.port)], polling=POLLING, extra="kvm { }"))
    assert _wait(r, lambda: len(_samples(r, ds)) >= 2, 15), agent.stderr()
    rec = records_by_tag(_samples(r, ds)[-1])
    assert list(rec) == ORDER
    assert (rec[2000].hostname, str(rec[2000].uuid)) == (vm["name"], vm["uuid"])
    assert (rec[2101].state, rec[2101].nrVirtCpu) == (1, 1)
    assert (rec[2102].memory, rec[2102].maxMemory) == (64 << 20, 64 << 20)
    tap = int(Path(f"/sys/class/net/{vm['tap']}/ifindex").read_text())
    assert [(a.ifIndex, a.mac_addresses[0].hex()) for a in rec[2001].adapters] == \
        [(tap, vm["mac"].replace(":", ""))]
    checked = 0
    for s in _samples(r, ds):
        truth = truths.get(id(s))
        if truth is None:
            continue
        rec = records_by_tag(s)
        assert 0 <= truth["cpu.time"] // 1_000_000 - rec[2101].cpuTime <= CPU_MS_SLACK, truth
        assert 0 <= truth["net.0.rx.pkts"] - rec[2104].rx_packets <= NET_PKTS_SLACK, truth
        assert 0 <= truth["net.0.tx.pkts"] - rec[2104].tx_packets <= NET_PKTS_SLACK, truth
        assert 0 <= truth["net.0.rx.bytes"] - rec[2104].rx_bytes <= 1500 * NET_PKTS_SLACK
        checked += 1
    assert checked >= 1
    assert _wait(r, lambda: any(records_by_tag(s)[2100].num_domains == 1
                                for s in _samples(r, (2, 1))), SOON)
    threads = _threads(agent.pid)

    # stopped: shut off at once (the lifecycle event), still reported until forgetVMs
    t_stop = time.monotonic()
    libvirtd.destroy(vm["name"])
    assert _wait(r, lambda: any(records_by_tag(s)[2101].state == 5
                                for s in _samples(r, ds, t_stop)), SOON)

    # libvirtd restarted: the agent connects again; a domain started then is reported
    libvirtd.restart()
    assert _wait(r, lambda: agent.stderr().count("kvm {}: connected to") >= 2, 20), agent.stderr()
    t_new = time.monotonic()
    vm2 = libvirtd.create()
    ds2 = ds_of(vm2["uuid"])
    assert _wait(r, lambda: _samples(r, ds2, t_new), SOON), agent.stderr()
    assert records_by_tag(_samples(r, ds2)[-1])[2000].hostname == vm2["name"]
    assert _threads(agent.pid) == threads
    assert "Traceback" not in agent.stderr()
