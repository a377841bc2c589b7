"""The decoder on hostile input: it returns a Datagram or raises DecodeError, nothing else.

Random bytes, every truncated prefix of real datagrams, bit flips, absurd counts and lengths.
Unknown samples and records are kept as UnknownRecord and skipped by their length; records
longer than their layout (extended at the end) are accepted; the 68-byte host_cpu of agents
older than 2014 decodes.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsflowd.sflow import (
    CountersSample, DecodeError, EthernetCounters, ExtendedTimestamp, FlowSample, HostCpu,
    HostDescr, IfCounters, PortName, SampledHeader, UnknownRecord, decode_datagram,
)
from hsflowd.decode.capture import read_udp
from hsflowd.sflow.samples import Datagram

from test_sflow_records import h
from test_sflow_roundtrip import datagrams

VECTORS = os.environ.get("SFLOW_VECTORS", os.path.join(os.path.dirname(__file__), "vectors"))
FUZZ = settings(max_examples=300, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def decode_or_error(data: bytes):
    """decode_datagram, asserting it fails only with DecodeError (returns None then)."""
    try:
        dg = decode_datagram(data)
    except DecodeError as e:
        assert str(e)  # a message a person can read
        return None
    assert isinstance(dg, Datagram)
    # whatever decodes can be encoded again, and that encoding is stable
    enc = dg.encode()
    assert decode_datagram(enc).encode() == enc
    return dg


def _payloads(name):
    path = os.path.join(VECTORS, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not found")
    with open(path, "rb") as f:
        return [p.payload for p in read_udp(f)]


# ---------------------------------------------------------------- random input

@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data):
    decode_or_error(data)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_after_a_valid_version(data):
    decode_or_error(b"\x00\x00\x00\x05" + data)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([1, 2]))
def test_random_bytes_after_a_valid_header(data, addr_type):
    head = b"\x00\x00\x00\x05" + struct.pack(">I", addr_type) + bytes(4 if addr_type == 1 else 16)
    decode_or_error(head + bytes(12) + data)


def _words_of(draw_list):
    return b"".join(struct.pack(">I", w) for w in draw_list)


# words that make good counts and lengths: small, exact, absurd
WORDS = st.one_of(st.integers(0, 40), st.sampled_from([
    0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFC, 0xFFFFFFFD, 0x10000000, 1, 2, 3, 4, 5, 1001,
    1002, 1005, 1043, 2000, 2001, 2003, 2100, 10]))


@FUZZ
@given(st.lists(WORDS, max_size=120))
def test_random_words(words):
    # XDR-shaped noise reaches much deeper than random bytes
    decode_or_error(b"\x00\x00\x00\x05\x00\x00\x00\x01" + bytes(4) + _words_of(words))


@FUZZ
@given(datagrams(), st.data())
def test_bit_flips_in_generated_datagrams(dg, data):
    enc = bytearray(dg.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        bit = data.draw(st.integers(0, len(enc) * 8 - 1))
        enc[bit // 8] ^= 1 << (bit % 8)
    decode_or_error(bytes(enc))


@FUZZ
@given(datagrams(), st.data())
def test_word_overwrites_in_generated_datagrams(dg, data):
    enc = bytearray(dg.encode())
    at = data.draw(st.integers(0, len(enc) // 4 - 1)) * 4
    enc[at:at + 4] = struct.pack(">I", data.draw(WORDS))
    decode_or_error(bytes(enc))


@FUZZ
@given(datagrams(), st.data())
def test_truncated_generated_datagrams(dg, data):
    enc = dg.encode()
    cut = data.draw(st.integers(0, len(enc) - 1))
    with pytest.raises(DecodeError):
        decode_datagram(enc[:cut])


# ---------------------------------------------------------------- real datagrams, exhaustively

def _pick(name, indexes):
    payloads = _payloads(name)
    return [payloads[i] for i in indexes]


REAL = [("hsflowd-2.1.25.pcap", [0, 3, 15, 18]),  # host+if counters, mixed, one flow, if only
        ("ovs-3.1.0.pcap", [0, 1, 4, 11])]          # compact counters, flows, mixed


@pytest.mark.parametrize("name, indexes", REAL, ids=[n for n, _ in REAL])
def test_every_prefix_of_real_datagrams(name, indexes):
    for payload in _pick(name, indexes):
        assert decode_or_error(payload) is not None
        for cut in range(len(payload)):
            with pytest.raises(DecodeError):
                decode_datagram(payload[:cut])
        # and bytes after the last sample are refused too
        with pytest.raises(DecodeError, match="left over"):
            decode_datagram(payload + b"\x00\x00\x00\x00")


@pytest.mark.parametrize("name, index", [("hsflowd-2.1.25.pcap", 18), ("ovs-3.1.0.pcap", 11)])
def test_every_bit_flip_of_a_real_datagram(name, index):
    payload = _pick(name, [index])[0]
    decoded = 0
    for bit in range(len(payload) * 8):
        flipped = bytearray(payload)
        flipped[bit // 8] ^= 1 << (bit % 8)
        if decode_or_error(bytes(flipped)) is not None:
            decoded += 1
    assert decoded > len(payload)  # most flips hit values, not structure


@pytest.mark.parametrize("word", [0, 3, 0x7FFFFFFF, 0xFFFFFFFF])
def test_every_word_overwritten_in_a_real_datagram(word):
    payload = _pick("hsflowd-2.1.25.pcap", [3])[0]
    for at in range(0, len(payload), 4):
        decode_or_error(payload[:at] + struct.pack(">I", word) + payload[at + 4:])


# ---------------------------------------------------------------- absurd counts and lengths

HEADER = """
    00000005 00000001 c0000201  # version 5, agent 192.0.2.1
    000186a0 00000001 00000000  # sub-agent 100000, seq 1, uptime 0
"""


def _counters(records_hex: str, count: int = 1) -> bytes:
    body = h(f"00000001 00000002 00000001 {count:08x}") + h(records_hex)  # seq, source 2:1
    return h(HEADER + "00000001") + struct.pack(">II", 4, len(body)) + body


def _flows(records_hex: str, count: int = 1) -> bytes:
    body = h(f"""
        00000001 00000000 00000003  # seq, source 0:3
        00000001 00000001 00000000  # rate, pool, drops
        00000000 00000003 00000000 3fffffff  # in 3, out internal
        {count:08x}
    """) + h(records_hex)
    return h(HEADER + "00000001") + struct.pack(">II", 3, len(body)) + body


ABSURD = {
    "empty": b"",
    "three bytes": b"\x00\x00\x00",
    "version 4": h("00000004 00000001 c0000201 00000000 00000001 00000000 00000000"),
    "version 0xffffffff": h("ffffffff") + bytes(24),
    "agent type 3": h("00000005 00000003 c0000201 00000000 00000001 00000000 00000000"),
    "agent type 0xffffffff": h("00000005 ffffffff") + bytes(40),
    "ipv6 agent truncated": h("00000005 00000002 20010db8 00000000"),
    "num_samples 0xffffffff": h(HEADER + "ffffffff"),
    "num_samples 0x10000000 with one sample": h(HEADER + "10000000 00000004 00000010")
                                                + bytes(16),
    "sample length 0xffffffff": h(HEADER + "00000001 00000004 ffffffff") + bytes(16),
    "sample length past the end": h(HEADER + "00000001 00000004 00000100") + bytes(16),
    "sample length shorter than its fixed part": h(HEADER + "00000001 00000004 00000008")
                                                 + bytes(8),
    "counter records 0xffffffff": _counters("", 0xFFFFFFFF),
    "counter records 0x7fffffff": _counters("000007d2 00000008 00000002 00000001", 0x7FFFFFFF),
    "flow records 0xffffffff": _flows("", 0xFFFFFFFF),
    "record length 0xfffffffc": _counters("000007d2 fffffffc 00000002 00000001"),
    "record length 0x7fffffff": _flows("00000001 7fffffff 00000001"),
    "host_adapters count 0xffffffff": _counters("000007d1 00000004 ffffffff"),
    "host_adapters count 0x20000000": _counters("000007d1 0000000c 20000000 00000001 00000000"),
    "mac count 0xffffffff": _counters("000007d1 0000000c 00000001 00000002 ffffffff"),
    "mac count 0x40000000": _counters("000007d1 00000014 00000001 00000002 40000000 "
                                      "02000000 00010000"),
    "sfp lanes 0xffffffff": _counters("0000000a 00000014 00000001 00000001 00000000 00000000 "
                                      "ffffffff"),
    "sfp lanes 0x06666667 (x 40 wraps 32 bits)": _counters(
        "0000000a 0000003c 00000001 00000001 00000000 00000000 06666667" + " 00000000" * 10),
    "header length 0xffffffff": _flows("00000001 00000014 00000001 00000040 00000004 ffffffff "
                                       "00000000"),
    "header length 0xfffffffd (padding wraps)": _flows(
        "00000001 00000014 00000001 00000040 00000004 fffffffd 00000000"),
    "header length one past": _flows("00000001 00000014 00000001 00000040 00000004 00000005 "
                                     "aabbccdd"),
    "hostname length 0xffffffff": _counters("000007d0 00000020 ffffffff" + " 00000000" * 7),
    "os_release length 0x80000000": _counters(
        "000007d0 00000020 00000000 00000000 00000000 00000000 00000000 00000003 00000002 "
        "80000000"),
    "port_name length 0xfffffffd": _counters("000003ed 00000008 fffffffd 65746830"),
    "router nexthop type 9": _flows("000003ea 00000010 00000009 c00002fe 00000018 00000010"),
    "router nexthop type 2 truncated": _flows("000003ea 00000010 00000002 20010db8 00000000 "
                                              "00000000"),
    "if_counters shorter than 88": _counters("00000001 00000054" + " 00000000" * 21),
    "host_cpu shorter than the legacy 68": _counters("000007d3 00000040" + " 00000000" * 16),
    "record header cut": _counters("000007d2"),
}


@pytest.mark.parametrize("name", list(ABSURD))
def test_absurd_input_is_decode_error(name):
    with pytest.raises(DecodeError):
        decode_datagram(ABSURD[name])


def test_absurd_inputs_are_well_formed_otherwise():
    # the absurd datagrams above differ from valid ones only where they say: with sane
    # words in place the same builders give datagrams that decode
    assert decode_datagram(_counters("000007d2 00000008 00000002 00000001")).samples[0].counters
    assert decode_datagram(_flows("00000001 00000014 00000001 00000040 00000004 00000004 "
                                  "aabbccdd")).samples[0].flow_records
    assert decode_datagram(_counters("000007d1 00000014 00000001 00000002 00000001 "
                                     "02000000 00010000")).samples[0].counters[0].adapters


# ---------------------------------------------------------------- unknown and extended records

def test_unknown_sample_type_is_skipped_by_length():
    known = CountersSample(sequence_number=7, source_id_type=0, source_id_index=3,
                           counters=[PortName(name="eth0")])
    data = h(HEADER + """
        00000003                     # 3 samples
        00000063 0000000c            # sample 0:99 (unknown), length 12
        01020304 05060708 090a0b0c
        010cc3e7 00000008            # sample 4300:999 (no such InMon sample), length 8
        aaaaaaaa bbbbbbbb
    """) + known.encode()
    dg = decode_datagram(data)
    assert dg.samples == [UnknownRecord(0, 99, bytes.fromhex("0102030405060708090a0b0c")),
                          UnknownRecord(4300, 999, bytes.fromhex("aaaaaaaabbbbbbbb")),
                          known]
    assert dg.encode() == data


def test_unknown_flow_records_are_skipped_by_length():
    data = _flows("""
        00000bb7 00000014            # flow 0:2999 (not a record this decoder knows)
        00000011 0a000001 0a000002 00000035 0000c000
        0000000d 00000000            # flow 0:13, empty body
        00000001 00000014            # sampled_header
        00000001 00000040 00000004 00000004 aabbccdd
        00000413 00000008 00000000 00000001  # extended_timestamp 1
    """, 4)
    records = decode_datagram(data).samples[0].flow_records
    assert records[0] == UnknownRecord(0, 2999, h("00000011 0a000001 0a000002 00000035 0000c000"))
    assert records[1] == UnknownRecord(0, 13, b"")
    assert records[2] == SampledHeader(frame_length=64, stripped=4, header=h("aabbccdd"))
    assert records[3] == ExtendedTimestamp(nanoseconds=1)


def test_unknown_counter_records_are_skipped_by_length():
    data = _counters("""
        00000003 00000048            # counter 0:3 tokenring (not decoded), length 72
    """ + " 00000000" * 18 + """
        01647001 00000010            # counter 5703:1 (NVIDIA GPU), length 16
        00000001 00000002 00000003 00000004
        000007d2 00000008 00000003 00000004  # host_parent 3:4
    """, 3)
    counters = decode_datagram(data).samples[0].counters
    assert counters[0] == UnknownRecord(0, 3, bytes(72))
    assert counters[1] == UnknownRecord(5703, 1, h("00000001 00000002 00000003 00000004"))
    assert (counters[2].container_type, counters[2].container_index) == (3, 4)


def test_record_extended_at_the_end_is_accepted():
    rec = IfCounters(ifIndex=3, ifSpeed=10 ** 9, ifInOctets=12345, ifPromiscuousMode=1)
    enc = rec.encode()
    longer = enc[:4] + struct.pack(">I", 88 + 8) + enc[8:] + h("dddddddd eeeeeeee")
    eth = EthernetCounters(dot3StatsFCSErrors=7)
    data = _counters((longer + eth.encode()).hex(), 2)
    assert decode_datagram(data).samples[0].counters == [rec, eth]


def test_variable_record_extended_at_the_end_is_accepted():
    rec = HostDescr(hostname="vm", machine_type=3, os_name=2, os_release="6.1")
    enc = rec.encode()
    longer = enc[:4] + struct.pack(">I", len(enc) - 8 + 4) + enc[8:] + h("12345678")
    data = _counters((longer + PortName(name="x").encode()).hex(), 2)
    assert decode_datagram(data).samples[0].counters == [rec, PortName(name="x")]


def test_sample_extended_at_the_end_is_accepted():
    sample = FlowSample(sequence_number=1, sampling_rate=10, flow_records=[
        ExtendedTimestamp(nanoseconds=5)])
    enc = sample.encode()
    longer = enc[:4] + struct.pack(">I", len(enc) - 8 + 8) + enc[8:] + bytes(8)
    after = CountersSample(sequence_number=2, counters=[])
    data = h(HEADER + "00000002") + longer + after.encode()
    assert decode_datagram(data).samples == [sample, after]


def test_legacy_68_byte_host_cpu_decodes():
    # host_cpu before December 2014 ended after `contexts`: 17 words, 68 bytes
    legacy = h("""
        000007d3 00000044   # tag 0:2003, length 68
        3f000000 3fa00000 3f400000   # loads 0.5 1.25 0.75
        00000001 00000056 00000002 00000a24 00000a05   # proc_run .. uptime
        00000011 00000012 00000013 00000014 00000015 00000016 00000017  # cpu_user .. cpu_sintr
        00000018 00000019   # interrupts, contexts
    """)
    data = _counters(legacy.hex() + "000007d2 00000008 00000002 00000001", 2)
    cpu, parent = decode_datagram(data).samples[0].counters
    assert cpu == HostCpu(load_one=0.5, load_five=1.25, load_fifteen=0.75, proc_run=1,
                          proc_total=86, cpu_num=2, cpu_speed=2596, uptime=2565, cpu_user=0x11,
                          cpu_nice=0x12, cpu_system=0x13, cpu_idle=0x14, cpu_wio=0x15,
                          cpu_intr=0x16, cpu_sintr=0x17, interrupts=0x18, contexts=0x19,
                          cpu_steal=0, cpu_guest=0, cpu_guest_nice=0)
    assert (parent.container_type, parent.container_index) == (2, 1)


def test_length_not_a_multiple_of_four_does_not_crash():
    # sflowtool rounds such a length up; this decoder takes it as given.  Either way it
    # must be DecodeError or a datagram, never another exception.
    decode_or_error(_counters("00000063 00000005 0102030405 000000 000007d2 00000008 "
                              "00000002 00000001", 2))
