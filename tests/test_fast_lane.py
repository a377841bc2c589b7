"""The datagram's fast lane (samples packed straight into the open datagram, samplers/flow.py
and sflow/datagram.py) against the slow lane (each sample packed alone, then added): the
same bytes, whatever the datagram size, header size, oversized samples and a datagramBytes
changed between batches; and a batch cut short by a failing send leaves the builder's
numbers where the samples already sent put them."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address

import pytest

from hsflowd.samplers.flow import FlowSampleBuilder
from hsflowd.sflow import DatagramBuilder, decode_datagram
from hsflowd.sflow.samples import INTERNAL

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _packets(rng, n):
    out = []
    for i in range(n):
        size = rng.choice([0, 1, 3, 14, 60, 127, 128, 129, 200, 256, 300])
        out.append((bytes(rng.getrandbits(8) for _ in range(size)), size + rng.randrange(1500),
                    rng.randrange(1, 50), INTERNAL, 1_700_000_000_000_000_000 + i, rng.choice((0, 2))))
    return out


def _run(fast: bool, agent, datagram_bytes, batches, header_bytes, resize=None):
    sent, clock = [], Clock()
    db = DatagramBuilder(agent, 7, sent.append, datagram_bytes=datagram_bytes, clock=clock)
    if fast:
        fb = FlowSampleBuilder(5, 10, header_bytes, db.add, writer=lambda: db)
    else:
        fb = FlowSampleBuilder(5, 10, header_bytes, db.add)
    for i, batch in enumerate(batches):
        if resize and i in resize:
            db.datagram_bytes = resize[i]          # a reload between two ring blocks
        fb.drops += i
        fb.frame(batch)
    db.flush()
    return sent, db, fb


@pytest.mark.parametrize("agent", [IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1")])
@pytest.mark.parametrize("datagram_bytes,header_bytes", [(1400, 128), (300, 256), (200, 256),
                                                         (1400, 256), (8192, 64)])
def test_fast_lane_sends_the_very_bytes_of_the_slow_lane(agent, datagram_bytes, header_bytes):
    """Packed in place, the datagrams are byte for byte those of pack + add: sequence
    numbers, pools, oversized samples refused, every datagram under the limit."""
    rng = random.Random(datagram_bytes + header_bytes)
    batches = [_packets(rng, rng.randrange(0, 40)) for _ in range(30)]
    resize = {10: max(200, datagram_bytes // 2), 20: datagram_bytes}
    slow, db_slow, fb_slow = _run(False, agent, datagram_bytes, batches, header_bytes, resize)
    fast, db_fast, fb_fast = _run(True, agent, datagram_bytes, batches, header_bytes, resize)
    assert fast == slow
    assert (db_fast.oversized, db_fast.largest_oversized) == (db_slow.oversized, db_slow.largest_oversized)
    assert (fb_fast.sequence_number, fb_fast.pool) == (fb_slow.sequence_number, fb_slow.pool)
    seqs = []
    for i, d in enumerate(fast):
        assert len(d) < max(datagram_bytes, 200)
        dg = decode_datagram(d)
        assert dg.sequence_number == i + 1 and dg.samples
        seqs += [s.sequence_number for s in dg.samples]
    assert seqs == sorted(seqs)


def test_a_batch_cut_short_by_a_failing_send_sends_no_number_twice():
    """A send that raises half-way through a batch (here the second datagram's, once):
    the samples already framed keep their numbers, the next batch goes on from them, and
    nothing already sent is sent again."""
    sent, fail = [], [True]

    def send(d):
        if fail[0] and sent:
            fail[0] = False
            raise RuntimeError("send")
        sent.append(d)
    db = DatagramBuilder(IPv4Address("192.0.2.1"), 0, send, datagram_bytes=500, clock=Clock())
    fb = FlowSampleBuilder(5, 10, 128, db.add, writer=lambda: db)
    p = (bytes(128), 1500, 1, INTERNAL, 1, 0)
    with pytest.raises(RuntimeError):
        fb.frame([p] * 10)          # two samples a datagram: the 2nd flush raises
    fb.frame([p] * 4)
    db.flush()
    seqs = [s.sequence_number for d in sent for s in decode_datagram(d).samples]
    assert len(seqs) == len(set(seqs)), f"sequence numbers sent twice: {seqs}"
