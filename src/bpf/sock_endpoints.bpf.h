/* Reads the two endpoints of a socket from struct sock_common (CO-RE). */
#ifndef SOCKSCOPE_SOCK_ENDPOINTS_H
#define SOCKSCOPE_SOCK_ENDPOINTS_H

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

static __always_inline void read_endpoints(const struct sock *sk, struct tcp_endpoints *ep)
{
	ep->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	ep->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	ep->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	ep->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (ep->family == AF_INET6) {
		BPF_CORE_READ_INTO(&ep->local_addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&ep->remote_addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)ep->local_addr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)ep->remote_addr, sk, __sk_common.skc_daddr);
	}
}

#endif
