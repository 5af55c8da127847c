// SPDX-License-Identifier: GPL-2.0
/* TCP handshake facts from sock/inet_sock_set_state.
 *
 * CLOSE->SYN_SENT runs in the connecting task: report who, keyed by socket.
 * SYN_SENT->ESTABLISHED (any context, often pid 0): report the socket and its
 * endpoints, never the current task.
 * SYN_RECV->ESTABLISHED: only counted. The accept fact (tcp_accept*.bpf.c)
 * names the socket, its endpoints and the task, and is the report; the
 * exceptions below still get a fact.
 * SYN_SENT/SYN_RECV->CLOSE: the handshake failed; the socket's endpoints, its
 * error and SYN retransmissions say how (event 252).
 * ESTABLISHED (either way) marks the socket (tcp_reported.bpf.h) when close
 * events are on; its CLOSE then writes its counters (event 253). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "facts.h"
#include "ringbuf.bpf.h"
#include "sock_endpoints.bpf.h"
#include "kernel_filter.bpf.h"
#include "hook_floor.bpf.h"
#include "tcp_reported.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Inbound handshakes that ended ESTABLISHED, per CPU (for the stats: an
 * accepted one is reported by its accept). */
PERCPU_COUNTER(tcp_inbound_handshakes);

/* Close facts for established connections (--lifecycle closed|both). */
const volatile bool lifecycle_closed = false;

static __always_inline void mark_reported(const struct sock *sk)
{
	if (lifecycle_closed)
		bpf_sk_storage_get(&tcp_reported, (struct sock *)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
}

static __always_inline int on_connect(const struct sock *sk)
{
	/* Both addresses are set before SYN_SENT (the local port may not be). */
	if (sock_excluded(IPPROTO_TCP, sk, 1))
		return 0;
	struct tcp_connect_fact *f = reserve_fact(sizeof(*f), FACT_TCP_CONNECT);
	if (!f)
		return 0;
	f->sk = (__u64)sk;
	fill_task_ids(&f->task);
	bpf_ringbuf_submit(f, 0);
	return 0;
}

static __always_inline int on_established(const struct sock *sk, int oldstate)
{
	int outbound = oldstate == TCP_SYN_SENT;
	if (outbound) {
		if (sock_excluded(IPPROTO_TCP, sk, 1))
			return 0;
	} else if (!BPF_CORE_READ(sk, sk_socket)) {
		/* In the accept queue: its accept reports it. Marked unless the
		 * kernel's exclusions drop its accept (checked uncounted: the
		 * accept counts it). */
		count_one(&tcp_inbound_handshakes);
		if (lifecycle_closed && !sock_excluded_counted(IPPROTO_TCP, sk, 0, 0))
			mark_reported(sk);
		return 0;
	}
	/* Else from SYN_RECV with its struct socket already: a simultaneous open
	 * (outbound) or a Fast Open child accepted before its handshake ended
	 * (inbound). Userspace tells them apart (it saw the connect), so the
	 * kernel applies no exclusion to it. */
	struct tcp_established_fact *f;
	reserve_with_endpoints(f, FACT_TCP_ESTABLISHED, sk);
	if (!f)
		return 0;
	f->sk = (__u64)sk;
	f->hdr.detail = outbound;
	bpf_ringbuf_submit(f, 0);
	mark_reported(sk);
	return 0;
}

static __always_inline int on_aborted(const struct sock *sk, int oldstate)
{
	struct tcp_aborted_fact *f;
	reserve_with_endpoints(f, FACT_TCP_ABORTED, sk);
	if (!f)
		return 0;
	f->sk = (__u64)sk;
	/* At CLOSE the kernel has given the local port back (inet_num is 0
	 * for a port it chose); inet_sport keeps it. */
	if (!f->ep.local_port)
		f->ep.local_port = bpf_ntohs(bpf_core_cast(sk, struct inet_sock)->inet_sport);
	f->oldstate = oldstate;
	f->err = sk->sk_err;
	f->syn_retrans = bpf_core_cast(sk, struct tcp_sock)->total_retrans;
	f->pad = 0;
	bpf_ringbuf_submit(f, 0);
	return 0;
}

/* A connection ends (from any state past the handshake): its counters, if
 * it was marked. The mark goes: a socket reused by a new connect() starts
 * unmarked. */
static __always_inline int on_closed(const struct sock *sk, int oldstate)
{
	struct sock *s = (struct sock *)sk;
	if (!bpf_sk_storage_get(&tcp_reported, s, 0, 0))
		return 0;
	bpf_sk_storage_delete(&tcp_reported, s);
	write_closed(s, oldstate);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_state_change, const struct sock *sk, const int oldstate, const int newstate)
{
	HOOK_FLOOR_RETURN(0);
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT)
		return on_connect(sk);
	if (newstate == TCP_ESTABLISHED && (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV))
		return on_established(sk, oldstate);
	if (newstate == TCP_CLOSE && (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV))
		return on_aborted(sk, oldstate);
	if (newstate == TCP_CLOSE && lifecycle_closed)
		return on_closed(sk, oldstate);
	return 0;
}
