"""The supervisor without a network: a module that fails is closed, its hooks taken back,
and started again with everything it needs to know; hooks run in the registry's order."""

from __future__ import annotations

from hsflowd.config import parse_config
from hsflowd.modules import EVERYTHING, REGISTRY, AgentState, Module, ModuleSpec
from hsflowd.modules.flowhooks import Sink
from hsflowd.modules.supervisor import Supervisor
from hsflowd.samplers.flow import FlowSampleBuilder


class Loop:
    def watch(self, fd, cb):
        return object()

    def unwatch(self, token):
        pass


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Marker(Module):
    """Stands in for a guest module: a hook that appends a record, and what it was told."""

    told = []

    def reconcile(self, state):
        Marker.told.append(state.changed)
        self.ctx.add_flow_hook(self.hook)

    def hook(self, sample, pkt):
        if Marker.fail:
            Marker.fail = False
            raise RuntimeError("boom")
        return sample + b"!"

    fail = False


def sample() -> bytes:
    out = []
    frame = bytes(12) + b"\x08\x00" + bytes(40)
    FlowSampleBuilder(3, 1, 128, out.append).sample(frame, len(frame), 1, 2, 1)
    return out[0]


def test_a_module_started_again_is_told_everything(monkeypatch):
    spec = ModuleSpec("docker", Marker, lambda c: True, lambda c: frozenset(), 7)
    monkeypatch.setattr("hsflowd.modules.supervisor.enabled_specs", lambda config: [spec])
    sent, clock = [], Clock()
    sup = Supervisor(Loop(), Sink(sent.append), lambda i: {}, None, clock=clock)
    config = parse_config("sflow { collector { ip = 127.0.0.1 } }")
    Marker.told = []
    sup.reconcile(AgentState(config=config, revision=1, interfaces=None))
    sup.reconcile(AgentState(config=config, revision=1, interfaces=None, changed=frozenset({"targets"})))
    assert [set(c) for c in Marker.told] == [set(EVERYTHING), {"targets"}]
    Marker.fail = True
    sup.flow_hooks.emit(sample())               # the hook raises: the sample goes on as it was
    assert sent == [sample()]
    assert sup.slots["docker"].module is None and sup.flow_hooks.chain == ()
    clock.now += 1.0
    sup.tick(clock.now)                         # started again, and told the whole state,
    assert set(Marker.told[-1]) == set(EVERYTHING)     # not just "targets"
    sup.flow_hooks.emit(sample())
    assert sent[-1] == sample() + b"!"
    sup.close()


def test_hooks_run_in_registry_order_whatever_order_they_came_in():
    from hsflowd.modules import ORDER, _load_all
    _load_all()
    assert ORDER.index("tunnels") < ORDER.index("docker") < ORDER.index("tcp")
    for name in ("containerd", "k8s", "kvm", "systemd"):
        assert ORDER.index("tunnels") < ORDER.index(name) < ORDER.index("tcp")
    assert set(REGISTRY) == set(ORDER)      # every module has its place, every place a module
    sup = Supervisor(Loop(), Sink(lambda s: None), lambda i: {}, None)
    seen = []
    for owner in ("tcp", "kvm", "tunnels", "docker"):
        sup.flow_hooks.set(owner, lambda s, p, owner=owner: seen.append(owner) or s)
    sup.flow_hooks.emit(sample())
    assert seen == ["tunnels", "docker", "kvm", "tcp"]
