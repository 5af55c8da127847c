// SPDX-License-Identifier: GPL-2.0
/* Who accepted an inbound TCP connection.
 *
 * At accept()/accept4() exit, in the accepting task, resolve the returned fd
 * to its struct sock (task -> files -> fdtable -> file -> socket -> sock):
 * the fact names the task, the socket and its endpoints, and reports the
 * connection (its handshake wrote no fact). The caller's sockaddr is not
 * needed, so accept(fd, NULL, NULL) is covered the same way. An fd that
 * cannot be resolved (closed by another thread before accept returned) is
 * counted. Exit probes only: the tracepoints of syscall entry would cost
 * every accept a map update. io_uring accepts (no syscall):
 * tcp_accept_uring.bpf.c. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "accept_fact.bpf.h"
#include "hook_floor.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by userspace to exercise the unresolved path in tests. */
const volatile bool pretend_unresolved = false;

static __always_inline int on_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = BPF_CORE_READ(ctx, ret);
	if (ret < 0)
		return 0;
	struct sock *sk = pretend_unresolved ? NULL : sock_of_fd((int)ret);
	if (!sk) {
		count_one(&accepts_unresolved);
		return 0;
	}
	return report_accept(sk, ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	HOOK_FLOOR_RETURN(0);
	return on_accept_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	HOOK_FLOOR_RETURN(0);
	return on_accept_exit(ctx);
}

#define PF_KTHREAD 0x00200000

/* Where the kernel allows fexit (most distribution kernels; not under
 * lockdown): inet_csk_accept's return, in the accepting task, for every
 * accept (syscalls and io_uring alike) and without putting every syscall of
 * the host on the slow path as the syscall tracepoints do. No fd is known
 * (-1). Accepts by kernel threads (in-kernel servers) are no process's. */
static __always_inline int accepted(struct sock *sk)
{
	if (!sk)
		return 0;
	if (pretend_unresolved) {
		/* The testing aid: the lost-accept path, as the syscall probes have it. */
		count_one(&accepts_unresolved);
		return 0;
	}
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, flags) & PF_KTHREAD)
		return 0;
	return report_accept_btf(sk, sk, -1);
}

/* Its arguments changed in 6.10 (struct proto_accept_arg); userspace loads
 * the form the kernel has (one program each: the verifier refuses a context
 * offset chosen at run time). */
SEC("fexit/inet_csk_accept")
int BPF_PROG(accept_fexit, struct sock *listener, int flags, int *err, bool kern, struct sock *sk)
{
	HOOK_FLOOR_RETURN(0);
	return accepted(sk);
}

SEC("fexit/inet_csk_accept")
int BPF_PROG(accept_arg_fexit, struct sock *listener, struct proto_accept_arg *arg, struct sock *sk)
{
	HOOK_FLOOR_RETURN(0);
	return accepted(sk);
}
