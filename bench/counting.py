"""A collector for the benchmarks that run the agent: a thread that receives its datagrams
and counts them, their counter samples, the guests' (3:N) among them and every data source
seen, keeping no history (a long window at polling=1 adds up)."""

from __future__ import annotations

import threading

from agentproc import Receiver, counter_samples, source_of


class Counting:
    def __init__(self, receiver: Receiver):
        self.receiver = receiver
        self.datagrams = 0
        self.samples = 0            # counter samples
        self.virt_samples = 0       # those of 3:N data sources (containers, pods, services)
        self.sources = set()
        self.first_at = None        # when the first datagram was read
        self.first = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            r = self.receiver.recv(0.2)
            if r is None:
                continue
            self.receiver.received.clear()
            if self.first_at is None:
                self.first_at = r.at
                self.first.set()
            self.datagrams += 1
            for s in counter_samples(r.datagram):
                source = source_of(s)
                self.samples += 1
                self.virt_samples += source[0] == 3
                self.sources.add(source)

    @property
    def guests(self) -> int:
        """3:N data sources seen (containers, pods, services)."""
        return sum(1 for source in self.sources if source[0] == 3)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
