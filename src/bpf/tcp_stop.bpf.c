// SPDX-License-Identifier: GPL-2.0
/* When the sensor stops: every TCP socket of one network namespace (the
 * iterator runs in the namespace of the thread that opens it), and for each
 * marked one (tcp_reported.bpf.h: a reported connection not yet closed) a
 * closed fact with its counters so far (CLOSED_SENSOR_STOP). Loaded only
 * with close events on; a kernel without iter/tcp leaves such connections
 * reported without counters. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "facts.h"
#include "ringbuf.bpf.h"
#include "hook_floor.bpf.h"
#include "tcp_reported.bpf.h"

char LICENSE[] SEC("license") = "GPL";

SEC("iter/tcp")
int tcp_open_at_stop(struct bpf_iter__tcp *ctx)
{
	HOOK_FLOOR_RETURN(0);
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	if (!bpf_sk_storage_get(&tcp_reported, sk, 0, 0))
		return 0;
	write_closed(sk, CLOSED_SENSOR_STOP);
	return 0;
}
