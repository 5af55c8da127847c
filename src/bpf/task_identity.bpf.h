/* Who a task is beyond its host pid: its pid in its own pid namespace and its
 * cgroup (v2) path, from which userspace derives a container id. */
#ifndef SOCKSCOPE_TASK_IDENTITY_H
#define SOCKSCOPE_TASK_IDENTITY_H

#define CGROUP_MAX_DEPTH 8

/* Kernels before 6.15 name the parent pointer `parent`. */
struct kernfs_node___old {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kernfs_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(kn->__parent))
		return BPF_CORE_READ(kn, __parent);
	return BPF_CORE_READ((struct kernfs_node___old *)kn, parent);
}

/* The thread-group id as the process sees it (innermost pid namespace). */
static __always_inline __u32 ns_tgid(struct task_struct *task)
{
	struct pid *pid = BPF_CORE_READ(task, group_leader, thread_pid);
	if (!pid)
		return 0;
	unsigned int level = BPF_CORE_READ(pid, level);
	struct upid upid = {};
	void *at = (void *)pid + bpf_core_field_offset(struct pid, numbers) +
		   (__u64)(level & 31) * bpf_core_type_size(struct upid);
	if (bpf_probe_read_kernel(&upid, sizeof(upid), at))
		return 0;
	return upid.nr;
}

/* Writes the task's cgroup v2 path leaf first ("docker-1a2b.scope\0system.slice\0"),
 * at most CGROUP_MAX_DEPTH levels. Returns bytes written. */
static __always_inline __u32 write_cgroup_leaf_first(__u8 *buf, struct task_struct *task)
{
	struct kernfs_node *kn = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn);
	__u32 off = 0;
	for (int i = 0; i < CGROUP_MAX_DEPTH && kn; i++) {
		struct kernfs_node *parent = kernfs_parent(kn);
		if (!parent)
			break; /* the root's name is not part of the path */
		if (off >= CGROUP_BUF - CGROUP_NAME_MAX)
			break;
		long n = bpf_probe_read_kernel_str(&buf[off], CGROUP_NAME_MAX, BPF_CORE_READ(kn, name));
		if (n <= 0)
			break;
		off += n;
		kn = parent;
	}
	return off;
}

/* Both, for a fact's proc_identity. */
static __always_inline void fill_identity(struct proc_identity *id, struct task_struct *task)
{
	id->ns_tgid = ns_tgid(task);
	id->cgroup_len = write_cgroup_leaf_first(id->cgroup, task);
}

#endif
