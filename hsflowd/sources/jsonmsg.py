"""Applications' JSON messages (hsflowd's json { } module, mod_json.c): pure functions from one
message to the sFlow structures it asks for.  The module (modules/jsonapp.py) keeps the
applications, their sequence numbers, sampling and counters.

One UDP datagram holds one JSON object with any of these keys:

- ``"counter_sample"``: an application's own counters: ``app_name``, ``service_port``,
  ``app_operations`` {success, other, timeout, internal_error, bad_request, forbidden,
  too_large, not_implemented, not_found, unavailable, unauthorized}, ``app_resources``
  {user_time, system_time, mem_used, mem_max, fd_open, fd_max, conn_open, conn_max},
  ``app_workers`` {workers_active, workers_idle, workers_max, req_delayed, req_dropped};
- ``"flow_sample"``: one transaction: ``app_name``, ``service_port``, ``client`` (true when
  the application was the client), ``sampling_rate`` (the application's own 1-in-N, default
  1), ``app_operation`` {operation, attributes, status_descr, status, req_bytes,
  resp_bytes, uS}, and optionally ``app_parent_context`` {application, operation,
  attributes}, ``app_initiator`` {actor}, ``app_target`` {actor},
  ``extended_socket_ipv4``/``extended_socket_ipv6`` {protocol, local_ip, remote_ip,
  local_port, remote_port};
- ``"rtmetric"``: ``datasource`` and named metrics {"type": counter32 | counter64 | gauge32 |
  gauge64 | gaugeFloat | gaugeDouble | string, "value": ...};
- ``"rtflow"``: ``datasource``, ``sampling_rate`` and named fields {"type": string | mac | ip |
  ip6 | int32 | int64 | float | double, "value": ...}.

A counter the application leaves out is unknown (all ones); a gauge it leaves out is 0.
Names of metrics, fields and data sources are letters, digits, '-' and '_', at most 64
characters (a data source name does not start with a digit); string values at most 255.

Where hsflowd would read a value of the wrong JSON type as 0 or an empty string, or encode a
broken structure (a number given for a string metric, an address that does not parse in an
rtflow), the message is refused here with ``BadMessage`` saying why: the module counts it
and logs it.  An address in extended_socket_* that does not parse is 0.0.0.0 (or ::), as
in hsflowd.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Dict, List, Optional

from ..sflow import (UNKNOWN32, AppContext, AppInitiator, AppOperation, AppOperations,
                     AppParentContext, AppResources, AppStatus, AppTarget, AppWorkers,
                     ExtendedSocketIPv4, ExtendedSocketIPv6, RtFlow, RtMetric, TypedField)
from ..sflow.custom import RTFLOW_TYPES, RTMETRIC_TYPES
from ..sflow.flows import APP_STATUS_FIELDS

MAX_MESSAGE = 10000           # bytes in one datagram (hsflowd HSP_MAX_JSON_MSG_BYTES)
MAX_NAME = 64
MAX_VALUE = 255
MAX_APP_NAME = 255            # an application's name, as the module keys it
FLOAT32_MAX = 3.4028234663852886e38

_NAME = re.compile(r"[-_A-Za-z0-9]{1,64}")
_METRIC_CODES = {name: code for code, (name, _) in RTMETRIC_TYPES.items()}
_FLOW_CODES = {name: code for code, (name, _) in RTFLOW_TYPES.items()}
_STATUS_LAST = max(AppStatus)


class BadMessage(ValueError):
    """A message this agent cannot use (the text says why)."""


def parse_message(data: bytes) -> Dict[str, Any]:
    """The JSON object in one datagram."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:      # UnicodeDecodeError is a ValueError
        raise BadMessage(f"not JSON ({_short(e)})") from None
    if not isinstance(obj, dict):
        raise BadMessage(f"a JSON {type(obj).__name__}, not an object")
    return obj


def _short(e: BaseException) -> str:
    text = str(e).splitlines()
    return text[0][:80] if text else type(e).__name__


# ---------------------------------------------------------------- values

def _obj(parent: Dict[str, Any], key: str, where: str) -> Optional[Dict[str, Any]]:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadMessage(f"{where}.{key} is not an object")
    return value


def _number(obj: Dict[str, Any], key: str, where: str):
    """A JSON number (not a boolean, NaN or infinity), or None if absent."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise BadMessage(f"{where}.{key} is not a number: {value!r}"[:120])
    return value


def _uint(obj: Dict[str, Any], key: str, where: str, bits: int, default: int) -> int:
    value = _number(obj, key, where)
    if value is None:
        return default
    return int(value) & ((1 << bits) - 1)        # a C cast: counters wrap


def gauge32(obj, key, where):
    return _uint(obj, key, where, 32, 0)


def gauge64(obj, key, where):
    return _uint(obj, key, where, 64, 0)


def counter32(obj, key, where):
    return _uint(obj, key, where, 32, UNKNOWN32)


def _text(obj: Dict[str, Any], key: str, where: str, default: str = "") -> str:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadMessage(f"{where}.{key} is not a string: {value!r}"[:120])
    return value


def _app_name(msg: Dict[str, Any], where: str) -> str:
    name = _text(msg, "app_name", where)
    if not name:
        raise BadMessage(f"{where} has no app_name")
    if len(name) > MAX_APP_NAME:
        raise BadMessage(f"{where}.app_name is longer than {MAX_APP_NAME} characters")
    return name


# ---------------------------------------------------------------- counter_sample

@dataclass(frozen=True)
class AppCounterMessage:
    """One "counter_sample": the application's records, without app_operations when it
    sent none (the module then sends the counts it keeps itself)."""

    application: str
    service_port: int
    operations: Optional[AppOperations]
    resources: Optional[AppResources]
    workers: Optional[AppWorkers]


def counter_sample(msg: Any) -> AppCounterMessage:
    where = "counter_sample"
    if not isinstance(msg, dict):
        raise BadMessage(f"{where} is not an object")
    name = _app_name(msg, where)
    port = _uint(msg, "service_port", where, 16, 0)
    ops = _obj(msg, "app_operations", where)
    operations = None
    if ops is not None:
        w = f"{where}.app_operations"
        operations = AppOperations(application=name, **{
            field: counter32(ops, field, w) for field in APP_STATUS_FIELDS})
    res = _obj(msg, "app_resources", where)
    resources = None
    if res is not None:
        w = f"{where}.app_resources"
        resources = AppResources(
            user_time=gauge32(res, "user_time", w), system_time=gauge32(res, "system_time", w),
            mem_used=gauge64(res, "mem_used", w), mem_max=gauge64(res, "mem_max", w),
            fd_open=gauge32(res, "fd_open", w), fd_max=gauge32(res, "fd_max", w),
            conn_open=gauge32(res, "conn_open", w), conn_max=gauge32(res, "conn_max", w))
    wrk = _obj(msg, "app_workers", where)
    workers = None
    if wrk is not None:
        w = f"{where}.app_workers"
        workers = AppWorkers(
            workers_active=gauge32(wrk, "workers_active", w),
            workers_idle=gauge32(wrk, "workers_idle", w),
            workers_max=gauge32(wrk, "workers_max", w),
            req_delayed=counter32(wrk, "req_delayed", w),
            req_dropped=counter32(wrk, "req_dropped", w))
    return AppCounterMessage(name, port, operations, resources, workers)




# ---------------------------------------------------------------- flow_sample

@dataclass(frozen=True)
class Transaction:
    """One "flow_sample".  ``records`` is None when it has no app_operation (hsflowd then
    only notes that the application is alive); otherwise the flow records in the order
    hsflowd puts them on the wire (sockets first, app_operation last)."""

    application: str
    service_port: int
    client: bool
    sampling_rate: int
    status: int
    records: Optional[List[Any]]


def _address(obj, key, where, version: int):
    text = _text(obj, key, where)
    try:
        addr = ip_address(text)
        if addr.version == version:
            return addr
    except ValueError:
        pass
    return IPv4Address(0) if version == 4 else IPv6Address(0)


def _socket(obj: Dict[str, Any], where: str, version: int):
    cls = ExtendedSocketIPv4 if version == 4 else ExtendedSocketIPv6
    return cls(protocol=gauge32(obj, "protocol", where),
               local_ip=_address(obj, "local_ip", where, version),
               remote_ip=_address(obj, "remote_ip", where, version),
               local_port=gauge32(obj, "local_port", where),
               remote_port=gauge32(obj, "remote_port", where))


def flow_sample(msg: Any) -> Transaction:
    where = "flow_sample"
    if not isinstance(msg, dict):
        raise BadMessage(f"{where} is not an object")
    name = _app_name(msg, where)
    port = _uint(msg, "service_port", where, 16, 0)
    client = msg.get("client") is True
    rate = _uint(msg, "sampling_rate", where, 32, 1) or 1
    opn = _obj(msg, "app_operation", where)
    if opn is None:
        return Transaction(name, port, client, rate, AppStatus.SUCCESS, None)
    w = f"{where}.app_operation"
    status = AppStatus.SUCCESS
    if opn.get("status") is not None:
        status = _uint(opn, "status", w, 32, 0)
        if status > _STATUS_LAST:
            status = AppStatus.OTHER
    records: List[Any] = [AppOperation(
        context=AppContext(application=name, operation=_text(opn, "operation", w),
                           attributes=_text(opn, "attributes", w)),
        status_descr=_text(opn, "status_descr", w), req_bytes=gauge64(opn, "req_bytes", w),
        resp_bytes=gauge64(opn, "resp_bytes", w), uS=gauge32(opn, "uS", w), status=status)]
    parent = _obj(msg, "app_parent_context", where)
    if parent is not None:
        w = f"{where}.app_parent_context"
        records.append(AppParentContext(context=AppContext(
            application=_text(parent, "application", w), operation=_text(parent, "operation", w),
            attributes=_text(parent, "attributes", w))))
    for key, cls in (("app_initiator", AppInitiator), ("app_target", AppTarget)):
        actor = _obj(msg, key, where)
        if actor is not None:
            records.append(cls(actor=_text(actor, "actor", f"{where}.{key}")))
    for key, version in (("extended_socket_ipv4", 4), ("extended_socket_ipv6", 6)):
        sock = _obj(msg, key, where)
        if sock is not None:
            records.append(_socket(sock, f"{where}.{key}", version))
    records.reverse()            # hsflowd prepends each element: the last added goes first
    return Transaction(name, port, client, rate, status, records)


# ---------------------------------------------------------------- rtmetric, rtflow

def _datasource(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value[0].isdigit():
        raise BadMessage(f"{where}.datasource {value!r} is not a name (letters, digits, '-', "
                         f"'_', not starting with a digit, at most {MAX_NAME})"[:160])
    return value


def _numeric(value: Any, type_name: str, where: str):
    """A number for a numeric type, from a JSON number or a numeric string."""
    if isinstance(value, str):
        try:
            value = float(value) if type_name in ("gaugeFloat", "gaugeDouble", "float",
                                                  "double") else int(value.strip(), 0)
        except ValueError:
            raise BadMessage(f"{where}: {value!r} is not a {type_name}"[:120]) from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadMessage(f"{where}: {value!r} is not a {type_name}"[:120])
    if type_name in ("gaugeFloat", "gaugeDouble", "float", "double"):
        value = float(value)
        if type_name in ("gaugeFloat", "float") and math.isfinite(value) \
                and abs(value) > FLOAT32_MAX:
            value = math.copysign(math.inf, value)        # what a C cast to float gives
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadMessage(f"{where}: {value!r} is not a {type_name}")
        value = int(value)
    bits = 64 if type_name in ("counter64", "gauge64", "int64") else 32
    return value & ((1 << bits) - 1)


def _mac(text: str, where: str) -> bytes:
    """hsflowd's hexToBinary: hex digits, one or two per byte, '.', '-' or ':' between."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n and len(out) < 6:
        c = text[i]
        if c in "0123456789abcdefABCDEF":
            if i + 1 < n and text[i + 1] in "0123456789abcdefABCDEF":
                out.append(int(text[i:i + 2], 16))
                i += 2
            else:
                out.append(int(c, 16))
                i += 1
        elif c in ".-:":
            i += 1
        else:
            break
    if len(out) != 6:
        raise BadMessage(f"{where}: {text!r} is not a MAC address"[:120])
    return bytes(out)


def _field(name: Any, spec: Any, codes: Dict[str, int], where: str) -> TypedField:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadMessage(f"{where}: {name!r} is not a name (letters, digits, '-', '_', at most "
                         f"{MAX_NAME})"[:160])
    w = f"{where}.{name}"
    type_name = spec.get("type")
    if type_name is None or "value" not in spec:
        raise BadMessage(f"{w} needs a \"type\" and a \"value\"")
    code = codes.get(type_name) if isinstance(type_name, str) else None
    if code is None:
        raise BadMessage(f"{w}: unknown type {type_name!r} (one of {', '.join(codes)})"[:200])
    value = spec["value"]
    if type_name == "string":
        if not isinstance(value, str):
            raise BadMessage(f"{w}: a string needs a string value, not {value!r}"[:120])
        if len(value.encode("utf-8", "surrogateescape")) > MAX_VALUE:
            raise BadMessage(f"{w}: a string is at most {MAX_VALUE} bytes")
    elif type_name in ("mac", "ip", "ip6"):
        if not isinstance(value, str):
            raise BadMessage(f"{w}: {type_name} needs a string value, not {value!r}"[:120])
        if type_name == "mac":
            value = _mac(value, w)
        else:
            try:
                value = IPv4Address(value) if type_name == "ip" else IPv6Address(value)
            except ValueError:
                raise BadMessage(f"{w}: {value!r} is not an {type_name} address"[:120]) from None
    else:
        value = _numeric(value, type_name, w)
    return TypedField(name, code, value)


def _fields(body: Dict[str, Any], codes: Dict[str, int], where: str,
            skip: tuple) -> List[TypedField]:
    out = []
    for name, spec in body.items():
        if name in skip or not isinstance(spec, dict):
            continue           # hsflowd takes the named objects and passes over the rest
        out.append(_field(name, spec, codes, where))
    if not out:
        raise BadMessage(f"{where} has no field to send")
    return out


def rtmetric(body: Any) -> RtMetric:
    where = "rtmetric"
    if not isinstance(body, dict):
        raise BadMessage(f"{where} is not an object")
    ds = body.get("datasource")
    datasource = "" if ds is None else _datasource(ds, where)
    return RtMetric(datasource=datasource,
                    metrics=_fields(body, _METRIC_CODES, where, ("datasource",)))


def rtflow(body: Any) -> RtFlow:
    where = "rtflow"
    if not isinstance(body, dict):
        raise BadMessage(f"{where} is not an object")
    ds = body.get("datasource")
    datasource = "" if ds is None else _datasource(ds, where)
    rate = body.get("sampling_rate")
    if isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate):
        rate = (int(rate) & 0xFFFFFFFF) or 1
    else:
        rate = 1
    return RtFlow(datasource=datasource, sampling_rate=rate, sample_pool=0,
                  fields=_fields(body, _FLOW_CODES, where, ("datasource", "sampling_rate")))


__all__ = ["AppCounterMessage", "BadMessage", "MAX_MESSAGE", "Transaction", "counter_sample",
           "flow_sample", "parse_message", "rtflow", "rtmetric"]
