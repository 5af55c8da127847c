// SPDX-License-Identifier: GPL-2.0
/* The seed's UDP send mechanism. With a filtered AF_PACKET raw socket open
 * in a network namespace (userspace keeps one per namespace), every outgoing
 * packet there is cloned for the tap, and the clone the filter rejects is
 * freed with consume_skb in the sender's context. Only those clones are
 * marked PACKET_OUTGOING; every other free consume_skb sees is skipped. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "facts.h"
#include "ringbuf.bpf.h"
#include "sock_endpoints.bpf.h"
#include "udp_flows.bpf.h"
#include "hook_floor.bpf.h"

#define PACKET_OUTGOING 4

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/consume_skb")
int BPF_PROG(udp_packet_out, struct sk_buff *skb, void *location)
{
	HOOK_FLOOR_RETURN(0);
	if (BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type) != PACKET_OUTGOING)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!(pid_tgid >> 32))
		return 0; /* not in a process: a deferred free, no sender to name */
	struct udp_flow_key key = {};
	if (packet_endpoints(skb, key.local_addr, &key.local_port, key.remote_addr, &key.remote_port))
		return 0;
	key.netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	key.tgid = pid_tgid >> 32;
	key.outbound = 1;
	report_udp_flow(&key, UDP_SEEN_PACKET);
	return 0;
}
