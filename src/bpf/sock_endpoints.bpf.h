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

/* The ports and namespace of `sk` into `ep`. `sk` must be a BTF pointer (a
 * tp_btf argument, or bpf_core_cast() of one read elsewhere): its fields are
 * then plain loads, not a helper call each. */
static __always_inline void read_ports(const struct sock *sk, struct tcp_endpoints *ep)
{
	const struct sock_common *c = &sk->__sk_common;
	ep->netns = c->skc_net.net->ns.inum;
	ep->local_port = c->skc_num;
	ep->remote_port = bpf_ntohs(c->skc_dport);
	ep->pad = 0;
}

/* An IPv4 socket's endpoints: writes the first 20 bytes of `ep` only. */
static __always_inline void read_endpoints_v4(const struct sock *sk, struct tcp_endpoints *ep)
{
	read_ports(sk, ep);
	ep->family = AF_INET;
	__builtin_memcpy(&ep->addrs[0], &sk->__sk_common.skc_rcv_saddr, 4);
	__builtin_memcpy(&ep->addrs[4], &sk->__sk_common.skc_daddr, 4);
}

static __always_inline void read_endpoints_v6(const struct sock *sk, struct tcp_endpoints *ep)
{
	read_ports(sk, ep);
	ep->family = AF_INET6;
	__builtin_memcpy(&ep->addrs[0], sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
	__builtin_memcpy(&ep->addrs[16], sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
}

/* Into a whole struct (on the stack). */
static __always_inline void read_endpoints(const struct sock *sk, struct tcp_endpoints *ep)
{
	if (sk->__sk_common.skc_family == AF_INET6)
		read_endpoints_v6(sk, ep);
	else
		read_endpoints_v4(sk, ep);
}

/* Reserves a fact (a pointer `f` to a struct ending in `ep`) as long as
 * `sk`'s family needs, and fills its endpoints; f is NULL if the ring is
 * full. The two reservations are apart so that the verifier sees each
 * length with its own writes. */
#define reserve_with_endpoints(f, kind, sk)                                        \
	do {                                                                       \
		if ((sk)->__sk_common.skc_family == AF_INET6) {                    \
			f = reserve_fact(sizeof(*f), kind);                        \
			if (f)                                                     \
				read_endpoints_v6(sk, &f->ep);                     \
		} else {                                                           \
			f = reserve_fact(sizeof(*f) - ENDPOINTS_V4_SPARE, kind);   \
			if (f)                                                     \
				read_endpoints_v4(sk, &f->ep);                     \
		}                                                                  \
	} while (0)

/* `ep`'s two addresses as 16 bytes each (IPv4 as ::ffff:a.b.c.d). */
static __always_inline void endpoint_addrs16(const struct tcp_endpoints *ep, __u8 local[16], __u8 remote[16])
{
	if (ep->family == AF_INET6) {
		__builtin_memcpy(local, &ep->addrs[0], 16);
		__builtin_memcpy(remote, &ep->addrs[16], 16);
	} else {
		ipv4_mapped(local, *(__u32 *)&ep->addrs[0]);
		ipv4_mapped(remote, *(__u32 *)&ep->addrs[4]);
	}
}

#endif
