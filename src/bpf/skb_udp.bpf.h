/* A cgroup_skb program's view of a UDP datagram: its two endpoints, read from
 * the packet (skb data starts at the network header in these hooks). */
#ifndef SOCKSCOPE_SKB_UDP_H
#define SOCKSCOPE_SKB_UDP_H

#include "ipv6_ext.bpf.h"

/* What skb_udp_endpoints found. */
enum skb_udp {
	SKB_UDP = 0,
	SKB_TCP = 1,   /* never a UDP socket's: the cheap way out for every TCP packet */
	SKB_OTHER = 2, /* IPsec, more extension headers than followed, unreadable */
};

/* The IP packet's socket (any kind), or NULL. Whether it is a UDP socket is
 * left to the packet (skb_udp_endpoints) and, for packets that are neither
 * UDP nor TCP, to udp_sock_of: asking the socket costs every packet a helper
 * call (bpf_sk_fullsock), TCP's too. */
static __always_inline struct bpf_sock *ip_sock_of(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(0x0800) && skb->protocol != bpf_htons(0x86DD))
		return NULL;
	return skb->sk;
}

/* The full UDP socket behind `sk`, or NULL. */
static __always_inline struct bpf_sock *udp_sock_of(struct bpf_sock *sk)
{
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->protocol != IPPROTO_UDP)
		return NULL;
	return sk;
}

/* The verdict for a packet whose IP header says `protocol`, not UDP. */
static __always_inline enum skb_udp not_udp(__u8 protocol)
{
	return protocol == IPPROTO_TCP ? SKB_TCP : SKB_OTHER;
}

/* Source and destination of the datagram, copied with bpf_skb_load_bytes:
 * for headers that are not in the linear part. */
static __always_inline enum skb_udp skb_udp_endpoints_copy(struct __sk_buff *skb, __u8 src[16], __u16 *sport,
							   __u8 dst[16], __u16 *dport)
{
	__u32 udp_off;
	if (skb->protocol == bpf_htons(0x0800)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return SKB_OTHER;
		if (ip.protocol != IPPROTO_UDP)
			return not_udp(ip.protocol);
		ipv4_mapped(src, ip.saddr);
		ipv4_mapped(dst, ip.daddr);
		udp_off = ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return SKB_OTHER;
		__u8 next = ip6.nexthdr;
		udp_off = sizeof(ip6);
		for (int i = 0; i < IPV6_EXT_MAX && ipv6_ext_followed(next); i++) {
			__u8 h[4];
			if (bpf_skb_load_bytes(skb, udp_off & 0x3fff, h, sizeof(h)))
				return SKB_OTHER;
			__u32 len = ipv6_ext_len(next, h);
			if (!len)
				return SKB_OTHER;
			next = h[0];
			udp_off = (udp_off & 0x3fff) + len;
		}
		if (next != IPPROTO_UDP)
			return not_udp(next);
		__builtin_memcpy(src, &ip6.saddr, 16);
		__builtin_memcpy(dst, &ip6.daddr, 16);
	}
	struct udphdr udp;
	if (bpf_skb_load_bytes(skb, udp_off & 0x3fff, &udp, sizeof(udp)))
		return SKB_OTHER;
	*sport = bpf_ntohs(udp.source);
	*dport = bpf_ntohs(udp.dest);
	return SKB_UDP;
}

/* Source and destination of the datagram; IPv4 as ::ffff:a.b.c.d.
 * Reads the headers in place (direct packet access, no helper call per
 * header: this runs for every packet), copying only when they are not
 * linear. */
static __always_inline enum skb_udp skb_udp_endpoints(struct __sk_buff *skb, __u8 src[16], __u16 *sport,
						      __u8 dst[16], __u16 *dport)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct udphdr *udp;
	if (skb->protocol == bpf_htons(0x0800)) {
		struct iphdr *ip = data;
		if ((void *)(ip + 1) > end)
			return skb_udp_endpoints_copy(skb, src, sport, dst, dport);
		if (ip->protocol != IPPROTO_UDP)
			return not_udp(ip->protocol);
		ipv4_mapped(src, ip->saddr);
		ipv4_mapped(dst, ip->daddr);
		udp = data + (ip->ihl & 0xf) * 4;
	} else {
		struct ipv6hdr *ip6 = data;
		if ((void *)(ip6 + 1) > end)
			return skb_udp_endpoints_copy(skb, src, sport, dst, dport);
		__u8 next = ip6->nexthdr;
		void *at = ip6 + 1;
		/* UDP right after the IPv6 header, the common case, skips the walk. */
		if (next != IPPROTO_UDP) {
			for (int i = 0; i < IPV6_EXT_MAX && ipv6_ext_followed(next); i++) {
				__u8 *h = at;
				if ((void *)(h + 4) > end)
					return skb_udp_endpoints_copy(skb, src, sport, dst, dport);
				__u32 len = ipv6_ext_len(next, h);
				if (!len)
					return SKB_OTHER;
				next = h[0];
				at += len & 0xfff; /* at most 2048: a bound for the verifier */
			}
			if (next != IPPROTO_UDP)
				return not_udp(next);
		}
		__builtin_memcpy(src, &ip6->saddr, 16);
		__builtin_memcpy(dst, &ip6->daddr, 16);
		udp = at;
	}
	if ((void *)(udp + 1) > end)
		return skb_udp_endpoints_copy(skb, src, sport, dst, dport);
	*sport = bpf_ntohs(udp->source);
	*dport = bpf_ntohs(udp->dest);
	return SKB_UDP;
}

#endif
