"""Running as a daemon: the locked pidfile, detaching, logging, and controlling a running agent.

One instance at a time: the pidfile is locked (fcntl) for as long as the agent runs, so a
stale file left by a crash never blocks a start, and a second start is refused.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import logging.handlers
import os
import signal
import sys
import time
from typing import Callable, Optional

from .config.autofile import check_own_file

DEFAULT_PIDFILE = "/var/run/hsflowd.pid"
log = logging.getLogger("hsflowd")


class AlreadyRunning(RuntimeError):
    pass


class PidFile:
    """An exclusively locked pidfile, released and removed on close().

    Opened without following a symbolic link and without truncating before the lock is
    held: ``-p`` pointed into a world-writable directory must not let anyone make root
    overwrite a file.  The lock is taken on the file the path names when we check it, so
    a file removed and made again by another instance in between is detected and retried.
    It is removed while still locked (then unlocked), so a new instance never loses its
    own file to an old one that is exiting."""

    def __init__(self, path: str):
        self.path = path
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC |
                         os.O_NONBLOCK, 0o644)
            try:
                check_own_file(fd, self.path)
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EACCES, errno.EAGAIN):
                    raise AlreadyRunning(f"already running (pid {read_pid(self.path) or '?'}, "
                                         f"{self.path} is locked)") from None
                raise
            try:
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:   # removed by an instance that was exiting: take the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            return
        raise OSError(errno.EBUSY, "the pid file keeps changing", self.path)

    def close(self) -> None:
        if self.fd is None:
            return
        try:
            if os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            # no right to remove it any more (root given up): an empty, unlocked file tells
            # the next start nothing wrong
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
        os.close(self.fd)
        self.fd = None


def read_pid(path: str) -> Optional[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return int(os.read(fd, 64).split()[0])
    except (OSError, ValueError, IndexError):
        return None
    finally:
        os.close(fd)


def running_pid(path: str) -> Optional[int]:
    """The pid of the agent holding ``path``'s lock, or None if no agent holds it."""
    pid = read_pid(path)
    if pid is None:
        return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return pid  # somebody holds the lock: that is the running agent
    finally:
        os.close(fd)  # closing drops a lock we may have taken
    return None


def stop(path: str, timeout: float = 10.0) -> int:
    """SIGTERM the running agent and wait for it; exit status for the CLI."""
    pid = running_pid(path)
    if pid is None:
        print("hsflowd is not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(path) is None and not _alive(pid):
            print(f"hsflowd stopped (pid {pid})")
            return 0
        time.sleep(0.05)
    print(f"hsflowd (pid {pid}) did not stop within {timeout:.0f} s", file=sys.stderr)
    return 1


def signal_agent(path: str, signum: int, what: str) -> int:
    pid = running_pid(path)
    if pid is None:
        print("hsflowd is not running", file=sys.stderr)
        return 1
    return signal_pid(pid, signum, what)


def signal_pid(pid: int, signum: int, what: str) -> int:
    """Signal the agent ``pid`` (systemd's $MAINPID): one line either way."""
    if pid <= 0:
        print(f"hsflowd: no such process: {pid}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        print(f"hsflowd: no such process: {pid}", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"hsflowd: not allowed to signal pid {pid} (run as root)", file=sys.stderr)
        return 1
    print(f"hsflowd (pid {pid}): {what}")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def detach(ready: Callable[[Callable[[str], None]], int]) -> int:
    """Fork into the background; ``ready(report)`` runs in the daemon.

    The daemon calls ``report("")`` once it is up, or ``report(message)`` if it cannot start;
    the command that was typed waits for that and exits 0 or prints the message and exits 1,
    so `hsflowd start` tells the operator about a bad config instead of failing silently.
    """
    rfd, wfd = os.pipe()
    if os.fork() > 0:
        os.close(wfd)
        with os.fdopen(rfd) as pipe:
            message = pipe.read()
        if message.startswith("ok"):
            return 0
        sys.stderr.write(message if message else "hsflowd: the daemon exited before starting\n")
        return 1
    os.close(rfd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    pipe = os.fdopen(wfd, "w")

    def report(message: str) -> None:
        if not pipe.closed:
            pipe.write("ok\n" if not message else message.rstrip("\n") + "\n")
            pipe.close()

    code = 1
    try:
        code = ready(report)
    finally:
        report("hsflowd: the daemon stopped while starting\n")
        os._exit(code)


# syslog's priorities, which the journal reads from a "<N>" at the start of a line
JOURNAL_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                    logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """A line the journal files under its level (sd-daemon(3)'s "<N>" prefix): without it
    every line is "info", and ``journalctl -p warning`` shows none of the agent's."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{JOURNAL_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def stderr_is_journal() -> bool:
    """systemd connected stderr to the journal (JOURNAL_STREAM names that very stream)."""
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"


def setup_logging(debug: int, foreground: bool) -> None:
    """stderr in the foreground (the journal, under systemd), syslog as a daemon.

    -d is the foreground alone, as in hsflowd's unit file; -dd adds debug messages.
    """
    level = logging.DEBUG if debug >= 2 else logging.INFO
    root = logging.getLogger("hsflowd")
    root.handlers.clear()
    root.setLevel(level)
    root.propagate = False
    if foreground:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        if stderr_is_journal():   # the journal has its own timestamps, and wants levels
            handler.setFormatter(JournalFormatter("%(levelname)s %(message)s"))
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    else:
        try:
            handler = logging.handlers.SysLogHandler(
                address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        except OSError:
            handler = logging.NullHandler()
        handler.setFormatter(logging.Formatter("hsflowd[%(process)d]: %(levelname)s %(message)s"))
    root.addHandler(handler)
