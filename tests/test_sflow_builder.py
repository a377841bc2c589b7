"""DatagramBuilder: how samples are framed into datagrams.

Datagrams stay strictly under ``datagram_bytes`` and are filled until the next sample would not
fit; sequence numbers start at 1 and rise by one; uptime is milliseconds since the builder was
made; flush() sends what is queued; a sample that fits no datagram is counted and dropped.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsflowd.sflow import (
    DEFAULT_DATAGRAM_BYTES, MAX_DATAGRAM_BYTES, MIN_DATAGRAM_BYTES, DatagramBuilder,
    ExtendedTimestamp, FlowSample, SampledHeader, UnknownRecord, decode_datagram,
)
from hsflowd.sflow.samples import INTERNAL


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def make(datagram_bytes=DEFAULT_DATAGRAM_BYTES, agent=IPv4Address("192.0.2.1"), clock=None):
    sent = []
    clock = clock or FakeClock()
    builder = DatagramBuilder(agent, 100000, sent.append, datagram_bytes=datagram_bytes,
                              clock=clock)
    return builder, sent, clock


def flow_sample(seq, header_len=128):
    return FlowSample(sequence_number=seq, source_id_type=0, source_id_index=3, sampling_rate=400,
                      sample_pool=400 * seq, input=3, output=INTERNAL,
                      flow_records=[ExtendedTimestamp(nanoseconds=seq),
                                    SampledHeader(frame_length=1518, header=bytes(header_len))]
                      ).encode()


def raw_sample(size):
    """An encoded sample of exactly ``size`` bytes (tag + length + body)."""
    assert size >= 8 and size % 4 == 0
    return UnknownRecord(0, 99, bytes(size - 8)).encode()


def header_fields(datagram):
    version, addr_type = struct.unpack_from(">II", datagram)
    off = 8 + (4 if addr_type == 1 else 16)
    sub_agent, seq, uptime, count = struct.unpack_from(">IIII", datagram, off)
    return version, addr_type, sub_agent, seq, uptime, count


def test_defaults_and_limits():
    assert (MIN_DATAGRAM_BYTES, DEFAULT_DATAGRAM_BYTES, MAX_DATAGRAM_BYTES) == (200, 1400, 8192)
    builder, _, _ = make()
    assert builder.datagram_bytes == 1400
    for ok in (200, 1400, 8192):
        make(ok)
    for bad in (0, 199, 8193, 65535):
        with pytest.raises(ValueError, match=str(bad)):
            make(bad)


def test_header_sizes():
    assert make()[0].header_size == 28
    builder, sent, _ = make(agent=IPv6Address("2001:db8::1"))
    assert builder.header_size == 40
    builder.add(raw_sample(16))
    builder.flush()
    assert len(sent[0]) == 40 + 16
    assert sent[0][:24] == bytes.fromhex("00000005 00000002 20010db8000000000000000000000001")
    dg = decode_datagram(sent[0])
    assert dg.agent_address == IPv6Address("2001:db8::1") and dg.sub_agent_id == 100000


def test_flush_sends_queued_samples_and_nothing_when_empty():
    builder, sent, _ = make()
    builder.flush()
    assert sent == []
    samples = [flow_sample(1), flow_sample(2)]
    for x in samples:
        builder.add(x)
    assert sent == []  # nothing goes before it is full or flushed
    builder.flush()
    assert len(sent) == 1
    assert sent[0][28:] == samples[0] + samples[1]
    assert header_fields(sent[0]) == (5, 1, 100000, 1, 0, 2)
    builder.flush()
    builder.flush()
    assert len(sent) == 1


def test_sequence_numbers_start_at_one_and_rise_by_one():
    builder, sent, _ = make()
    for i in range(50):
        builder.add(flow_sample(i + 1))
        if i % 7 == 0:
            builder.flush()
    builder.flush()
    seqs = [header_fields(d)[3] for d in sent]
    assert seqs == list(range(1, len(sent) + 1))
    assert builder.sequence_number == len(sent)
    # every sample arrived once, in order
    got = [s.sequence_number for d in sent for s in decode_datagram(d).samples]
    assert got == list(range(1, 51))


def test_uptime_is_milliseconds_since_creation():
    clock = FakeClock(5000.0)
    builder, sent, _ = make(clock=clock)
    clock.now = 5000.25
    builder.add(raw_sample(16))
    builder.flush()
    clock.now = 5000.0 + 3600 * 24   # a day later
    builder.add(raw_sample(16))
    builder.flush()
    clock.now = 5000.0 + 49.7 * 24 * 3600 + 10  # past 2^32 ms: wraps
    builder.add(raw_sample(16))
    builder.flush()
    uptimes = [header_fields(d)[4] for d in sent]
    assert uptimes[0] == 250
    assert uptimes[1] == 86_400_000
    assert uptimes[2] == int((49.7 * 24 * 3600 + 10) * 1000) % 2 ** 32


@pytest.mark.parametrize("limit", [200, 1400, 1500, 8192])
def test_datagrams_stay_under_the_limit_and_are_filled(limit):
    builder, sent, _ = make(limit)
    samples = [flow_sample(i + 1, header_len=(i * 37) % 129) for i in range(300)]  # distinct
    for x in samples:
        builder.add(x)
    builder.flush()
    assert builder.oversized == 0 or limit == 200
    delivered = [x for d in sent for x in _samples_of(d)]
    assert delivered == [x for x in samples if 28 + len(x) < limit]
    check_filled(sent, samples, limit)


def _samples_of(datagram):
    dg = decode_datagram(datagram)
    return [x.encode() for x in dg.samples]


def check_filled(sent, offered, limit):
    """Every datagram is under the limit, and each but the last went out because the sample
    offered after its last one would have brought it to the limit."""
    position = {x: i for i, x in enumerate(offered)}
    assert len(position) == len(offered)  # samples are distinct
    for d in sent:
        assert len(d) < limit  # strictly less
    for d in sent[:-1]:
        last = position[_samples_of(d)[-1]]
        assert len(d) + len(offered[last + 1]) >= limit


def test_sample_that_exactly_reaches_the_limit_goes_in_the_next_datagram():
    builder, sent, _ = make(200)
    builder.add(raw_sample(100))   # 28 + 100 = 128
    builder.add(raw_sample(72))    # 128 + 72 = 200: not < 200, so the first is sent alone
    assert [len(d) for d in sent] == [128]
    builder.add(raw_sample(68))    # 28 + 72 + 68 = 168
    builder.flush()
    assert [len(d) for d in sent] == [128, 168]


def test_oversized_sample_is_counted_and_dropped():
    builder, sent, _ = make(200)
    builder.add(raw_sample(16))
    builder.add(raw_sample(172))   # 28 + 172 = 200: fits no datagram
    assert builder.oversized == 1
    builder.add(raw_sample(400))
    assert builder.oversized == 2
    builder.flush()
    # the queued sample went out (today: when the oversized one arrived), the others did not
    assert [len(d) for d in sent] == [28 + 16]
    builder.add(raw_sample(168))   # 28 + 168 = 196 < 200: fits alone
    builder.flush()
    assert builder.oversized == 2 and [len(d) for d in sent] == [44, 196]
    assert [header_fields(d)[3] for d in sent] == [1, 2]  # drops do not use sequence numbers


def test_ipv6_agent_leaves_less_room():
    builder, sent, _ = make(200, agent=IPv6Address("2001:db8::1"))
    builder.add(raw_sample(160))   # 40 + 160 = 200: too big with the IPv6 header
    assert builder.oversized == 1
    builder.add(raw_sample(156))
    builder.flush()
    assert [len(d) for d in sent] == [196]


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.integers(200, 8192),
       st.lists(st.integers(3, 600).map(lambda n: n * 4), min_size=1, max_size=80),
       st.sampled_from([IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1")]))
def test_framing_properties(limit, sizes, agent):
    builder, sent, _ = make(limit, agent=agent)
    head = builder.header_size
    samples = [UnknownRecord(0, 99, struct.pack(">I", i) + bytes(n - 12)).encode()
               for i, n in enumerate(sizes)]
    for x in samples:
        builder.add(x)
    builder.flush()
    fitting = [x for x in samples if head + len(x) < limit]
    assert builder.oversized == len(samples) - len(fitting)
    assert [x for d in sent for x in _samples_of(d)] == fitting
    assert [header_fields(d)[3] for d in sent] == list(range(1, len(sent) + 1))
    check_filled(sent, samples, limit)
