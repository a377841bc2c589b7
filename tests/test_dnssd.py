"""The DNS-SD module without a network: lookup() against a stand-in resolver that answers
as dnspython does, and the module's schedule and answers with a stand-in lookup.  The end
to end tests with a real dnsmasq are in test_dnssd_e2e.py."""

from __future__ import annotations

import random

import dns.exception
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest

from hsflowd.config import parse_config
from hsflowd.config.dynamic import DnsSdAnswer
from hsflowd.modules import AgentState, Context
from hsflowd.modules.flowhooks import Sink
from hsflowd.modules.dnssd import DnsSdError, DnsSdModule, candidate_names, lookup

NAME = "_sflow._udp.example.test."


class Answer:
    def __init__(self, rrset):
        self.rrset = rrset


class FakeResolver:
    """resolve(name, type) from a table: an rrset, an exception to raise, or None (no data)."""

    def __init__(self, table, search=("example.test.",), domain="."):
        self.table = table
        self.search = [dns.name.from_text(s) for s in search]
        self.domain = dns.name.from_text(domain)
        self.asked = []

    def resolve(self, name, rdtype, search=None, raise_on_no_answer=True):
        assert search is False and raise_on_no_answer is False
        self.asked.append((name, rdtype))
        got = self.table.get((name, rdtype), dns.resolver.NXDOMAIN())
        if isinstance(got, Exception):
            raise got
        return Answer(got)


def srv(ttl, *lines, name=NAME):
    return dns.rrset.from_text_list(name, ttl, "IN", "SRV", list(lines))


def txt(ttl, *strings, name=NAME):
    return dns.rrset.from_text_list(name, ttl, "IN", "TXT", list(strings))


def test_candidate_names():
    assert candidate_names(".example.com", ["a.test."]) == ["_sflow._udp.example.com."]
    assert candidate_names("example.com.", []) == ["_sflow._udp.example.com."]
    assert candidate_names(None, ["a.test.", "b.test."]) == ["_sflow._udp.a.test.",
                                                             "_sflow._udp.b.test."]
    assert candidate_names(".", ["."]) == []


def test_lookup_srv_and_txt():
    r = FakeResolver({
        (NAME, "SRV"): srv(60, "0 0 6343 c1.example.test.", "0 0 7000 10.0.0.9.", "0 0 6343 ."),
        (NAME, "TXT"): txt(30, '"txtvers=1" "sampling=100"', '"polling=20" "junk"'),
    })
    answer = lookup(".example.test", lambda: r)
    assert answer == DnsSdAnswer(
        "_sflow._udp.example.test", servers=(("c1.example.test", 6343), ("10.0.0.9", 7000)),
        records=3, settings=(("txtvers", "1"), ("sampling", "100"), ("polling", "20")), ttl=30,
        problems=("TXT 'junk' is not key=value; ignored",))


def test_lookup_walks_the_search_domains_as_res_search_does():
    other = "_sflow._udp.b.test."
    r = FakeResolver({(other, "SRV"): srv(600, "0 0 6343 c.b.test.", name=other)},
                     search=("a.test.", "b.test."))
    answer = lookup(None, lambda: r)
    assert answer.name == "_sflow._udp.b.test" and answer.servers == (("c.b.test", 6343),)
    assert answer.settings == () and answer.ttl == 600          # no TXT record: NXDOMAIN
    assert [a for a in r.asked if a[1] == "SRV"] == [("_sflow._udp.a.test.", "SRV"),
                                                     (other, "SRV")]


def test_lookup_no_record_is_an_answer_and_a_failure_is_not():
    assert lookup(".example.test", lambda: FakeResolver({})).records == 0         # NXDOMAIN
    assert lookup(".example.test", lambda: FakeResolver({(NAME, "SRV"): None})).records == 0
    with pytest.raises(DnsSdError, match="timed out"):
        lookup(".example.test", lambda: FakeResolver({(NAME, "SRV"): dns.exception.Timeout()}))
    with pytest.raises(DnsSdError, match="SERVFAIL or REFUSED"):
        lookup(".example.test", lambda: FakeResolver(
            {(NAME, "SRV"): dns.resolver.NoNameservers()}))
    with pytest.raises(DnsSdError, match="TXT"):      # SRV alone is not a good answer
        lookup(".example.test", lambda: FakeResolver({
            (NAME, "SRV"): srv(60, "0 0 6343 c."), (NAME, "TXT"): dns.exception.Timeout()}))
    # one search domain with no data and one that failed: no record (res_search's NO_DATA)
    r = FakeResolver({("_sflow._udp.a.test.", "SRV"): None,
                      ("_sflow._udp.b.test.", "SRV"): dns.exception.Timeout()},
                     search=("a.test.", "b.test."))
    assert lookup(None, lambda: r).records == 0
    with pytest.raises(DnsSdError, match="no domain"):
        lookup(None, lambda: FakeResolver({}, search=()))

    def broken():
        raise dns.resolver.NoResolverConfiguration("no nameservers")
    with pytest.raises(DnsSdError, match="no resolver"):
        lookup(None, broken)


# ---------------------------------------------------------------- the module

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Lookups:
    """A stand-in for lookup(): returns (or raises) what the test queued, records domains."""

    def __init__(self):
        self.results = []
        self.domains = []

    def __call__(self, domain):
        self.domains.append(domain)
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


def make(text="dns-sd { domain = .example.test startDelay = 0 }", seed=1):
    changed = []
    ctx = Context("dns-sd", lambda *a: None, lambda t: None, lambda s: None, lambda s: None,
                  lambda i: {}, None, None, config_changed=lambda: changed.append(1))
    clock, lookups = Clock(), Lookups()
    module = DnsSdModule(ctx, lookup_fn=lookups, clock=clock, rng=random.Random(seed))
    config = parse_config(f"sflow {{\n{text}\n}}\n")
    return module, config, clock, lookups, changed


def state(config):
    return AgentState(config=config, revision=1, interfaces=None)


def run_tick(module, clock, seconds=0.0):
    clock.now += seconds
    module.tick(clock.now)
    if module.round is not None:
        module.round.thread.join(5)
        module.tick(clock.now)


ANSWER = DnsSdAnswer("_sflow._udp.example.test", servers=(("c1", 6343), ("c2", 6343)),
                     records=2, settings=(("polling", "5"),), ttl=60)


def test_first_query_after_a_random_start_delay():
    module, config, clock, lookups, _ = make("dns-sd { startDelay = 30 }", seed=7)
    module.adjust_config(config)
    module.reconcile(state(config))
    delay = module.next_query - clock.now
    assert 1 <= delay <= 30 and delay == random.Random(7).randint(1, 30)
    lookups.results.append(ANSWER)
    run_tick(module, clock, delay - 1)
    assert lookups.domains == []
    run_tick(module, clock, 1)
    assert lookups.domains == [None]


def test_answers_failures_and_changes():
    module, config, clock, lookups, changed = make()
    off = module.adjust_config(config)            # before any answer: everything off
    assert off.suppressed and off.collectors == []
    module.reconcile(state(off))
    assert changed == []                          # it made this revision: nothing to redo
    lookups.results.append(ANSWER)
    run_tick(module, clock)
    assert changed == [1] and module.next_query == clock.now + 60
    running = module.adjust_config(config)
    assert [c.ip for c in running.collectors] == ["c1", "c2"] and running.polling == 5

    # the same records in another order: nothing to apply
    lookups.results.append(DnsSdAnswer(ANSWER.name, servers=ANSWER.servers[::-1], records=2,
                                       settings=ANSWER.settings, ttl=20))
    run_tick(module, clock, 60)
    assert changed == [1] and module.next_query == clock.now + 20

    # a failure keeps the settings and tries again after the last delay, then doubles it
    lookups.results += [DnsSdError("no answer (timed out)"), DnsSdError("no answer (timed out)")]
    run_tick(module, clock, 20)
    assert changed == [1] and module.next_query == clock.now + 20
    run_tick(module, clock, 20)
    assert changed == [1] and module.next_query == clock.now + 40
    assert [c.ip for c in module.adjust_config(config).collectors] == ["c1", "c2"]
    assert module.status()["dns_sd"]["failures"] == 2

    # no SRV record: off again
    lookups.results.append(DnsSdAnswer(ANSWER.name, records=0))
    run_tick(module, clock, 40)
    assert changed == [1, 1] and module.adjust_config(config).suppressed
    assert module.next_query == clock.now + 300      # no TTL: hsflowd's 300 s


def test_a_new_domain_drops_the_query_in_flight_and_asks_again():
    module, config, clock, lookups, changed = make()
    module.adjust_config(config)
    module.reconcile(state(config))
    lookups.results += [ANSWER, ANSWER]
    run_tick(module, clock)
    other = parse_config("sflow {\ndns-sd { domain = .other.test startDelay = 0 }\n}\n")
    module.reconcile(state(other))
    assert module.next_query == clock.now
    run_tick(module, clock)
    assert lookups.domains == [".example.test", ".other.test"]


def test_a_new_domain_sends_nothing_of_the_old_one():
    """A reload to another domain: the old domain's collectors go at once, and a failed
    query for the new one keeps nothing of them."""
    module, config, clock, lookups, changed = make()
    module.adjust_config(config)
    module.reconcile(state(config))
    lookups.results.append(ANSWER)
    run_tick(module, clock)
    assert [c.ip for c in module.adjust_config(config).collectors] == ["c1", "c2"]
    other = parse_config("sflow {\ndns-sd { domain = .other.test startDelay = 0 }\n}\n")
    off = module.adjust_config(other)            # a reload adjusts, then reconciles
    assert off.suppressed and off.collectors == []
    module.reconcile(state(off))
    lookups.results.append(DnsSdError("no answer (timed out)"))
    run_tick(module, clock)
    assert lookups.domains == [".example.test", ".other.test"]
    assert module.adjust_config(other).suppressed
    assert module.status()["dns_sd"]["failures"] == 1


def test_made_again_after_a_failure_it_asks_for_a_new_revision():
    module, config, clock, lookups, changed = make()
    module.reconcile(state(config))               # no adjust_config first: a restart
    assert changed == [1]


def test_sources_of_settings_start_before_the_revision_and_stop_with_the_file():
    from hsflowd.modules.supervisor import Supervisor

    class Loop:
        def watch(self, fd, cb):
            return object()

        def unwatch(self, token):
            pass

    sup = Supervisor(Loop(), Sink(lambda s: None), lambda i: {}, None)
    with_dns = parse_config("sflow {\ndns-sd { startDelay = 0 }\n}\n")
    sup.start_sources(with_dns)
    assert list(sup.slots) == ["dns-sd"] and sup.slots["dns-sd"].module is not None
    assert [slot.name for slot, _ in sup.running()] == ["dns-sd"]
    plain = parse_config("sflow {\ncollector { ip = 192.0.2.1 }\n}\n")
    sup.start_sources(plain)
    assert sup.slots == {}
    sup.close()
