"""``hsflowd status``: the running agent's own figures, over a root-only unix socket.

No network listener: the socket lives next to the pid file (``/var/run/hsflowd.sock`` for
``/var/run/hsflowd.pid``), mode 0600, made while the agent is still root, so only root can
connect.  A client connects and reads one JSON object; the agent closes the connection.
The answer is small (one entry per collector, sampled interface and module) and is sent
from the loop with a short timeout, so a client that does not read cannot hold the agent.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
from typing import Any, Callable, Dict, Optional

log = logging.getLogger("hsflowd")

SEND_TIMEOUT = 0.5


def control_path(pidfile: str) -> str:
    """Where the socket of the agent that holds ``pidfile`` is."""
    base = pidfile[:-4] if pidfile.endswith(".pid") else pidfile
    return base + ".sock"


class ControlServer:
    """The listening socket, watched by the agent's loop."""

    def __init__(self, path: str, loop, status: Callable[[], Dict[str, Any]]):
        self.path = path
        self.loop = loop
        self.status = status
        _remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(path)
            sock.listen(8)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        self.sock: Optional[socket.socket] = sock
        self.watch = loop.watch(sock.fileno(), self._accept)

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            try:
                answer = json.dumps(self.status(), default=str).encode() + b"\n"
            except Exception as e:  # a status that cannot be made must not stop the agent
                log.warning("status: %s", e)
                answer = json.dumps({"error": str(e)}).encode() + b"\n"
            try:
                conn.settimeout(SEND_TIMEOUT)
                conn.sendall(answer)
            except OSError:
                pass  # the client went away: nothing to tell it

    def close(self) -> None:
        if self.sock is None:
            return
        self.loop.unwatch(self.watch)
        self.sock.close()
        self.sock = None
        try:
            os.unlink(self.path)
        except OSError:
            pass  # root given up: the next start removes it


def _remove_stale(path: str) -> None:
    """A socket left by an agent that died (we hold the pid file lock: none runs now)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(17, "exists and is not a socket", path)
    os.unlink(path)


def query(path: str, timeout: float = 5.0) -> Dict[str, Any]:
    """The running agent's status (OSError if there is none to ask)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return json.loads(b"".join(chunks))
