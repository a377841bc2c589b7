"""The host data source (2:1): the counter records of hsflowd's host sample.

Where the values come from: psutil first, /proc where psutil has no value.

- psutil, each call made at most once per poll: ``cpu_times``, ``cpu_count``, ``cpu_freq``,
  ``cpu_stats``, ``getloadavg`` and ``boot_time`` for host_cpu; ``virtual_memory`` and
  ``swap_memory`` for host_memory; ``disk_io_counters``, ``disk_partitions`` and
  ``disk_usage`` (once per filesystem) for host_disk_io; ``net_io_counters`` for host_net_io.
  psutil reads the live /proc and /sys: the ``procfs`` and ``sysfs`` roots do not move it
  (``psutil.PROCFS_PATH`` is a process-wide global and is left alone).  The instance calls
  psutil through ``HostSource.psutil``, a namespace of its own, so that a test can replace
  one function with a fake (a value or a failure) without patching the module.
- /proc text, read once per poll each and parsed by ``procfs.parse_*``, for what psutil has
  no call for: loadavg (proc_run, proc_total), vmstat (page_in/out; swap_in/out as page
  counts) and net/snmp (the four mib2 groups).
- sysfs: /sys/block, to tell whole disks from partitions; the DMI product UUID.  etc:
  machine-id.  The UUID and machine type come from ``identity``.

Unknown values follow sFlow's rules (style habit 6): a counter this host does not have is
all ones for the whole session, a gauge 0, a percentage -1, and each fallback is logged once.
Whether a counter is available is decided at the first poll and kept: if one that was there
goes missing later, its record is left out of that poll rather than switching to "unknown".
A record whose source fails is left out and the failure logged once; the others still go.

Where the values differ from hsflowd's (documented on the record builders): mem_shared is
the kernel's Shmem where hsflowd sends 0; cpu_speed is psutil's mean over the CPUs where
hsflowd takes the first "cpu MHz"; uptime counts from the boot time (whole seconds) where
hsflowd reads /proc/uptime; md and dm disks are skipped by name where hsflowd skips majors
9 and 253, and partitions are not summed again on top of their disks.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
import types
import uuid as uuidlib
from typing import Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import psutil

from ..sflow.counters import (
    UNKNOWN32, UNKNOWN64, UNKNOWN_PERCENT, HostAdapter, HostAdapters, HostCpu, HostDescr,
    HostDiskIo, HostMemory, HostNetIo, Mib2IcmpGroup, Mib2IpGroup, Mib2TcpGroup, Mib2UdpGroup,
    OsName,
)
from ..sflow.tlv import Record
from . import procfs as P
from .identity import (
    ZERO_UUID, choose_uuid, dmi_uuid, machine_type_of, parse_uuid_text, uuid_from_machine_id,
)

__all__ = ["HostSource", "CounterDeltas", "PSUTIL_CALLS", "psutil_calls", "machine_type_of",
           "parse_uuid_text", "uuid_from_machine_id", "dmi_uuid", "ZERO_UUID"]

log = logging.getLogger("hsflowd.host")


def _clip(text: str, limit: int) -> str:
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


# ---------------------------------------------------------------- deltas

class CounterDeltas:
    """Totals of counter increases since the first reading, summed over devices
    (style habit 13: the delta bookkeeping lives here and nowhere else).

    Each device's last reading is kept.  A new reading adds its increase field by field.
    A reading in which any field went down means the device was reset or recreated (the
    kernel's counters are 64-bit, so this is not a wrap): it becomes the new baseline and
    adds nothing.  A device missing from an update is forgotten; a new one starts as a
    baseline.  The totals start at zero and are plain integers: callers wrap them to the
    width of their field."""

    __slots__ = ("_last", "_totals")

    def __init__(self, width: int):
        self._last: Dict[str, Tuple[int, ...]] = {}
        self._totals = [0] * width

    def update(self, readings: Mapping[str, Sequence[int]]) -> Tuple[int, ...]:
        last = self._last
        totals = self._totals
        for key, now in readings.items():
            now = tuple(now)
            before = last.get(key)
            if before is not None and len(before) == len(now):
                steps = [n - b for n, b in zip(now, before)]
                if min(steps) >= 0:
                    for i, step in enumerate(steps):
                        totals[i] += step
            last[key] = now
        if len(last) != len(readings):
            # a new dict: one that only had entries deleted keeps the size it grew to
            self._last = {k: v for k, v in last.items() if k in readings}
        return tuple(totals)

    @property
    def devices(self) -> List[str]:
        return sorted(self._last)


# ---------------------------------------------------------------- the source

# The psutil functions a poll calls.  Each HostSource holds them in a namespace of its own
# (``HostSource.psutil``, made by psutil_calls()): the seam through which a test replaces one
# with a fake.  A function this psutil lacks (cpu_freq on some platforms) is None.
PSUTIL_CALLS = ("cpu_times", "cpu_count", "cpu_freq", "cpu_stats", "getloadavg", "boot_time",
                "virtual_memory", "swap_memory", "disk_io_counters", "disk_partitions",
                "disk_usage", "net_io_counters")


def psutil_calls() -> types.SimpleNamespace:
    """A fresh namespace of the psutil functions in PSUTIL_CALLS."""
    return types.SimpleNamespace(**{name: getattr(psutil, name, None) for name in PSUTIL_CALLS})


# What a failing read raises: OSError (a file is missing or unreadable), ValueError (text
# psutil or we cannot parse), RuntimeError (psutil: NotImplementedError when neither
# /proc/diskstats nor /sys/block exist, "btime not found"), psutil.Error (AccessDenied...).
_READ_ERRORS = (OSError, ValueError, RuntimeError, psutil.Error)


class _Vanished(Exception):
    """A counter available earlier in the session is missing now (its record is skipped)."""


def _counter_names(cls) -> List[str]:
    return [f.name for f in dataclasses.fields(cls)]


# mib2 fields that are configuration or current values, not counters: unknown is 0 for them
_MIB2_GAUGES = frozenset((
    "ipForwarding", "ipDefaultTTL", "tcpRtoAlgorithm", "tcpRtoMin", "tcpRtoMax",
    "tcpMaxConn", "tcpCurrEstab",
))
# the kernel abbreviates ParamProbs as ParmProbs (RFC 1213 spells it icmpInParmProbs)
_MIB2_KERNEL_NAMES = {"ParamProbs": "ParmProbs"}


def _mib2_layout(cls, section: str, prefix: str):
    rows = []
    for name in _counter_names(cls):
        kernel = name[len(prefix):]
        for spec, proc in _MIB2_KERNEL_NAMES.items():
            kernel = kernel.replace(spec, proc)
        rows.append((name, kernel, name in _MIB2_GAUGES))
    return cls, section, rows


# wire order of the four groups: hsflowd prepends ip, icmp, tcp, udp, so udp comes first
_MIB2 = (
    _mib2_layout(Mib2UdpGroup, "Udp", "udp"),
    _mib2_layout(Mib2TcpGroup, "Tcp", "tcp"),
    _mib2_layout(Mib2IcmpGroup, "Icmp", "icmp"),
    _mib2_layout(Mib2IpGroup, "Ip", "ip"),
)

# (sFlow field, psutil.cpu_times() field).  psutil leaves out the fields an old kernel does
# not print (steal before 2.6.11, guest before 2.6.24, guest_nice before 2.6.33).
_CPU_TIMES = (("cpu_user", "user"), ("cpu_nice", "nice"), ("cpu_system", "system"),
              ("cpu_idle", "idle"), ("cpu_wio", "iowait"), ("cpu_intr", "irq"),
              ("cpu_sintr", "softirq"), ("cpu_steal", "steal"), ("cpu_guest", "guest"),
              ("cpu_guest_nice", "guest_nice"))

# Software RAID and device-mapper volumes sit on other disks, whose lines already count
# their I/O.  hsflowd skips them by major number (9, 253); psutil gives names only, and the
# kernel names them md<N> (md/<name> links aside) and dm-<N>.
_STACKED_DISKS = ("md", "dm-")
# hsflowd counts the space of filesystems on these devices only (ganglia's rule)
_DEVICE_PREFIXES = ("/dev/", "/dev2/", "ubi:")


class _DiskSums(NamedTuple):
    """psutil.disk_io_counters() summed over whole disks, named as HostDiskIo's fields."""

    reads: int
    bytes_read: int
    read_time: int
    writes: int
    bytes_written: int
    write_time: int


def _ms(seconds: Optional[float]) -> Optional[int]:
    # psutil divides jiffies by CLK_TCK: round() undoes the float error (1/100 s is inexact)
    return None if seconds is None else round(seconds * 1000)


class HostSource:
    """Builds the records of the 2:1 host counter sample.

    The files this source reads itself go through ``procfs``, ``sysfs`` and ``etc`` (style
    habit 3); psutil reads the live system (see the module docstring) and is called through
    ``self.psutil``, which a test may fill with fakes.  ``uuid`` is the configured host
    UUID (``uuid=`` or ``-u``); ``machine_id`` the ``-m`` option; ``hostname`` overrides
    uname's nodename.  An invalid ``uuid`` or ``machine_id`` raises ValueError.  The
    instance keeps per-session state (host_net_io deltas, which counters this host has),
    so the agent makes one and polls it."""

    def __init__(self, procfs: str = "/proc", sysfs: str = "/sys", etc: str = "/etc",
                 uuid: Optional[str] = None, machine_id: Optional[str] = None,
                 hostname: Optional[str] = None):
        self.procfs = procfs
        self.sysfs = sysfs
        self.etc = etc
        self._hostname = hostname
        self.machine_type = machine_type_of(platform.machine())
        self._have: Dict[str, bool] = {}
        self._logged: set = set()
        self._nio = CounterDeltas(8)
        self.psutil = psutil_calls()
        self.uuid: uuidlib.UUID = choose_uuid(uuid, machine_id, sysfs, etc)

    # ---- the public calls

    def host_descr(self) -> HostDescr:
        u = os.uname()
        return HostDescr(hostname=_clip(self._hostname or u.nodename, 64), uuid=self.uuid,
                         machine_type=int(self.machine_type), os_name=int(OsName.LINUX),
                         os_release=_clip(u.release, 32))

    def records(self, adapters: List[HostAdapter], nio_interfaces: Iterable[str]) -> List[Record]:
        """The whole 2:1 record list in hsflowd's wire order: 2001, 2010, 2009, 2008, 2007,
        2005, 2004, 2003, 2006, 2000.  A record whose source fails is left out."""
        out: List[Record] = [HostAdapters(adapters=list(adapters))]
        mib2 = self._guarded("mib2 groups (2007-2010)", self._mib2)
        if mib2:
            out.extend(mib2)
        for what, build in (("host_disk_io", self._host_disk_io),
                            ("host_memory", self._host_memory),
                            ("host_cpu", self._host_cpu),
                            ("host_net_io", lambda: self._host_net_io(nio_interfaces)),
                            ("host_descr", self.host_descr)):
            rec = self._guarded(what, build)
            if rec is not None:
                out.append(rec)
        return out

    # ---- plumbing

    def _once(self, key: str, level: int, msg: str, *args, **kw) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, msg, *args, **kw)

    def _guarded(self, what: str, build: Callable):
        try:
            return build()
        except _READ_ERRORS + (_Vanished,) as e:
            self._once("fail:" + what, logging.WARNING, "%s left out: %s", what, e)
        except Exception:  # a bug must not stop the other records either
            self._once("fail:" + what, logging.ERROR, "%s left out: unexpected error", what,
                       exc_info=True)
        return None

    def _counter(self, name: str, value: Optional[int], unknown: int = UNKNOWN32) -> int:
        """A counter, wrapped to its width; all ones for the whole session if the host did
        not have it at the first poll (sFlow: always or never available in one session)."""
        have = self._have.get(name)
        if have is None:
            have = self._have[name] = value is not None
            if not have:
                self._once("unknown:" + name, logging.INFO,
                           "%s is not available on this host: sent as unknown", name)
        if not have:
            return unknown
        if value is None:
            raise _Vanished(f"{name} was available earlier and is missing now")
        return value & unknown

    def _gauge(self, name: str, value: Optional[int]) -> int:
        if value is None:
            self._once("gauge:" + name, logging.INFO,
                       "%s is not available on this host: sent as 0", name)
            return 0
        return value & UNKNOWN32

    def _proc(self, name: str) -> str:
        # /proc is read whole and unbuffered: one read() call per file
        with open(os.path.join(self.procfs, name), "rb", buffering=0) as f:
            return f.read().decode("utf-8", "surrogateescape")

    def _optional(self, what: str, read: Callable, level: int = logging.INFO):
        """read() or None, logging the first failure (for a value a record can do without)."""
        try:
            return read()
        except _READ_ERRORS as e:
            self._once("read:" + what, level, "cannot read %s: %s", what, e)
            return None

    # ---- records

    def _mib2(self) -> List[Record]:
        snmp = P.parse_net_snmp(self._proc("net/snmp"))
        out = []
        for cls, section, rows in _MIB2:
            values = snmp.get(section, {})
            fields = {}
            for name, kernel, gauge in rows:
                v = values.get(kernel)
                fields[name] = self._gauge(name, v) if gauge else self._counter(name, v)
            out.append(cls(**fields))
        return out

    def _host_cpu(self) -> HostCpu:
        """psutil for all but proc_run/proc_total (/proc/loadavg).  Only cpu_times() is
        needed: any other value that cannot be read is sent as unknown (counters) or 0.

        cpu_speed is psutil's cpu_freq(): cpufreq's current frequency, or the "cpu MHz" of
        /proc/cpuinfo where there is no cpufreq, averaged over the CPUs (hsflowd takes the
        first "cpu MHz"); 0 when neither exists (most arm64 VMs).  uptime counts from
        boot_time(), /proc/stat's btime, so it moves if the clock is stepped."""
        ps = self.psutil
        times = ps.cpu_times()
        stats = self._optional("psutil.cpu_stats()", ps.cpu_stats)
        loads = self._optional("psutil.getloadavg()", ps.getloadavg) or (0.0, 0.0, 0.0)
        procs = self._optional("/proc/loadavg", lambda: P.parse_loadavg(self._proc("loadavg")))
        boot = self._optional("psutil.boot_time()", ps.boot_time)
        freq = self._optional("psutil.cpu_freq()", ps.cpu_freq) if ps.cpu_freq else None
        ms = {name: self._counter(name, _ms(getattr(times, field, None)))
              for name, field in _CPU_TIMES}
        return HostCpu(
            load_one=loads[0], load_five=loads[1], load_fifteen=loads[2],
            # hsflowd does not count itself among the running processes
            proc_run=max(procs.running - 1, 0) if procs else 0,
            proc_total=procs.total if procs else 0,
            # the online CPUs: sysconf(_SC_NPROCESSORS_ONLN), as hsflowd's get_nprocs()
            cpu_num=self._gauge("cpu_num", ps.cpu_count()),
            cpu_speed=self._gauge("cpu_speed", int(freq.current) if freq else None),
            uptime=self._gauge("uptime", None if boot is None
                               else max(0, int(time.time() - boot))),
            interrupts=self._counter("interrupts", None if stats is None else stats.interrupts),
            contexts=self._counter("contexts", None if stats is None else stats.ctx_switches),
            **ms)

    def _host_memory(self) -> HostMemory:
        """virtual_memory() and swap_memory(); the paging counters from /proc/vmstat.

        mem_shared is psutil's ``shared``, the kernel's Shmem (tmpfs and shared anonymous
        memory): what the field means.  hsflowd never reads it and sends 0."""
        vm = self.psutil.virtual_memory()
        swap = self.psutil.swap_memory()
        vmstat = self._optional("/proc/vmstat", lambda: P.parse_vmstat(self._proc("vmstat"))) or {}
        return HostMemory(
            mem_total=vm.total, mem_free=vm.free,
            mem_shared=getattr(vm, "shared", 0),
            mem_buffers=getattr(vm, "buffers", 0),
            # psutil's cached is Cached + SReclaimable on Linux (_pslinux.virtual_memory in
            # psutil 5.9 and 7: "free" counts reclaimable slab as cache), which is hsflowd's
            # sum too (readMemoryCounters.c adds SReclaimable to mem_cached)
            mem_cached=getattr(vm, "cached", 0),
            swap_total=swap.total, swap_free=swap.free,
            page_in=self._counter("page_in", vmstat.get("pgpgin")),
            page_out=self._counter("page_out", vmstat.get("pgpgout")),
            # pages, as hsflowd sends them: psutil's swap_memory().sin is bytes (x 4 KiB)
            swap_in=self._counter("swap_in", vmstat.get("pswpin")),
            swap_out=self._counter("swap_out", vmstat.get("pswpout")))

    def _whole_disks(self) -> Optional[frozenset]:
        try:
            return frozenset(os.listdir(os.path.join(self.sysfs, "block")))
        except OSError as e:
            self._once("read:sysblock", logging.INFO, "cannot list %s/block (%s): "
                       "partitions cannot be told from disks, every device is summed",
                       self.sysfs, e.strerror)
            return None

    def _disk_sums(self, disks: Mapping[str, object]) -> _DiskSums:
        """Sum psutil's per-disk counters over whole disks: a name in /sys/block (with "/"
        as "!", e.g. cciss!c0d0), which is psutil's own test when it sums disks.  A
        partition's I/O is already in its disk's, and hsflowd, summing every line of
        /proc/diskstats, counts it twice; without /sys/block every device is summed, as
        hsflowd does.  md and dm devices are skipped (their I/O is on their disks)."""
        whole = self._whole_disks()
        reads = rbytes = rtime = writes = wbytes = wtime = 0
        for name, d in disks.items():
            if name.startswith(_STACKED_DISKS):
                continue
            if whole is not None and name.replace("/", "!") not in whole:
                continue
            reads += d.read_count
            rbytes += d.read_bytes   # psutil: sectors x 512, as hsflowd
            rtime += d.read_time
            writes += d.write_count
            wbytes += d.write_bytes
            wtime += d.write_time
        return _DiskSums(reads, rbytes, rtime, writes, wbytes, wtime)

    def _filesystems(self, partitions) -> Tuple[int, int, int]:
        """(disk_total, disk_free, part_max_used) over psutil.disk_partitions(all=False),
        which keeps filesystems on a device only (no tmpfs, proc, nfs, cifs...).  hsflowd's
        rules on top: the device is a /dev node (so a ZFS dataset, which would count its
        pool's free space again, is not), the filesystem is mounted read-write, and each
        device counts once: ``ip netns add`` bind-mounts the root filesystem's device on
        /run/netns, and /proc/mounts lists /dev/vda twice.

        free is disk_usage()'s ``free``, f_bavail (what hsflowd sends), and the percentage
        used is hsflowd's (total - free) / total in hundredths, which counts the blocks
        reserved for root as used (psutil's ``used`` leaves them out)."""
        total = free = 0
        max_used = UNKNOWN_PERCENT
        seen = set()
        for p in partitions:
            if (p.device in seen or not p.device.startswith(_DEVICE_PREFIXES)
                    or p.opts.split(",", 1)[0] == "ro"):
                continue
            try:
                usage = self.psutil.disk_usage(p.mountpoint)
            except OSError:
                continue
            seen.add(p.device)
            if not usage.total:
                continue
            total += usage.total
            free += usage.free
            max_used = max(max_used, (usage.total - usage.free) * 10000 // usage.total)
        return total, free, max_used

    def _host_disk_io(self) -> HostDiskIo:
        ps = self.psutil
        # nowrap=False: the kernel's numbers; psutil's wrap fix keeps a process-wide cache
        # and would turn a disk that goes away and comes back into a jump
        disks = self._optional("psutil.disk_io_counters()",
                               lambda: ps.disk_io_counters(perdisk=True, nowrap=False))
        parts = self._optional("psutil.disk_partitions()", lambda: ps.disk_partitions(all=False))
        if disks is None and parts is None:
            raise OSError("neither the disk I/O counters nor the mounted filesystems "
                          "can be read")
        io = None if disks is None else self._disk_sums(disks)
        total, free, max_used = self._filesystems(parts or ())

        def c(name: str, unknown: int = UNKNOWN32) -> int:
            return self._counter(name, None if io is None else getattr(io, name), unknown)

        return HostDiskIo(
            disk_total=total, disk_free=free, part_max_used=max_used,
            reads=c("reads"), bytes_read=c("bytes_read", UNKNOWN64), read_time=c("read_time"),
            writes=c("writes"), bytes_written=c("bytes_written", UNKNOWN64),
            write_time=c("write_time"))

    def _host_net_io(self, nio_interfaces: Iterable[str]) -> HostNetIo:
        wanted = set(nio_interfaces)
        # nowrap=False: raw values; psutil's own wrap fix would hide a reset from us
        stats = self.psutil.net_io_counters(pernic=True, nowrap=False)
        readings = {name: (s.bytes_recv, s.packets_recv, s.errin, s.dropin,
                           s.bytes_sent, s.packets_sent, s.errout, s.dropout)
                    for name, s in stats.items() if name in wanted}
        t = self._nio.update(readings)
        return HostNetIo(bytes_in=t[0] & UNKNOWN64, pkts_in=t[1] & UNKNOWN32,
                         errs_in=t[2] & UNKNOWN32, drops_in=t[3] & UNKNOWN32,
                         bytes_out=t[4] & UNKNOWN64, pkts_out=t[5] & UNKNOWN32,
                         errs_out=t[6] & UNKNOWN32, drops_out=t[7] & UNKNOWN32)
