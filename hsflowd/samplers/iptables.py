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
import time
from typing import Callable, NamedTuple, Optional

log = logging.getLogger("hsflowd.samplers")

RULE_TAG = "hsflowd:nflog"   # the comment that marks the agent's own iptables rules


class RuleSpec(NamedTuple):
    """What ``iptables=on`` installs: ``-m statistic --probability P -j NFLOG --nflog-group G``
    in INPUT (``-i dev``) and OUTPUT (``-o dev``), IPv4 and IPv6, tagged ``RULE_TAG``."""

    group: int
    probability: float
    dev: Optional[str] = None


def sync_rules(spec: Optional[RuleSpec]) -> dict:
    """Remove every rule tagged RULE_TAG (ours, or left by a crashed run), then add ``spec``'s.

    Runs in a child process (see ``run_in_child``).  python-iptables reaches the legacy
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


def run_in_child(fn: Callable, *args, timeout: float = 20.0) -> dict:
    """``fn(*args)`` in a forked child, its JSON-able result back through a pipe.

    python-iptables drives libxtables through ctypes; a mismatch there crashes the process,
    and it must not be the agent's."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no logging, no cleanup handlers, out with os._exit
        code = 1
        try:
            os.close(r)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            try:
                out = {"result": fn(*args)}
            except BaseException as e:  # noqa: BLE001
                out = {"error": f"{type(e).__name__}: {e}"}
            os.write(w, json.dumps(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                chunks = [json.dumps({"error": f"no answer in {timeout:.0f} s"}).encode()]
                break
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and not chunks:
        return {"error": f"crashed ({signal.Signals(os.WTERMSIG(status)).name})"}
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {"error": "no answer"}


class RuleManager:
    """Installs, replaces and removes the agent's rules; gives up (said once) if it cannot."""

    def __init__(self, sync: Callable = sync_rules):
        self.sync = sync
        self.installed: Optional[RuleSpec] = None
        self.broken: Optional[str] = None  # why rules cannot be managed, logged once
        self.synced = False                # stale rules of a crashed run are gone

    def apply(self, spec: Optional[RuleSpec]) -> bool:
        """Make our rules match ``spec`` (None: none of ours).  False if that failed."""
        if self.broken is not None:
            return False
        if spec == self.installed and (self.synced or spec is None):
            return True
        answer = run_in_child(self.sync, spec)
        if "error" in answer:
            self.broken = answer["error"]
            log.warning("nflog: cannot manage iptables rules with python-iptables: %s%s", self.broken,
                        "" if spec is None else "; add the NFLOG rule yourself (see hsflowd.conf)")
            return False
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
        return not done["errors"]
