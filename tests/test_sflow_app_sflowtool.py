"""The application structures (2202-2206, sockets 2100/2101, rtmetric and rtflow) and
extended_tcp_info as a real sflowtool reads them: every field under sflowtool's name, and no
length error.  Runs with an sflowtool binary on PATH (or in $SFLOWTOOL); the byte layouts
themselves are checked by hand in test_sflow_records.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from ipaddress import ip_address

import pytest

from hsflowd.sflow import (AppContext, AppInitiator, AppOperation, AppOperations,
                           AppParentContext, AppResources, AppTarget, AppWorkers, CountersSample,
                           Datagram, ExtendedSocketIPv4, ExtendedSocketIPv6, ExtendedTcpInfo,
                           FlowSample, HostParent, RtFlow, RtMetric, SampledHeader, TypedField)

SFLOWTOOL = os.environ.get("SFLOWTOOL") or shutil.which("sflowtool")


def _samples():
    yield RtMetric(datasource="web1", metrics=[
        TypedField("m1", 1, 777), TypedField("m2", 0, "helloworld"), TypedField("m3", 6, 1.25),
        TypedField("m4", 5, 0.5), TypedField("m5", 2, 2 ** 40), TypedField("m6", 3, 5),
        TypedField("m7", 4, 6)])
    yield RtFlow(datasource="web1", sampling_rate=10, fields=[
        TypedField("f1", 4, 777), TypedField("f2", 1, bytes.fromhex("020304050607")),
        TypedField("f3", 2, ip_address("10.0.0.1")), TypedField("f4", 3, ip_address("::1")),
        TypedField("f5", 0, "x"), TypedField("f6", 5, 7), TypedField("f7", 6, 1.5),
        TypedField("f8", 7, 2.5)])
    yield FlowSample(sequence_number=1, source_id_type=3, source_id_index=150000, sampling_rate=10,
                     sample_pool=10, input=0x3FFFFFFF, flow_records=[
        ExtendedSocketIPv6(protocol=6, local_ip=ip_address("::1"), remote_ip=ip_address("::2"),
                           local_port=1, remote_port=2),
        ExtendedSocketIPv4(protocol=6, local_ip=ip_address("10.0.0.1"),
                           remote_ip=ip_address("10.0.0.2"), local_port=80, remote_port=5000),
        AppTarget(actor="tgt"), AppInitiator(actor="init"),
        AppParentContext(context=AppContext(application="papp", operation="pop", attributes="pat")),
        AppOperation(context=AppContext(application="app", operation="op", attributes="a=b"),
                     status_descr="fine", req_bytes=10, resp_bytes=20, uS=30, status=8)])
    yield CountersSample(sequence_number=1, source_id_type=3, source_id_index=150000, counters=[
        HostParent(container_type=2, container_index=1),
        AppWorkers(workers_active=1, workers_idle=2, workers_max=3, req_delayed=4, req_dropped=5),
        AppResources(user_time=1, system_time=2, mem_used=3, mem_max=4, fd_open=5, fd_max=6,
                     conn_open=7, conn_max=8),
        AppOperations(application="app", success=1, other=2, timeout=3, internal_error=4,
                      bad_request=5, forbidden=6, too_large=7, not_implemented=8, not_found=9,
                      unavailable=10, unauthorized=11)])
    yield FlowSample(sequence_number=2, source_id_type=0, source_id_index=3, sampling_rate=1,
                     sample_pool=1, input=3, output=0x3FFFFFFF, flow_records=[
        SampledHeader(frame_length=64, header=bytes(14)),
        ExtendedTcpInfo(dirn=1, snd_mss=2, rcv_mss=3, unacked=4, lost=5, retrans=6, pmtu=7, rtt=8,
                        rttvar=9, snd_cwnd=10, reordering=11, min_rtt=12)])


EXPECTED = """
rtmetric_datasource_name web1
rtmetric_counter32_m1 777
rtmetric_string_m2 helloworld
rtmetric_gaugeDouble_m3 1.250
rtmetric_gaugeFloat_m4 0.500
rtmetric_counter64_m5 1099511627776
rtmetric_gauge32_m6 5
rtmetric_gauge64_m7 6
rtflow_datasource_name web1
rtflow_sampling_rate 10
rtflow_sample_pool 0
rtflow_int32_f1 777
rtflow_mac_f2 020304050607
rtflow_ip_f3 10.0.0.1
rtflow_ip6_f4 0000:0000:0000:0000:0000:0000:0000:0001
rtflow_string_f5 x
rtflow_int64_f6 7
rtflow_float_f7 1.500
rtflow_double_f8 2.500
socket6_local_ip 0000:0000:0000:0000:0000:0000:0000:0001
socket6_remote_port 2
socket4_local_ip 10.0.0.1
socket4_remote_ip 10.0.0.2
socket4_local_port 80
socket4_remote_port 5000
actor_target tgt
actor_initiator init
server_context_application papp
server_context_operation pop
server_context_attributes pat
application app
operation op
attributes a=b
status_descr fine
request_bytes 10
response_bytes 20
duration_uS 30
status NOT_FOUND
parent_dsClass 2
parent_dsIndex 1
workers_active 1
requests_dropped 5
memory_max 4
connections_max 8
status_OK 1
errors_UNAUTHORIZED 11
tcpinfo_direction received
tcpinfo_send_mss 2
tcpinfo_retrans_pkts 6
tcpinfo_rtt_uS 8
tcpinfo_rtt_uS_min 12
"""


@pytest.mark.skipif(not SFLOWTOOL, reason="no sflowtool binary (set $SFLOWTOOL to compare)")
def test_sflowtool_reads_every_field(tmp_path):
    from test_decode_cmd import pcap_of
    datagrams = [Datagram(agent_address=ip_address("10.0.0.1"), sub_agent_id=1,
                          sequence_number=i + 1, uptime=5, samples=[s]).encode()
                 for i, s in enumerate(_samples())]
    path = tmp_path / "app.pcap"
    pcap_of(datagrams, path)
    out = subprocess.run([SFLOWTOOL, "-r", str(path)], capture_output=True, text=True, timeout=60)
    assert "length error" not in out.stderr and "unknown_type" not in out.stdout
    lines = set(out.stdout.splitlines())
    missing = [line for line in EXPECTED.strip().splitlines() if line not in lines]
    assert not missing


@pytest.mark.skipif(not SFLOWTOOL, reason="no sflowtool binary (set $SFLOWTOOL to compare)")
def test_decode_g_and_l_match_sflowtool_line_for_line(tmp_path):
    import sys
    from test_decode_cmd import pcap_of
    datagrams = [Datagram(agent_address=ip_address("10.0.0.1"), sub_agent_id=1,
                          sequence_number=i + 1, uptime=5, samples=[s]).encode()
                 for i, s in enumerate(_samples())]
    path = tmp_path / "app.pcap"
    pcap_of(datagrams, path)
    env = {**os.environ, "TZ": "UTC"}
    for form in ("-g", "-l"):
        want = subprocess.run([SFLOWTOOL, "-r", str(path), form], capture_output=True,
                              text=True, env=env, timeout=60).stdout
        got = subprocess.run([sys.executable, "-m", "hsflowd", "decode", form, "--pcap",
                              str(path)], capture_output=True, text=True, env=env, timeout=60)
        assert got.returncode == 0 and got.stderr == ""
        assert got.stdout.splitlines() == want.splitlines()
