"""The iptables rules of ``nflog { iptables=on }``: added, replaced and removed by the agent.

Off by default, so existing configurations behave as with hsflowd, which leaves the rule to
the operator.  Rules are tagged with a comment (``RULE_TAG``) so the agent finds exactly its
own, including those a crashed run left behind.  python-iptables drives libxtables through
ctypes, and a mismatch there can crash a process: every call runs in a forked child.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from typing import Callable, List, NamedTuple, Optional

from ..privileges import granted_to_child
from . import NO_WATCHER, Watcher

log = logging.getLogger("hsflowd.samplers")

RULE_TAG = "hsflowd:nflog"   # the comment that marks the agent's own iptables rules
CHILD_TIMEOUT = 20.0         # seconds a rule change may take before the child is ended
# what the child needs (libiptc's raw socket and its setsockopt), given to it alone
CHILD_CAPABILITIES = ("CAP_NET_ADMIN", "CAP_NET_RAW")


class RuleSpec(NamedTuple):
    """What ``iptables=on`` installs: ``-m statistic --probability P -j NFLOG --nflog-group G``
    in INPUT (``-i dev``) and OUTPUT (``-o dev``), IPv4 and IPv6, tagged ``RULE_TAG``."""

    group: int
    probability: float
    dev: Optional[str] = None


def sync_rules(spec: Optional[RuleSpec]) -> dict:
    """Remove every rule tagged RULE_TAG (ours, or left by a crashed run), then add ``spec``'s.

    Runs in a child process (see ``RuleManager``).  python-iptables reaches the legacy
    tables only.  No --nflog-size: python-iptables 1.2 with iptables 1.8.9 stores it as the
    ignored --nflog-range, and --nflog-prefix makes it crash; the copy range is set on the
    netlink socket instead, which covers every rule of the group."""
    import iptc  # noqa: PLC0415  (only in the child: a crash in libxtables stays there)

    done = {"removed": 0, "added": 0, "errors": []}
    for family, table_class, rule_class in (("IPv4", iptc.Table, iptc.Rule),
                                            ("IPv6", iptc.Table6, iptc.Rule6)):
        try:
            table = table_class(table_class.FILTER)
            table.autocommit = False
            for name in ("INPUT", "FORWARD", "OUTPUT"):
                chain = iptc.Chain(table, name)
                for rule in chain.rules:
                    if any(m.name == "comment" and m.get_all_parameters().get("comment") == [RULE_TAG]
                           for m in rule.matches):
                        chain.delete_rule(rule)
                        done["removed"] += 1
            for name, direction in (("INPUT", "in_interface"), ("OUTPUT", "out_interface")):
                if spec is None:
                    break
                rule = rule_class()
                if spec.dev:
                    setattr(rule, direction, spec.dev)
                match = rule.create_match("statistic")
                match.mode = "random"
                match.probability = f"{spec.probability:.10g}"
                rule.create_match("comment").comment = RULE_TAG
                rule.create_target("NFLOG").nflog_group = str(spec.group)
                chain = iptc.Chain(table, name)
                chain.insert_rule(rule)  # first: NFLOG does not end the chain
                done["added"] += 1
            table.commit()
            table.autocommit = True
        except Exception as e:  # noqa: BLE001  one family failing leaves the other working
            done["errors"].append(f"{family}: {type(e).__name__}: {e}")
    return done


def _command(spec: Optional[RuleSpec]) -> List[str]:
    return [sys.executable, "-m", "hsflowd.samplers.iptables",
            json.dumps(None if spec is None else list(spec))]


def _result(output: bytes, status: int) -> dict:
    """The child's answer, from what it printed and how it ended."""
    if status < 0 and not output:
        return {"error": f"crashed ({signal.Signals(-status).name})"}
    try:
        answer = json.loads(output)
    except ValueError:
        return {"error": "no answer" if not output.strip() else f"answered {output[:80]!r}"}
    return answer if isinstance(answer, dict) and ("result" in answer or "error" in answer) \
        else {"error": "no answer"}


class RuleManager:
    """Installs, replaces and removes the agent's rules; gives up (said once) if it cannot.

    Each change runs ``python -m hsflowd.samplers.iptables SPEC`` (a fresh interpreter, so
    a crash in libxtables is not the agent's, and nothing is forked from a threaded process)
    without waiting for it: its output pipe is watched by the agent's loop.  ``wait()``
    blocks until the change is done (shutdown, tests).  A change asked for while one is
    running is made when that one ends."""

    def __init__(self, watcher: Watcher = NO_WATCHER,
                 command: Callable[[Optional[RuleSpec]], List[str]] = _command,
                 timeout: float = CHILD_TIMEOUT, clock: Callable[[], float] = time.monotonic):
        self.watcher = watcher
        self.command = command
        self.timeout = timeout
        self.clock = clock
        self.installed: Optional[RuleSpec] = None
        self.broken: Optional[str] = None  # why rules cannot be managed, logged once
        self.synced = False                # stale rules of a crashed run are gone
        self._wanted: Optional[RuleSpec] = None
        self._pending = False              # a change is wanted that no child is making yet
        self._child: Optional[subprocess.Popen] = None
        self._child_spec: Optional[RuleSpec] = None
        self._output = b""
        self._watch = None
        self._deadline = 0.0

    @property
    def busy(self) -> bool:
        return self._child is not None

    def apply(self, spec: Optional[RuleSpec]) -> None:
        """Make our rules match ``spec`` (None: none of ours), now or after the change that
        is being made."""
        if self.broken is not None:
            return
        self._wanted = spec
        running = self._child is not None
        will_have = self._child_spec if running else self.installed   # once the child is done
        self._pending = not (spec == will_have and (self.synced or running or spec is None))
        if self._pending and not running:
            self._start()

    def _start(self) -> None:
        spec, self._pending = self._wanted, False
        try:
            with granted_to_child(CHILD_CAPABILITIES):
                self._child = subprocess.Popen(self.command(spec), stdin=subprocess.DEVNULL,
                                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                               close_fds=True)
        except OSError as e:
            self._give_up(f"cannot run {sys.executable}: {e.strerror or e}", spec)
            return
        self._child_spec = spec
        self._output = b""
        self._deadline = self.clock() + self.timeout
        os.set_blocking(self._child.stdout.fileno(), False)
        self._watch = self.watcher.watch(self._child.stdout.fileno(), self._read)

    def _read(self) -> None:
        child = self._child
        if child is None:
            return
        try:
            while True:
                chunk = os.read(child.stdout.fileno(), 65536)
                if not chunk:
                    break
                self._output += chunk
        except BlockingIOError:
            return  # more to come
        self._finish(child.wait())

    def _finish(self, status: int) -> None:
        self.watcher.unwatch(self._watch)
        self._watch = None
        self._child.stdout.close()
        self._child = None
        answer = _result(self._output, status)
        spec = self._child_spec
        if "error" in answer:
            self._give_up(answer["error"], spec)
            return
        done = answer["result"]
        for problem in done["errors"]:
            log.warning("nflog: iptables rules: %s", problem)
        if not self.synced and done["added"]:
            log.info("nflog: python-iptables writes the legacy tables: see the rules with "
                     "iptables-legacy -S and ip6tables-legacy -S")
        log.info("nflog: removed %d, added %d iptables rules tagged \"%s\"",
                 done["removed"], done["added"], RULE_TAG)
        self.installed = spec if done["added"] else None
        self.synced = True
        if self._pending:
            self._start()

    def _give_up(self, why: str, spec: Optional[RuleSpec]) -> None:
        self.broken = why
        self._pending = False
        log.warning("nflog: cannot manage iptables rules with python-iptables: %s%s", why,
                    "" if spec is None else "; add the NFLOG rule yourself (see hsflowd.conf)")

    def tick(self) -> None:
        """Once a second: a child that takes too long is ended."""
        if self._child is not None and self.clock() > self._deadline:
            self._child.kill()
            self._output = json.dumps({"error": f"no answer in {self.timeout:.0f} s"}).encode()
            self._finish(self._child.wait())

    def wait(self, timeout: Optional[float] = None) -> None:
        """Block until no change is being made (at most ``timeout`` seconds)."""
        end = self.clock() + (self.timeout if timeout is None else timeout)
        while self._child is not None:
            left = end - self.clock()
            if left <= 0:
                self._deadline = 0.0
                self.tick()
                return
            select.select([self._child.stdout.fileno()], [], [], left)
            self._read()

    def close(self, timeout: Optional[float] = None) -> None:
        """Remove our rules (if any might be there) and wait for that."""
        if self.installed is not None or self._child is not None:
            self.apply(None)
        self.wait(timeout)


def main(argv: List[str]) -> int:
    """The child: ``python -m hsflowd.samplers.iptables SPEC`` prints its result as JSON."""
    try:
        raw = json.loads(argv[1]) if len(argv) > 1 else None
        spec = RuleSpec(*raw) if raw is not None else None
        out = {"result": sync_rules(spec)}
    except BaseException as e:  # noqa: BLE001  reported to the agent, not raised
        out = {"error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps(out))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
