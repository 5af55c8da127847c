// SPDX-License-Identifier: GPL-2.0
/* Who accepted an inbound TCP connection.
 *
 * At accept()/accept4() exit, in the accepting task, resolve the returned fd
 * to its struct sock (task -> files -> fdtable -> file -> socket -> sock), so
 * userspace can match it to the ESTABLISHED fact of the same socket. This also
 * covers accept(fd, NULL, NULL). The caller's sockaddr is read only as the
 * fallback when the socket cannot be resolved. Exit probes only: the
 * tracepoints of syscall entry would cost every accept a map update. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "facts.h"
#include "ringbuf.bpf.h"
#include "sock_endpoints.bpf.h"
#include "kernel_filter.bpf.h"

char LICENSE[] SEC("license") = "GPL";

struct tcp_accept_fact _tcp_accept_fact = {};

/* Set by userspace to exercise the address-match fallback in tests. */
const volatile bool force_address_match = false;

/* The sockaddr pointer the caller gave accept()/accept4() (its second
 * argument), from the user registers the syscall saved on entry: read only
 * for the fallback, so the common path needs no entry probe and no map. */
static __always_inline __u64 accept_sockaddr_ptr(void)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return PT_REGS_PARM2_CORE_SYSCALL(regs);
}

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

static __always_inline int on_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = BPF_CORE_READ(ctx, ret);
	if (ret < 0)
		return 0;

	struct sock *sk = sock_of_fd((int)ret);
	if (sk) {
		__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
		if ((family != AF_INET && family != AF_INET6) ||
		    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
			return 0;
		/* Accepted: Destination is our (local) port. */
		if (excluded_by_config(IPPROTO_TCP, BPF_CORE_READ(sk, __sk_common.skc_num),
				       bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport))))
			return 0;
	}
	if (force_address_match)
		sk = NULL;
	__u64 peer_ptr = sk ? 0 : accept_sockaddr_ptr();
	if (!sk && !peer_ptr)
		return 0; /* nothing userspace could match on */

	struct tcp_accept_fact *f = reserve_fact(sizeof(*f), FACT_TCP_ACCEPT);
	if (!f)
		return 0;
	f->sk = (__u64)sk;
	fill_task_ids(&f->task);
	f->fd = (__s32)ret;
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

SEC("tracepoint/syscalls/sys_exit_accept")
int accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept_exit(ctx);
}
