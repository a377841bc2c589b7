"""Shared fixtures (namespaces that are always removed, a UDP collector socket; the daemons
and builds that several files share: dockerd, libvirtd, the debs), the CI rule on skips
(with CI=true, a test that skips fails the run unless the reason is one of the kernel
limits in tests/kernel_limits.py) and the grouping of tests on xdist workers
(tests/parallel.py).
"""

from __future__ import annotations

import os
import signal
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import kernel_limits  # noqa: E402
import parallel  # noqa: E402
from daemons import start_or_skip  # noqa: E402
from netns import Namespace, is_root, remove_stale_namespaces  # noqa: E402


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


# ---------------------------------------------------------------- daemons shared by files
# One of each per run: made by the first test that asks, stopped at the end.  On xdist
# workers every test that uses one runs on the same worker (tests/parallel.py), so one is
# made there and nowhere else.  Each is handed to a test running and without what earlier
# tests made in it.

@pytest.fixture(scope="session")
def dockerd_daemon():
    """A private dockerd with the busybox image (tests/docker_tools.py)."""
    import docker_tools
    d = start_or_skip("dockerd", docker_tools.why_not, docker_tools.Dockerd,
                      docker_tools.DockerUnavailable, ready=lambda d: d.import_busybox())
    yield d
    d.stop()


@pytest.fixture
def dockerd(dockerd_daemon):
    """The run's dockerd, started again if an earlier test left it killed; the containers
    the test made are removed after it."""
    d = dockerd_daemon
    if not d._ping():
        d.start()
    yield d
    if d._ping():
        for container in d.client().containers(all=True):
            d.remove_container(container["Id"])


@pytest.fixture(scope="session")
def libvirtd_daemon():
    """A libvirtd of our own on the system socket (tests/libvirt_tools.py)."""
    import libvirt_tools
    d = start_or_skip("libvirtd", libvirt_tools.why_not, libvirt_tools.Libvirtd,
                      libvirt_tools.LibvirtUnavailable)
    yield d
    d.stop()


@pytest.fixture
def libvirtd(libvirtd_daemon):
    """The run's libvirtd; the domains the test made are destroyed after it."""
    d = libvirtd_daemon
    yield d
    d.destroy_all()


@pytest.fixture(scope="session")
def debs(tmp_path_factory):
    """{version: path} of two debs of this tree (tests/package_tools.py): this version, and
    a rebuild with a higher version for upgrades."""
    import shutil

    import package_tools
    from hsflowd import __version__
    missing = [c for c in ("dpkg-buildpackage", "make") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "LC_ALL": "C.UTF-8"}
    try:
        out = package_tools.build_debs(tmp_path_factory.mktemp("deb"), __version__, env)
    except package_tools.BuildError as e:
        if str(e).startswith("deb build dependencies"):
            pytest.skip(str(e))
        pytest.fail(str(e))
    assert not (package_tools.REPO / "packaging" / "debian" / ".debhelper").exists()
    return out


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


# ---------------------------------------------------------------- xdist: who shares a worker

@pytest.hookimpl(tryfirst=True)        # before xdist turns the groups into node ids
def pytest_collection_modifyitems(config, items):
    if parallel.under_xdist(config):
        parallel.order_and_publish(config, items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return parallel.make_scheduler(config, log)


def pytest_unconfigure(config):
    parallel.unconfigure(config)


# ---------------------------------------------------------------- CI: no passing by skipping

CI_SKIP = "CI=true and this skipped: "
CI_SKIP_HELP = ("In CI only the kernel limits in tests/kernel_limits.py may skip; anything "
                "else means the install step (.ci/deps) did not set up what this needs.")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text[len("Skipped: "):] if text.startswith("Skipped: ") else text


def _fail_skip_in_ci(report) -> None:
    if not (report.skipped and kernel_limits.in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if kernel_limits.allowed_in_ci(reason):
        return
    report.outcome = "failed"
    report.longrepr = CI_SKIP + reason


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    parallel.configure(config)
    # a run ended by SIGTERM (timeout, a CI runner) still tears down: namespaces, daemons
    signal.signal(signal.SIGTERM, _interrupt)
    if is_root() and not hasattr(config, "workerinput"):    # once, in the controller
        for name in remove_stale_namespaces():
            print(f"removed namespace {name}, left by a test run that was killed",
                  file=sys.stderr)
    if kernel_limits.in_ci():       # a module that failed so still lets the others run
        config.option.continue_on_collection_errors = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield                     # a module that skips as a whole (importorskip, ...)
    _fail_skip_in_ci(outcome.get_result())


def pytest_terminal_summary(terminalreporter):
    if not kernel_limits.in_ci():
        return
    failed = [r for key in ("failed", "error") for r in terminalreporter.stats.get(key, [])
              if str(getattr(r, "longrepr", "")).startswith(CI_SKIP)]
    limited = terminalreporter.stats.get("skipped", [])
    terminalreporter.section("CI: skips")
    if failed:
        terminalreporter.write_line(
            f"{len(failed)} test(s) skipped for a reason that is not a kernel limit and FAILED "
            f"the run:", red=True, bold=True)
        for r in failed:
            terminalreporter.write_line(f"  {r.nodeid}: {str(r.longrepr)[len(CI_SKIP):]}")
        terminalreporter.write_line(CI_SKIP_HELP, red=True)
    terminalreporter.write_line(f"{len(limited)} test(s) skipped for a kernel limit "
                                f"(tests/kernel_limits.py).")
