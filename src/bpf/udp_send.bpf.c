// SPDX-License-Identifier: GPL-2.0
/* UDP sends, in the sending process's context, in every network namespace,
 * for every way to send (send, sendto, sendmsg, sendmmsg, write; io_uring).
 *
 * sock/sock_send_length fires in the sender after each datagram is sent, with
 * the socket. The datagram's addresses come from the wire: cgroup_skb/egress
 * (which runs synchronously inside that send, before the neighbour layer)
 * leaves the last datagram's addresses in socket-local storage, including
 * the source address the route chose for an unbound socket. If egress did
 * not run for it (the packet was dropped on the way), the destination comes
 * from cgroup/sendmsg4|6 (unconnected sends) or the socket (connected). A
 * corked datagram may leave in setsockopt(UDP_CORK, 0), with no
 * sock_send_length: egress reports it itself (send_state.corked). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "facts.h"
#include "ringbuf.bpf.h"
#include "sock_endpoints.bpf.h"
#include "udp_flows.bpf.h"
#include "skb_udp.bpf.h"
#include "hook_floor.bpf.h"
#include "dns_capture.bpf.h"

char LICENSE[] SEC("license") = "GPL";

struct datagram {
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u16 local_port;
	__u16 remote_port;
	__u32 pending; /* set when filled, cleared when used */
};

/* Per socket: what the current send call is doing, and the flow it last
 * reported, so a socket that keeps sending on one flow costs a compare per
 * datagram instead of a hash lookup (rechecked against the table each second).
 * Times are bpf_ktime_get_coarse_ns(), a memory read instead of a clock-source
 * read; only cgroup programs may call it, so egress does the timing. */
struct send_state {
	struct datagram wire; /* from cgroup_skb/egress */
	struct datagram dest; /* from cgroup/sendmsg4|6 */
	__u64 wire_ns;	     /* when egress filled `wire` */
	__u32 wire_unparsed; /* egress saw a packet of this socket that is not UDP (IPsec) */
	/* A send left data corked (MSG_MORE, UDP_CORK): the datagram leaves
	 * later, possibly in setsockopt(UDP_CORK, 0), where sock_send_length
	 * does not fire, so egress reports it. */
	__u32 corked;
	__u32 netns; /* the socket's, for egress's report */
	__u32 pad;
	struct udp_flow_key last;
	__u64 last_ns; /* when `last` was confirmed */
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct send_state);
} udp_send_state SEC(".maps");

static __always_inline int same_endpoints(const struct datagram *w, const struct udp_flow_key *l)
{
	const __u64 *wl = (const __u64 *)w->local_addr, *wr = (const __u64 *)w->remote_addr;
	const __u64 *ll = (const __u64 *)l->local_addr, *lr = (const __u64 *)l->remote_addr;
	return w->remote_port == l->remote_port && w->local_port == l->local_port && wr[0] == lr[0] &&
	       wr[1] == lr[1] && wl[0] == ll[0] && wl[1] == ll[1];
}

/* A datagram's endpoints into a flow key. */
static __always_inline void datagram_key(const struct datagram *d, struct udp_flow_key *key)
{
	__builtin_memcpy(key->local_addr, d->local_addr, 16);
	__builtin_memcpy(key->remote_addr, d->remote_addr, 16);
	key->local_port = d->local_port;
	key->remote_port = d->remote_port;
}

SEC("cgroup_skb/egress")
int udp_egress(struct __sk_buff *skb)
{
	HOOK_FLOOR_RETURN(1);
	struct bpf_sock *sk = ip_sock_of(skb);
	if (!sk)
		return 1;
	struct datagram w = {};
	enum skb_udp what = skb_udp_endpoints(skb, w.local_addr, &w.local_port, w.remote_addr, &w.remote_port);
	if (what == SKB_TCP) {
		if (dns_capture_on && skb_tcp_port(skb, 1) == DNS_PORT)
			dns_report(skb, 1);
		return 1;
	}
	if (what == SKB_OTHER) {
		/* A UDP socket's datagram that left transformed (IPsec) or with
		 * headers not followed: send_done takes its destination elsewhere. */
		sk = udp_sock_of(sk);
		struct send_state *st = sk ? bpf_sk_storage_get(&udp_send_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE) : 0;
		if (st)
			st->wire_unparsed = 1;
		return 1;
	}
	if (dns_capture_on && w.remote_port == DNS_PORT)
		dns_report(skb, 1);
	/* A UDP datagram; the storage lookup checks that the socket is full. */
	struct send_state *st = bpf_sk_storage_get(&udp_send_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 1;
	struct datagram *d = &st->wire;
	w.pending = 1;
	*d = w;
	st->wire_ns = bpf_ktime_get_coarse_ns();
	if (st->corked) {
		/* The corked datagram leaves, in the task that uncorked it. A
		 * send_length that follows (a final send) finds it reported. */
		st->corked = 0;
		struct udp_flow_key key = { .netns = st->netns, .tgid = bpf_get_current_pid_tgid() >> 32, .outbound = 1 };
		datagram_key(d, &key);
		if (report_udp_flow(&key, UDP_SEEN_SEND)) {
			st->last = key;
			st->last_ns = st->wire_ns;
		}
	}
	return 1; /* observe only: always allow */
}

static __always_inline int remember_dest(struct bpf_sock_addr *ctx, int v6)
{
	if (ctx->protocol != IPPROTO_UDP || !ctx->sk)
		return 1;
	struct send_state *st = bpf_sk_storage_get(&udp_send_state, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 1;
	struct datagram *d = &st->dest;
	if (v6) {
		__u32 *r = (__u32 *)d->remote_addr;
		r[0] = ctx->user_ip6[0];
		r[1] = ctx->user_ip6[1];
		r[2] = ctx->user_ip6[2];
		r[3] = ctx->user_ip6[3];
	} else {
		ipv4_mapped(d->remote_addr, ctx->user_ip4);
	}
	d->remote_port = bpf_ntohs((__u16)ctx->user_port);
	d->pending = 1;
	return 1;
}

SEC("cgroup/sendmsg4")
int udp_sendmsg4(struct bpf_sock_addr *ctx)
{
	HOOK_FLOOR_RETURN(1);
	return remember_dest(ctx, 0);
}

SEC("cgroup/sendmsg6")
int udp_sendmsg6(struct bpf_sock_addr *ctx)
{
	HOOK_FLOOR_RETURN(1);
	return remember_dest(ctx, 1);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(udp_send_done, struct sock *sk, int ret, int flags)
{
	HOOK_FLOOR_RETURN(0);
	if (sk->sk_protocol != IPPROTO_UDP)
		return 0;
	struct send_state *st = bpf_sk_storage_get(&udp_send_state, sk, 0, 0);
	if (ret < 0) {
		if (st) {
			st->wire.pending = 0;
			st->dest.pending = 0;
		}
		return 0;
	}
	if (bpf_core_cast(sk, struct udp_sock)->pending) {
		/* Data left corked: nothing was sent yet (see send_state.corked). */
		struct send_state *cs = st ? st : bpf_sk_storage_get(&udp_send_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!cs) {
			udp_count(UDP_SEND_DEST_UNKNOWN);
			return 0;
		}
		cs->corked = 1;
		cs->netns = sk->__sk_common.skc_net.net->ns.inum;
		return 0;
	}
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	/* The common case first: the socket's last flow again. */
	if (st && st->wire.pending && st->last_ns && st->wire_ns - st->last_ns < NS_PER_SEC &&
	    st->last.tgid == tgid && same_endpoints(&st->wire, &st->last)) {
		st->wire.pending = 0;
		st->dest.pending = 0;
		udp_count(UDP_SUPPRESSED);
		return 0;
	}
	struct udp_flow_key key = {};
	sock_endpoints_key(sk, &key);
	key.tgid = tgid;
	key.outbound = 1;
	__u64 seen_ns = 0; /* 0: not timed, so the next datagram checks again */
	if (st && st->wire.pending) {
		datagram_key(&st->wire, &key);
		seen_ns = st->wire_ns;
	} else if (st && st->dest.pending) {
		__builtin_memcpy(key.remote_addr, st->dest.remote_addr, 16);
		key.remote_port = st->dest.remote_port;
	} else if (!key.remote_port) {
		/* Nothing reached egress (dropped before it, or the socket has no
		 * storage: the kernel could not allocate it), or it left
		 * transformed and no sendmsg hook named its destination: counted,
		 * not silent. */
		if (!st) {
			udp_count(UDP_SEND_DEST_UNKNOWN);
		} else if (st->wire_unparsed) {
			st->wire_unparsed = 0;
			udp_count(UDP_SEND_DEST_UNKNOWN);
		}
		return 0;
	}
	if (!st) {
		report_udp_flow(&key, UDP_SEEN_SEND);
		return 0;
	}
	st->wire_unparsed = 0;
	st->wire.pending = 0;
	st->dest.pending = 0;
	if (report_udp_flow(&key, UDP_SEEN_SEND)) {
		st->last = key;
		st->last_ns = seen_ns;
	}
	return 0;
}
