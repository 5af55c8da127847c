/* Connections whose close is reported (event 253): a mark in socket-local
 * storage, set when the connection is established (outbound, and inbound
 * while it waits in the accept queue) and taken at its CLOSE, which then
 * writes the kernel's own counters. Only marked sockets cost a fact at
 * close; the storage goes with the socket, so nothing leaks. tcp_state and
 * tcp_stop (the iterator run when the sensor stops) share the map. */
#ifndef SOCKSCOPE_TCP_REPORTED_H
#define SOCKSCOPE_TCP_REPORTED_H

#include "ringbuf.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} tcp_reported SEC(".maps");

/* A closed fact for `sk` (a BTF pointer): `detail` is the state it left or
 * CLOSED_SENSOR_STOP. */
static __always_inline void write_closed(struct sock *sk, __u32 detail)
{
	struct tcp_sock *tp = bpf_core_cast(sk, struct tcp_sock);
	struct tcp_closed_fact *f = reserve_fact(sizeof(*f), FACT_TCP_CLOSED);
	if (!f)
		return;
	f->hdr.detail = detail;
	f->sk = (__u64)sk;
	f->bytes_acked = tp->bytes_acked;
	f->bytes_received = tp->bytes_received;
	f->total_retrans = tp->total_retrans;
	f->srtt_us = tp->srtt_us >> 3;
	f->err = tp->inet_conn.icsk_inet.sk.sk_err;
	f->pad = 0;
	bpf_ringbuf_submit(f, 0);
}

#endif
