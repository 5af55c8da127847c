// SPDX-License-Identifier: GPL-2.0
/* Process lifecycle facts for the userspace process table: exec (with the full
 * executable path and argv, captured while the process exists), fork (new
 * processes only, not threads), exit (last thread of the group) and moves to
 * another cgroup (a process put into a container's cgroup after its exec). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "facts.h"
#include "ringbuf.bpf.h"
#include "task_identity.bpf.h"
#include "hook_floor.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define PATH_MAX_DEPTH 48

/* Upper bound of argv bytes captured; userspace may lower it (a setting). */
const volatile __u32 args_limit = EXEC_ARGS_BUF;

/* proc_exec_fact is too big for the BPF stack: build it here, then copy
 * exactly the used bytes into the ring buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct proc_exec_fact);
} exec_scratch SEC(".maps");

/* Walks dentries up to the root of the process's mount tree, crossing mount
 * points, writing each name leaf first into f->data. Returns bytes written. */
static __always_inline __u32 write_path_leaf_first(struct proc_exec_fact *f, struct file *file)
{
	struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
	struct vfsmount *vfsmnt = BPF_CORE_READ(file, f_path.mnt);
	struct mount *mnt = container_of(vfsmnt, struct mount, mnt);
	__u32 off = 0;

	for (int i = 0; i < PATH_MAX_DEPTH; i++) {
		struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
		struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
		if (dentry == mnt_root || dentry == parent) {
			struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
			if (dentry != mnt_root || mnt == mnt_parent)
				return off; /* the root of this mount tree */
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			vfsmnt = &mnt->mnt;
			continue;
		}
		if (off >= EXEC_PATH_BUF)
			break;
		const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
		long n = bpf_probe_read_kernel_str(&f->data[off], EXEC_NAME_MAX, name);
		if (n <= 0)
			break;
		off += n;
		dentry = parent;
	}
	f->flags |= EXEC_PATH_TRUNCATED;
	return off;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	HOOK_FLOOR_RETURN(0);
	__u32 zero = 0;
	struct proc_exec_fact *f = bpf_map_lookup_elem(&exec_scratch, &zero);
	if (!f)
		return 0;

	f->hdr.kind = FACT_PROC_EXEC;
	f->hdr.detail = 0;
	f->hdr.ts_boot_ns = bpf_ktime_get_boot_ns();
	fill_task_ids(&f->task);
	f->ppid = BPF_CORE_READ(p, real_parent, tgid);
	f->start_boot_ns = BPF_CORE_READ(p, group_leader, start_boottime);
	f->flags = 0;
	fill_identity(&f->id, p);

	__u32 path_len = write_path_leaf_first(f, BPF_CORE_READ(bprm, file));
	if (path_len > EXEC_PATH_BUF + EXEC_NAME_MAX)
		return 0;
	f->path_len = path_len;

	/* argv is in the new process image's memory right after exec. */
	unsigned long arg_start = BPF_CORE_READ(p, mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(p, mm, arg_end);
	__u32 args_len = 0;
	if (arg_end > arg_start) {
		__u64 want = arg_end - arg_start;
		__u32 limit = args_limit < EXEC_ARGS_BUF ? args_limit : EXEC_ARGS_BUF;
		if (want > limit) {
			want = limit;
			f->flags |= EXEC_ARGS_TRUNCATED;
		}
		args_len = want;
		if (args_len > EXEC_ARGS_BUF)
			return 0;
		/* The mask changes nothing (path_len <= EXEC_PATH_BUF + EXEC_NAME_MAX)
		 * but lets the verifier bound the offset. */
		__u32 at = path_len;
		barrier_var(at); /* keep clang from dropping the mask */
		at &= EXEC_PATH_AREA - 1;
		if (args_len && bpf_probe_read_user(&f->data[at], args_len, (void *)arg_start))
			args_len = 0;
	}
	f->args_len = args_len;

	barrier_var(path_len);
	path_len &= EXEC_PATH_AREA - 1;
	barrier_var(args_len);
	args_len &= 2 * EXEC_ARGS_BUF - 1;
	__u64 size = offsetof(struct proc_exec_fact, data) + path_len + args_len;
	if (size > sizeof(*f))
		return 0;
	if (bpf_ringbuf_output(&events, f, size, 0))
		count_drop();
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(process_fork, struct task_struct *parent, struct task_struct *child)
{
	HOOK_FLOOR_RETURN(0);
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0; /* a new thread, not a new process */
	struct proc_fork_fact *f = reserve_fact(sizeof(*f), FACT_PROC_FORK);
	if (!f)
		return 0;
	f->parent_tgid = BPF_CORE_READ(parent, tgid);
	f->child_tgid = BPF_CORE_READ(child, tgid);
	f->start_boot_ns = BPF_CORE_READ(child, start_boottime);
	f->uid = (__u32)bpf_get_current_uid_gid();
	f->pad = 0;
	fill_identity(&f->id, child);
	bpf_ringbuf_submit(f, 0);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(process_exit, struct task_struct *p)
{
	HOOK_FLOOR_RETURN(0);
	/* do_exit() has already dropped this thread from signal->live. */
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	struct proc_exit_fact *f = reserve_fact(sizeof(*f), FACT_PROC_EXIT);
	if (!f)
		return 0;
	f->tgid = BPF_CORE_READ(p, tgid);
	f->pad = 0;
	bpf_ringbuf_submit(f, 0);
	return 0;
}

/* Fires after the move (task->cgroups is the new css_set), once per
 * hierarchy: only the unified (v2) one, hierarchy 0, names the cgroup
 * events use. A lone thread moved (threaded cgroups) leaves its process. */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(process_cgroup, struct cgroup *dst, const char *path, struct task_struct *task, bool threadgroup)
{
	HOOK_FLOOR_RETURN(0);
	if (BPF_CORE_READ(dst, root, hierarchy_id) != 0)
		return 0;
	if (!threadgroup && BPF_CORE_READ(task, pid) != BPF_CORE_READ(task, tgid))
		return 0;
	struct proc_cgroup_fact *f = reserve_fact(sizeof(*f), FACT_PROC_CGROUP);
	if (!f)
		return 0;
	f->tgid = BPF_CORE_READ(task, tgid);
	f->pad = 0;
	fill_identity(&f->id, task);
	bpf_ringbuf_submit(f, 0);
	return 0;
}
