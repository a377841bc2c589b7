"""Giving up root once the agent is set up, as hsflowd does.

After start-up (sockets, rings, eBPF programs and the pid, .auto and control files are
open), the agent becomes ``nobody`` and keeps only the capabilities the enabled modules
declare (``hsflowd.modules.register(..., privileges=...)``).  A module that must keep root
(``ROOT``), or ``-P``, keeps the agent root, as in hsflowd.  The kept capabilities are also
raised as ambient ones, so the helper a module runs (python-iptables' child) has them too.

Linux has no call for this in Python's standard library: prctl(2) and capset(2) are called
through ctypes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
from typing import FrozenSet, Iterable, Optional

from .libc import libc

log = logging.getLogger("hsflowd")

DROP_TO = "nobody"

CAPABILITIES = {
    "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_SETGID": 6, "CAP_SETUID": 7,
    "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
    "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39,
}
NEWER = {"CAP_PERFMON", "CAP_BPF"}   # Linux 5.8: before, CAP_SYS_ADMIN covers them

PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 37


def effective_set(names: Iterable[str]) -> FrozenSet[str]:
    """The capabilities to keep for these names on this kernel (CAP_SYS_ADMIN stands in
    for CAP_BPF and CAP_PERFMON where the kernel does not have them)."""
    top = last_cap()
    out = set()
    for name in names:
        if name in NEWER and CAPABILITIES[name] > top:
            out.add("CAP_SYS_ADMIN")
        else:
            out.add(name)
    return frozenset(out)


def _capset(libc, caps: FrozenSet[str]) -> None:
    header = _Header(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for name in caps:
        bit = CAPABILITIES[name]
        word, mask = bit // 32, 1 << (bit % 32)
        data[word].effective |= mask
        data[word].permitted |= mask
        data[word].inheritable |= mask
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def _traversable(path: str, uid: int, gid: int, read: bool) -> bool:
    st = os.stat(path)
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid == gid:
        shift = 3
    else:
        shift = 0
    want = (0o5 if read else 0o1) << shift
    return st.st_mode & want == want


def unreadable_code(uid: int, gid: int) -> Optional[str]:
    """The first directory of the code the agent still has to import after giving up root
    (the standard library, this package and its libraries) that ``uid`` cannot read."""
    import json
    import hsflowd
    import psutil
    import pyroute2
    for module in (json, hsflowd, psutil, pyroute2):
        where = os.path.dirname(os.path.dirname(os.path.realpath(module.__file__)))
        parts = where.split(os.sep)
        for i in range(1, len(parts) + 1):
            path = os.sep.join(parts[:i]) or os.sep
            try:
                if not _traversable(path, uid, gid, read=i == len(parts)):
                    return path
            except OSError:
                return path
    return None


def drop(needed: Iterable[str], keep_root: bool = False, user: str = DROP_TO) -> Optional[FrozenSet[str]]:
    """Become ``user`` with only ``needed`` capabilities; None if the agent stays as it is
    (not root to begin with, ``-P``, or a module that must keep root: "root" in needed).
    Returns the capabilities kept."""
    needed = frozenset(needed)
    if os.geteuid() != 0:
        return None
    if keep_root or "root" in needed:
        why = "-P" if keep_root else "a module needs it"
        log.info("keeping root (%s)", why)
        return None
    caps = effective_set(needed)
    entry = pwd.getpwnam(user)
    unreadable = unreadable_code(entry.pw_uid, entry.pw_gid)
    if unreadable:
        log.warning("keeping root: %s cannot read %s, where this Python or the agent's code "
                    "lives (install the agent with a system Python, e.g. /usr/bin/python3)",
                    user, unreadable)
        return None
    c = libc()
    if c.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    _capset(c, caps)
    for name in caps:   # for a helper the agent runs (exec drops the rest)
        c.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAPABILITIES[name], 0, 0)
    c.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)
    log.info("running as %s with %s", user, ", ".join(sorted(caps)) or "no capabilities")
    return caps
