/* The accept fact: which task accepted which TCP socket, as fd. Shared by
 * the syscall probes (tcp_accept.bpf.c) and the io_uring ones
 * (tcp_accept_uring.bpf.c). */
#ifndef SOCKSCOPE_ACCEPT_FACT_H
#define SOCKSCOPE_ACCEPT_FACT_H

#include "facts.h"
#include "ringbuf.bpf.h"
#include "sock_endpoints.bpf.h"
#include "kernel_filter.bpf.h"

struct tcp_accept_fact _tcp_accept_fact = {};

/* The struct sock behind the current task's `fd` (task -> files -> fdtable
 * -> file -> socket -> sock), or NULL. */
static __always_inline struct sock *sock_of_fd(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	/* A socket's file points back at it: guards against a non-socket fd. */
	if (!sock || BPF_CORE_READ(sock, file) != file)
		return NULL;
	return BPF_CORE_READ(sock, sk);
}

static __always_inline void read_peer_sockaddr(struct tcp_accept_fact *f, __u64 uptr)
{
	__u16 family = 0;
	if (!uptr || bpf_probe_read_user(&family, sizeof(family), (void *)uptr))
		return;
	if (family == AF_INET) {
		struct sockaddr_in sin = {};
		if (bpf_probe_read_user(&sin, sizeof(sin), (void *)uptr))
			return;
		f->peer_port = bpf_ntohs(sin.sin_port);
		__builtin_memcpy(f->peer_addr, &sin.sin_addr, 4);
	} else if (family == AF_INET6) {
		struct sockaddr_in6 sin6 = {};
		if (bpf_probe_read_user(&sin6, sizeof(sin6), (void *)uptr))
			return;
		f->peer_port = bpf_ntohs(sin6.sin6_port);
		__builtin_memcpy(f->peer_addr, &sin6.sin6_addr, 16);
	} else {
		return;
	}
	f->peer_family = family;
}

/* Reports that the current task accepted `sk` as `fd`; without a socket,
 * the caller's sockaddr at `peer_ptr` is the fallback. */
static __always_inline int report_accept(struct sock *sk, long fd, __u64 peer_ptr)
{
	if (sk) {
		__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
		if ((family != AF_INET && family != AF_INET6) ||
		    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
			return 0;
		/* Accepted: Destination is our (local) port. */
		if (excluded_by_config(IPPROTO_TCP, BPF_CORE_READ(sk, __sk_common.skc_num),
				       bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport))))
			return 0;
		if (sock_excluded_by_addr(IPPROTO_TCP, bpf_core_cast(sk, struct sock), 0))
			return 0;
	}
	if (!sk && !peer_ptr)
		return 0; /* nothing userspace could match on */

	struct tcp_accept_fact *f = reserve_fact(sizeof(*f), FACT_TCP_ACCEPT);
	if (!f)
		return 0;
	f->sk = (__u64)sk;
	fill_task_ids(&f->task);
	f->fd = (__s32)fd;
	f->peer_family = 0;
	f->peer_port = 0;
	__builtin_memset(f->peer_addr, 0, sizeof(f->peer_addr));
	__builtin_memset(&f->ep, 0, sizeof(f->ep));
	if (sk)
		read_endpoints(bpf_core_cast(sk, struct sock), &f->ep);
	else
		read_peer_sockaddr(f, peer_ptr);
	bpf_ringbuf_submit(f, 0);
	return 0;
}

#endif
