/* Config exclusions the kernel applies itself (src/filter/kernel.rs decides
 * which are safe): an event whose protocol and port an exclude rule matches
 * never reaches userspace. Userspace fills the map; every object shares it. */
#ifndef SOCKSCOPE_KERNEL_FILTER_H
#define SOCKSCOPE_KERNEL_FILTER_H

struct exclusion_key {
	__u8 protocol; /* 0: any, 6: tcp, 17: udp */
	__u8 side;     /* 0: destination port, 1: source port, 2: every port */
	__u16 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct exclusion_key);
	__type(value, __u8);
} config_exclusions SEC(".maps");

/* How many entries config_exclusions holds. With none (no config, or none
 * the kernel can apply) an event skips the five hash lookups below; an array
 * lookup is inlined to a load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} config_exclusion_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} excluded_in_kernel SEC(".maps");

static __always_inline int exclusion_hit(__u8 protocol, __u8 side, __u16 port)
{
	struct exclusion_key k = { .protocol = protocol, .side = side, .port = port };
	return bpf_map_lookup_elem(&config_exclusions, &k) != NULL;
}

/* Ports in Sysmon's direction: Destination is the remote end when we
 * initiated, the local end otherwise. */
static __always_inline int excluded_by_config(__u8 protocol, __u16 dport, __u16 sport)
{
	__u32 zero = 0;
	__u32 *count = bpf_map_lookup_elem(&config_exclusion_count, &zero);
	if (!count || !*count)
		return 0;
	if (exclusion_hit(protocol, 0, dport) || exclusion_hit(0, 0, dport) || exclusion_hit(protocol, 1, sport) ||
	    exclusion_hit(0, 1, sport) || exclusion_hit(protocol, 2, 0)) {
		__u64 *n = bpf_map_lookup_elem(&excluded_in_kernel, &zero);
		if (n)
			*n += 1;
		return 1;
	}
	return 0;
}

#endif
