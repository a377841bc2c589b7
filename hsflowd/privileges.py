"""Giving up root once the agent is set up, as hsflowd does, and keeping children bare.

After start-up (sockets, rings, eBPF programs and the pid, .auto and control files are
open), the agent becomes ``nobody`` and keeps only the capabilities the enabled modules
declare (``hsflowd.modules.register(..., privileges=...)``).  A module that must keep root
(``ROOT``), or ``-P``, keeps the agent root, as in hsflowd, but with no more capabilities
than any module may use (``MOST``: the systemd unit's bounding set, less the two it needs to
become nobody).

Either way the bounding set is cut to what is kept, no_new_privs is set, and the ambient and
inheritable sets are empty: a program the agent runs inherits nothing.  The one child that
needs a capability (python-iptables' helper) is given it explicitly, for that spawn only
(``granted_to_child``).  What the systemd unit does with CapabilityBoundingSet= and
NoNewPrivileges=, the agent does for itself when ``hsflowd start`` runs it.

Linux has no call for this in Python's standard library: prctl(2), capget(2) and capset(2)
are called through ctypes.  Capabilities belong to a thread; all of this happens on the
agent's main thread before any other starts, so every thread inherits the result.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import pwd
from contextlib import contextmanager
from typing import FrozenSet, Iterable, Iterator, Optional, Tuple

from .libc import libc

log = logging.getLogger("hsflowd")

DROP_TO = "nobody"

CAPABILITIES = {
    "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_SETGID": 6, "CAP_SETUID": 7,
    "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
    "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39,
}
NEWER = {"CAP_PERFMON", "CAP_BPF"}   # Linux 5.8: before, CAP_SYS_ADMIN covers them
ROOT = "root"                        # in a set of needs: uid 0 (hsflowd.modules.ROOT)
# The most any module may use (PRIVILEGES in hsflowd(8)): what a root agent keeps.  The
# unit's CapabilityBoundingSet= is this and CAP_SETUID, CAP_SETGID (a test holds them equal).
MOST = frozenset({"CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_BPF",
                  "CAP_PERFMON", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH",
                  "CAP_NET_BIND_SERVICE"})

PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
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


def _bits(names: Iterable[str]) -> int:
    out = 0
    for name in names:
        out |= 1 << CAPABILITIES[name]
    return out


def _capget(c) -> Tuple[int, int, int]:
    """This thread's (effective, permitted, inheritable) sets as 64-bit masks."""
    header = _Header(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    if c.capget(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capget: {os.strerror(err)}")
    low, high = data[0], data[1]
    return (low.effective | high.effective << 32, low.permitted | high.permitted << 32,
            low.inheritable | high.inheritable << 32)


def _capset(c, effective: int, permitted: int, inheritable: int) -> None:
    header = _Header(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for word in (0, 1):
        shift = 32 * word
        data[word].effective = effective >> shift & 0xFFFFFFFF
        data[word].permitted = permitted >> shift & 0xFFFFFFFF
        data[word].inheritable = inheritable >> shift & 0xFFFFFFFF
    if c.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def _prctl(c, option: int, arg: int, what: str) -> None:
    if c.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({what}): {os.strerror(err)}")


def _cut_bounding_set(c, keep: FrozenSet[str]) -> None:
    """Drop every capability but ``keep`` from the bounding set, so that no later execve (of
    a file with capabilities, or as root) gets more.  That takes CAP_SETPCAP: a service
    manager or container runtime that withheld it has set the bounding set itself, and with
    no_new_privs and no ambient set, a child gains nothing from what is left."""
    wanted = _bits(keep)
    left = []
    for bit in range(last_cap() + 1):
        if wanted >> bit & 1 or c.prctl(PR_CAPBSET_READ, bit, 0, 0, 0) != 1:
            continue
        if c.prctl(PR_CAPBSET_DROP, bit, 0, 0, 0) != 0:
            left.append(bit)
    if left:
        names = {bit: name for name, bit in CAPABILITIES.items()}
        log.debug("bounding set left as the service manager set it (no CAP_SETPCAP): %s",
                  ", ".join(names.get(bit, str(bit)) for bit in left))


def _seal(c) -> None:
    """no_new_privs, and no ambient capability for any child (the kernel keeps the ambient
    set of a process that changes uid with KEEPCAPS, so it is cleared explicitly)."""
    _prctl(c, PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    c.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)   # EINVAL before Linux 4.3


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
    (the standard library, this package and its libraries) that ``uid`` cannot read.
    Found without importing them: pyroute2 alone is 10 MB that most agents never load."""
    for name in ("json", "hsflowd", "psutil", "pyroute2"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            continue
        where = os.path.dirname(os.path.dirname(os.path.realpath(spec.origin)))
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
    """Become ``user`` with only ``needed`` capabilities, or stay root with ``MOST`` (``-P``,
    or a module that must keep root: ``ROOT`` in needed).  Returns what the agent meant to
    keep (``ROOT`` among it if it stays root), or None if it was not root to begin with.
    Of that, it holds what it was started with: a container or a service manager may have
    withheld some (said once here; the module that needs one says what fails)."""
    needed = frozenset(needed)
    c = libc()
    if os.geteuid() != 0:
        _seal(c)
        return None
    held = _capget(c)[1]
    why = "-P" if keep_root else "a module needs it" if ROOT in needed else None
    entry = None
    if why is None:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:          # a minimal container image may have no nobody
            log.warning("keeping root: there is no user %s to become", user)
            why = f"no user {user}"
    if why is None:
        unreadable = unreadable_code(entry.pw_uid, entry.pw_gid)
        if unreadable:
            log.warning("keeping root: %s cannot read %s, where this Python or the agent's "
                        "code lives (install the agent with a system Python, e.g. "
                        "/usr/bin/python3)", user, unreadable)
            why = "nobody cannot read the code"
    caps = effective_set(MOST if why else needed - {ROOT})
    keep = _bits(caps) & held
    _cut_bounding_set(c, caps)          # while CAP_SETPCAP is still there
    if why is None:
        withheld = sorted(name for name in caps if not held >> CAPABILITIES[name] & 1)
        if withheld:
            log.warning("the enabled modules need %s, which this agent was started without",
                        ", ".join(withheld))
        _become(c, entry)
    _capset(c, keep, keep, 0)
    _seal(c)
    if why:
        log.info("keeping root (%s) with %s", why, _names(keep))
        return caps | {ROOT}
    log.info("running as %s with %s", user, _names(keep) or "no capabilities")
    return caps


def _become(c, entry: pwd.struct_passwd) -> None:
    """Become ``entry``'s user and group, no other groups, keeping the permitted set (which
    ``_capset`` then cuts to what is kept)."""
    _prctl(c, PR_SET_KEEPCAPS, 1, "PR_SET_KEEPCAPS")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    _prctl(c, PR_SET_KEEPCAPS, 0, "PR_SET_KEEPCAPS")


def _names(bits: int) -> str:
    return ", ".join(sorted(name for name, bit in CAPABILITIES.items() if bits >> bit & 1))


@contextmanager
def granted_to_child(names: Iterable[str]) -> Iterator[None]:
    """Around one spawn: ``names`` (of those this thread holds) become inheritable and
    ambient, so the child (a fresh interpreter as nobody, no file capabilities) keeps them
    across execve; afterwards the thread has none to pass on again.  A root agent's child
    is root and needs nothing from here."""
    c = libc()
    if os.geteuid() == 0:
        yield
        return
    effective, permitted, inheritable = _capget(c)
    give = _bits(names) & permitted
    try:
        _capset(c, effective, permitted, give)
        for bit in range(64):
            if give >> bit & 1:
                c.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, bit, 0, 0)
        yield
    finally:
        c.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        _capset(c, effective, permitted, inheritable)
