"""Every hsflowd.conf keyword, in one table.

The parser (grammar.py), the typed model's defaults (model.py), ``hsflowd check`` and the
docs all read this table, so a keyword, its range or its default is written down once.

A ``Block`` is what sits between ``name {`` and ``}``; ``BLOCKS["sflow"]`` is the top level.
Each ``Keyword`` row says how to read the value that follows it:

=========  ===============================================================================
kind       value
=========  ===============================================================================
INT        integer, strtol(base 0) rules: 0x1F hex, 010 octal; K/M/G suffix (x1e3/1e6/1e9)
FLOAT      decimal number, must start with a digit (0.01, not .01)
ONOFF      on | off
STRING     any word, or "a quoted string"
DEVICE     an interface name (or alias); not checked against the host
HOST       an IP address or a host name (resolved later, not while parsing)
CIDR       [!]address/prefix, IPv4 or IPv6; the mask may be written as an address
UUID       a UUID, any of the usual spellings
REGEX      a regular expression (searched, not anchored, as regexec does)
PATH       a file or directory
SPEEDS     min[-max] bits/s with K/M/G/T/P suffixes; "1G-" means 1G and faster
DIRECTION  in | out | both
BLOCK      opens the block named in ``block``
=========  ===============================================================================

Columns: ``aliases`` are other spellings of the same keyword; ``prefer`` marks a
deprecated spelling (a warning names the form to use instead); ``ignored`` says why this
agent does not act on a keyword: its value is checked, the agent and ``hsflowd check`` say
once that it is ignored and why, and it is dropped (the typed model has no field for it);
``repeat`` keywords collect a list; ``target`` makes a legacy top-level key stand for a
keyword inside a block ("nflog.group").  Keywords are matched without regard to case.
``default`` None means "not set".

To make an ignored keyword act, drop its ``ignored`` and give its block's dataclass in
model.py a field named ``attr`` (tests/test_config_keywords.py checks that the two agree),
then regenerate README's table (``python -m hsflowd.config.docs``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

INT, FLOAT, ONOFF, STRING, DEVICE, HOST, CIDR, UUID, REGEX, PATH, SPEEDS, DIRECTION, BLOCK = (
    "int", "float", "on|off", "string", "device", "host", "cidr", "uuid", "regex", "path",
    "speeds", "direction", "block")

U32_MAX = 0xFFFFFFFF
SPEED_MAX = 2 ** 63 - 1        # what "speed=1G-" (no upper bound) stands for
MAX_SAMPLING = 10_000_000      # 1-in-N sampling never goes sparser than this
MAX_POLLING = 300              # seconds
MAX_HEADER_BYTES = 256         # bytes of a sampled packet kept, at most (as hsflowd)
APP_PREFIXES = ("sampling.", "polling.")   # wildcard keys: sampling.<speed|app>=N


def _snake(name: str) -> str:
    """subAgentId -> sub_agent_id, dev.pattern -> dev_pattern."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).replace(".", "_").replace("-", "_").lower()


@dataclass(frozen=True)
class Keyword:
    name: str
    kind: str
    default: Any = None
    range: Optional[Tuple[float, float]] = None
    help: str = ""
    aliases: Tuple[str, ...] = ()
    attr: str = ""                 # field name in the typed model (default: snake_case)
    prefer: Optional[str] = None   # deprecated: what to write instead
    ignored: str = ""              # why this agent does not act on it ("": it does)
    repeat: bool = False
    target: Optional[str] = None   # legacy top-level key: "block.keyword" it stands for
    block: Optional[str] = None    # kind BLOCK: the block it opens
    required: bool = False

    def __post_init__(self):
        if not self.attr:
            object.__setattr__(self, "attr", _snake(self.name))

    @property
    def spellings(self) -> Tuple[str, ...]:
        return (self.name,) + self.aliases


@dataclass(frozen=True)
class Block:
    name: str
    keywords: Tuple[Keyword, ...]
    supported: bool = False   # this agent implements it; otherwise "not supported yet"
    multi: bool = False       # each { } is its own instance (collector, pcap); else merged
    help: str = ""
    _index: Dict[str, Keyword] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        for keyword in self.keywords:
            for spelling in keyword.spellings:
                self._index[spelling.lower()] = keyword

    def lookup(self, word: str) -> Optional[Keyword]:
        return self._index.get(word.lower())

    def keyword(self, name: str) -> Keyword:
        found = self.lookup(name)
        if found is None:
            raise KeyError(f"{self.name} has no keyword {name!r}")
        return found

    def spellings(self) -> Tuple[str, ...]:
        return tuple(s for k in self.keywords for s in k.spellings)


def _k(name, kind, default=None, range=None, help="", **more) -> Keyword:
    return Keyword(name, kind, default, range, help, **more)


def _b(name, *keywords, **more) -> Block:
    return Block(name, tuple(keywords), **more)


def _opens(name, block=None, help="") -> Keyword:
    return Keyword(name, BLOCK, block=block or name, help=help)


_REFRESH_VMS = _k("refreshVMs", INT, None, (60, 3600), "seconds between VM/container list reads")
_FORGET_VMS = _k("forgetVMs", INT, None, (60, U32_MAX), "seconds before a vanished VM is forgotten")
_MARK = _k("markTraffic", ONOFF, None, None, "tag sampled packets with their container/service")
_SWITCHPORT = _k("switchport", REGEX, None, None, "which interfaces are switch ports")

BLOCKS: Dict[str, Block] = {b.name: b for b in (
    _b("sflow",
       _k("sampling", INT, 400, (0, MAX_SAMPLING),
          "1-in-N packet sampling where the link speed is unknown (see sampling.bps_ratio)",
          aliases=("packetSamplingRate",)),
       _k("polling", INT, 30, (0, MAX_POLLING), "seconds between counter samples; 0 = off",
          aliases=("counterPollingInterval",)),
       _k("agentIP", HOST, None, None, "agent address: skips the election"),
       _k("agent", DEVICE, None, None, "elect the agent address from this device (or alias)",
          attr="agent_device"),
       _k("agent.cidr", CIDR, [], None, "prefer (or with !, refuse) agent addresses in this "
          "prefix; the first one listed weighs most", attr="agent_cidrs", repeat=True),
       _k("subAgentId", INT, 100000, (0, 199999), "sub-agent id; counters-only agents send +1"),
       _k("uuid", UUID, None, None, "host UUID (default: from DMI, else machine-id)"),
       _k("headerBytes", INT, 128, (0, MAX_HEADER_BYTES),
          "bytes of each sampled packet to send"),
       _k("datagramBytes", INT, 1400, (200, 8192), "largest sFlow datagram to send"),
       _k("modules", PATH, "/etc/hsflowd/modules", None, "C hsflowd's module directory",
          ignored="every module is built in, so there are no module files to load"),
       _k("refreshAdaptors", INT, 180, (60, 3600), "seconds between full interface re-reads"),
       _k("checkAdaptors", INT, 10, (1, 3600), "seconds between quick interface-change checks",
          ignored="this agent follows interface changes through netlink events, so it "
          "needs no periodic check"),
       _k("refreshVMs", INT, 60, (60, 3600), "seconds between VM/container list reads"),
       _k("forgetVMs", INT, 180, (60, U32_MAX), "seconds before a vanished VM is forgotten"),
       _k("DNSSD", ONOFF, False, None, "turn DNS-SD on or off", attr="dns_sd",
          prefer="dns-sd { } (leave it out to turn DNS-SD off)"),
       _k("DNSSD_domain", STRING, None, None, "DNS-SD domain", attr="dns_sd_domain",
          prefer="dns-sd { domain=.example.com }"),
       _k("loopback", ONOFF, None, None, "read loopback devices",
          ignored="loopback devices are always read, as in hsflowd"),
       _k("samplingDirection", DIRECTION, None, None, "which direction to sample",
          ignored="hsflowd ignores it too", prefer="psample { ingress=on|off egress=on|off }"),
       _k("nflogGroup", INT, None, (1, 32), target="nflog.group", prefer="nflog { group=N }"),
       _k("nflogProbability", FLOAT, None, (0, 1), target="nflog.probability",
          prefer="nflog { probability=0.nn }"),
       _k("ulogGroup", INT, None, (1, 32), target="ulog.group", prefer="ulog { group=N }"),
       _k("ulogProbability", FLOAT, None, (0, 1), target="ulog.probability",
          prefer="ulog { probability=0.nn }"),
       _k("jsonPort", INT, None, (1025, 65535), target="json.udpport", prefer="json { udpport=N }"),
       _k("jsonFIFO", PATH, None, None, target="json.fifo", prefer="json { fifo=/path }"),
       _k("xen.update.dominfo", ONOFF, None, None, target="xen.update.dominfo",
          prefer="xen { update.dominfo=on|off }"),
       _k("xen.dsk", ONOFF, None, None, target="xen.dsk", prefer="xen { dsk=on|off }"),
       _opens("collector", help="where to send sFlow (repeat for more collectors)"),
       _opens("pcap", help="sample packets on a device (one block per rule)"),
       _opens("epcap", help="like pcap, with eBPF and direction (one block per rule)"),
       _opens("nflog", help="sample packets from an iptables NFLOG rule"),
       _opens("ovs", help="push this sFlow configuration into Open vSwitch"),
       _opens("dns-sd", help="learn collectors and settings from DNS SRV/TXT records"),
       _opens("json", help="accept JSON-encoded application metrics"),
       _opens("tcp", help="add the kernel's TCP state to samples of local connections"),
       _opens("ulog"), _opens("psample"), _opens("dropmon"),
       _opens("docker", help="report every container as a data source (3:N)"),
       _opens("containerd", help="report every containerd container as a data source (3:N)"),
       _opens("k8s", help="report every Kubernetes pod as a data source (3:N)"),
       _opens("kvm", help="report every libvirt domain as a data source (3:N)"), _opens("xen"),
       _opens("systemd", help="report every running service as a data source (3:N)"),
       _opens("nvml"), _opens("dbus"), _opens("eapi"), _opens("nlroute"),
       _opens("vpp"), _opens("cumulus"), _opens("dent"), _opens("opx"),
       _opens("os10", block="opx"), _opens("sonic"),
       help="the whole configuration", supported=True),
    _b("collector",
       _k("ip", HOST, None, None, "collector address or host name", required=True),
       _k("udpport", INT, 6343, (1, 65535), "collector UDP port"),
       _k("dev", DEVICE, None, None, "send through this device (IP_UNICAST_IF, e.g. a VRF)"),
       _k("namespace", STRING, None, None, "send from this network namespace (ip netns name)"),
       supported=True, multi=True),
    _b("pcap",
       _k("dev", DEVICE, None, None, "tap this device"),
       _k("dev.pattern", REGEX, None, None, "tap every device whose name matches"),
       _k("speed", SPEEDS, None, None, "tap every device with a speed in min[-max]"),
       _k("promisc", ONOFF, None, None, "promiscuous mode (default: on for bridges, to see "
          "what they forward between their ports)"),
       _k("vport", ONOFF, None, None, "also poll bridge-port counters (default: on for bridges)"),
       _k("dynamic", ONOFF, False, None, "tap only the devices a module asks for (k8s { }: "
          "the pods' veths) that this rule's dev, dev.pattern or speed match, whatever "
          "their kind"),
       _k("sampling", INT, None, (0, MAX_SAMPLING), "1-in-N for this rule, beating every "
          "other rate rule"),
       supported=True, multi=True),
    _b("nflog",
       _k("group", INT, None, (1, 32), "NFLOG group to bind", aliases=("nflogGroup",),
          required=True),
       _k("probability", FLOAT, None, (0, 1), "the rule's --probability (default: 1/sampling)",
          aliases=("nflogProbability",)),
       _k("iptables", ONOFF, False, None, "new: install and remove the NFLOG rules ourselves",
          attr="manage_rule"),
       _k("dev", DEVICE, None, None, "new: with iptables=on, only packets through this device"),
       supported=True),
    _b("ovs",
       _k("db", STRING, None, None, "new: OVSDB to talk to, e.g. unix:/run/openvswitch/db.sock "
          "(default: the usual socket)", aliases=("socket",)),
       supported=True),
    _b("dns-sd",
       _k("domain", STRING, None, None, "look up _sflow._udp.<domain> (default: the search "
          "domains of /etc/resolv.conf)", aliases=("DNSSD_domain",)),
       _k("startDelay", INT, 30, (0, 300), "new: the first query comes a random 1..N seconds "
          "after start, so a fleet does not query all at once (0: at once)"),
       supported=True),
    _b("json",
       _k("udpport", INT, None, (0, 65535), "UDP port on 127.0.0.1 and ::1 (below 1024 the "
          "agent keeps CAP_NET_BIND_SERVICE)", aliases=("jsonPort",)),
       _k("fifo", PATH, None, None, "read JSON from this FIFO", aliases=("jsonFIFO",),
          ignored="not supported yet (applications send JSON to udpport)"),
       supported=True),
    _b("ulog",
       _k("group", INT, None, (1, 32), "ULOG group", aliases=("ulogGroup",)),
       _k("probability", FLOAT, None, (0, 1), "the rule's probability",
          aliases=("ulogProbability",))),
    _b("psample",
       _k("group", INT, 1, (1, 32), "psample group for ingress (egress uses group+1)"),
       _k("ingress", ONOFF, True, None, "sample ingress"),
       _k("egress", ONOFF, False, None, "sample egress")),
    _b("dropmon",
       _k("group", INT, None, (1, U32_MAX), "netlink group", ignored="hsflowd ignores it too"),
       _k("start", ONOFF, True, None, "start the kernel drop monitor if it is stopped"),
       _k("sw", ONOFF, True, None, "software drops"),
       _k("hw", ONOFF, True, None, "hardware drops"),
       _k("rn", ONOFF, True, None, "route-not-found drops"),
       _k("hw_unknown", ONOFF, False, None, "hardware drops of unknown reason"),
       _k("hw_function", ONOFF, None, None, "hardware drops by function",
          ignored="hsflowd ignores it too"),
       _k("sw_passive", ONOFF, False, None, "listen without configuring software drops"),
       _k("hw_passive", ONOFF, False, None, "listen without configuring hardware drops"),
       _k("hide", REGEX, None, None, "drop reasons to leave out"),
       _k("limit", INT, 100, (1, 10000), "drop events per second, at most"),
       _k("max", INT, 100000, (1, U32_MAX), "circuit breaker: events before the feed stops"),
       _k("max_trip", INT, 2, (0, U32_MAX), "times the circuit breaker may trip")),
    _b("tcp",
       _k("tunnel", ONOFF, False, None, "look up the sockets of tunnelled packets",
          ignored="not supported yet (the inner packets of tunnels are not looked up)"),
       _k("udp", ONOFF, False, None, "look up UDP sockets too",
          ignored="not supported yet (only TCP sockets are looked up)"),
       _k("dump", ONOFF, False, None, "find sockets by a full dump",
          ignored="sockets are always found by a filtered dump"),
       supported=True),
    _b("docker",
       _k("refreshVMs", INT, None, (60, 3600), "seconds between full container list reads "
          "(default: sflow's refreshVMs)"),
       _k("forgetVMs", INT, None, (60, U32_MAX), "seconds a stopped container is still "
          "reported (default: sflow's forgetVMs)"),
       _k("hostname", ONOFF, False, None, "name each container by its hostname, not its name"),
       _k("markTraffic", ONOFF, False, None, "add the containers' data sources to sampled "
          "packets (extended_entities)"),
       supported=True),
    _b("containerd",
       _k("forgetVMs", INT, None, (60, U32_MAX), "seconds a stopped container is still "
          "reported (default: sflow's forgetVMs)"),
       _k("hostname", ONOFF, False, None, "name a container that is not a pod's by the "
          "hostname in its OCI spec, not its id"),
       _k("markTraffic", ONOFF, False, None, "add the containers' data sources to sampled "
          "packets (extended_entities)"),
       _k("unixsock", PATH, None, None, "new: containerd's socket (default "
          "/run/containerd/containerd.sock)"),
       supported=True),
    _b("k8s",
       _k("markTraffic", ONOFF, False, None, "add the pods' data sources to sampled packets "
          "(extended_entities)"),
       _k("eof", ONOFF, None, None, "what to do when hsflowd's helper process ends",
          ignored="there is no helper process to lose: the module connects to containerd "
          "again"),
       _k("setIfAlias", ONOFF, True, None, "give each pod's host-side veth the pod's name as "
          "the agent's alias for it"),
       _k("setIfName", ONOFF, True, None, "report that alias as the port's name (1005)"),
       _k("unixsock", PATH, None, None, "containerd's socket (default "
          "/run/containerd/containerd.sock)"),
       supported=True),
    _b("kvm",
       _k("refreshVMs", INT, None, (60, 3600), "seconds between domain list reads "
          "(default: sflow's refreshVMs)"),
       _k("forgetVMs", INT, None, (60, U32_MAX), "seconds a vanished domain is still "
          "reported (default: sflow's forgetVMs)"),
       _k("uri", STRING, None, None, "new: the libvirt URI, opened read-only (default "
          "qemu:///system)"),
       supported=True),
    _b("xen",
       _k("update.dominfo", ONOFF, False, None, aliases=("xen.update.dominfo",)),
       _k("dsk", ONOFF, True, None, "disk counters", aliases=("xen.dsk",)),
       _SWITCHPORT,
       _k("vbd", PATH, None, None, "virtual block device directory"),
       _REFRESH_VMS, _FORGET_VMS),
    _b("systemd",
       _k("refreshVMs", INT, None, (10, 3600), "seconds between full service list reads "
          "(default: sflow's refreshVMs)"),
       _k("dropPriv", ONOFF, False, None, "become nobody all the same (services without I/O "
          "accounting then get no disk counters)"),
       _k("markTraffic", ONOFF, False, None, "add the services' data sources to sampled "
          "packets of their sockets (extended_entities)"),
       _k("cgroup_procs", STRING, None, None, "format of the cgroup.procs path",
          ignored="the cgroup mounts are read from /proc/self/mountinfo, as hsflowd "
          "2.0.51-16 and later do"),
       _k("cgroup_acct", STRING, None, None, "format of the accounting files' path",
          ignored="the cgroup mounts are read from /proc/self/mountinfo, as hsflowd "
          "2.0.51-16 and later do"),
       supported=True),
    _b("nvml"),
    _b("dbus"),
    _b("eapi"),
    _b("nlroute",
       _k("limit", INT, 50, (0, 500)),
       _k("link", ONOFF, None, None),
       _k("addr", ONOFF, None, None),
       _k("setIfAlias", ONOFF, None, None)),
    _b("vpp",
       _k("ifOffset", INT, 1_000_000_000, (0, U32_MAX)),
       _k("osIndex", ONOFF, None, None)),
    _b("cumulus", _SWITCHPORT),
    _b("dent", _SWITCHPORT,
       _k("sw", ONOFF, None, None),
       _k("ingress", ONOFF, None, None),
       _k("egress", ONOFF, None, None)),
    _b("opx",
       _k("udpport", INT, None, (0, 65535)),
       _SWITCHPORT,
       _opens("port")),
    _b("port", _k("dev", DEVICE, None, None), multi=True),
    _b("sonic", _SWITCHPORT,
       _k("unixsock", ONOFF, True, None),
       _k("dbconfig", STRING, None, None),
       _k("waitReady", INT, 180, (0, U32_MAX), "seconds to wait for the switch to be ready"),
       _k("suppressOther", ONOFF, True, None),
       _k("setIfAlias", ONOFF, None, None),
       _k("setIfName", ONOFF, None, None)),
)}

# The wildcard keys of sflow { }: sampling.<x>=N and polling.<x>=S, where <x> is a link
# speed as print_speed writes it ("1G"), "bps_ratio", or an application name ("http").
APP_SAMPLING = Keyword("sampling.<x>", INT, None, (0, MAX_SAMPLING),
                       "1-in-N for links of speed <x>, for application <x>, or bps_ratio")
APP_POLLING = Keyword("polling.<x>", INT, None, (0, MAX_POLLING), "seconds, for application <x>")

# epcap rules read exactly like pcap rules
BLOCKS["epcap"] = Block("epcap", BLOCKS["pcap"].keywords, supported=True, multi=True)


def default_of(block: str, keyword: str) -> Any:
    """The table's default, for the typed model's field defaults."""
    value = BLOCKS[block].keyword(keyword).default
    return list(value) if isinstance(value, list) else value


def where_allowed(word: str) -> Tuple[str, ...]:
    """Names of the blocks that accept ``word`` (for "it belongs in ..." hints)."""
    return tuple(b.name for b in BLOCKS.values() if b.lookup(word) is not None)
