/* The table of recently reported UDP flows: a packet of a known flow never
 * reaches userspace. Userspace ages it (the window) and makes room when full.
 * Every UDP object declares it; userspace makes them share one map. */
#ifndef SOCKSCOPE_UDP_FLOWS_H
#define SOCKSCOPE_UDP_FLOWS_H

#define IPPROTO_UDP 17

#include "kernel_filter.bpf.h"
#include "sock_endpoints.bpf.h"
#include "ipv6_ext.bpf.h"
#define NS_PER_SEC 1000000000ULL

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct udp_flow_key);
	__type(value, __u64); /* last packet, boot-clock ns (refreshed at most once a second) */
} udp_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UDP_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} udp_counters SEC(".maps");

/* Overload protection: above this many unread bytes in the ring buffer, new
 * UDP flows are shed (counted, and reported later: they stay out of the
 * table) so TCP events keep the room. 0: never. Set by userspace. */
const volatile __u64 udp_shed_above = 0;

static __always_inline void udp_count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&udp_counters, &which);
	if (n)
		*n += 1;
}

/* Reports `key` unless it was reported within the window. Returns 1 when the
 * flow is known afterwards (reported now or before), 0 when it is not (shed,
 * ring buffer full): then the next packet must try again.
 * The insert comes first: a new flow (what reaches here most; the callers'
 * per-socket fast paths catch repeats) then walks its hash bucket once. */
static __always_inline int report_udp_flow(struct udp_flow_key *key, __u32 seen_by)
{
	__u64 now = bpf_ktime_get_boot_ns();
	long err = bpf_map_update_elem(&udp_flows, key, &now, BPF_NOEXIST);
	/* -EEXIST: known. Any other failure is looked up too: the update gives
	 * -EBUSY when this program interrupted another's update of the same
	 * bucket on this CPU (softirq inside a send), though the flow is there. */
	__u64 *last = err ? bpf_map_lookup_elem(&udp_flows, key) : 0;
	if (last) {
		/* Keeps the flow alive for the window without a write per packet. */
		if (now - *last > NS_PER_SEC)
			*last = now;
		udp_count(UDP_SUPPRESSED);
		return 1;
	}
	__u16 dport = key->outbound ? key->remote_port : key->local_port;
	__u16 sport = key->outbound ? key->local_port : key->remote_port;
	if (excluded_by_config(IPPROTO_UDP, dport, sport) ||
	    excluded_by_addr(IPPROTO_UDP, key->outbound ? key->remote_addr : key->local_addr,
			     key->outbound ? key->local_addr : key->remote_addr))
		return 1; /* known from now on: its next packets stop above */
	if (udp_shed_above && bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > udp_shed_above) {
		if (!err)
			bpf_map_delete_elem(&udp_flows, key); /* reported later, when there is room */
		udp_count(UDP_SHED);
		return 0;
	}
	/* Stamped with the clock read above: one read per new flow, not two. */
	struct udp_flow_fact *f = reserve_fact_at(sizeof(*f), FACT_UDP_FLOW, now);
	if (!f) {
		/* Not reported: forget it so the next packet tries again. */
		if (!err)
			bpf_map_delete_elem(&udp_flows, key);
		return 0;
	}
	if (err)
		udp_count(UDP_TABLE_FULL);
	f->key = *key;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	f->tid = (__u32)pid_tgid;
	f->uid = (__u32)bpf_get_current_uid_gid();
	f->recorded = err == 0;
	f->seen_by = seen_by;
	bpf_ringbuf_submit(f, 0);
	return 1;
}

/* A socket's own endpoints into a flow key (connected sockets have a
 * remote); IPv4 as ::ffff:a.b.c.d. `sk` is a BTF pointer (read_endpoints). */
static __always_inline void sock_endpoints_key(const struct sock *sk, struct udp_flow_key *key)
{
	struct tcp_endpoints ep = {};
	read_endpoints(sk, &ep);
	key->netns = ep.netns;
	key->local_port = ep.local_port;
	key->remote_port = ep.remote_port;
	endpoint_addrs16(&ep, key->local_addr, key->remote_addr);
}

/* The UDP addresses of a packet, from its IP header. Returns 0 if it is UDP. */
static __always_inline int packet_endpoints(const struct sk_buff *skb, __u8 src[16], __u16 *sport,
					    __u8 dst[16], __u16 *dport)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	__u32 udp_off;
	if (proto == 0x0800) { /* ETH_P_IP */
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) || ip.protocol != IPPROTO_UDP)
			return -1;
		ipv4_mapped(src, ip.saddr);
		ipv4_mapped(dst, ip.daddr);
		udp_off = nh + ip.ihl * 4;
	} else if (proto == 0x86DD) { /* ETH_P_IPV6 */
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return -1;
		__u8 next = ip6.nexthdr;
		udp_off = nh + sizeof(ip6);
		for (int i = 0; i < IPV6_EXT_MAX && ipv6_ext_followed(next); i++) {
			__u8 h[4];
			if (bpf_probe_read_kernel(h, sizeof(h), head + udp_off))
				return -1;
			__u32 len = ipv6_ext_len(next, h);
			if (!len)
				return -1;
			next = h[0];
			udp_off += len;
		}
		if (next != IPPROTO_UDP)
			return -1;
		__builtin_memcpy(src, &ip6.saddr, 16);
		__builtin_memcpy(dst, &ip6.daddr, 16);
	} else {
		return -1;
	}
	struct udphdr udp;
	if (bpf_probe_read_kernel(&udp, sizeof(udp), head + udp_off))
		return -1;
	*sport = bpf_ntohs(udp.source);
	*dport = bpf_ntohs(udp.dest);
	return 0;
}

#endif
