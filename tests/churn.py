"""Interface churn for the memory test and benchmark: many links made and deleted in batches.

``churn(ns, pairs, batch)`` makes ``batch`` veth pairs at a time inside ``ns`` (both ends
there, so nothing touches the root namespace) and deletes them again, with one
``ip -batch`` each way; ``churn_taps`` does the same with tap devices, which a
``pcap { dev.pattern = ... }`` rule taps (veths are never picked by a pattern or a speed,
as in hsflowd).
"""

from __future__ import annotations

import subprocess
from typing import Callable, Optional


def _batch(ns, lines) -> None:
    subprocess.run(["ip", "-n", ns.name, "-batch", "-"], input="\n".join(lines) + "\n",
                   text=True, check=True, capture_output=True)


def churn(ns, pairs: int, batch: int = 50, stem: str = "cv",
          between: Optional[Callable[[int], None]] = None) -> None:
    done = 0
    while done < pairs:
        n = min(batch, pairs - done)
        names = [f"{stem}{done + i}" for i in range(n)]
        _batch(ns, [f"link add {x}a type veth peer name {x}b" for x in names]
               + [f"link set {x}a up" for x in names] + [f"link set {x}b up" for x in names])
        if between is not None:
            between(done)
        _batch(ns, [f"link del {x}a" for x in names])
        done += n


def churn_taps(ns, count: int, batch: int = 50, stem: str = "ct",
               between: Optional[Callable[[int], None]] = None) -> None:
    done = 0
    while done < count:
        n = min(batch, count - done)
        names = [f"{stem}{done + i}" for i in range(n)]
        _batch(ns, [f"tuntap add dev {x} mode tap" for x in names]
               + [f"link set {x} up" for x in names])
        if between is not None:
            between(done)
        _batch(ns, [f"link del {x}" for x in names])
        done += n
