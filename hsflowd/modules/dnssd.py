"""``dns-sd { }`` (or ``DNSSD = on``): collectors and settings from DNS (hsflowd's mod_dnssd).

SRV records ``_sflow._udp.<domain>`` name the collectors, TXT records the settings; what
they make of the file's configuration is ``config.dynamic`` (pure).  The domain is
``dns-sd { domain= }``, else each search domain of /etc/resolv.conf in turn, as
res_search tries them.  As in hsflowd: the first query comes a random 1..startDelay
seconds after start (30; a fleet that restarts together does not query together), the next
after the smallest TTL of the records (300 s if none, never under 10 s); an answer with no
SRV record turns sampling, polling and sending off, and so does having no answer yet; a
query that fails keeps the last good settings.  Unlike hsflowd, a failed query is tried
again after the last answer's delay (at most 300 s), not always 300 s, so a DNS server that
restarts is seen again within a TTL (10 s doubling up to 300 s when there was no answer yet); and
a TXT query that fails counts as a failure (hsflowd
would install the SRV records with default settings).

Queries run on a short-lived thread of their own, one round (SRV, then TXT) at a time:
dnspython's stub resolver is what reads /etc/resolv.conf (nameservers, search list,
timeouts, rotation) and falls back to TCP for a truncated answer, and it blocks; the
agent's loop only looks at the result once a second.  The thread ends with its query (5 s
at most per lookup); closing the module does not wait for it, its answer is dropped.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..config.dynamic import (SERVICE, DnsSdAnswer, dynamic_config, latch_ttl, next_query_delay,
                              parse_txt, retry_delay, srv_target)
from . import AgentState, Module, register

LIFETIME = 5.0        # seconds one lookup may take at most, every server and retry included


class DnsSdError(Exception):
    """A query that failed (timeout, refused, SERVFAIL, no resolver): keep the last settings."""


def candidate_names(domain: Optional[str], search: List[str]) -> List[str]:
    """The SRV names to try, absolute: ``_sflow._udp.<domain>.`` when a domain is set
    (".example.com" as hsflowd writes it, or "example.com"), else one per search domain."""
    if domain is not None and domain.strip("."):
        return [f"{SERVICE}.{domain.strip('.')}."]
    return [f"{SERVICE}.{d.strip('.')}." for d in search if d.strip(".")]


def _reason(e: BaseException) -> str:
    """One short line for a failed lookup (dnspython's own text lists every server)."""
    import dns.exception
    import dns.resolver
    if isinstance(e, dns.exception.Timeout):
        return "no answer (timed out)"
    if isinstance(e, dns.resolver.NoNameservers):
        return "no nameserver would answer (SERVFAIL or REFUSED)"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:120]}" if text else type(e).__name__


def make_resolver():
    """dnspython's stub resolver as /etc/resolv.conf says (nameservers, search, options
    timeout and attempts), read afresh for each round; a lookup takes 5 s at most."""
    import dns.resolver
    resolver = dns.resolver.Resolver()
    resolver.lifetime = min(resolver.lifetime, LIFETIME)
    return resolver


def lookup(domain: Optional[str], make: Callable[[], Any] = make_resolver) -> DnsSdAnswer:
    """One round of queries: SRV, then TXT where SRV answered.  An answer with
    ``records == 0`` says there is no SRV record (the name does not exist or has none);
    DnsSdError says the lookup itself failed.  Blocks: run it on a thread."""
    import dns.exception
    import dns.resolver
    try:
        resolver = make()
    except dns.exception.DNSException as e:    # no resolv.conf, or no nameserver in it
        raise DnsSdError(f"no resolver: {_reason(e)}") from None
    search = [str(name) for name in resolver.search] or [str(resolver.domain)]
    names = candidate_names(domain, search)
    if not names:
        raise DnsSdError("no domain to look in: set dns-sd { domain= } or a search domain in "
                         "/etc/resolv.conf")
    nodata, failures = False, []
    for name in names:
        try:
            srv = resolver.resolve(name, "SRV", search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            continue
        except dns.exception.DNSException as e:
            failures.append(f"{name} SRV: {_reason(e)}")
            continue
        if srv.rrset is None or len(srv.rrset) == 0:
            nodata = True
            continue
        ttl = latch_ttl(0, srv.rrset.ttl)
        servers = []
        for record in srv.rrset:
            host = srv_target(record.target.to_text())
            if host is not None:
                servers.append((host, int(record.port)))
        try:
            txt = resolver.resolve(name, "TXT", search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            txt = None
        except dns.exception.DNSException as e:
            raise DnsSdError(f"{name} TXT: {_reason(e)}") from None
        strings: List[bytes] = []
        if txt is not None and txt.rrset is not None and len(txt.rrset):
            ttl = latch_ttl(ttl, txt.rrset.ttl)
            for record in txt.rrset:
                strings.extend(record.strings)
        pairs, problems = parse_txt(strings)
        return DnsSdAnswer(name.rstrip("."), tuple(servers), len(srv.rrset), tuple(pairs), ttl,
                           tuple(problems))
    if failures and not nodata:
        raise DnsSdError("; ".join(failures))
    return DnsSdAnswer(names[0].rstrip("."))


class _Round:
    """One round of queries on its own thread; ``result`` is an answer or a DnsSdError."""

    def __init__(self, domain: Optional[str], lookup_fn: Callable):
        self.done = False
        self.result: Any = None

        def run():
            try:
                self.result = lookup_fn(domain)
            except DnsSdError as e:
                self.result = e
            except Exception as e:    # dnspython surprises are a failed query, not a crash
                self.result = DnsSdError(f"{type(e).__name__}: {e}")
            self.done = True

        self.thread = threading.Thread(target=run, name="dns-sd", daemon=True)
        self.thread.start()


def _same(a: Optional[DnsSdAnswer], b: Optional[DnsSdAnswer]) -> bool:
    """Would the two answers make the same settings (order of servers and TTL aside)?"""
    if a is None or b is None:
        return a is b
    return (sorted(set(a.servers)), a.records > 0, a.settings, a.name) == \
        (sorted(set(b.servers)), b.records > 0, b.settings, b.name)


@register("dns-sd", enabled=lambda config: config.dns_sd)
class DnsSdModule(Module):
    adjusts_config = True

    def __init__(self, ctx, lookup_fn: Callable = lookup,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Optional[random.Random] = None):
        super().__init__(ctx)
        self.lookup_fn = lookup_fn
        self.clock = clock
        self.rng = rng or random.Random()
        self.answer: Optional[DnsSdAnswer] = None   # the last good answer
        self.settings: Optional[Tuple] = None       # (domain, startDelay) being served
        self.round: Optional[_Round] = None
        self.next_query: Optional[float] = None
        self.delay = 0                              # the last answer's delay to the next query
        self.in_a_row = 0                           # failed queries since the last answer
        self.adjusted = False                       # asked to adjust a revision yet
        self.reported: Optional[DnsSdAnswer] = None
        self.queries = self.failures = 0
        self.last_error: Optional[str] = None
        self.usable = True
        if lookup_fn is lookup:
            try:
                import dns.resolver  # noqa: F401 - dnspython: an optional dependency
            except ImportError:
                self.usable = False
                self.log.error("dns-sd { } needs dnspython (apt install python3-dnspython, or "
                               "pip install dnspython): nothing is sent until it is installed "
                               "and hsflowd restarted")

    # ------------------------------------------------------------ the seam
    def adjust_config(self, config):
        self.adjusted = True
        if self.settings is not None and config.dns_sd_domain != self.settings[0]:
            # a reload to another domain: its records are not the old domain's, and until
            # it answers nothing is sent (as at start)
            self.answer = self.reported = None
        running, problems = dynamic_config(config, self.answer)
        if self.answer is not self.reported:     # say what is wrong with an answer once
            self.reported = self.answer
            for problem in problems + list(self.answer.problems if self.answer else ()):
                self.log.warning("DNS-SD %s: %s", self.answer.name, problem)
        return running

    def reconcile(self, state: AgentState) -> None:
        c = state.config
        settings = (c.dns_sd_domain, c.dns_sd_start_delay)
        if settings != self.settings:
            if self.settings is not None and settings[0] != self.settings[0]:
                self.delay = self.in_a_row = 0   # the old domain's back-off is not this one's
                self.last_error = None
            self.settings = settings
            self.round = None                    # a query for the old domain is dropped
            delay = self.rng.randint(1, c.dns_sd_start_delay) if c.dns_sd_start_delay else 0
            self.next_query = self.clock() + delay
            where = c.dns_sd_domain or "the search domains of /etc/resolv.conf"
            self.log.info("DNS-SD: looking up %s under %s in %d s", SERVICE, where, delay)
        if not self.adjusted:
            # made again after a failure: the running configuration is not ours yet
            self.adjusted = True
            self.ctx.config_changed()

    # ------------------------------------------------------------ queries
    def tick(self, now: float) -> None:
        if self.round is not None and self.round.done:
            result, self.round = self.round.result, None
            self._answered(result, now)
        if (self.round is None and self.next_query is not None and now >= self.next_query
                and self.usable):
            self.queries += 1
            self.next_query = None
            self.round = _Round(self.settings[0], self.lookup_fn)

    def _answered(self, result, now: float) -> None:
        if isinstance(result, DnsSdError):
            self.failures += 1
            self.in_a_row += 1
            delay = retry_delay(self.delay, self.in_a_row)
            self.next_query = now + delay
            if str(result) != self.last_error:
                self.log.warning("DNS-SD: %s; keeping the %s; trying again in %d s", result,
                                 "last settings" if self.answer else "agent quiet", delay)
            self.last_error = str(result)
            return
        self.last_error = None
        self.in_a_row = 0
        self.delay = next_query_delay(result.ttl)
        self.next_query = now + self.delay
        if _same(result, self.answer):
            self.answer = result                 # same settings; keep the newest TTL
            self.reported = result
            return
        self.answer = result
        if result.records:
            hosts = ", ".join(f"{h}:{p}" for h, p in sorted(set(result.servers))) or "none"
            settings = " ".join(f"{k}={v}" for k, v in result.settings) or "none"
            self.log.info("DNS-SD %s: collectors %s; settings %s; next query in %d s",
                          result.name, hosts, settings, self.delay)
        else:
            self.log.warning("DNS-SD: no %s SRV record under %s: sampling, polling and sending "
                             "are off; next query in %d s", SERVICE, result.name or "any domain",
                             self.delay)
        self.ctx.config_changed()

    # ------------------------------------------------------------ status
    def status(self) -> Dict[str, Any]:
        a = self.answer
        left = None if self.next_query is None else max(0, round(self.next_query - self.clock()))
        return {"dns_sd": {"name": a.name if a else None,
                           "collectors": len(set(a.servers)) if a else 0,
                           "settings": dict(a.settings) if a else {},
                           "queries": self.queries, "failures": self.failures,
                           "last_error": self.last_error, "next_query_in": left}}

    def close(self) -> None:
        self.round = None        # its thread ends with its query; the answer is dropped
        self.next_query = None
