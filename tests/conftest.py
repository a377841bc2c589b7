"""Shared fixtures: namespaces that are always removed, and a UDP collector socket."""

from __future__ import annotations

import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from netns import Namespace, is_root  # noqa: E402


@pytest.fixture
def netns():
    """Factory for network namespaces; every one it made is deleted after the test."""
    if not is_root():
        pytest.skip("network namespaces need root")
    made = []

    def make(name=None):
        ns = Namespace(name)
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        ns.delete()


@pytest.fixture
def udp_collector():
    """A UDP socket on 127.0.0.1 that stands in for a collector: (socket, port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock, sock.getsockname()[1]
    sock.close()
