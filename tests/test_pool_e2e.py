"""The sample pool end to end: the agent as a real process sampling a veth for a minute.

The veth carries 100,000 packets before the agent starts.  Then traffic whose rate changes
(idle seconds, bursts, a trickle at the end) crosses it both ways, and the test reads the
interface's counters four times a second (/sys/class/net/eth0/statistics in the agent's
namespace) while it receives the agent's flow samples.  sFlow's sample_pool counts the
packets that could have been sampled since sampling began; it must:

- start near 0 (the first sample's pool is at most 4N), not at the veth's lifetime count;
- never step by more than 4N between consecutive samples, nor go back (collectors that
  weight a sample by delta(pool) / delta(sequence), as pmacct does, would count a jump as
  packets of whichever flow the sample belongs to);
- follow the interface's packet count since sampling began within 5 %: at every sample
  once 20,000 packets have gone by (bracketed by the first count read after it arrived
  and the last read 3 s before: a sample reaches the collector up to a second and a bit
  after its packet), and
  at the end of the minute;
- drops: a running total, never going down.

pcap {} for a minute, epcap {} (eBPF, skipped where bcc cannot run) for 20 seconds.
"""

from __future__ import annotations

import bisect
import threading
import time

import pytest

from agentproc import agents, config_text, receivers  # noqa: F401 (fixtures)
from netns import veth
from traffic import SampleReader, flow_samples, link_counters, send_udp, sink, start_udp

pytestmark = [pytest.mark.netns, pytest.mark.slow]

N = 10
HOST, PEER = "10.231.31.1", "10.231.31.2"
PRELOAD = 100_000
# (packets/s, seconds) from peer to host; meanwhile 1,000 packets/s from host to peer
MINUTE = [(5_000, 8), (0, 4), (20_000, 6), (2_000, 10), (40_000, 3), (0, 5), (8_000, 10),
          (1_000, 14)]
TWENTY = [(5_000, 4), (0, 2), (30_000, 3), (2_000, 4), (0, 2), (1_000, 5)]


class CounterLog(threading.Thread):
    """rx + tx packets of one interface, read every 0.25 s: (time.monotonic(), packets)."""

    def __init__(self, ns, ifname: str):
        super().__init__(daemon=True)
        self.ns, self.ifname = ns, ifname
        self.times, self.counts = [], []
        self.stopping = threading.Event()

    def read(self) -> int:
        c = link_counters(self.ns, self.ifname)
        return c["rx_packets"] + c["tx_packets"]

    def run(self) -> None:
        while not self.stopping.is_set():
            at, count = time.monotonic(), self.read()
            self.times.append(at)
            self.counts.append(count)
            self.stopping.wait(0.25)

    def at(self, when: float) -> int:
        """The last count read at or before ``when`` (the first one if none was)."""
        i = bisect.bisect_right(self.times, when) - 1
        return self.counts[max(i, 0)]

    def after(self, when: float) -> int:
        """The first count read at or after ``when`` (the last one if none was): a bound
        that holds however late this thread was scheduled."""
        i = bisect.bisect_left(self.times, when)
        return self.counts[min(i, len(self.counts) - 1)]

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


@pytest.mark.parametrize("block, schedule", [("pcap", MINUTE), ("epcap", TWENTY)])
def test_pool_follows_the_interface(netns, agents, receivers, block, schedule):
    host, peer = netns(), netns()
    veth(host, "eth0", peer, "wire", f"{HOST}/24", f"{PEER}/24")
    sink(host, HOST, 9000, 9001)
    sink(peer, PEER, 9002)
    assert send_udp(peer, PEER, 7000, HOST, 9000, PRELOAD, 16, 0) == PRELOAD
    lifetime = link_counters(host, "eth0")
    assert lifetime["rx_packets"] >= PRELOAD

    ours = receivers(netns=host.name)
    agent = agents(config_text([("127.0.0.1", ours.port)], polling=20,
                               extra=f"{block} {{ dev = eth0 sampling = {N} }}"),
                   netns=host.name)
    assert agent.wait_for_log("sampling eth0", 15), agent.stderr()
    if block == "epcap" and "classic BPF instead" in agent.stderr():
        pytest.skip("eBPF cannot run here: " + agent.stderr().splitlines()[-1])
    counts = CounterLog(host, "eth0")
    base = counts.read()                         # nothing crosses between the tap and here
    reader = SampleReader(ours)
    counts.start()
    reader.start()
    try:
        seconds = sum(s for _, s in schedule)
        back = start_udp(host, HOST, 7002, PEER, 9002, 1_000 * seconds, 64, 1_000)
        for pps, duration in schedule:
            if pps:
                send_udp(peer, PEER, 7001, HOST, 9001, pps * duration, 64, pps)
            else:
                time.sleep(duration)
        back.communicate(timeout=30)
        time.sleep(0.5)                          # the trickle's last samples arrive
        end = counts.read() - base
    finally:
        received = reader.stop()
        counts.stop()
    assert agent.alive(), agent.stderr()

    samples = [(r.at, s) for r in received for s in flow_samples([r])]
    pools = [s.sample_pool for _, s in samples]
    seqs = [s.sequence_number for _, s in samples]
    assert seqs == list(range(1, len(seqs) + 1)), "datagrams were lost on the way"
    print(f"\n{block}: {len(samples):,} samples; interface {end:,} packets since sampling "
          f"began ({lifetime['rx_packets'] + lifetime['tx_packets']:,} before); last pool "
          f"{pools[-1]:,}")

    assert pools[0] <= 4 * N, f"the first sample's pool is {pools[0]:,}"
    steps = [b - a for a, b in zip(pools, pools[1:])]
    assert min(steps) >= 1 and max(steps) <= 4 * N, (min(steps), max(steps))
    drops = [s.drops for _, s in samples]
    assert drops == sorted(drops)

    checked = 0
    for (arrived, s), pool in zip(samples, pools):
        low, high = counts.at(arrived - 3.0) - base, counts.after(arrived) - base
        if low < 20_000:
            continue
        assert 0.95 * low <= pool <= 1.05 * high, (pool, low, high)
        checked += 1
    assert checked > len(samples) // 2
    print(f"{checked:,} samples checked against the counts; at the end the pool is off by "
          f"{(pools[-1] - end) / end:+.2%}")
    assert abs(pools[-1] - end) <= 0.05 * end, (pools[-1], end)
