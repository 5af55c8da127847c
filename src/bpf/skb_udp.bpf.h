/* A cgroup_skb program's view of a UDP datagram: its two endpoints, read from
 * the packet (skb data starts at the network header in these hooks). */
#ifndef SOCKSCOPE_SKB_UDP_H
#define SOCKSCOPE_SKB_UDP_H

/* The UDP socket the packet belongs to, or NULL. */
static __always_inline struct bpf_sock *udp_sock_of(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(0x0800) && skb->protocol != bpf_htons(0x86DD))
		return NULL;
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return NULL;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->protocol != IPPROTO_UDP)
		return NULL;
	return sk;
}

/* Source and destination of the datagram, copied with bpf_skb_load_bytes:
 * for headers that are not in the linear part. 0 if UDP. */
static __always_inline int skb_udp_endpoints_copy(struct __sk_buff *skb, __u8 src[16], __u16 *sport, __u8 dst[16],
						  __u16 *dport)
{
	__u32 udp_off;
	if (skb->protocol == bpf_htons(0x0800)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) || ip.protocol != IPPROTO_UDP)
			return -1;
		ipv4_mapped(src, ip.saddr);
		ipv4_mapped(dst, ip.daddr);
		udp_off = ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) || ip6.nexthdr != IPPROTO_UDP)
			return -1;
		__builtin_memcpy(src, &ip6.saddr, 16);
		__builtin_memcpy(dst, &ip6.daddr, 16);
		udp_off = sizeof(ip6);
	}
	struct udphdr udp;
	if (bpf_skb_load_bytes(skb, udp_off & 0x3ff, &udp, sizeof(udp)))
		return -1;
	*sport = bpf_ntohs(udp.source);
	*dport = bpf_ntohs(udp.dest);
	return 0;
}

/* Source and destination of the datagram; IPv4 as ::ffff:a.b.c.d. 0 if UDP.
 * Reads the headers in place (direct packet access, no helper call per
 * header: this runs for every datagram), copying only when they are not
 * linear. */
static __always_inline int skb_udp_endpoints(struct __sk_buff *skb, __u8 src[16], __u16 *sport, __u8 dst[16],
					     __u16 *dport)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct udphdr *udp;
	if (skb->protocol == bpf_htons(0x0800)) {
		struct iphdr *ip = data;
		if ((void *)(ip + 1) > end)
			return skb_udp_endpoints_copy(skb, src, sport, dst, dport);
		if (ip->protocol != IPPROTO_UDP)
			return -1;
		ipv4_mapped(src, ip->saddr);
		ipv4_mapped(dst, ip->daddr);
		udp = data + (ip->ihl & 0xf) * 4;
	} else {
		struct ipv6hdr *ip6 = data;
		if ((void *)(ip6 + 1) > end)
			return skb_udp_endpoints_copy(skb, src, sport, dst, dport);
		if (ip6->nexthdr != IPPROTO_UDP)
			return -1;
		__builtin_memcpy(src, &ip6->saddr, 16);
		__builtin_memcpy(dst, &ip6->daddr, 16);
		udp = (void *)(ip6 + 1);
	}
	if ((void *)(udp + 1) > end)
		return skb_udp_endpoints_copy(skb, src, sport, dst, dport);
	*sport = bpf_ntohs(udp->source);
	*dport = bpf_ntohs(udp->dest);
	return 0;
}

#endif
