"""An agent in a cgroup namespace of its own (a DaemonSet's container on a cgroup v2 node:
containerd gives every unprivileged container one) joins PID 1's at start, so the other
containers' groups read as paths under the host's tree, not as "/../..".

A child process is put in a group of its own and unshares its cgroup namespace there, as a
container's process is; it reads the host's view of a process's groups before and after
``join_init_cgroup_namespace``.  The "PID 1" it joins is a process the test starts in the
host's namespace (here PID 1 holds a capability root lacks, so its namespace cannot be
opened: a limit of this machine, not of the function).  Group and process are the test's,
removed at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netns import is_root, unique

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import ctypes, os, sys
from hsflowd.sources.cgroups import join_init_cgroup_namespace
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x02000000) != 0:                      # CLONE_NEWCGROUP
    sys.exit("unshare: " + os.strerror(ctypes.get_errno()))
init = int(sys.argv[1])
before = open(f"/proc/{init}/cgroup").read()
joined = join_init_cgroup_namespace(init=init)
after = open(f"/proc/{init}/cgroup").read()
again = join_init_cgroup_namespace(init=init)
print(repr((before, joined, after, again)))
"""


def group_dir() -> Path:
    """A v1 hierarchy to make a group in (these hosts mount v1 controllers), else v2's."""
    for candidate in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(candidate, "cgroup.procs")):
            return Path(candidate)
    pytest.fail("no cgroup hierarchy to make a group in")


def test_an_agent_in_a_cgroup_namespace_of_its_own_joins_pid_1s():
    if not is_root():
        pytest.skip("needs root")
    group = group_dir() / unique("cg")
    group.mkdir()
    init = subprocess.Popen(["sleep", "60"])
    try:
        # the child moves itself into the group before it unshares: its namespace's root
        # is then that group, and everything outside reads as "/.."
        child = subprocess.run(
            [sys.executable, "-c", "import os, sys\n"
             f"open({str(group / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n" + CHILD,
             str(init.pid)], capture_output=True, text=True, timeout=30,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert child.returncode == 0, child.stderr
        before, joined, after, again = eval(child.stdout.strip())
        assert "/.." in before, before              # its groups from inside: out of reach
        assert joined is True and again is False    # joined once; already there the second time
        assert "/.." not in after, after            # as the host sees them
        assert after == Path(f"/proc/{init.pid}/cgroup").read_text()
    finally:
        init.kill()
        init.wait()
        group.rmdir()
