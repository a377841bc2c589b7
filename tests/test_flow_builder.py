"""FlowSampleBuilder: the bytes of a flow sample, and the sample pool it carries.

Pure: no sockets, no root.  The pool numbers below are worked out by hand in the comments
(N = 10 unless said otherwise): each sample advances the pool by N, the first count handed
to ``set_pool`` is a baseline, and the difference between a later count and the pool is
spread over as many samples as came in the interval before, each step within 1..4N.
"""

from __future__ import annotations

import random
import struct

import pytest

from hsflowd.samplers.flow import FlowSampleBuilder
from hsflowd.sflow import ExtendedTimestamp, FlowSample, SampledHeader
from hsflowd.sflow.samples import INTERNAL

_FIXED = struct.Struct(">IIIIIIII")  # tag, length, seq, source type, index, rate, pool, drops


def builder(rate=10, header_bytes=128):
    out = []
    return FlowSampleBuilder(3, rate, header_bytes, out.append), out


def fields(sample: bytes) -> dict:
    _, _, seq, _, _, rate, pool, drops = _FIXED.unpack_from(sample)
    return {"seq": seq, "rate": rate, "pool": pool, "drops": drops}


def take(b, out, n):
    """n samples; the pools they carry."""
    del out[:]
    for _ in range(n):
        b.sample(bytes(60), 60, 3, INTERNAL, 1)
    return [fields(s)["pool"] for s in out]


# ---------------------------------------------------------------- the bytes

@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 60, 127, 128, 200])
def test_bytes_match_the_declarative_encoder(length):
    b, out = builder(rate=400, header_bytes=128)
    b.drops = 2
    header = bytes(range(length % 256)) * (length // 256) + bytes(range(length % 256))
    header = header[:length]
    b.sample(header, 1514, 3, INTERNAL, 1_795_651_202_705_602_000)
    kept = header[:128]
    expect = FlowSample(
        sequence_number=1, source_id_type=0, source_id_index=3, sampling_rate=400,
        sample_pool=400, drops=2, input_format=0, input=3, output_format=0, output=INTERNAL,
        flow_records=[SampledHeader(header_protocol=1, frame_length=1518, stripped=4,
                                    header=kept),
                      ExtendedTimestamp(nanoseconds=1_795_651_202_705_602_000)]).encode()
    assert out == [expect]


def test_raw_ip_and_multiple_outputs():
    b, out = builder()
    b.sample(bytes(40), 40, INTERNAL, 7, 5, output_format=2, protocol=11, stripped=18)
    fs = FlowSample.decode_body(out[0], 8, len(out[0]))
    assert (fs.output_format, fs.output, fs.input) == (2, 7, INTERNAL)
    header = fs.flow_records[0]
    assert (header.header_protocol, header.frame_length, header.stripped) == (11, 58, 18)


def test_drops_are_the_running_total_the_sampler_keeps():
    b, out = builder()
    b.drops += 3
    b.sample(bytes(60), 60, 3, INTERNAL, 1)
    b.drops += 2
    b.sample(bytes(60), 60, 3, INTERNAL, 1)
    assert [fields(s)["drops"] for s in out] == [3, 5]
    assert [fields(s)["seq"] for s in out] == [1, 2]


# ---------------------------------------------------------------- the pool, by hand

def test_n_per_sample_until_the_first_count():
    b, out = builder()
    assert take(b, out, 3) == [10, 20, 30]
    assert b.sample_pool == 30


def test_the_first_count_is_a_baseline_and_corrections_are_spread():
    b, out = builder()
    assert take(b, out, 3) == [10, 20, 30]
    # the interface had carried 100,000 packets before: they are not in the pool
    b.set_pool(100_000)                          # baseline: 100,000 stands for pool 30
    assert b.sample_pool == 30
    assert take(b, out, 7) == [40, 50, 60, 70, 80, 90, 100]
    # 150 packets since the baseline: target 180, pool 100, 80 owed over the 7 samples
    # the interval had: 12 more each (ceil 80/7), for 80 // 12 = 6 samples; 8 wait
    b.set_pool(100_150)
    assert b.sample_pool == 180
    assert take(b, out, 8) == [122, 144, 166, 188, 210, 232, 242, 252]
    # target 30 + 300 = 330, pool 252: 78 owed over 8 samples: 10 more each, 7 of them
    b.set_pool(100_300)
    assert take(b, out, 8) == [272, 292, 312, 332, 352, 372, 392, 402]
    # target 410, pool 402: 8 owed over 8 samples: 1 more each
    b.set_pool(100_380)
    assert take(b, out, 3) == [413, 424, 435]
    # target 430, pool 435: the samples ran 5 ahead; over 3 samples: 2 less each
    # (ceil 5/3), for 5 // 2 = 2 samples; the last packet waits
    b.set_pool(100_400)
    assert b.sample_pool == 435                  # the pool never goes back
    assert take(b, out, 3) == [443, 451, 461]


def test_no_step_is_more_than_4n_or_less_than_1():
    b, out = builder()
    assert take(b, out, 2) == [10, 20]
    b.set_pool(1000)                             # baseline: target 20
    assert take(b, out, 2) == [30, 40]
    # 1,000 packets in the pool's place of 20: 980 owed, over 2 samples that would be
    # 490 more each; capped at 3N = 30 (steps of 40), for 980 // 30 = 32 samples
    b.set_pool(2000)
    pools = take(b, out, 33)
    steps = [q - p for p, q in zip([40] + pools, pools)]
    assert steps == [40] * 32 + [10]
    assert pools[-1] == 40 + 32 * 40 + 10 == 1330
    # no packets since (the same count), yet 33 samples: the pool is 310 ahead of the
    # target 1020; ceil(310 / 33) = 10 less each, capped at N - 1 (steps of 1), 34 samples
    b.set_pool(2000)
    pools = take(b, out, 35)
    steps = [q - p for p, q in zip([1330] + pools, pools)]
    assert steps == [1] * 34 + [10]


def test_what_a_correction_leaves_is_planned_at_the_next_count():
    b, out = builder()
    take(b, out, 1)                              # pool 10
    b.set_pool(1000)                             # baseline: target 10
    assert take(b, out, 2) == [20, 30]
    b.set_pool(1027)                             # target 37: 7 owed over 2 samples
    assert take(b, out, 3) == [44, 54, 64]       # 4 more (ceil 7/2) for 7 // 4 = 1 sample
    b.set_pool(1057)                             # target 67, pool 64: the 3 left, over 3
    assert take(b, out, 4) == [75, 86, 97, 107]


def test_a_count_of_zero_says_nothing():
    # nflog has no count and calls set_pool(0) when its rate changes
    b, out = builder(rate=100)
    assert take(b, out, 2) == [100, 200]
    b.set_pool(0)
    b.sampling_rate = 10
    assert take(b, out, 2) == [210, 220]
    assert [fields(s)["rate"] for s in out] == [10, 10]


def test_a_counter_that_goes_down_is_a_new_baseline():
    b, out = builder()
    assert take(b, out, 2) == [10, 20]
    b.set_pool(5000)                             # baseline: target 20
    assert take(b, out, 2) == [30, 40]
    b.set_pool(5020)                             # target 40: nothing owed
    assert take(b, out, 1) == [50]
    b.set_pool(100)                              # the device was re-created: a new baseline
    assert take(b, out, 1) == [60]               # at the pool reached (50), no jump
    b.set_pool(130)                              # target 50 + 30 = 80, pool 60: 20 owed
    assert take(b, out, 2) == [90, 100]          # over 1 sample: one step of 30


def test_a_count_from_the_start_is_no_baseline():
    # an eBPF program counts from when it was attached, i.e. from the builder's start
    b, out = builder()
    assert take(b, out, 3) == [10, 20, 30]
    b.set_pool(45, from_start=True)              # target 45: 15 owed over 3 samples
    assert take(b, out, 4) == [45, 60, 75, 85]


def test_a_new_rate_drops_the_correction_in_progress():
    b, out = builder()
    take(b, out, 1)
    b.set_pool(1000)                             # baseline: target 10
    take(b, out, 1)
    b.set_pool(1500)                             # 490 owed: steps of 40 for a while
    assert take(b, out, 1) == [60]
    b.sampling_rate = 2                          # steps of 40 would be 20N now
    assert take(b, out, 2) == [62, 64]
    # target 1610 - 990 = 620, pool 64: 556 owed, but only 110 counted since the last
    # count (and 3 samples could make up 18): 110 owed, over 3 samples: 37 more each,
    # capped at 3N = 6 more
    b.set_pool(1610)
    assert take(b, out, 2) == [72, 80]


def test_a_count_the_samples_cannot_follow_is_not_owed_for_ever():
    # a NIC with GRO: its counters count the wire's packets, 10 for each the tap sees merged
    b, out = builder()
    take(b, out, 1)
    b.set_pool(1_000_000)                        # baseline
    count = 1_000_000
    for _ in range(5):                           # 10 samples, 1,000 packets a second
        pools = take(b, out, 10)
        count += 1000
        b.set_pool(count)
    assert max(q - p for p, q in zip(pools, pools[1:])) == 40   # as fast as it may
    for _ in range(2):                           # then 10 samples, 100 packets a second
        pools = take(b, out, 10)
        count += 100
        b.set_pool(count)
    # what the merged seconds left is forgiven beyond one second's packets: the pool is
    # back to N a sample within two seconds, not at 4N for the next minutes
    pools = take(b, out, 10)
    assert [q - p for p, q in zip(pools, pools[1:])] == [10] * 9


def test_the_pool_wraps_at_32_bits():
    b, out = builder()
    b.pool = 2 ** 32 - 5
    assert take(b, out, 2) == [5, 15]
    assert b.sample_pool == 15


# ---------------------------------------------------------------- a simulated interface

@pytest.mark.parametrize("rate", [1, 10, 100, 1000])
def test_a_minute_of_a_busy_interface(rate):
    """Packets arrive second by second at rates that change (idle seconds, bursts); each is
    sampled with probability 1/N, and its sample is framed up to 100 ms later (a ring
    block), so the count at a tick includes packets whose samples come after it.  The
    interface had carried 100,000 packets before sampling began.  The pool must start near
    0, never step by more than 4N or go back, and stay within 5 % of the packets counted
    since sampling began.  (What waits in the ring at the first count is counted N per
    sample: the baseline's own error, 1 % of the first second here, then a constant.)"""
    rng = random.Random(rate)
    b, out = builder(rate)
    lifetime = 100_000
    counted = 0               # packets since sampling began
    pending = []              # (packets counted when sampled) waiting in the ring
    truth = []                # per sample: packets counted when it was drawn
    for second in range(60):
        pps = rng.choice([0, 2_000, 20_000, 50_000]) if second % 7 else 100_000
        pps = 10_000 if second == 0 else pps
        drawn = [i for i in range(1, pps + 1) if rng.random() < 1 / rate] if rate > 1 \
            else list(range(1, pps + 1))
        late = int(pps * 0.9)                    # the last 100 ms wait in the ring
        for i in drawn:
            if i <= late:
                pending.append(counted + i)
        for when in pending:
            b.sample(bytes(60), 60, 3, INTERNAL, 1)
            truth.append(when)
        pending = [counted + i for i in drawn if i > late]
        counted += pps
        lifetime += pps
        b.set_pool(lifetime)
    pools = [fields(s)["pool"] for s in out]
    assert pools[0] <= 4 * rate
    steps = [q - p for p, q in zip([0] + pools, pools)]
    assert min(steps) >= 1 and max(steps) <= 4 * rate
    assert abs(pools[-1] - truth[-1]) <= 0.05 * truth[-1]
    # and all along, once there is something to compare
    for pool, when in zip(pools, truth):
        if when >= 200_000:
            assert abs(pool - when) <= 0.05 * when, (pool, when)
