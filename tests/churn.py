"""Interface churn for the memory test and benchmark: many links made and deleted in batches.

``churn(ns, pairs, batch)`` makes ``batch`` veth pairs at a time inside ``ns`` (both ends
there, so nothing touches the root namespace) and deletes them again, with one
``ip -batch`` each way; ``churn_taps`` does the same with tap devices, which a
``pcap { dev.pattern = ... }`` rule taps (veths are never picked by a pattern or a speed,
as in hsflowd).  ``add_pairs`` and ``delete_pairs`` make many pairs that live together
(a busy node's pod veths), optionally as ports of a bridge.
"""

from __future__ import annotations

import subprocess
from typing import Callable, List, Optional


def _batch(ns, lines) -> None:
    subprocess.run(["ip", "-n", ns.name, "-batch", "-"], input="\n".join(lines) + "\n",
                   text=True, check=True, capture_output=True)


def _names(stem: str, start: int, count: int) -> List[str]:
    return [f"{stem}{start + i}" for i in range(count)]


def _add(ns, names: List[str], master: str = "") -> None:
    _batch(ns, [f"link add {x}a type veth peer name {x}b" for x in names]
           + [f"link set {x}a master {master}" for x in names if master]
           + [f"link set {x}a up" for x in names] + [f"link set {x}b up" for x in names])


def _delete(ns, names: List[str]) -> None:
    _batch(ns, [f"link del {x}a" for x in names])


def add_pairs(ns, pairs: int, batch: int = 50, stem: str = "cv", master: str = "") -> None:
    """``pairs`` veth pairs STEMNa/STEMNb, both ends up; the a ends ports of ``master``."""
    for done in range(0, pairs, batch):
        _add(ns, _names(stem, done, min(batch, pairs - done)), master)


def delete_pairs(ns, pairs: int, batch: int = 50, stem: str = "cv") -> None:
    for done in range(0, pairs, batch):
        _delete(ns, _names(stem, done, min(batch, pairs - done)))


def churn(ns, pairs: int, batch: int = 50, stem: str = "cv",
          between: Optional[Callable[[int], None]] = None) -> None:
    done = 0
    while done < pairs:
        names = _names(stem, done, min(batch, pairs - done))
        _add(ns, names)
        if between is not None:
            between(done)
        _delete(ns, names)
        done += len(names)


def churn_taps(ns, count: int, batch: int = 50, stem: str = "ct",
               between: Optional[Callable[[int], None]] = None) -> None:
    done = 0
    while done < count:
        n = min(batch, count - done)
        names = _names(stem, done, n)
        _batch(ns, [f"tuntap add dev {x} mode tap" for x in names]
               + [f"link set {x} up" for x in names])
        if between is not None:
            between(done)
        _batch(ns, [f"link del {x}" for x in names])
        done += n
