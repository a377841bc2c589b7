"""Cost of one host poll: mean time of HostSource.records(), of each record in it, and the
process's resident memory.

    python bench/bench_host.py [-n CALLS] [--interface NAME ...]

The agent calls records() once per polling interval (30 s by default, 1 s in the
benchmarks), so this is the whole per-poll cost of the 2:1 sample before encoding.  The
breakdown times each record builder on its own (psutil calls plus the /proc files the source
still reads itself), which shows where a poll's time goes.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import psutil  # noqa: E402

from hsflowd.sflow.counters import HostAdapter  # noqa: E402
from hsflowd.sources.host import HostSource  # noqa: E402


def mean_time(call, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="calls to time (default 2000)")
    ap.add_argument("--interface", action="append",
                    help="interfaces to sum into host_net_io (default: every non-loopback one)")
    args = ap.parse_args()

    names = args.interface or [n for n in psutil.net_if_addrs() if n != "lo"]
    adapters = [HostAdapter(ifIndex=i + 1, mac_addresses=[bytes(6)]) for i in range(len(names))]
    rss_before = psutil.Process().memory_info().rss

    source = HostSource()
    records = source.records(adapters, names)  # first poll: availability latches, baselines
    mean = mean_time(lambda: source.records(adapters, names), args.n)
    encode = mean_time(lambda: b"".join(r.encode() for r in records), args.n)
    parts = [("mib2 groups (2007-2010)", source._mib2),
             ("host_disk_io (2005)", source._host_disk_io),
             ("host_memory (2004)", source._host_memory),
             ("host_cpu (2003)", source._host_cpu),
             ("host_net_io (2006)", lambda: source._host_net_io(names)),
             ("host_descr (2000)", source.host_descr)]
    breakdown = [(what, mean_time(build, max(args.n // 4, 1))) for what, build in parts]

    rss = psutil.Process().memory_info().rss
    print(f"Python {platform.python_version()}, psutil {psutil.__version__}")
    print(f"records():  mean {mean * 1e6:.0f} us over {args.n} calls "
          f"({len(records)} records, interfaces {','.join(names)})")
    for what, t in breakdown:
        print(f"  {what:<24} {t * 1e6:6.0f} us")
    print(f"encode:     mean {encode * 1e6:.1f} us for the {len(records)} records")
    print(f"at 1 s polling: {mean * 100:.3f} % of one CPU")
    print(f"resident memory: {rss / 2**20:.1f} MiB "
          f"(+{(rss - rss_before) / 2**10:.0f} KiB during the run)")


if __name__ == "__main__":
    main()
