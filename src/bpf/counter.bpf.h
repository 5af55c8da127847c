/* Per-CPU counters of things that happened in the kernel (drops, shed or
 * unresolved facts, handshakes): a one-entry PERCPU_ARRAY of __u64 each,
 * declared where it is counted; userspace sums the CPUs. */
#ifndef SOCKSCOPE_COUNTER_H
#define SOCKSCOPE_COUNTER_H

#define PERCPU_COUNTER(name)                                                                                  \
	struct {                                                                                              \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                                                      \
		__uint(max_entries, 1);                                                                       \
		__type(key, __u32);                                                                           \
		__type(value, __u64);                                                                         \
	} name SEC(".maps")

static __always_inline void count_one(void *counter)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(counter, &zero);
	if (n)
		*n += 1;
}

#endif
