"""The suite on several workers (pytest-xdist): which tests must share one, and what starts
first.  `make test` runs ``pytest -n 2 --dist loadgroup --no-loadscope-reorder``; the
hooks in tests/conftest.py call this module, and without -n nothing here changes a run.

Tests are handed to the workers one at a time, except these, kept on one worker each:

- Tests that share a fixture of wider scope than a function, defined in tests/.  Each
  worker makes its own copy of such a fixture, so its users are kept together and it is
  made once: a module-scoped fixture (``run1``, ``unit_copy``) keeps the tests of its
  module that use it together; a session-scoped one (``dockerd``, ``libvirtd``, ``debs`` in
  tests/conftest.py) keeps together every test that uses it, in whatever file.  This needs
  nothing from the test: a new file that takes ``dockerd`` runs beside test_docker.py's
  tests, on the worker where that dockerd runs.  A module whose tests use both kinds goes
  whole with the session fixture's group.
- Tests that use something of the machine's own that two processes cannot use at once.
  They say so: ``pytest.mark.xdist_group("NAME")`` on the test, or in the file's
  ``pytestmark``; every test that names NAME, in whatever file, runs on the same worker,
  one after another.  None needs a name today: a daemon on a system socket (libvirtd) is
  kept to one worker by its session fixture, packages are installed only by the tests
  that take ``debs`` (one worker too), and the legacy iptables tools are called with -w,
  which waits for their lock (/run/xtables.lock, the machine's whatever the namespace)
  where a second caller would fail at once.  Names are plain words: no "@".
- Tests that make links in the machine's own network namespace and check that an agent
  there is idle: ``ROOT_LINKS``.  Such an agent reads every link event of that namespace, so
  another test's veths coming and going (dockerd's containers, the k8s node's pods: a
  dozen events each) wake it several times a second, and it is not idle.  dockerd's tests
  get the name through their fixture (``SESSION_GROUPS``); test_k8s.py names it.

How the groups reach xdist: a test's group is the name of its work unit, which xdist's
controller (which collects nothing) reads from the test's node id.  pytest-xdist's own
``--dist loadgroup`` appends "@NAME" to the node id, which pytest 9 no longer lets a plugin
change; so each worker also writes the {node id: group} it computed to a directory the
controller made (``$HSFLOWD_TEST_GROUPS``), and the controller's scheduler (``make_scheduler``,
xdist's load-scope scheduling with these units) reads it once every worker has collected.

Modules with a test marked ``slow`` start first, so that a long test does not begin near
the end and finish alone.  Mark a test slow when it takes more than about ten seconds.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

TESTS = Path(__file__).resolve().parent
GROUP = "xdist_group"
ENV = "HSFLOWD_TEST_GROUPS"
ROOT_LINKS = "root-links"
SESSION_GROUPS = {"dockerd_daemon": ROOT_LINKS}   # a session fixture's group, if not its own


def under_xdist(config) -> bool:
    """This process is an xdist worker (whose collection order the scheduler follows)."""
    return hasattr(config, "workerinput")


def _ours(fixturedef) -> bool:
    """Defined in tests/ (pytest's own tmp_path_factory and the like are not ours)."""
    try:
        source = inspect.getsourcefile(fixturedef.func)
    except TypeError:
        return False
    return source is not None and Path(source).resolve().parent == TESTS


def shared_fixture_group(item) -> Optional[str]:
    """The group a test's widest fixture of our own puts it in, or None: "fixture-NAME" for
    a session-scoped one, "module-FILE" for a module- or class-scoped one."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    session, module = [], []
    for name in item.fixturenames:
        defs = info.name2fixturedefs.get(name)
        if not defs or not _ours(defs[-1]):
            continue
        scope = defs[-1].scope
        if scope in ("session", "package"):
            session.append(SESSION_GROUPS.get(name, f"fixture-{name}"))
        elif scope in ("module", "class"):
            module.append(f"module-{item.path.name}")
    if session:
        return min(session)
    return module[0] if module else None


def explicit_group(item) -> Optional[str]:
    marks = list(item.iter_markers(GROUP))
    if not marks:
        return None
    names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in marks})
    return "_".join(names)


def assign_groups(items: List) -> Dict[str, str]:
    """Give every test that needs one its xdist group (see the module's docstring); the
    {node id: group} of those tests."""
    wanted: Dict[int, str] = {}
    groups: Dict[str, str] = {}
    by_module: Dict[Path, List[str]] = {}
    for i, item in enumerate(items):
        group = explicit_group(item) or shared_fixture_group(item)
        if group is not None:
            wanted[i] = group
            by_module.setdefault(item.path, []).append(group)
    for i, item in enumerate(items):
        group = wanted.get(i)
        if group is None:
            continue
        if group.startswith("module-"):
            # a module whose tests also use a session fixture (or name a group) goes with it
            others = sorted(g for g in by_module[item.path] if not g.startswith("module-"))
            group = others[0] if others else group
        if explicit_group(item) is None:        # a name the test gives wins
            item.add_marker(pytest.mark.xdist_group(group))
        groups[item.nodeid] = explicit_group(item) or group
    return groups


def slow_modules_first(items: List) -> None:
    """Stable: modules with a test marked slow first, each module's tests kept together."""
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow)


# ---------------------------------------------------------------- from workers to controller

def configure(config) -> None:
    """In the controller of an xdist run: the directory the workers write their groups to
    (workers start after this, with it in their environment)."""
    if under_xdist(config) or not _distributing(config):
        return
    config._hsflowd_groups = tempfile.mkdtemp(prefix="hsft-groups-")
    os.environ[ENV] = config._hsflowd_groups


def unconfigure(config) -> None:
    where = getattr(config, "_hsflowd_groups", None)
    if where:
        shutil.rmtree(where, ignore_errors=True)
        os.environ.pop(ENV, None)


def _distributing(config) -> bool:
    try:
        return config.getoption("dist") == "loadgroup" and bool(config.getoption("numprocesses"))
    except ValueError:       # no pytest-xdist
        return False


def order_and_publish(config, items: List) -> None:
    """In a worker: slow modules first, groups on the tests and in the shared directory."""
    slow_modules_first(items)
    groups = assign_groups(items)
    where = os.environ.get(ENV)
    if where:
        path = Path(where) / f"{config.workerinput['workerid']}.json"
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps(groups))
        os.replace(temp, path)


def make_scheduler(config, log):
    """xdist's load-scope scheduling, its work units the groups the workers wrote (a test
    without one is a unit of its own)."""
    if not _distributing(config):
        return None
    from xdist.scheduler import LoadScopeScheduling

    where = Path(config._hsflowd_groups)

    class GroupScheduling(LoadScopeScheduling):
        _groups: Optional[Dict[str, str]] = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:
                self._groups = {}
                for path in sorted(where.glob("*.json")):
                    self._groups.update(json.loads(path.read_text()))
            if nodeid.rfind("@") > nodeid.rfind("]"):     # xdist's own suffix, where it works
                return nodeid.split("@")[-1]
            return self._groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)
