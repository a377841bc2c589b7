"""sFlow-RT's host and interface metrics, computed from counter samples, and ``--summary``.

sFlow-RT (sflow-rt.com/metrics.php) turns the cumulative counters an agent sends into rates
and percentages over the time between two samples of the same data source; the names and
units here are its own:

- host (data source 2:1): ``load_one`` ... as sent, ``load_one_per_cpu`` (load / cpu_num);
  ``cpu_user`` ... ``cpu_guest_nice`` as the percentage of the CPU time that passed,
  ``cpu_utilization`` = 100 - ``cpu_idle``; ``mem_*`` in bytes, ``mem_used`` = total - free -
  buffers - cached, ``mem_utilization`` = 100 * mem_used / mem_total; ``disk_utilization`` =
  100 * (disk_total - disk_free) / disk_total, ``part_max_used`` in percent; page, swap,
  disk and network counters (``bytes_in``, ``disk_reads``...) per second.
- interface (0:ifIndex): counters per second (``ifinoctets`` in bytes/s, ``ifindiscards``,
  ``ifinerrors``... in packets/s), ``ifinpkts`` = unicast + multicast + broadcast,
  ``ifinutilization`` = ifinoctets * 800 / ifspeed (percent of the link), the same for out;
  ``ifname`` from port_name.

A counter the agent marks unknown (all ones) gives no metric.  Counters wrap at their width
(32 or 64 bits); a sample whose sequence number did not advance (the agent restarted)
starts the source afresh.  The time between samples is the agent's own (datagram uptime),
or the arrival times when the uptime did not advance.

``--summary`` adds, for every numeric metric, its ``min``, ``q1``, ``med``, ``q3``, ``max``
and ``sum`` across the agents' data sources (quartiles by linear interpolation between the
sorted values), as one JSON object per metric: the cluster view a metrics API takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..sflow import counters as C
from ..sflow import samples as S

Metrics = Dict[str, Any]
Key = Tuple[str, str]  # (agent, data source: "2.1" for the host, "22" for ifIndex 22)

CPU_TIMES = ("cpu_user", "cpu_nice", "cpu_system", "cpu_idle", "cpu_wio", "cpu_intr",
             "cpu_sintr", "cpu_steal")  # guest time is already inside user and nice
IF_TYPES = {6: "ethernetCsmacd", 7: "iso88023Csmacd", 24: "softwareLoopback", 53: "propVirtual",
            131: "tunnel", 135: "l2vlan", 161: "ieee8023adLag"}
IF_DIRECTIONS = {0: "unknown", 1: "full-duplex", 2: "half-duplex", 3: "in", 4: "out"}
_U32 = 1 << 32
_U64 = 1 << 64


@dataclass
class _Source:
    """The previous counter sample of one data source."""

    sequence: int
    uptime_ms: int
    arrival: float
    records: Dict[type, Any]


@dataclass
class _Latest:
    time: float
    metrics: Metrics


@dataclass
class MetricsTable:
    """Counter samples in, sFlow-RT metrics out: ``add`` each datagram, ``rows`` each interval.

    ``timeout``: a data source not heard from for that long is left out of the rows.
    """

    timeout: float = 60.0
    _previous: Dict[Key, _Source] = field(default_factory=dict)
    _latest: Dict[Key, _Latest] = field(default_factory=dict)

    def add(self, datagram: S.Datagram, arrival: float) -> None:
        agent = str(datagram.agent_address) if datagram.agent_address else "0.0.0.0"
        for sample in datagram.samples:
            if isinstance(sample, S.CountersSample):
                cls, index = sample.source_id_type, sample.source_id_index
            elif isinstance(sample, S.CountersSampleCompact):
                cls, index = S.split_source_id(sample.source_id)
            else:
                continue
            records = {type(r): r for r in sample.counters}
            key = (agent, f"{cls}.{index}" if cls else str(index))
            now = _Source(sample.sequence_number, datagram.uptime, arrival, records)
            before = self._previous.get(key)
            if before is not None and now.sequence <= before.sequence:
                before = None  # the agent restarted: its counters start again
            self._previous[key] = now
            seconds = _elapsed(before, now)
            metrics = host_metrics(records, before.records if before else {}, seconds)
            metrics.update(interface_metrics(records, before.records if before else {}, seconds))
            if metrics:
                self._latest[key] = _Latest(arrival, metrics)

    def rows(self, now: float) -> List[Dict[str, Any]]:
        """One object per (agent, data source) heard from within the timeout."""
        for key in [k for k, v in self._latest.items() if now - v.time > self.timeout]:
            del self._latest[key]
        return [{"time": round(now, 3), "agent": agent, "datasource": ds, **latest.metrics}
                for (agent, ds), latest in sorted(self._latest.items())]


def _elapsed(before: Optional[_Source], now: _Source) -> float:
    if before is None:
        return 0.0
    uptime = ((now.uptime_ms - before.uptime_ms) % _U32) / 1000.0
    if 0 < uptime < 3600:
        return uptime
    return max(now.arrival - before.arrival, 0.0)


def _rate(now, before, name: str, seconds: float, width: int = _U32) -> Optional[float]:
    """Per-second increase of a counter; None when unknown at either end or no time passed."""
    if before is None or seconds <= 0:
        return None
    a, b = getattr(before, name), getattr(now, name)
    if a == width - 1 or b == width - 1:
        return None
    return ((b - a) % width) / seconds


def _known(value: int, width: int = _U32) -> Optional[int]:
    return None if value == width - 1 else value


def _put(out: Metrics, name: str, value) -> None:
    if value is not None:
        out[name] = round(value, 6) if isinstance(value, float) else value


def host_metrics(now: Dict[type, Any], before: Dict[type, Any], seconds: float) -> Metrics:
    out: Metrics = {}
    descr = now.get(C.HostDescr)
    if descr is not None:
        out["host_name"] = descr.hostname
        _put(out, "os_name", _enum_name(C.OsName, descr.os_name))
        _put(out, "os_release", descr.os_release)
        _put(out, "machine_type", _enum_name(C.MachineType, descr.machine_type))
    cpu = now.get(C.HostCpu)
    if cpu is not None:
        _cpu(out, cpu, before.get(C.HostCpu), seconds)
    mem = now.get(C.HostMemory)
    if mem is not None:
        _memory(out, mem, before.get(C.HostMemory), seconds)
    disk = now.get(C.HostDiskIo)
    if disk is not None:
        _disk(out, disk, before.get(C.HostDiskIo), seconds)
    nio = now.get(C.HostNetIo)
    if nio is not None:
        old = before.get(C.HostNetIo)
        for name in ("bytes_in", "bytes_out"):
            _put(out, name, _rate(nio, old, name, seconds, _U64))
        for name in ("pkts_in", "errs_in", "drops_in", "pkts_out", "errs_out", "drops_out"):
            _put(out, name, _rate(nio, old, name, seconds))
    return out


def _enum_name(enum, value: int) -> str:
    try:
        return enum(value).name.lower()
    except ValueError:
        return str(value)


def _cpu(out: Metrics, cpu: C.HostCpu, old: Optional[C.HostCpu], seconds: float) -> None:
    for name in ("load_one", "load_five", "load_fifteen"):
        out[name] = round(getattr(cpu, name), 3)
        if cpu.cpu_num:
            out[name + "_per_cpu"] = round(getattr(cpu, name) / cpu.cpu_num, 6)
    for name in ("proc_run", "proc_total", "cpu_num", "cpu_speed", "uptime"):
        out[name] = getattr(cpu, name)
    if old is None or seconds <= 0:
        return
    spent = {n: (getattr(cpu, n) - getattr(old, n)) % _U32 for n in CPU_TIMES + (
        "cpu_guest", "cpu_guest_nice")}
    total = sum(spent[n] for n in CPU_TIMES)
    if total:
        for name, ms in spent.items():
            out[name] = round(100.0 * ms / total, 6)
        out["cpu_utilization"] = round(100.0 - 100.0 * spent["cpu_idle"] / total, 6)
    for name in ("interrupts", "contexts"):
        _put(out, name, _rate(cpu, old, name, seconds))


def _memory(out: Metrics, mem: C.HostMemory, old, seconds: float) -> None:
    for name in ("mem_total", "mem_free", "mem_shared", "mem_buffers", "mem_cached",
                 "swap_total", "swap_free"):
        _put(out, name, _known(getattr(mem, name), _U64))
    if mem.mem_total and mem.mem_total != _U64 - 1:
        used = mem.mem_total - mem.mem_free - mem.mem_buffers - mem.mem_cached
        out["mem_used"] = used
        out["mem_utilization"] = round(100.0 * used / mem.mem_total, 6)
    for name in ("page_in", "page_out", "swap_in", "swap_out"):
        _put(out, name, _rate(mem, old, name, seconds))


def _disk(out: Metrics, disk: C.HostDiskIo, old, seconds: float) -> None:
    _put(out, "disk_total", _known(disk.disk_total, _U64))
    _put(out, "disk_free", _known(disk.disk_free, _U64))
    if disk.disk_total and disk.disk_total != _U64 - 1:
        out["disk_utilization"] = round(
            100.0 * (disk.disk_total - disk.disk_free) / disk.disk_total, 6)
    if disk.part_max_used != C.UNKNOWN_PERCENT:
        out["part_max_used"] = disk.part_max_used / 100.0
    for name, wire, width in (("disk_reads", "reads", _U32), ("disk_bytes_read", "bytes_read", _U64),
                              ("disk_read_time", "read_time", _U32), ("disk_writes", "writes", _U32),
                              ("disk_bytes_written", "bytes_written", _U64),
                              ("disk_write_time", "write_time", _U32)):
        _put(out, name, _rate(disk, old, wire, seconds, width))


def interface_metrics(now: Dict[type, Any], before: Dict[type, Any], seconds: float) -> Metrics:
    out: Metrics = {}
    port = now.get(C.PortName)
    if port is not None and port.name:
        out["ifname"] = port.name
    ifc = now.get(C.IfCounters)
    if ifc is None:
        return out
    old = before.get(C.IfCounters)
    out["ifindex"] = ifc.ifIndex
    out["iftype"] = IF_TYPES.get(ifc.ifType, str(ifc.ifType))
    out["ifspeed"] = ifc.ifSpeed
    out["ifdirection"] = IF_DIRECTIONS.get(ifc.ifDirection, "unknown")
    out["ifadminstatus"] = "up" if ifc.ifStatus & 1 else "down"
    out["ifoperstatus"] = "up" if ifc.ifStatus & 2 else "down"
    for way in ("In", "Out"):
        low = way.lower()
        octets = _rate(ifc, old, f"if{way}Octets", seconds, _U64)
        _put(out, f"if{low}octets", octets)
        pkts = []
        for kind in ("Ucast", "Multicast", "Broadcast"):
            value = _rate(ifc, old, f"if{way}{kind}Pkts", seconds)
            _put(out, f"if{low}{kind.lower()}pkts", value)
            pkts.append(value)
        if all(p is not None for p in pkts):
            out[f"if{low}pkts"] = round(sum(pkts), 6)
        names = ("Discards", "Errors", "UnknownProtos") if way == "In" else ("Discards", "Errors")
        for kind in names:
            _put(out, f"if{low}{kind.lower()}", _rate(ifc, old, f"if{way}{kind}", seconds))
        if octets is not None and ifc.ifSpeed and ifc.ifSpeed != _U64 - 1:
            out[f"if{low}utilization"] = round(octets * 800.0 / ifc.ifSpeed, 6)
    return out


# ---------------------------------------------------------------- --summary

def quantile(ordered: List[float], q: float) -> float:
    """Linear interpolation between the closest ranks of sorted values."""
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(rows: List[Dict[str, Any]], now: float) -> Iterator[Dict[str, Any]]:
    """For each numeric metric: min, q1, med, q3, max, sum and how many sources had it."""
    values: Dict[str, List[float]] = {}
    for row in rows:
        for name, value in row.items():
            if name in ("time",) or isinstance(value, (str, bool)) or value is None:
                continue
            values.setdefault(name, []).append(value)
    for name in sorted(values):
        v = sorted(values[name])
        yield {"time": round(now, 3), "metric": name, "min": v[0], "q1": _r(quantile(v, 0.25)),
               "med": _r(quantile(v, 0.5)), "q3": _r(quantile(v, 0.75)), "max": v[-1],
               "sum": _r(sum(v)), "count": len(v)}


def _r(x: float) -> float:
    return round(x, 6)
