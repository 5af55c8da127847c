// SPDX-License-Identifier: GPL-2.0
/* Who accepted an inbound TCP connection.
 *
 * At accept()/accept4() exit, in the accepting task, resolve the returned fd
 * to its struct sock (task -> files -> fdtable -> file -> socket -> sock), so
 * userspace can match it to the ESTABLISHED fact of the same socket. This also
 * covers accept(fd, NULL, NULL). The caller's sockaddr is read only as the
 * fallback when the socket cannot be resolved. Exit probes only: the
 * tracepoints of syscall entry would cost every accept a map update.
 * io_uring accepts (no syscall): tcp_accept_uring.bpf.c. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "accept_fact.bpf.h"

char LICENSE[] SEC("license") = "GPL";

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

static __always_inline int on_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = BPF_CORE_READ(ctx, ret);
	if (ret < 0)
		return 0;
	struct sock *sk = force_address_match ? NULL : sock_of_fd((int)ret);
	return report_accept(sk, ret, sk ? 0 : accept_sockaddr_ptr());
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
