"""Counter records (counter_data, enterprise 0): interface, host, virtual and application.

Field names are the specifications' own: sflow_version_5.txt (1-7, 1001-1005),
sflow_optics.txt (10), sflow_host.txt and sflow_host_ip.txt (2000-2010, 2100-2104),
sflow_application.txt (2202-2207).  Unknown values follow sFlow's rules: a counter the
host cannot read is all ones (``UNKNOWN32``/``UNKNOWN64``), a gauge 0, a percentage -1.
"""

from __future__ import annotations

from enum import IntEnum

from .tlv import COUNTERS, Record
from .xdr import array, f32, i32, mac, string, u32, u64, uuid16, xdr_struct

UNKNOWN32 = 0xFFFFFFFF
UNKNOWN64 = 0xFFFFFFFFFFFFFFFF
UNKNOWN_PERCENT = -1


# ---------------------------------------------------------------- interface counters

@COUNTERS.register(1, "if_counters")
class IfCounters(Record):
    """Generic interface counters (RFC 2233 names).  ifStatus: bit 0 admin up, bit 1 oper up."""

    ifIndex: u32
    ifType: u32 = 6
    ifSpeed: u64
    ifDirection: u32
    ifStatus: u32
    ifInOctets: u64
    ifInUcastPkts: u32
    ifInMulticastPkts: u32
    ifInBroadcastPkts: u32
    ifInDiscards: u32
    ifInErrors: u32
    ifInUnknownProtos: u32
    ifOutOctets: u64
    ifOutUcastPkts: u32
    ifOutMulticastPkts: u32
    ifOutBroadcastPkts: u32
    ifOutDiscards: u32
    ifOutErrors: u32
    ifPromiscuousMode: u32


@COUNTERS.register(2, "ethernet_counters")
class EthernetCounters(Record):
    dot3StatsAlignmentErrors: u32
    dot3StatsFCSErrors: u32
    dot3StatsSingleCollisionFrames: u32
    dot3StatsMultipleCollisionFrames: u32
    dot3StatsSQETestErrors: u32
    dot3StatsDeferredTransmissions: u32
    dot3StatsLateCollisions: u32
    dot3StatsExcessiveCollisions: u32
    dot3StatsInternalMacTransmitErrors: u32
    dot3StatsCarrierSenseErrors: u32
    dot3StatsFrameTooLongs: u32
    dot3StatsInternalMacReceiveErrors: u32
    dot3StatsSymbolErrors: u32


@COUNTERS.register(5, "vlan_counters")
class VlanCounters(Record):
    vlan_id: u32
    octets: u64
    ucastPkts: u32
    multicastPkts: u32
    broadcastPkts: u32
    discards: u32


@COUNTERS.register(7, "lag_port_stats")
class LagPortStats(Record):
    """IEEE 802.3ad port counters (sflow_lag.txt).  portState packs four state bytes."""

    dot3adAggPortActorSystemID: mac
    dot3adAggPortPartnerOperSystemID: mac
    dot3adAggPortAttachedAggID: u32
    dot3adAggPortState: u32
    dot3adAggPortStatsLACPDUsRx: u32
    dot3adAggPortStatsMarkerPDUsRx: u32
    dot3adAggPortStatsMarkerResponsePDUsRx: u32
    dot3adAggPortStatsUnknownRx: u32
    dot3adAggPortStatsIllegalRx: u32
    dot3adAggPortStatsLACPDUsTx: u32
    dot3adAggPortStatsMarkerPDUsTx: u32
    dot3adAggPortStatsMarkerResponsePDUsTx: u32


@xdr_struct
class SfpLane:
    """One optical lane; powers in microwatts, current in microamps, wavelength in nm."""

    lane_index: u32
    lane_tx_bias_current: u32
    lane_tx_power: u32
    lane_tx_power_min: u32
    lane_tx_power_max: u32
    lane_tx_wavelength: u32
    lane_rx_power: u32
    lane_rx_power_min: u32
    lane_rx_power_max: u32
    lane_rx_wavelength: u32


@COUNTERS.register(10, "sfp")
class Sfp(Record):
    """Optical module (sflow_optics.txt): voltage in mV, temperature in thousandths of a degree C."""

    module_id: u32
    module_num_lanes: u32
    module_supply_voltage: u32
    module_temperature: i32
    lanes: array(SfpLane)


@COUNTERS.register(1001, "processor")
class Processor(Record):
    """Percentages in hundredths (100 = 1 %), -1 when unknown."""

    cpu_5s: i32 = UNKNOWN_PERCENT
    cpu_1m: i32 = UNKNOWN_PERCENT
    cpu_5m: i32 = UNKNOWN_PERCENT
    total_memory: u64
    free_memory: u64


@COUNTERS.register(1004, "of_port")
class OfPort(Record):
    """OpenFlow port (Open vSwitch sends it with its interface samples)."""

    datapath_id: u64
    port_no: u32


@COUNTERS.register(1005, "port_name")
class PortName(Record):
    """The interface's name; hsflowd sends the Linux device name with every interface sample."""

    name: string(255)


# ---------------------------------------------------------------- host counters

class MachineType(IntEnum):
    UNKNOWN = 0
    OTHER = 1
    X86 = 2
    X86_64 = 3
    IA64 = 4
    SPARC = 5
    ALPHA = 6
    POWERPC = 7
    M68K = 8
    MIPS = 9
    ARM = 10
    HPPA = 11
    S390 = 12


class OsName(IntEnum):
    UNKNOWN = 0
    OTHER = 1
    LINUX = 2
    WINDOWS = 3
    DARWIN = 4
    HPUX = 5
    AIX = 6
    DRAGONFLY = 7
    FREEBSD = 8
    NETBSD = 9
    OPENBSD = 10
    OSF = 11
    SOLARIS = 12


@COUNTERS.register(2000, "host_descr")
class HostDescr(Record):
    """Who the host is.  The uuid is 16 raw bytes with no length word (as hsflowd sends it)."""

    hostname: string(64)
    uuid: uuid16
    machine_type: u32
    os_name: u32
    os_release: string(32)


@xdr_struct
class HostAdapter:
    ifIndex: u32
    mac_addresses: array(mac)


@COUNTERS.register(2001, "host_adapters")
class HostAdapters(Record):
    adapters: array(HostAdapter)


@COUNTERS.register(2002, "host_parent")
class HostParent(Record):
    """The data source this virtual host belongs to (class and index)."""

    container_type: u32
    container_index: u32


@COUNTERS.register(2003, "host_cpu")
class HostCpu(Record):
    """Loads as floats; cpu_* times in milliseconds; uptime in seconds."""

    minimum_length = 68  # before Dec 2014 the record ended after `contexts`
    load_one: f32
    load_five: f32
    load_fifteen: f32
    proc_run: u32
    proc_total: u32
    cpu_num: u32
    cpu_speed: u32
    uptime: u32
    cpu_user: u32
    cpu_nice: u32
    cpu_system: u32
    cpu_idle: u32
    cpu_wio: u32
    cpu_intr: u32
    cpu_sintr: u32
    interrupts: u32
    contexts: u32
    cpu_steal: u32
    cpu_guest: u32
    cpu_guest_nice: u32


@COUNTERS.register(2004, "host_memory")
class HostMemory(Record):
    """Sizes in bytes; page and swap activity in pages."""

    mem_total: u64
    mem_free: u64
    mem_shared: u64
    mem_buffers: u64
    mem_cached: u64
    swap_total: u64
    swap_free: u64
    page_in: u32
    page_out: u32
    swap_in: u32
    swap_out: u32


@COUNTERS.register(2005, "host_disk_io")
class HostDiskIo(Record):
    """part_max_used is the fullest partition in hundredths of a percent, -1 if unknown."""

    disk_total: u64
    disk_free: u64
    part_max_used: i32 = UNKNOWN_PERCENT
    reads: u32
    bytes_read: u64
    read_time: u32
    writes: u32
    bytes_written: u64
    write_time: u32


@COUNTERS.register(2006, "host_net_io")
class HostNetIo(Record):
    bytes_in: u64
    pkts_in: u32
    errs_in: u32
    drops_in: u32
    bytes_out: u64
    pkts_out: u32
    errs_out: u32
    drops_out: u32


@COUNTERS.register(2007, "mib2_ip_group")
class Mib2IpGroup(Record):
    ipForwarding: u32
    ipDefaultTTL: u32
    ipInReceives: u32
    ipInHdrErrors: u32
    ipInAddrErrors: u32
    ipForwDatagrams: u32
    ipInUnknownProtos: u32
    ipInDiscards: u32
    ipInDelivers: u32
    ipOutRequests: u32
    ipOutDiscards: u32
    ipOutNoRoutes: u32
    ipReasmTimeout: u32
    ipReasmReqds: u32
    ipReasmOKs: u32
    ipReasmFails: u32
    ipFragOKs: u32
    ipFragFails: u32
    ipFragCreates: u32


@COUNTERS.register(2008, "mib2_icmp_group")
class Mib2IcmpGroup(Record):
    """The input side has no icmpInTimestampReps; the output side has both (as the spec)."""

    icmpInMsgs: u32
    icmpInErrors: u32
    icmpInDestUnreachs: u32
    icmpInTimeExcds: u32
    icmpInParamProbs: u32
    icmpInSrcQuenchs: u32
    icmpInRedirects: u32
    icmpInEchos: u32
    icmpInEchoReps: u32
    icmpInTimestamps: u32
    icmpInAddrMasks: u32
    icmpInAddrMaskReps: u32
    icmpOutMsgs: u32
    icmpOutErrors: u32
    icmpOutDestUnreachs: u32
    icmpOutTimeExcds: u32
    icmpOutParamProbs: u32
    icmpOutSrcQuenchs: u32
    icmpOutRedirects: u32
    icmpOutEchos: u32
    icmpOutEchoReps: u32
    icmpOutTimestamps: u32
    icmpOutTimestampReps: u32
    icmpOutAddrMasks: u32
    icmpOutAddrMaskReps: u32


@COUNTERS.register(2009, "mib2_tcp_group")
class Mib2TcpGroup(Record):
    tcpRtoAlgorithm: u32
    tcpRtoMin: u32
    tcpRtoMax: u32
    tcpMaxConn: u32
    tcpActiveOpens: u32
    tcpPassiveOpens: u32
    tcpAttemptFails: u32
    tcpEstabResets: u32
    tcpCurrEstab: u32
    tcpInSegs: u32
    tcpOutSegs: u32
    tcpRetransSegs: u32
    tcpInErrs: u32
    tcpOutRsts: u32
    tcpInCsumErrors: u32


@COUNTERS.register(2010, "mib2_udp_group")
class Mib2UdpGroup(Record):
    udpInDatagrams: u32
    udpNoPorts: u32
    udpInErrors: u32
    udpOutDatagrams: u32
    udpRcvbufErrors: u32
    udpSndbufErrors: u32
    udpInCsumErrors: u32


# ---------------------------------------------------------------- virtual hosts

@COUNTERS.register(2100, "virt_node")
class VirtNode(Record):
    mhz: u32
    cpus: u32
    memory: u64
    memory_free: u64
    num_domains: u32


@COUNTERS.register(2101, "virt_cpu")
class VirtCpu(Record):
    """state is libvirt's virDomainState; cpuTime in milliseconds."""

    state: u32
    cpuTime: u32
    nrVirtCpu: u32


@COUNTERS.register(2102, "virt_memory")
class VirtMemory(Record):
    memory: u64
    maxMemory: u64


@COUNTERS.register(2103, "virt_disk_io")
class VirtDiskIo(Record):
    capacity: u64
    allocation: u64
    available: u64
    rd_req: u32
    rd_bytes: u64
    wr_req: u32
    wr_bytes: u64
    errs: u32


@COUNTERS.register(2104, "virt_net_io")
class VirtNetIo(Record):
    rx_bytes: u64
    rx_packets: u32
    rx_errs: u32
    rx_drop: u32
    tx_bytes: u64
    tx_packets: u32
    tx_errs: u32
    tx_drop: u32


# ---------------------------------------------------------------- sflow_application.txt

@COUNTERS.register(2202, "app_operations")
class AppOperations(Record):
    """Transactions of one application by status (flows.AppStatus order), cumulative."""

    application: string(32)
    success: u32
    other: u32
    timeout: u32
    internal_error: u32
    bad_request: u32
    forbidden: u32
    too_large: u32
    not_implemented: u32
    not_found: u32
    unavailable: u32
    unauthorized: u32


@COUNTERS.register(2203, "app_resources")
class AppResources(Record):
    """Process resources of an application; Open vSwitch sends it for ovs-vswitchd."""

    user_time: u32
    system_time: u32
    mem_used: u64
    mem_max: u64
    fd_open: u32
    fd_max: u32
    conn_open: u32
    conn_max: u32


@COUNTERS.register(2206, "app_workers")
class AppWorkers(Record):
    """An application's worker pool: gauges, then requests delayed and dropped (counters)."""

    workers_active: u32
    workers_idle: u32
    workers_max: u32
    req_delayed: u32
    req_dropped: u32


@COUNTERS.register(2207, "ovs_dp_stats")
class OvsDpStats(Record):
    """Open vSwitch datapath statistics."""

    hits: u32
    misses: u32
    lost: u32
    mask_hits: u32
    flows: u32
    masks: u32
