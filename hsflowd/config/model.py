"""The typed configuration: what the rest of the agent reads after parsing.

Field defaults come from the keyword table (``default_of``) so they are written once.
Every object is a frozen dataclass: a reload builds a new Config and the agent swaps it in,
and ``old == new`` says whether anything that matters changed (source line numbers, the
file path, warnings and the order things were written in are left out of that comparison).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from .keywords import SPEED_MAX, default_of

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

__all__ = ["AgentCidr", "Collector", "PcapRule", "NflogConfig", "UlogConfig", "PsampleConfig",
           "DropmonConfig", "JsonConfig", "TcpConfig", "OvsConfig", "DockerConfig", "ContainerdConfig",
           "K8sConfig", "KvmConfig", "SystemdConfig", "Config", "SPEED_MAX"]


def _line():
    return field(default=0, compare=False)


@dataclass(frozen=True)
class AgentCidr:
    """One ``agent.cidr``: prefer agent addresses inside ``network`` (refuse them if exclude)."""
    network: Network
    exclude: bool = False
    line: int = _line()

    def __str__(self) -> str:
        return ("!" if self.exclude else "") + str(self.network)


@dataclass(frozen=True)
class Collector:
    """One ``collector { }``.  ``ip`` may be a host name: it is resolved when the socket opens.
    ``origin`` says where a collector that is not in the file came from ("DNS-SD ...")."""
    ip: str
    udpport: int = default_of("collector", "udpport")
    dev: Optional[str] = None
    namespace: Optional[str] = None
    line: int = _line()
    origin: str = field(default="", compare=False)


@dataclass(frozen=True)
class PcapRule:
    """One ``pcap { }`` or ``epcap { }`` rule: which devices to tap, and how.

    A rule picks devices by ``dev``, else ``dev_pattern``, else speed.  ``speed_min`` and
    ``speed_max`` are both None when no speed was given; "speed=1G" sets both to 1e9 (that
    exact speed) and "speed=1G-" sets ``speed_max`` to SPEED_MAX.
    """
    dev: Optional[str] = None
    dev_pattern: Optional[re.Pattern] = None
    speed_min: Optional[int] = None
    speed_max: Optional[int] = None
    promisc: Optional[bool] = default_of("pcap", "promisc")  # None: on for bridges only
    vport: Optional[bool] = None        # None: on for bridges, off otherwise
    dynamic: bool = default_of("pcap", "dynamic")   # only devices modules ask for (k8s)
    sampling: Optional[int] = None      # this rule's 1-in-N, beats every other rate rule
    line: int = _line()

    def promisc_for(self, is_bridge: bool) -> bool:
        """Promiscuous mode for one device this rule taps: as written, else on for a bridge
        and off for anything else.  A bridge passes up to its own device only what is for the
        host, unless it is promiscuous: then every frame it forwards between two ports (one
        container to another on docker0) is seen there once, and counted in its rx counters."""
        return is_bridge if self.promisc is None else self.promisc

    def matches_speed(self, bps: int) -> bool:
        if self.speed_min is None or self.speed_max is None:
            return False
        return self.speed_min <= bps <= self.speed_max


@dataclass(frozen=True)
class NflogConfig:
    """``nflog { }``: samples come from an iptables NFLOG rule.

    Without ``probability`` the rule is taken to sample 1-in-``sampling``.  ``manage_rule``
    (keyword ``iptables=on``, new in this agent) has the agent add the rule, limited to
    ``dev`` when set, and remove it on exit; upstream hsflowd leaves that to the user.
    """
    group: int
    probability: Optional[float] = None
    manage_rule: bool = default_of("nflog", "iptables")
    dev: Optional[str] = None
    line: int = _line()


@dataclass(frozen=True)
class UlogConfig:
    group: Optional[int] = None
    probability: Optional[float] = None
    line: int = _line()


@dataclass(frozen=True)
class PsampleConfig:
    group: int = default_of("psample", "group")
    ingress: bool = default_of("psample", "ingress")
    egress: bool = default_of("psample", "egress")
    line: int = _line()


@dataclass(frozen=True)
class DropmonConfig:
    start: bool = default_of("dropmon", "start")
    sw: bool = default_of("dropmon", "sw")
    hw: bool = default_of("dropmon", "hw")
    rn: bool = default_of("dropmon", "rn")
    hw_unknown: bool = default_of("dropmon", "hw_unknown")
    sw_passive: bool = default_of("dropmon", "sw_passive")
    hw_passive: bool = default_of("dropmon", "hw_passive")
    hide: Optional[re.Pattern] = None
    limit: int = default_of("dropmon", "limit")
    max: int = default_of("dropmon", "max")
    max_trip: int = default_of("dropmon", "max_trip")
    line: int = _line()


@dataclass(frozen=True)
class JsonConfig:
    """``json { }``: applications send JSON messages to ``udpport`` on 127.0.0.1 and ::1."""
    udpport: Optional[int] = None
    line: int = _line()


@dataclass(frozen=True)
class TcpConfig:
    """``tcp { }``: extended_tcp_info on samples of this host's TCP connections."""
    line: int = _line()


@dataclass(frozen=True)
class OvsConfig:
    """``ovs { }``.  ``db`` (new in this agent) overrides the OVSDB socket, e.g.
    ``unix:/run/openvswitch/db.sock`` or ``tcp:127.0.0.1:6640``."""
    db: Optional[str] = None
    line: int = _line()


@dataclass(frozen=True)
class DockerConfig:
    """``docker { }``: every container is a data source (3:N).  ``refresh_vms`` and
    ``forget_vms`` None mean the top level's refreshVMs and forgetVMs (``VirtTimers``)."""
    refresh_vms: Optional[int] = None
    forget_vms: Optional[int] = None
    hostname: bool = default_of("docker", "hostname")
    mark_traffic: bool = default_of("docker", "markTraffic")
    line: int = _line()


@dataclass(frozen=True)
class ContainerdConfig:
    """``containerd { }``: every running container of containerd is a data source (3:N).
    ``unixsock`` (new in this agent) None means /run/containerd/containerd.sock."""
    forget_vms: Optional[int] = None
    hostname: bool = default_of("containerd", "hostname")
    mark_traffic: bool = default_of("containerd", "markTraffic")
    unixsock: Optional[str] = None
    line: int = _line()


@dataclass(frozen=True)
class K8sConfig:
    """``k8s { }``: every Kubernetes pod (containerd's CRI containers) is a data source."""
    mark_traffic: bool = default_of("k8s", "markTraffic")
    set_if_alias: bool = default_of("k8s", "setIfAlias")
    set_if_name: bool = default_of("k8s", "setIfName")
    unixsock: Optional[str] = None
    line: int = _line()


@dataclass(frozen=True)
class KvmConfig:
    """``kvm { }``: every libvirt domain is a data source (3:N).  ``uri`` (new in this
    agent) is opened read-only; None means qemu:///system."""
    refresh_vms: Optional[int] = None
    forget_vms: Optional[int] = None
    uri: Optional[str] = None
    line: int = _line()


@dataclass(frozen=True)
class SystemdConfig:
    """``systemd { }``: every running service is a data source (3:N).  ``refresh_vms``
    None means the top level's refreshVMs.  ``drop_priv`` lets the agent become nobody,
    which the module would otherwise keep it from (as hsflowd's mod_systemd)."""
    refresh_vms: Optional[int] = None
    drop_priv: bool = default_of("systemd", "dropPriv")
    mark_traffic: bool = default_of("systemd", "markTraffic")
    line: int = _line()


def _sflow(keyword: str) -> Any:
    return default_of("sflow", keyword)


@dataclass(frozen=True)
class Config:
    """The whole of hsflowd.conf.

    ``sampling_settings`` and ``polling_settings`` hold the ``sampling.<x>`` and
    ``polling.<x>`` keys, keyed by <x> as written ("1G", "bps_ratio", "http", "app.foo");
    ``app_order`` lists every <x> in the order first written (the .auto file needs it).
    ``blocks`` holds the settings of blocks that have no class of their own (xen, k8s,
    sonic...), keyed by block name, then by keyword name.  ``unsupported`` names, in order
    of first appearance, each feature this agent does not implement yet.
    """
    path: str = field(default="<string>", compare=False)
    sampling: int = _sflow("sampling")
    polling: int = _sflow("polling")
    sampling_settings: Dict[str, int] = field(default_factory=dict)
    polling_settings: Dict[str, int] = field(default_factory=dict)
    app_order: Tuple[str, ...] = field(default=(), compare=False)
    agent_ip: Optional[str] = None
    agent_device: Optional[str] = None
    agent_cidrs: List[AgentCidr] = field(default_factory=list)
    sub_agent_id: int = _sflow("subAgentId")
    uuid: Optional[str] = None
    header_bytes: int = _sflow("headerBytes")
    datagram_bytes: int = _sflow("datagramBytes")
    dns_sd: bool = _sflow("DNSSD")
    dns_sd_domain: Optional[str] = None
    dns_sd_start_delay: int = default_of("dns-sd", "startDelay")
    refresh_adaptors: int = _sflow("refreshAdaptors")
    refresh_vms: int = _sflow("refreshVMs")
    forget_vms: int = _sflow("forgetVMs")
    collectors: List[Collector] = field(default_factory=list)
    pcap: List[PcapRule] = field(default_factory=list)
    epcap: List[PcapRule] = field(default_factory=list)
    nflog: Optional[NflogConfig] = None
    ulog: Optional[UlogConfig] = None
    psample: Optional[PsampleConfig] = None
    dropmon: Optional[DropmonConfig] = None
    json: Optional[JsonConfig] = None
    tcp: Optional[TcpConfig] = None
    ovs: Optional[OvsConfig] = None
    docker: Optional[DockerConfig] = None
    containerd: Optional[ContainerdConfig] = None
    k8s: Optional[K8sConfig] = None
    kvm: Optional[KvmConfig] = None
    systemd: Optional[SystemdConfig] = None
    blocks: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    # a source of settings (DNS-SD) has none to give yet, or its answer turned monitoring
    # off: nothing is sampled, polled or sent, and the .auto file holds no settings
    suppressed: bool = False
    unsupported: List[str] = field(default_factory=list, compare=False)
    warnings: List[str] = field(default_factory=list, compare=False)
    # where each sflow { } setting was last set, by keyword name ("agent": 4), for what is
    # said about it after parsing (a device the host does not have)
    lines: Dict[str, int] = field(default_factory=dict, compare=False)
