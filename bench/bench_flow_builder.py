#!/usr/bin/env python3
"""The per-sample cost of FlowSampleBuilder.sample(): the hot path of every sampler.

    python3 bench/bench_flow_builder.py              # a few seconds per figure
    python3 bench/bench_flow_builder.py --seconds 1  # quicker

One builder frames 128-byte headers into flow samples that ``emit`` throws away, so the
figure is the builder alone (the datagram framing is bench_sflow.py's).  ``set_pool`` is
called as a sampler's tick would call it, once per 100,000 samples (about a second at the
rate the samplers reach), with a count that follows the samples:

- steady: the count is exactly N per sample, so the pool needs no correction;
- noisy: the count is off by a few hundred packets each time, so part of the samples after
  each call carry a corrected step (what a real interface looks like).

Runs on one core (sched_setaffinity) and prints figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hsflowd.samplers.flow import FlowSampleBuilder  # noqa: E402
from pinning import pin_one_core  # noqa: E402

RATE = 10
TICK = 100_000          # samples between two set_pool calls
HEADERS = [bytes((i * 7 + j) & 0xFF for j in range(128)) for i in range(64)]


def workload(noise: int):
    builder = FlowSampleBuilder(3, RATE, 128, lambda sample: None)
    rng = random.Random(1)
    state = {"count": 100_000, "taken": 0}
    sample = builder.sample
    headers = HEADERS

    def run(n: int) -> None:
        taken = state["taken"]
        for i in range(n):
            sample(headers[i & 63], 1518, 3, 0x3FFFFFFF, 1)
            taken += 1
            if taken % TICK == 0:
                state["count"] += TICK * RATE + (rng.randint(-noise, noise) if noise else 0)
                builder.set_pool(state["count"])
        state["taken"] = taken
    return run


def timed(fn, seconds: float):
    fn(1000)  # warm up
    done, start, batch = 0, time.perf_counter(), 10_000
    while True:
        fn(batch)
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done, elapsed
        batch = min(batch * 2, 200_000)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{pin_one_core()}")
    print(f"FlowSampleBuilder.sample(), 1-in-{RATE}, set_pool every {TICK:,} samples:")
    for label, noise in (("steady count (no correction)", 0), ("noisy count (+-500 a tick)", 500)):
        items, elapsed = timed(workload(noise), args.seconds)
        rate = items / elapsed
        print(f"  {label:<36} {rate:>12,.0f} samples/s  ({1e6 / rate:5.2f} us each)")


if __name__ == "__main__":
    main()
