/* The epcap {} program (hsflowd/samplers/ebpf.py compiles it with bcc, once).
 *
 * tc_ingress and tc_egress are attached to clsact's two hooks of every tapped interface, so
 * the hook tells the direction.  MAX_TAPS comes from the compiler's command line.
 * Always TC_ACT_UNSPEC: the packet goes on unchanged and later filters still run.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

struct config { u32 rate; u32 header_bytes; };     /* set by the agent; rate 0 = off */
struct counts { u64 packets; u64 drops; };         /* per CPU: the sample pool, lost records */
struct meta {                                      /* ebpf.py's _META reads this: keep in step */
    u64 timestamp;      /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
    u32 ifindex;        /* where the packet is: tapped device, both hooks */
    u32 len;            /* skb->len: the whole packet, link header included */
    u32 caplen;         /* bytes of the packet that follow this record */
    u16 vlan_tci;
    u16 vlan_proto;     /* network byte order */
    u8 egress;          /* which hook: 0 ingress, 1 egress */
    u8 pkt_type;        /* PACKET_HOST, _BROADCAST, _MULTICAST, _OTHERHOST on ingress */
    u8 vlan_present;
    u8 pad[5];
};

BPF_HASH(config, u32, struct config, MAX_TAPS);
BPF_PERCPU_HASH(counts, u32, struct counts, MAX_TAPS);
BPF_PERF_OUTPUT(samples);

static __always_inline int sample(struct __sk_buff *skb, u8 egress)
{
    u32 ifindex = skb->ifindex;
    struct config *cf = config.lookup(&ifindex);
    if (!cf || cf->rate == 0)
        return TC_ACT_UNSPEC;
    struct counts *c = counts.lookup(&ifindex);
    if (!c)
        return TC_ACT_UNSPEC;
    c->packets++;                                  /* this CPU's copy: no atomics */
    if (cf->rate > 1 && bpf_get_prandom_u32() % cf->rate != 0)
        return TC_ACT_UNSPEC;
    struct meta m = {};
    m.timestamp = bpf_ktime_get_ns();
    m.ifindex = ifindex;
    m.len = skb->len;
    m.caplen = skb->len < cf->header_bytes ? skb->len : cf->header_bytes;
    m.egress = egress;
    m.pkt_type = skb->pkt_type;
    m.vlan_present = skb->vlan_present;
    m.vlan_tci = skb->vlan_tci;
    m.vlan_proto = skb->vlan_proto;
    /* the record, then m.caplen bytes copied from the packet (paged data too) */
    int err = samples.perf_submit_skb(skb, m.caplen, &m, sizeof(m));
    if (err < 0)
        c->drops++;
    return TC_ACT_UNSPEC;
}

int tc_ingress(struct __sk_buff *skb) { return sample(skb, 0); }
int tc_egress(struct __sk_buff *skb) { return sample(skb, 1); }
