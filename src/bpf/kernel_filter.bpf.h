/* Config exclusions the kernel applies itself (src/filter/kernel.rs decides
 * which are safe): an event whose protocol and port an exclude rule matches
 * never reaches userspace. Userspace fills the map; every object shares it. */
#ifndef SOCKSCOPE_KERNEL_FILTER_H
#define SOCKSCOPE_KERNEL_FILTER_H

#include "sock_endpoints.bpf.h"
#include "counter.bpf.h"

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

/* Exclusions on one address: protocol (0: any), side (0: destination, 1:
 * source), the address (IPv4 as ::ffff:a.b.c.d). */
struct addr_exclusion_key {
	__u8 protocol;
	__u8 side;
	__u16 pad;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct addr_exclusion_key);
	__type(value, __u8);
} config_addr_exclusions SEC(".maps");

/* How many entries config_exclusions [0] and config_addr_exclusions [1]
 * hold. With none (no config, or none the kernel can apply) an event skips
 * the hash lookups below; an array lookup is inlined to a load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} config_exclusion_count SEC(".maps");

PERCPU_COUNTER(excluded_in_kernel);

static __always_inline int exclusion_hit(__u8 protocol, __u8 side, __u16 port)
{
	struct exclusion_key k = { .protocol = protocol, .side = side, .port = port };
	return bpf_map_lookup_elem(&config_exclusions, &k) != NULL;
}

/* Ports in Sysmon's direction: Destination is the remote end when we
 * initiated, the local end otherwise. */
static __always_inline int excluded_by_config_counted(__u8 protocol, __u16 dport, __u16 sport, int counted)
{
	__u32 zero = 0;
	__u32 *count = bpf_map_lookup_elem(&config_exclusion_count, &zero);
	if (!count || !*count)
		return 0;
	if (exclusion_hit(protocol, 0, dport) || exclusion_hit(0, 0, dport) || exclusion_hit(protocol, 1, sport) ||
	    exclusion_hit(0, 1, sport) || exclusion_hit(protocol, 2, 0)) {
		if (counted)
			count_one(&excluded_in_kernel);
		return 1;
	}
	return 0;
}

static __always_inline int excluded_by_config(__u8 protocol, __u16 dport, __u16 sport)
{
	return excluded_by_config_counted(protocol, dport, sport, 1);
}

/* Whether any address exclusion is loaded (callers that must first gather
 * the addresses ask before doing so). */
static __always_inline int addr_exclusions_loaded(void)
{
	__u32 one = 1;
	__u32 *count = bpf_map_lookup_elem(&config_exclusion_count, &one);
	return count && *count;
}

static __always_inline int addr_hit(__u8 protocol, __u8 side, const __u8 addr[16])
{
	struct addr_exclusion_key k = { .protocol = protocol, .side = side };
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&config_addr_exclusions, &k) != NULL;
}

/* Addresses in Sysmon's direction (as ports above), 16 bytes each. */
static __always_inline int excluded_by_addr_counted(__u8 protocol, const __u8 daddr[16], const __u8 saddr[16],
						    int count)
{
	if (!addr_exclusions_loaded())
		return 0;
	if (addr_hit(protocol, 0, daddr) || addr_hit(0, 0, daddr) || addr_hit(protocol, 1, saddr) ||
	    addr_hit(0, 1, saddr)) {
		if (count)
			count_one(&excluded_in_kernel);
		return 1;
	}
	return 0;
}

static __always_inline int excluded_by_addr(__u8 protocol, const __u8 daddr[16], const __u8 saddr[16])
{
	return excluded_by_addr_counted(protocol, daddr, saddr, 1);
}

/* A socket's addresses against the address exclusions; `outbound`: we
 * initiated (Destination is the remote end). `sk` is a BTF pointer
 * (read_endpoints); read only when some exclusion is loaded. */
static __always_inline int sock_excluded_by_addr(__u8 protocol, const struct sock *sk, int outbound, int count)
{
	if (!addr_exclusions_loaded())
		return 0;
	struct tcp_endpoints ep = {};
	read_endpoints(sk, &ep);
	__u8 local[16], remote[16];
	endpoint_addrs16(&ep, local, remote);
	return excluded_by_addr_counted(protocol, outbound ? remote : local, outbound ? local : remote, count);
}

/* A socket against every exclusion the kernel applies, ports then
 * addresses; `outbound`: we initiated (Destination is the remote end). */
static __always_inline int sock_excluded_counted(__u8 protocol, const struct sock *sk, int outbound, int count)
{
	__u16 local = BPF_CORE_READ(sk, __sk_common.skc_num);
	__u16 remote = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	return excluded_by_config_counted(protocol, outbound ? remote : local, outbound ? local : remote, count) ||
	       sock_excluded_by_addr(protocol, sk, outbound, count);
}

static __always_inline int sock_excluded(__u8 protocol, const struct sock *sk, int outbound)
{
	return sock_excluded_counted(protocol, sk, outbound, 1);
}

#endif
