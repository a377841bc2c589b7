"""Records one module adds to the flow samples of another.

The container and VM modules add extended_entities (2210) to a sampled packet between
their data sources, ``tcp {}`` adds extended_tcp_info (2209) to one of this host's TCP
connections, and ``tunnels`` the tunnel structures (1023-1030) to a VXLAN packet.  They see
samples as the samplers framed them, after the fact: a hook gets the encoded flow sample
and its walk (``frames.walk_sample``: made once per sample, whatever the number of hooks)
and returns the sample, with records appended (``frames.append_records``) or not, or None
to keep it and send it later itself (``Context.send``: a hook that waits for the kernel).

Hooks run in one fixed order, the registry's (``modules.ORDER``: tunnels, then the
container, VM and service modules, then tcp), whatever order their modules started,
reloaded or were restarted in: tcp keeps samples and sends them later past the hooks
after it, so every hook that appends must come before it.

A module has a hook only while it can add something (tunnels while a VXLAN tunnel can end
here, markTraffic while its module knows a guest); with no hook at all, samplers pack their
samples straight into the open datagram (``writer``) and no sample passes through here.  A hook that raises fails its own module (the supervisor closes it,
which takes the hook back) and the sample goes on unchanged; Python's try costs nothing
until something is raised, so isolation is paid for only when it is needed.

Appended records go last, after the records Wireshark 4.0 knows (it cannot skip an unknown
record that comes before a known one).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from ..frames import SampledPacket, walk_sample

Hook = Callable[[bytes, SampledPacket], Optional[bytes]]


class FlowHooks:
    """The hooks of the running modules, at most one each, in registry order."""

    def __init__(self, output: Any, failed: Callable[[str, Exception], None] = None,
                 order: Callable[[str], int] = None):
        self.output = output          # output.emit(sample): the datagram (see output.py)
        self.failed = failed or _reraise
        self.order = order or _registry_order
        self.hooks: Dict[str, Hook] = {}
        self.chain: Tuple[Tuple[str, Hook], ...] = ()

    def set(self, owner: str, hook: Optional[Hook]) -> None:
        """``owner``'s hook from now on (None: it has none)."""
        if hook is None:
            if self.hooks.pop(owner, None) is None:
                return
        elif self.hooks.get(owner) == hook:      # a bound method is a new object each time
            return
        else:
            self.hooks[owner] = hook
        self.chain = tuple(sorted(self.hooks.items(), key=lambda item: self.order(item[0])))

    def writer(self):
        """The open datagram a sampler may pack its samples straight into (see
        ``samplers.flow``): only while no hook needs to see them, and there is one."""
        return None if self.chain else self.output.writer()

    def emit(self, sample: bytes) -> None:
        """A sample on its way out: through every hook, then to the datagram."""
        chain = self.chain
        if chain:
            pkt = walk_sample(sample)
            if pkt is not None:
                for owner, hook in chain:
                    try:
                        out = hook(sample, pkt)
                    except Exception as e:
                        self.failed(owner, e)
                        continue
                    if out is None:
                        return   # kept by that hook: it sends it later
                    sample = out
        self.output.emit(sample)


def _registry_order(owner: str) -> int:
    from . import ORDER
    return ORDER.index(owner) if owner in ORDER else len(ORDER)


def _reraise(owner: str, e: Exception) -> None:
    raise e


class Sink:
    """An output made of a function (tests, benchmarks): ``Sink(list.append)``; it has no
    datagram for samplers to write into."""

    def __init__(self, emit: Callable[[bytes], None]):
        self.emit = emit

    def writer(self) -> None:
        return None
