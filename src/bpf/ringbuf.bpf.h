/* The one ring buffer all programs write to, so userspace sees facts in the
 * order the kernel produced them (an exec before the connect that follows it).
 * Every object declares it; userspace makes them share one map (reuse_fd). */
#ifndef SOCKSCOPE_RINGBUF_H
#define SOCKSCOPE_RINGBUF_H

#include "counter.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);
} events SEC(".maps");

/* Reservation failures, per CPU, so loss is never silent. */
PERCPU_COUNTER(ringbuf_drops);

static __always_inline void count_drop(void)
{
	count_one(&ringbuf_drops);
}

/* A fact stamped `ts_boot_ns` (for a caller that already read the clock). */
static __always_inline void *reserve_fact_at(__u64 size, __u32 kind, __u64 ts_boot_ns)
{
	struct fact_header *h = bpf_ringbuf_reserve(&events, size, 0);
	if (!h) {
		count_drop();
		return NULL;
	}
	h->kind = kind;
	h->detail = 0;
	h->ts_boot_ns = ts_boot_ns;
	return h;
}

static __always_inline void *reserve_fact(__u64 size, __u32 kind)
{
	return reserve_fact_at(size, kind, bpf_ktime_get_boot_ns());
}

static __always_inline void fill_task_ids(struct task_ids *ids)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	ids->tgid = pid_tgid >> 32;
	ids->tid = (__u32)pid_tgid;
	ids->uid = (__u32)uid_gid;
	ids->gid = uid_gid >> 32;
}

#endif
