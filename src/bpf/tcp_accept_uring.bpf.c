// SPDX-License-Identifier: GPL-2.0
/* Who accepted an inbound TCP connection through io_uring.
 *
 * io_uring accepts make no syscall. A request's opcode is known when it is
 * submitted; a single-shot completion carries the request, but a multishot
 * accept posts its connections as auxiliary CQEs that carry only the
 * request's user_data. So accept requests are remembered by (ring,
 * user_data) from submission to their last completion. CQEs are posted in a
 * thread of the ring's owner (inline, task_work, io-wq worker or SQPOLL
 * thread), which shares the fd table that got the new socket. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "accept_fact.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define IORING_CQE_F_MORE (1U << 1)

struct uring_request {
	__u64 ring;
	__u64 user_data;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct uring_request);
	__type(value, __u32); /* file_slot: nonzero for a direct descriptor (no fd) */
} uring_accepts SEC(".maps");

static __always_inline __u32 accept_file_slot(struct io_kiocb *req)
{
	return bpf_core_cast(&req->cmd, struct io_accept)->file_slot;
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(uring_submit, struct io_kiocb *req)
{
	if (req->opcode != bpf_core_enum_value(enum io_uring_op, IORING_OP_ACCEPT))
		return 0;
	struct uring_request key = { .ring = (__u64)req->ctx, .user_data = req->cqe.user_data };
	__u32 slot = accept_file_slot(req);
	bpf_map_update_elem(&uring_accepts, &key, &slot, BPF_ANY);
	return 0;
}

SEC("tp_btf/io_uring_complete")
int BPF_PROG(uring_complete, struct io_ring_ctx *ring, void *request, struct io_uring_cqe *cqe)
{
	struct uring_request key = { .ring = (__u64)ring, .user_data = cqe->user_data };
	__u32 slot;
	if (request) {
		struct io_kiocb *req = bpf_core_cast(request, struct io_kiocb);
		if (req->opcode != bpf_core_enum_value(enum io_uring_op, IORING_OP_ACCEPT))
			return 0;
		slot = accept_file_slot(req);
		bpf_map_delete_elem(&uring_accepts, &key); /* its last completion */
	} else {
		__u32 *known = bpf_map_lookup_elem(&uring_accepts, &key);
		if (!known)
			return 0; /* not an accept */
		slot = *known;
		if (!(cqe->flags & IORING_CQE_F_MORE))
			bpf_map_delete_elem(&uring_accepts, &key);
	}
	/* A direct descriptor lives in the ring's file table, not the fd table:
	 * not resolved (the connection ages off as never accepted, counted). */
	if (cqe->res < 0 || slot)
		return 0;
	struct sock *sk = sock_of_fd(cqe->res);
	return sk ? report_accept(sk, cqe->res, 0) : 0;
}
