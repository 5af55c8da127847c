/* DNS capture inside the cgroup_skb programs that already run for every
 * packet (udp_send's egress, udp_recv's ingress): no hook of its own, so
 * traffic off port 53 pays one port compare (a TCP packet: its header read in
 * place), and nothing at all when --dns is off (a read-only flag the verifier
 * folds). Queries are taken leaving (destination port 53; egress runs inside
 * the sender's send, so the task is the sender), responses arriving (source
 * port 53); the message is copied, bounded, into a FACT_DNS record and parsed
 * in Rust. Both ends of a loopback or local-stub exchange pass both hooks;
 * the server's side (a query arriving, a response leaving) is not taken. */
#ifndef SOCKSCOPE_DNS_CAPTURE_H
#define SOCKSCOPE_DNS_CAPTURE_H

#include "ipv6_ext.bpf.h"

#define DNS_PORT 53

/* Set by userspace (--dns): capture at all. */
const volatile bool dns_capture_on = false;

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* The source (dest = 0) or destination (dest = 1) port of a packet already
 * known to be TCP, read in place; 0 when it cannot be read (TCP behind IPv6
 * extension headers is not followed). */
static __always_inline __u16 skb_tcp_port(struct __sk_buff *skb, int dest)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 off;
	if (skb->protocol == bpf_htons(0x0800)) {
		struct iphdr *ip = data;
		if ((void *)(ip + 1) > end)
			return 0;
		off = (ip->ihl & 0xf) * 4;
	} else {
		struct ipv6hdr *ip6 = data;
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return 0;
		off = sizeof(*ip6);
	}
	__u16 ports[2];
	__u16 *at = data + off;
	if ((void *)(at + 2) <= end) {
		ports[0] = at[0];
		ports[1] = at[1];
	} else if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports))) {
		return 0;
	}
	return bpf_ntohs(ports[dest & 1]);
}

/* A message to or from port 53 into a FACT_DNS record. Runs only for such
 * packets, so it reads with bpf_skb_load_bytes and keeps the verifier's work
 * out of the per-packet path (a subprogram). */
static __noinline int dns_report(struct __sk_buff *skb, int outbound)
{
	__u8 src[16] = {}, dst[16] = {};
	__u8 proto;
	__u32 l4;
	if (skb->protocol == bpf_htons(0x0800)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 0;
		if (ip.frag_off & bpf_htons(0x1fff))
			return 0; /* a later fragment: no transport header */
		proto = ip.protocol;
		ipv4_mapped(src, ip.saddr);
		ipv4_mapped(dst, ip.daddr);
		l4 = ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(0x86DD)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 0;
		__u8 next = ip6.nexthdr;
		l4 = sizeof(ip6);
		for (int i = 0; i < IPV6_EXT_MAX && ipv6_ext_followed(next); i++) {
			__u8 h[4];
			if (bpf_skb_load_bytes(skb, l4 & 0x3fff, h, sizeof(h)))
				return 0;
			__u32 len = ipv6_ext_len(next, h);
			if (!len)
				return 0;
			next = h[0];
			l4 = (l4 & 0x3fff) + len;
		}
		proto = next;
		__builtin_memcpy(src, &ip6.saddr, 16);
		__builtin_memcpy(dst, &ip6.daddr, 16);
	} else {
		return 0;
	}
	l4 &= 0x3fff;
	__u16 sport, dport;
	__u32 seq = 0, off, flags = outbound ? DNS_OUTBOUND : 0;
	if (proto == IPPROTO_UDP) {
		struct udphdr udp;
		if (bpf_skb_load_bytes(skb, l4, &udp, sizeof(udp)))
			return 0;
		sport = bpf_ntohs(udp.source);
		dport = bpf_ntohs(udp.dest);
		off = l4 + sizeof(udp);
	} else if (proto == IPPROTO_TCP) {
		struct tcphdr tcp;
		if (bpf_skb_load_bytes(skb, l4, &tcp, sizeof(tcp)))
			return 0;
		sport = bpf_ntohs(tcp.source);
		dport = bpf_ntohs(tcp.dest);
		seq = bpf_ntohl(tcp.seq);
		off = l4 + tcp.doff * 4;
		flags |= DNS_TCP;
	} else {
		return 0;
	}
	if ((outbound ? dport : sport) != DNS_PORT || skb->len <= off)
		return 0; /* not the client's side, or no payload (a bare ACK, SYN, FIN) */
	__u32 payload = skb->len - off;
	struct dns_fact *f = reserve_fact(sizeof(*f), FACT_DNS);
	if (!f)
		return 0;
	if (outbound) {
		fill_task_ids(&f->task);
	} else {
		f->task.tgid = 0;
		f->task.tid = 0;
		f->task.uid = 0;
		f->task.gid = 0;
	}
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	f->netns = BPF_CORE_READ(kskb, sk, __sk_common.skc_net.net, ns.inum);
	f->flags = flags;
	f->payload_len = payload;
	f->tcp_seq = seq;
	f->pad = 0;
	if (outbound) {
		f->local_port = sport;
		f->remote_port = dport;
		__builtin_memcpy(f->local_addr, src, 16);
		__builtin_memcpy(f->remote_addr, dst, 16);
	} else {
		f->local_port = dport;
		f->remote_port = sport;
		__builtin_memcpy(f->local_addr, dst, 16);
		__builtin_memcpy(f->remote_addr, src, 16);
	}
	__u64 cap = payload < DNS_CAPTURE_MAX ? payload : DNS_CAPTURE_MAX;
	barrier_var(cap); /* the bound is checked on the register the helper gets */
	if (cap >= 1 && cap <= DNS_CAPTURE_MAX) {
		if (bpf_skb_load_bytes(skb, off, f->msg, cap))
			cap = 0;
	} else {
		cap = 0;
	}
	f->hdr.detail = cap;
	bpf_ringbuf_submit(f, 0);
	return 0;
}

#endif
