// SPDX-License-Identifier: GPL-2.0
/* UDP receives, attributed to the process that reads the datagrams.
 *
 * Measured on 6.18: udp_recvmsg copies a linear datagram without any
 * tracepoint and frees it without consume_skb, and cgroup/recvmsg4|6 run only
 * when the caller asks for the address. So the sender is taken where every
 * datagram passes with its socket: cgroup_skb/ingress (softirq) remembers, per
 * socket, the senders not yet reported (socket-local storage); then
 * sock/sock_recv_length, which fires in the reading task for every receive
 * call (recv, recvfrom, recvmsg, recvmmsg, read; also io_uring), reports them
 * with that task. No address from the caller is needed, and a receiver never
 * sees 0.0.0.0:0. */
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

#define PEER_SLOTS 8
#define PEER_RECHECK_NS NS_PER_SEC

struct peer {
	__u8 remote_addr[16];
	__u8 local_addr[16];
	__u16 remote_port;
	__u16 local_port;
	__u32 pad;
	__u64 marked_ns; /* when it was last marked fresh (coarse clock) */
};

struct recent_peers {
	__u64 fresh; /* bit i: slot i has a sender the reader has not reported */
	__u32 next;  /* slot to reuse next */
	__u32 pad;
	struct peer slot[PEER_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct recent_peers);
} udp_peers SEC(".maps");

static __always_inline int same_addr(const __u8 *a, const __u8 *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return x[0] == y[0] && x[1] == y[1];
}

static __always_inline int same_peer(struct peer *a, struct peer *b)
{
	return a->remote_port == b->remote_port && a->local_port == b->local_port &&
	       same_addr(a->remote_addr, b->remote_addr) && same_addr(a->local_addr, b->local_addr);
}

SEC("cgroup_skb/ingress")
int udp_ingress(struct __sk_buff *skb)
{
	HOOK_FLOOR_RETURN(1);
	struct bpf_sock *sk = ip_sock_of(skb);
	if (!sk)
		return 1;
	struct peer p = {};
	/* Only UDP datagrams; the storage lookup checks that the socket is full. */
	enum skb_udp what = skb_udp_endpoints(skb, p.remote_addr, &p.remote_port, p.local_addr, &p.local_port);
	if (what != SKB_UDP) {
		if (dns_capture_on && what == SKB_TCP && skb_tcp_port(skb, 0) == DNS_PORT)
			dns_report(skb, 0);
		return 1;
	}
	if (dns_capture_on && p.remote_port == DNS_PORT)
		dns_report(skb, 0);
	struct recent_peers *rp = bpf_sk_storage_get(&udp_peers, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!rp)
		return 1;
	/* The coarse clock: a memory read, enough for a once-a-second recheck. */
	__u64 now = bpf_ktime_get_coarse_ns();
	for (int i = 0; i < PEER_SLOTS; i++) {
		struct peer *s = &rp->slot[i];
		if (!same_peer(s, &p))
			continue;
		/* Known sender: ask the reader to check it again now and then, so a
		 * flow idle past the window is reported again. */
		if (now - s->marked_ns > PEER_RECHECK_NS) {
			s->marked_ns = now;
			__sync_fetch_and_or(&rp->fresh, 1ull << i);
		}
		return 1;
	}
	__u32 i = rp->next % PEER_SLOTS;
	rp->next = i + 1;
	p.marked_ns = now;
	rp->slot[i] = p;
	__sync_fetch_and_or(&rp->fresh, 1ull << i);
	return 1; /* observe only: always allow */
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(udp_recv_done, struct sock *sk, int ret, int flags)
{
	HOOK_FLOOR_RETURN(0);
	if (ret < 0 || sk->sk_protocol != IPPROTO_UDP)
		return 0;
	struct recent_peers *rp = bpf_sk_storage_get(&udp_peers, sk, 0, 0);
	if (rp && !rp->fresh)
		return 0; /* the common case: no new sender since the last receive */
	struct udp_flow_key key = {};
	sock_endpoints_key(sk, &key);
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	key.outbound = 0;
	if (!rp) {
		/* Nothing came through ingress (e.g. the socket predates the
		 * sensor's hook): a connected socket still names its peer. */
		if (key.remote_port)
			report_udp_flow(&key, UDP_SEEN_RECV);
		else
			udp_count(UDP_PEER_UNKNOWN);
		return 0;
	}
	__u64 fresh = __sync_fetch_and_and(&rp->fresh, 0);
	if (!fresh)
		return 0;
	for (int i = 0; i < PEER_SLOTS; i++) {
		if (!(fresh & (1ull << i)))
			continue;
		struct peer *s = &rp->slot[i];
		__builtin_memcpy(key.remote_addr, s->remote_addr, 16);
		__builtin_memcpy(key.local_addr, s->local_addr, 16);
		key.remote_port = s->remote_port;
		key.local_port = s->local_port;
		report_udp_flow(&key, UDP_SEEN_RECV);
	}
	return 0;
}
