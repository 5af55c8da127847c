// SPDX-License-Identifier: GPL-2.0
/* Who accepted an inbound TCP connection through io_uring.
 *
 * io_uring accepts make no syscall. A request's opcode is known when it is
 * submitted; a single-shot completion carries the request, but a multishot
 * accept posts its connections as auxiliary CQEs that carry only the
 * request's user_data. So accept requests are remembered by (ring,
 * user_data) from submission to their last completion. CQEs are posted in a
 * thread of the ring's owner (inline, task_work, io-wq worker or SQPOLL
 * thread), which shares the fd table that got the new socket; an accept into
 * a direct descriptor put it in the ring's own file table instead. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "accept_fact.bpf.h"
#include "hook_floor.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define IORING_CQE_F_MORE (1U << 1)

struct uring_request {
	__u64 ring;
	__u64 user_data;
};

struct uring_accept {
	__u32 file_slot;     /* nonzero for a direct descriptor (no fd) */
	__u16 listener_port; /* the listening socket's local port; 0: unknown */
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct uring_request);
	__type(value, struct uring_accept);
} uring_accepts SEC(".maps");

#define IORING_FILE_INDEX_ALLOC (~0U)
/* Low bits of io_rsrc_node.file_ptr are flags (FFS_NOWAIT, FFS_ISREG). */
#define FIXED_FILE_FLAGS 3UL

/* The struct sock in slot `index` of the ring's fixed file table, or NULL
 * (also on kernels whose table has another layout: then the connection is
 * counted as never accepted, as before). */
static __always_inline struct sock *sock_of_fixed_file(struct io_ring_ctx *ring, __u32 index)
{
	if (!bpf_core_field_exists(struct io_rsrc_node, file_ptr) ||
	    !bpf_core_field_exists(struct io_file_table, data))
		return NULL;
	if (index >= ring->file_table.data.nr)
		return NULL;
	struct io_rsrc_node **nodes = ring->file_table.data.nodes;
	struct io_rsrc_node *node = NULL;
	if (bpf_probe_read_kernel(&node, sizeof(node), &nodes[index]) || !node)
		return NULL;
	unsigned long file_ptr = bpf_core_cast(node, struct io_rsrc_node)->file_ptr & ~FIXED_FILE_FLAGS;
	if (!file_ptr)
		return NULL;
	struct file *file = bpf_core_cast((void *)file_ptr, struct file);
	struct socket *sock = bpf_core_cast(file->private_data, struct socket);
	/* A socket's file points back at it: guards against a non-socket file. */
	if (!sock || sock->file != file)
		return NULL;
	return sock->sk;
}

static __always_inline __u32 accept_file_slot(struct io_kiocb *req)
{
	return bpf_core_cast(&req->cmd, struct io_accept)->file_slot;
}

/* The listening socket a request names: its fd (in the submitting task,
 * which shares the ring owner's fd table) or its fixed-file slot. The
 * request's file is only attached when it is issued, after this point. */
static __always_inline struct sock *listener_of(struct io_kiocb *req)
{
	if (req->flags & REQ_F_FIXED_FILE)
		return sock_of_fixed_file(req->ctx, (__u32)req->cqe.fd);
	return sock_of_fd(req->cqe.fd);
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(uring_submit, struct io_kiocb *req)
{
	HOOK_FLOOR_RETURN(0);
	if (req->opcode != bpf_core_enum_value(enum io_uring_op, IORING_OP_ACCEPT))
		return 0;
	struct uring_request key = { .ring = (__u64)req->ctx, .user_data = req->cqe.user_data };
	struct uring_accept value = { .file_slot = accept_file_slot(req) };
	struct sock *listener = listener_of(req);
	if (listener)
		value.listener_port = BPF_CORE_READ(listener, __sk_common.skc_num);
	bpf_map_update_elem(&uring_accepts, &key, &value, BPF_ANY);
	return 0;
}

/* Whether `sk` can be a connection accepted from a listener on `port`:
 * another request under the accept's user_data may complete with a number
 * that is the fd of some other socket. */
static __always_inline int accepted_from(struct sock *sk, __u16 port)
{
	struct sock *s = bpf_core_cast(sk, struct sock);
	return !port || (s->__sk_common.skc_num == port && s->__sk_common.skc_state != TCP_LISTEN);
}

/* A socket, named so that a later socket at the same address is another
 * one: its pointer and its inode number (socket inodes are numbered from a
 * counter). */
struct socket_id {
	__u64 sk;
	__u64 ino;
};

/* Sockets this program reported accepted recently: a completion that names
 * one again (another request under the accept's user_data, naming a
 * connection of the same listener) is not a new accept. (Socket-local
 * storage would be the natural place, but the verifier refuses it for a
 * socket found through the fd table: "untrusted_ptr_".) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct socket_id);
	__type(value, __u8);
} uring_accepted SEC(".maps");

/* Reports `sk` accepted as `fd`, once. */
static __always_inline int report_uring_accept(struct sock *sk, long fd)
{
	struct sock *s = bpf_core_cast(sk, struct sock);
	struct socket *sock = bpf_core_cast(s->sk_socket, struct socket);
	struct file *file = bpf_core_cast(sock->file, struct file);
	struct inode *inode = bpf_core_cast(file->f_inode, struct inode);
	struct socket_id id = { .sk = (__u64)sk, .ino = inode->i_ino };
	__u8 one = 1;
	if (bpf_map_update_elem(&uring_accepted, &id, &one, BPF_NOEXIST))
		return 0; /* reported before */
	return report_accept(sk, fd);
}

SEC("tp_btf/io_uring_complete")
int BPF_PROG(uring_complete, struct io_ring_ctx *ring, void *request, struct io_uring_cqe *cqe)
{
	HOOK_FLOOR_RETURN(0);
	struct uring_request key = { .ring = (__u64)ring, .user_data = cqe->user_data };
	__u32 slot;
	__u16 port = 0;
	if (request) {
		struct io_kiocb *req = bpf_core_cast(request, struct io_kiocb);
		if (req->opcode != bpf_core_enum_value(enum io_uring_op, IORING_OP_ACCEPT))
			return 0;
		slot = accept_file_slot(req);
		struct uring_accept *known = bpf_map_lookup_elem(&uring_accepts, &key);
		if (known)
			port = known->listener_port;
		bpf_map_delete_elem(&uring_accepts, &key); /* its last completion */
	} else {
		struct uring_accept *known = bpf_map_lookup_elem(&uring_accepts, &key);
		if (!known)
			return 0; /* not an accept */
		slot = known->file_slot;
		port = known->listener_port;
		if (!(cqe->flags & IORING_CQE_F_MORE))
			bpf_map_delete_elem(&uring_accepts, &key);
	}
	if (cqe->res < 0)
		return 0;
	if (slot) {
		/* A direct descriptor: the socket went into the ring's file table
		 * (no fd). The slot was chosen by the request (file_index, 1-based)
		 * or by the kernel (IORING_FILE_INDEX_ALLOC: the CQE carries it). */
		__u32 index = slot == IORING_FILE_INDEX_ALLOC ? (__u32)cqe->res : slot - 1;
		struct sock *sk = sock_of_fixed_file(ring, index);
		return sk && accepted_from(sk, port) ? report_uring_accept(sk, -1) : 0;
	}
	struct sock *sk = sock_of_fd(cqe->res);
	return sk && accepted_from(sk, port) ? report_uring_accept(sk, cqe->res) : 0;
}
