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


@pytest.fixture(scope="session")
def booted_machine(tmp_path_factory):
    """One Debian root with a real systemd, booted with systemd-nspawn, shared by every test
    of the session that needs one (tests/nspawn_tools.py): this tree is mounted read-only at
    /src inside, and ``machine.shared`` is a directory both sides see.  Made with mmdebstrap
    (about half a minute), removed at the end."""
    import nspawn_tools
    why = nspawn_tools.why_not()
    if why:
        pytest.skip(f"no container with systemd here: {why}")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # HSFT_NSPAWN_ROOT: a root made before (nspawn_tools.make_root), used and kept, to
    # iterate on these tests without mmdebstrap each time
    kept = os.environ.get("HSFT_NSPAWN_ROOT")
    root = kept or tmp_path_factory.mktemp("nspawn") / "root"
    machine = nspawn_tools.Machine(root, f"hsft{os.getpid() % 100000}", binds=[(repo, "/src")],
                                   shared=tmp_path_factory.mktemp("shared"))
    try:
        if not kept:
            nspawn_tools.make_root(machine.root)
        machine.start()
    except nspawn_tools.Unavailable as e:
        machine.cleanup(keep_root=bool(kept))
        pytest.skip(f"no container with systemd here: {e}")
    yield machine
    machine.cleanup(keep_root=bool(kept))
