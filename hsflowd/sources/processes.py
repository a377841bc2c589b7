"""What a set of processes used, from /proc: the fallback for a service whose cgroup does
not count it (a v1 hierarchy where its accounting is off, a v2 group without the memory
or io controller), as hsflowd's mod_systemd sums its processes.

========  ===========================================  ==================================
what      file                                         note
========  ===========================================  ==================================
CPU time  /proc/PID/stat utime + stime (clock ticks)   its threads included
memory    /proc/PID/statm resident (pages)             RSS, summed over the processes
disk I/O  /proc/PID/io read_bytes, write_bytes         root's (or the owner's) only
========  ===========================================  ==================================

The set changes as processes come and go, and counters must not go back when one exits:
``ProcessTotals`` adds what each process used since the last reading (all it had used, the
first time it is seen), so what an exited process used stays counted.  A process is known
by its PID and start time (a PID used again is a new process).  hsflowd adds the children's
times (cutime, cstime) too, which counts a child twice once it is reaped; and rchar and
wchar to the block I/O, which counts reads from the page cache and sockets as disk I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, NamedTuple, Optional, Tuple

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def parse_stat(text: str) -> Tuple[int, int]:
    """/proc/PID/stat: (utime + stime in ticks, start time in ticks since boot)."""
    fields = text.rsplit(")", 1)[1].split()   # the name may hold spaces and ")"
    return int(fields[11]) + int(fields[12]), int(fields[19])


def parse_statm_resident(text: str) -> int:
    """/proc/PID/statm: resident pages."""
    return int(text.split()[1])


def parse_io(text: str) -> Tuple[int, int]:
    """/proc/PID/io: (read_bytes, write_bytes), what went to and from the block layer."""
    values = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return int(values["read_bytes"]), int(values["write_bytes"])


class ProcessReading(NamedTuple):
    """One reading of a set of processes; None where nothing could be read."""

    cpu_ns: Optional[int]
    memory: Optional[int]          # bytes resident
    rd_bytes: Optional[int]
    wr_bytes: Optional[int]


def _read(path: str, parse):
    try:
        with open(path) as f:
            return parse(f.read())
    except (OSError, ValueError, IndexError, KeyError):
        return None


@dataclass
class ProcessTotals:
    """Counters of a changing set of processes that only go up (see the module doc)."""

    cpu_ticks: int = 0
    rd_bytes: int = 0
    wr_bytes: int = 0
    last: Dict[Tuple[int, int], Tuple[int, int, int]] = field(default_factory=dict)

    def read(self, pids: Iterable[int], procfs: str = "/proc") -> ProcessReading:
        """Read every process of ``pids`` and add what each used since the last reading.
        Disk bytes are None when a process's io file cannot be read (another user's,
        without root): a part would look like the whole."""
        now: Dict[Tuple[int, int], Tuple[int, int, int]] = {}
        resident = 0
        seen = io_missing = False
        for pid in pids:
            base = os.path.join(procfs, str(pid))
            stat = _read(os.path.join(base, "stat"), parse_stat)
            if stat is None:
                continue                   # gone since the group was read
            ticks, started = stat
            pages = _read(os.path.join(base, "statm"), parse_statm_resident)
            io = _read(os.path.join(base, "io"), parse_io)
            seen = True
            resident += pages or 0
            io_missing = io_missing or io is None
            key = (pid, started)
            rd, wr = io or (0, 0)
            was = self.last.get(key, (0, 0, 0))
            self.cpu_ticks += max(0, ticks - was[0])
            if io is not None:
                self.rd_bytes += max(0, rd - was[1])
                self.wr_bytes += max(0, wr - was[2])
            now[key] = (ticks, rd if io is not None else was[1], wr if io is not None else was[2])
        self.last = now
        if not seen:
            return ProcessReading(None, None, None, None)
        return ProcessReading(self.cpu_ticks * 1_000_000_000 // TICKS_PER_SECOND,
                              resident * PAGE_SIZE,
                              None if io_missing else self.rd_bytes,
                              None if io_missing else self.wr_bytes)


__all__ = ["PAGE_SIZE", "ProcessReading", "ProcessTotals", "TICKS_PER_SECOND", "parse_io",
           "parse_stat", "parse_statm_resident"]
