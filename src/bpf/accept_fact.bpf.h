/* The accept fact: which task accepted which TCP socket, as fd. Shared by
 * the syscall probes (tcp_accept.bpf.c) and the io_uring ones
 * (tcp_accept_uring.bpf.c). */
#ifndef SOCKSCOPE_ACCEPT_FACT_H
#define SOCKSCOPE_ACCEPT_FACT_H

#include "facts.h"
#include "ringbuf.bpf.h"
#include "sock_endpoints.bpf.h"
#include "kernel_filter.bpf.h"

/* The struct sock behind the current task's `fd` (task -> files -> fdtable
 * -> file -> socket -> sock), or NULL. BTF loads all the way (one helper call,
 * for the fd array, whose element type the verifier does not follow). */
static __always_inline struct sock *sock_of_fd(int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	if (!fdt || (unsigned int)fd >= fdt->max_fds)
		return NULL;
	struct file *file = NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]) || !file)
		return NULL;
	file = bpf_core_cast(file, struct file);
	struct socket *sock = bpf_core_cast(file->private_data, struct socket);
	/* A socket's file points back at it: guards against a non-socket fd. */
	if (!sock || sock->file != file)
		return NULL;
	return sock->sk;
}

/* Accepted sockets the probes could not name (counted, per CPU: the
 * connections are not reported). */
PERCPU_COUNTER(accepts_unresolved);

/* Reports that the current task accepted `sk` as `fd` (-1: no fd); `s` is
 * `sk` as a BTF pointer (a tracing program's argument, or bpf_core_cast()). */
static __always_inline int report_accept_btf(struct sock *s, struct sock *sk, long fd)
{
	__u16 family = s->__sk_common.skc_family;
	if ((family != AF_INET && family != AF_INET6) || s->sk_protocol != IPPROTO_TCP)
		return 0;
	/* Accepted: Destination is our (local) end. */
	if (sock_excluded(IPPROTO_TCP, s, 0))
		return 0;
	struct tcp_accept_fact *f;
	reserve_with_endpoints(f, FACT_TCP_ACCEPT, s);
	if (!f)
		return 0;
	f->hdr.detail = s->__sk_common.skc_state;
	f->sk = (__u64)sk;
	fill_task_ids(&f->task);
	f->fd = (__s32)fd;
	bpf_ringbuf_submit(f, 0);
	return 0;
}

/* The same for a plain pointer (bpf_core_cast: the kfunc bpf_rdonly_cast, 6.2+). */
static __always_inline int report_accept(struct sock *sk, long fd)
{
	return report_accept_btf(bpf_core_cast(sk, struct sock), sk, fd);
}

#endif
