/* One ring buffer per CPU, each program writing to its own CPU's: with one
 * ring for all, two CPUs contended for its lock and producer position at every
 * fact (measured: 3-4 points of tcp_storm's throughput). Userspace creates the
 * rings, puts them in `events`, and merges them by timestamp, so it still sees
 * facts in the order the kernel produced them (an exec before the connect
 * that follows it). Every object declares `events`; userspace makes them
 * share one map (reuse_fd). */
#ifndef SOCKSCOPE_RINGBUF_H
#define SOCKSCOPE_RINGBUF_H

#include "counter.bpf.h"

struct cpu_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* a template: userspace sizes the rings */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1); /* userspace: one per possible CPU */
	__type(key, __u32);
	__array(values, struct cpu_ring);
} events SEC(".maps");

/* The ring of the CPU this runs on, or NULL. */
static __always_inline void *this_cpu_ring(void)
{
	__u32 cpu = bpf_get_smp_processor_id();
	return bpf_map_lookup_elem(&events, &cpu);
}

/* Reservation failures, per CPU, so loss is never silent. */
PERCPU_COUNTER(ringbuf_drops);

static __always_inline void count_drop(void)
{
	count_one(&ringbuf_drops);
}

/* A fact stamped `ts_boot_ns` (for a caller that already read the clock). */
static __always_inline void *reserve_fact_at(__u64 size, __u32 kind, __u64 ts_boot_ns)
{
	void *ring = this_cpu_ring();
	struct fact_header *h = ring ? bpf_ringbuf_reserve(ring, size, 0) : NULL;
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
