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

/* Levels walked to find the root of the mount tree: a path deeper than
 * this loses its beginning (flagged). */
#define PATH_WALK_MAX 512

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

/* A position in a path walk, from the executable up to the root of the
 * process's mount tree. */
struct path_walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
};

static __always_inline void walk_start(struct path_walk *w, struct file *file)
{
	w->dentry = BPF_CORE_READ(file, f_path.dentry);
	w->vfsmnt = BPF_CORE_READ(file, f_path.mnt);
	w->mnt = container_of(w->vfsmnt, struct mount, mnt);
}

/* One step up. Returns 0 at the root, 1 when `w->dentry` is a name to take
 * (the caller then moves to its parent), 2 after crossing a mount point. */
static __always_inline int walk_step(struct path_walk *w)
{
	/* Plain locals: BPF_CORE_READ on w->x would relocate path_walk too. */
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;
	struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	if (dentry == mnt_root || dentry == parent) {
		struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (dentry != mnt_root || mnt == mnt_parent)
			return 0;
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		w->vfsmnt = &mnt_parent->mnt;
		return 2;
	}
	return 1;
}

/* Without bpf_loop: at most PATH_LEAF_DEPTH names from the leaf. */
#define PATH_LEAF_DEPTH 48

static __always_inline __u32 write_path_leaf_end(struct proc_exec_fact *f, struct file *file)
{
	struct path_walk w;
	__u32 off = 0;
	walk_start(&w, file);
	for (int i = 0; i < PATH_LEAF_DEPTH; i++) {
		int step = walk_step(&w);
		if (!step)
			return off;
		if (step == 2)
			continue;
		if (off >= EXEC_PATH_BUF)
			break;
		struct dentry *d = w.dentry;
		const unsigned char *name = BPF_CORE_READ(d, d_name.name);
		long n = bpf_probe_read_kernel_str(&f->data[off], EXEC_NAME_MAX, name);
		if (n <= 0)
			break;
		off += n;
		w.dentry = BPF_CORE_READ(d, d_parent);
	}
	f->flags |= EXEC_PATH_TRUNCATED;
	return off;
}

struct walk_ctx {
	struct path_walk w;
	__u32 total; /* bytes of the whole path (names and their NULs) */
	__u32 over;  /* bytes of names still to leave out, from the leaf */
	__u32 off;   /* bytes written */
	int at_root;
};

/* The walk's state lives in a map, not on the stack: its values are then
 * unknown to the verifier, so each bpf_loop body is checked once, not per
 * level and value. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walk_ctx);
} walk_scratch SEC(".maps");

static long measure_step(__u32 i, void *c)
{
	__u32 zero = 0;
	struct walk_ctx *x = bpf_map_lookup_elem(&walk_scratch, &zero);
	if (!x)
		return 1;
	int step = walk_step(&x->w);
	if (!step) {
		x->at_root = 1;
		return 1;
	}
	if (step == 2)
		return 0;
	struct dentry *d = x->w.dentry;
	__u32 len = BPF_CORE_READ(d, d_name.len);
	x->total += (len < EXEC_NAME_MAX ? len : EXEC_NAME_MAX - 1) + 1;
	x->w.dentry = BPF_CORE_READ(d, d_parent);
	return 0;
}

static long write_step(__u32 i, void *c)
{
	__u32 zero = 0;
	struct walk_ctx *x = bpf_map_lookup_elem(&walk_scratch, &zero);
	struct proc_exec_fact *f = bpf_map_lookup_elem(&exec_scratch, &zero);
	if (!x || !f)
		return 1;
	int step = walk_step(&x->w);
	if (!step) {
		x->at_root = 1;
		return 1;
	}
	if (step == 2)
		return 0;
	struct dentry *d = x->w.dentry;
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	x->w.dentry = BPF_CORE_READ(d, d_parent);
	__u32 off = x->off;
	if (off >= EXEC_PATH_BUF)
		return 1;
	long n = bpf_probe_read_kernel_str(&f->data[off], EXEC_NAME_MAX, name);
	if (n <= 0)
		return 1;
	if (x->over) {
		/* Left out: overwritten by the next name kept. */
		x->over = (__u32)n >= x->over ? 0 : x->over - (__u32)n;
		return 0;
	}
	x->off = off + (__u32)n;
	return 0;
}

/* Writes the path into f->data, names leaf first, NUL separated. A path that
 * does not fit keeps its beginning: a first walk measures it, the second
 * leaves names out from the leaf end until the rest fits (flagged
 * truncated), so `Image` rules on a prefix still hold. A path deeper than
 * PATH_WALK_MAX levels keeps its leaf end (flagged). Returns bytes written. */
static __always_inline __u32 write_path_leaf_first(struct proc_exec_fact *f, struct file *file)
{
	/* Kernels before 5.17 have no bpf_loop: the leaf end, as far as it
	 * fits, flagged when not whole (the branch not taken is dead code the
	 * verifier drops). */
	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_loop))
		return write_path_leaf_end(f, file);
	__u32 zero = 0;
	struct walk_ctx *x = bpf_map_lookup_elem(&walk_scratch, &zero);
	if (!x)
		return 0;
	x->total = 0;
	x->at_root = 0;
	walk_start(&x->w, file);
	bpf_loop(PATH_WALK_MAX, measure_step, NULL, 0);
	int whole = x->at_root && x->total <= EXEC_PATH_BUF;
	x->over = x->at_root && x->total > EXEC_PATH_BUF ? x->total - EXEC_PATH_BUF : 0;
	x->at_root = 0;
	x->off = 0;
	walk_start(&x->w, file);
	bpf_loop(PATH_WALK_MAX, write_step, NULL, 0);
	if (!whole || !x->at_root)
		f->flags |= EXEC_PATH_TRUNCATED;
	return x->off;
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
