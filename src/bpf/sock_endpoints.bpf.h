/* Reads the two endpoints of a socket from struct sock_common (CO-RE field
 * offsets: vmlinux.h marks every type preserve_access_index). */
#ifndef SOCKSCOPE_SOCK_ENDPOINTS_H
#define SOCKSCOPE_SOCK_ENDPOINTS_H

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

/* IPv4 as an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
static __always_inline void ipv4_mapped(__u8 out[16], __u32 addr_be)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(&out[12], &addr_be, 4);
}

/* `sk` must be a BTF pointer (a tp_btf argument, or bpf_core_cast() of one
 * read elsewhere): its fields are then plain loads, not a helper call each. */
static __always_inline void read_endpoints(const struct sock *sk, struct tcp_endpoints *ep)
{
	const struct sock_common *c = &sk->__sk_common;
	ep->family = c->skc_family;
	ep->netns = c->skc_net.net->ns.inum;
	ep->local_port = c->skc_num;
	ep->remote_port = bpf_ntohs(c->skc_dport);
	if (ep->family == AF_INET6) {
		__builtin_memcpy(ep->local_addr, c->skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(ep->remote_addr, c->skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		__builtin_memcpy(ep->local_addr, &c->skc_rcv_saddr, 4);
		__builtin_memcpy(ep->remote_addr, &c->skc_daddr, 4);
	}
}

/* `ep`'s two addresses as 16 bytes each (IPv4 as ::ffff:a.b.c.d). */
static __always_inline void endpoint_addrs16(const struct tcp_endpoints *ep, __u8 local[16], __u8 remote[16])
{
	if (ep->family == AF_INET6) {
		__builtin_memcpy(local, ep->local_addr, 16);
		__builtin_memcpy(remote, ep->remote_addr, 16);
	} else {
		ipv4_mapped(local, *(__u32 *)ep->local_addr);
		ipv4_mapped(remote, *(__u32 *)ep->remote_addr);
	}
}

#endif
