"""json { }: applications' JSON messages -> sFlow, without a running agent.  The expected
bytes are written out by hand (one XDR word per line, as in test_sflow_records.py); the
module runs with a stand-in context that keeps what it sends, a stand-in clock and a
seeded random number generator.  The agent as a real process is in test_jsonapp_e2e.py."""

from __future__ import annotations

import json
import logging
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsflowd.config import parse_config
from hsflowd.modules import Context
from hsflowd.modules.jsonapp import APP_TIMEOUT, MAX_APPS, JsonModule
from hsflowd.sflow import AppOperations, CountersSample, FlowSample, RtMetric, UNKNOWN32
from hsflowd.sflow.tlv import SAMPLES
from hsflowd.sources.jsonmsg import BadMessage, counter_sample, flow_sample, rtflow, rtmetric
from test_sflow_records import h


def sample_of(data: bytes):
    got, _ = SAMPLES.classes[int.from_bytes(data[:4], "big")], None
    return got.decode_body(data, 8)


# ---------------------------------------------------------------- pure: message -> records

def test_rtmetric_bytes():
    body = json.loads('{"datasource": "web1", "hits": {"type": "counter32", "value": 777},'
                      ' "ver": {"type": "string", "value": "2.1"},'
                      ' "load": {"type": "gaugeDouble", "value": "1.5"}}')
    assert rtmetric(body).encode() == h("""
        010cc3ea           # sample 4300:1002 rtmetric
        00000044           # length 68
        00000004 77656231  # datasource "web1"
        00000003           # 3 metrics, in the message's order
        00000004 68697473  # "hits"
        00000001           # counter32
        00000309           # 777
        00000003 76657200  # "ver"
        00000000           # string
        00000003 322e3100  # "2.1"
        00000004 6c6f6164  # "load"
        00000006           # gaugeDouble
        3ff80000 00000000  # 1.5, from the string "1.5" (hsflowd reads strings with strtod)
    """)


def test_rtflow_bytes():
    body = json.loads('{"datasource": "web1", "sampling_rate": 100,'
                      ' "src": {"type": "ip", "value": "10.1.2.3"},'
                      ' "mac": {"type": "mac", "value": "02:03:04:05:06:07"},'
                      ' "n": {"type": "int32", "value": "0x10"}, "note": "not an object"}')
    assert rtflow(body).encode() == h("""
        010cc3eb           # sample 4300:1003 rtflow
        00000048           # length 72
        00000004 77656231  # datasource "web1"
        00000064           # sampling_rate 100
        00000000           # sample_pool (hsflowd sends 0)
        00000003           # 3 fields ("note" is not an object: passed over, as hsflowd does)
        00000003 73726300  # "src"
        00000002           # ip
        0a010203           # 10.1.2.3
        00000003 6d616300  # "mac"
        00000001           # mac
        02030405 06070000  # 6 bytes + 2 padding
        00000001 6e000000  # "n"
        00000004           # int32
        00000010           # 16, from "0x10"
    """)
    assert rtflow({"x": {"type": "mac", "value": "2-3-4-5-6-7"}}).fields[0].value == \
        bytes([2, 3, 4, 5, 6, 7])
    assert rtflow({"x": {"type": "float", "value": 1e39}}).fields[0].value == float("inf")
    assert rtflow({"x": {"type": "int64", "value": -1}}).fields[0].value == 2 ** 64 - 1


@pytest.mark.parametrize("body, why", [
    ({"datasource": "9lives", "m": {"type": "gauge32", "value": 1}}, "not a name"),
    ({"datasource": "a b", "m": {"type": "gauge32", "value": 1}}, "not a name"),
    ({"m m": {"type": "gauge32", "value": 1}}, "not a name"),
    ({"x" * 65: {"type": "gauge32", "value": 1}}, "not a name"),
    ({"m": {"type": "gauge32"}}, "needs a \"type\" and a \"value\""),
    ({"m": {"type": "gauge99", "value": 1}}, "unknown type"),
    ({"m": {"type": "string", "value": 5}}, "a string needs a string value"),
    ({"m": {"type": "string", "value": "x" * 256}}, "at most 255"),
    ({"m": {"type": "gauge32", "value": "ten"}}, "is not a gauge32"),
    ({"m": {"type": "gauge32", "value": True}}, "is not a gauge32"),
    ({"m": {"type": "gauge32", "value": None}}, "is not a gauge32"),
    ({"datasource": "web1"}, "no field to send"),
    ([1, 2], "not an object"),
])
def test_rtmetric_refused(body, why):
    with pytest.raises(BadMessage, match=why):
        rtmetric(body)


@pytest.mark.parametrize("body, why", [
    ({"a": {"type": "ip", "value": "10.0.0.300"}}, "not an ip address"),
    ({"a": {"type": "ip6", "value": "10.0.0.1"}}, "not an ip6 address"),
    ({"a": {"type": "mac", "value": "0203"}}, "not a MAC address"),
    ({"a": {"type": "mac", "value": 42}}, "mac needs a string"),
    ({"a": {"type": "counter32", "value": 1}}, "unknown type"),     # rtflow has int32, not this
])
def test_rtflow_refused(body, why):
    with pytest.raises(BadMessage, match=why):
        rtflow(body)


def test_counter_sample_records():
    m = counter_sample({"app_name": "pay", "service_port": 8080,
                        "app_operations": {"success": 5, "not_found": 2 ** 32 + 3},
                        "app_resources": {"mem_used": 2 ** 40, "fd_open": 12.9},
                        "app_workers": {"workers_active": 3, "req_dropped": 1}})
    assert (m.application, m.service_port) == ("pay", 8080)
    assert m.operations.success == 5 and m.operations.not_found == 3     # wraps as C casts
    assert m.operations.timeout == UNKNOWN32                             # left out: unknown
    assert m.resources.mem_used == 2 ** 40 and m.resources.fd_open == 12
    assert m.resources.user_time == 0                                    # a gauge left out: 0
    assert (m.workers.workers_active, m.workers.req_dropped, m.workers.req_delayed) == (
        3, 1, UNKNOWN32)
    assert counter_sample({"app_name": "x"}).operations is None
    for bad, why in (({}, "no app_name"), ({"app_name": 5}, "not a string"),
                     ({"app_name": "x", "app_resources": [1]}, "not an object"),
                     ({"app_name": "x", "app_workers": {"workers_idle": "3"}}, "not a number"),
                     ({"app_name": "x", "app_workers": {"workers_idle": float("nan")}},
                      "not a number"),
                     ("x", "not an object")):
        with pytest.raises(BadMessage, match=why):
            counter_sample(bad)


def test_transaction_records_in_hsflowds_order():
    t = flow_sample({"app_name": "pay", "service_port": 443, "client": True, "sampling_rate": 0,
                     "app_operation": {"operation": "get", "status": 99, "req_bytes": 5},
                     "app_parent_context": {"application": "shop"},
                     "app_initiator": {"actor": "bob"}, "app_target": {"actor": "db"},
                     "extended_socket_ipv6": {"local_ip": "::1", "remote_ip": "nonsense"},
                     "extended_socket_ipv4": {"protocol": 6, "local_ip": "10.0.0.1"}})
    assert (t.client, t.sampling_rate, t.status) == (True, 1, 1)   # rate 0 -> 1; 99 -> OTHER
    assert [r.sflow_name for r in t.records] == [
        "extended_socket_ipv6", "extended_socket_ipv4", "app_target", "app_initiator",
        "app_parent_context", "app_operation"]
    assert str(t.records[0].remote_ip) == "::"                       # as hsflowd: unparsed is 0
    assert flow_sample({"app_name": "pay", "client": "yes"}).client is False
    assert flow_sample({"app_name": "pay"}).records is None


# ---------------------------------------------------------------- the module

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make(extra="sampling = 1", port=0, seed=3):
    sent = []
    ctx = Context("json", lambda name, fd, cb: object(), lambda t: None, lambda s: None,
                  sent.append, lambda i: {}, None, None)
    clock = Clock()
    module = JsonModule(ctx, clock=clock, rng=random.Random(seed))
    config = parse_config(f"sflow {{\n collector {{ ip = 192.0.2.1 }}\n {extra}\n"
                          f" json {{ udpport = {port or 36343} }}\n}}\n")
    module.config = config
    module.port = config.json.udpport          # as if reconciled, without opening sockets
    return module, sent, clock


def send(module, clock, obj):
    module.handle(json.dumps(obj).encode() if not isinstance(obj, bytes) else obj, clock.now)


def test_counter_sample_bytes():
    module, sent, clock = make()
    send(module, clock, {"counter_sample": {"app_name": "pay", "service_port": 8080,
                                            "app_operations": {"success": 5},
                                            "app_workers": {"workers_active": 3}}})
    assert sent == [h("""
        00000004           # sample 0:4 counters_sample_expanded
        00000078           # length 120
        00000001           # sequence_number 1
        00000003 00001f90  # source 3:8080 (the service port)
        00000003           # 3 records, in hsflowd's order: parent, workers, operations
        000007d2 00000008  # 0:2002 host_parent
        00000002 00000001  #   2:1, the host
        0000089e 00000014  # 0:2206 app_workers
        00000003 00000000 00000000  # active 3, idle 0, max 0 (gauges)
        ffffffff ffffffff  #   req_delayed, req_dropped: not sent, unknown
        0000089a 00000034  # 0:2202 app_operations, length 52
        00000003 70617900  #   application "pay"
        00000005           #   success 5
        ffffffff ffffffff ffffffff ffffffff ffffffff  # the other ten: unknown
        ffffffff ffffffff ffffffff ffffffff ffffffff
    """)]


def test_transaction_bytes():
    module, sent, clock = make()                   # sampling = 1: every transaction
    send(module, clock, {"flow_sample": {
        "app_name": "pay", "app_operation": {"operation": "get", "status": 8, "uS": 1500},
        "app_initiator": {"actor": "bob"}}})
    assert sent == [h("""
        00000003           # sample 0:3 flow_sample_expanded
        00000074           # length 116
        00000001           # sequence_number 1
        00000003 000249f0  # source 3:150000 (no service_port: the first free index)
        00000001           # sampling_rate 1
        00000001           # sample_pool 1
        00000000           # drops
        00000000 00000000  # input: the server side of the transaction
        00000000 3fffffff  # output: internal
        00000002           # 2 records, in hsflowd's order: initiator, operation
        0000089c 00000008  # 0:2204 app_initiator
        00000003 626f6200  #   "bob"
        0000089a 00000030  # 0:2202 app_operation, length 48
        00000003 70617900  #   context.application "pay"
        00000003 67657400  #   context.operation "get"
        00000000           #   context.attributes ""
        00000000           #   status_descr ""
        00000000 00000000  #   req_bytes
        00000000 00000000  #   resp_bytes
        000005dc           #   uS 1500
        00000008           #   status NOT_FOUND
    """)]


def test_transactions_are_sampled_down_to_the_apps_rate_and_counted():
    module, sent, clock = make("sampling = 1\n sampling.app.pay = 100\n polling.app.pay = 5")
    for i in range(2000):
        send(module, clock, {"flow_sample": {"app_name": "pay", "client": True,
                                             "sampling_rate": 10,
                                             "app_operation": {"status": i % 2}}})
    samples = [sample_of(s) for s in sent]
    assert all(isinstance(s, FlowSample) for s in samples)
    assert 120 <= len(samples) <= 280                     # 1 in 10 of 2000, with the seed
    assert all(s.sampling_rate == 100 and s.input == 0x3FFFFFFF and s.output == 0
               for s in samples)
    assert [s.sequence_number for s in samples] == list(range(1, len(samples) + 1))
    assert samples[-1].sample_pool == 100 * len(samples)
    # no counters from the application itself: after 2 minutes, its counts every 5 s
    sent.clear()
    for _ in range(130):
        clock.now += 1
        module.tick(clock.now)
    kept = [sample_of(s) for s in sent]
    assert 1 <= len(kept) <= 2 and all(isinstance(s, CountersSample) for s in kept)
    ops = kept[0].counters
    assert len(ops) == 1 and isinstance(ops[0], AppOperations)
    assert (ops[0].success, ops[0].other, ops[0].timeout) == (10000, 10000, 0)
    assert kept[0].sequence_number == 1 and kept[0].source_id_index == 150000


def test_an_apps_own_counters_hold_off_the_kept_ones():
    module, sent, clock = make("polling = 2")
    for _ in range(200):
        send(module, clock, {"counter_sample": {"app_name": "web"}})   # no app_operations
        clock.now += 1
        module.tick(clock.now)
    assert all(len(sample_of(s).counters) == 2 for s in sent)          # parent + kept ops
    assert [sample_of(s).sequence_number for s in sent] == list(range(1, 201))


def test_sampling_zero_sends_no_transactions():
    module, sent, clock = make("sampling = 0")
    send(module, clock, {"flow_sample": {"app_name": "pay", "app_operation": {}}})
    assert sent == [] and module.apps["pay"].ops[0] == 1


def test_data_sources_service_ports_and_forgetting():
    module, sent, clock = make()
    for name, port in (("a", 0), ("b", 0), ("c", 8080)):
        send(module, clock, {"flow_sample": {"app_name": name, "service_port": port}})
    assert [(a.name, a.index) for a in module.apps.values()] == [
        ("a", 150000), ("b", 150001), ("c", 8080)]
    send(module, clock, {"flow_sample": {"app_name": "d", "service_port": 8080}})
    assert "d" not in module.apps and module.last_bad == \
        "application 'd': service_port 8080 is 'c''s"
    clock.now += APP_TIMEOUT - 10
    send(module, clock, {"flow_sample": {"app_name": "b"}})
    clock.now += 20
    module.tick(clock.now)
    assert list(module.apps) == ["b"]
    send(module, clock, {"flow_sample": {"app_name": "e"}})
    assert module.apps["e"].index == 150000                           # a's index, free again


def test_applications_are_bounded():
    module, sent, clock = make()
    for i in range(MAX_APPS + 5):
        send(module, clock, {"flow_sample": {"app_name": f"app{i}"}})
    assert len(module.apps) == MAX_APPS and module.bad == 5


def test_bad_messages_are_counted_and_logged_once_a_minute(caplog):
    module, sent, clock = make()
    caplog.set_level(logging.WARNING, logger="hsflowd.json")
    bad = [b"{", b"\xff\xfe", b"[" * 100000 + b"]" * 100000, b'{"rtmetric": 5}', b"{}",
           b'{"flow_sample": {"app_name": "x", "uS": NaN}}', b'"just a string"',
           b'{"counter_sample": {"app_name": "x", "app_operations": {"success": "5"}}}']
    for data in bad:
        send(module, clock, data)
    assert module.bad == len(bad) - 1 and module.messages == len(bad)   # NaN outside app_op: ok
    assert len(caplog.records) == 1                    # the first one, at once
    clock.now += 61
    module.tick(clock.now)
    assert len(caplog.records) == 2 and "6 bad message(s)" in caplog.records[1].getMessage()
    # a message with a good part and a bad part: the good part goes out, it counts as bad
    send(module, clock, {"rtmetric": {"m": {"type": "gauge32", "value": 1}}, "rtflow": 3})
    assert isinstance(sample_of(sent[-1]), RtMetric) and module.bad == len(bad)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.sampled_from(
                        ["app_name", "service_port", "app_operation", "status", "type", "value",
                         "datasource", "sampling_rate", "mac", "x", "client", "uS",
                         "app_operations", "app_workers", "extended_socket_ipv4", "local_ip"]),
                        kids, max_size=5),
                    max_leaves=12)


@settings(max_examples=300, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(["flow_sample", "counter_sample", "rtmetric", "rtflow"]), body=JSON)
def test_any_json_is_used_or_counted_never_raised(key, body):
    module, sent, clock = make()
    send(module, clock, {key: body})
    assert module.messages == 1
    for data in sent:          # whatever went out decodes
        sample_of(data)
