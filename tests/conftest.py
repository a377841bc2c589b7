"""Shared fixtures (namespaces that are always removed, a UDP collector socket) and the CI
rule on skips: with CI=true, a test that skips fails the run unless the reason is one of the
kernel limits in tests/kernel_limits.py.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import kernel_limits  # noqa: E402
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


def pytest_configure(config):
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
