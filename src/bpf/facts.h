/* Facts the kernel side reports, shared by every eBPF program and decoded in
 * src/decode.rs. Plain fixed-layout structs: the kernel captures, Rust decides.
 * This file is the whole contract: the Rust side is generated from it
 * (facts.bpf.c, src/contract.rs). Constants userspace needs are enums, not
 * #defines, so that they reach BTF and the generated code; a new one needs a
 * global in facts.bpf.c. */
#ifndef SOCKSCOPE_FACTS_H
#define SOCKSCOPE_FACTS_H

enum fact_kind {
	FACT_TCP_CONNECT = 1,     /* CLOSE -> SYN_SENT, in the connecting task */
	FACT_TCP_ESTABLISHED = 2, /* SYN_SENT|SYN_RECV -> ESTABLISHED, any context */
	FACT_TCP_ABORTED = 3,     /* SYN_SENT|SYN_RECV -> CLOSE: handshake failed */
	FACT_TCP_ACCEPT = 4,      /* accept()/accept4() returned a TCP socket */
	FACT_PROC_EXEC = 5,
	FACT_PROC_FORK = 6,
	FACT_PROC_EXIT = 7,
	FACT_UDP_FLOW = 8,        /* a UDP flow not seen within the window */
	FACT_PROC_CGROUP = 9,     /* a process moved to another cgroup (v2) */
	FACT_DNS = 10,            /* a DNS message on port 53: a query leaving, a response arriving */
	FACT_TCP_CLOSED = 11,     /* a reported connection reached CLOSE (or the sensor stops) */
};

struct fact_header {
	__u32 kind;
	__u32 detail;     /* a value of the fact's own (see each), else 0: keeps facts small */
	__u64 ts_boot_ns; /* bpf_ktime_get_boot_ns(): survives suspend */
};

struct task_ids {
	__u32 tgid; /* host pid namespace */
	__u32 tid;
	__u32 uid;
	__u32 gid;
};

struct tcp_connect_fact {
	struct fact_header hdr;
	__u64 sk;
	struct task_ids task;
};

/* A socket's endpoints. The addresses are packed by family, local first:
 * IPv4 4 + 4 bytes, IPv6 16 + 16. A fact that ends in one is written
 * ENDPOINTS_V4_SPARE bytes shorter for IPv4 (most connections: a smaller
 * fact, more of a burst in the ring). */
struct tcp_endpoints {
	__u32 netns;
	__u16 family; /* AF_INET or AF_INET6 */
	__u16 local_port;  /* host order */
	__u16 remote_port; /* host order */
	__u16 pad;
	__u8 addrs[32];
};

enum endpoints_layout {
	ENDPOINTS_V4_SPARE = 24,
};

/* hdr.detail: 1 if it was SYN_SENT (we connected), 0 if SYN_RECV. */
struct tcp_established_fact {
	struct fact_header hdr;
	__u64 sk;
	struct tcp_endpoints ep;
};

/* SYN_SENT|SYN_RECV -> CLOSE: a handshake that never ended ESTABLISHED. */
struct tcp_aborted_fact {
	struct fact_header hdr;
	__u64 sk;
	__u32 oldstate;
	__u32 err;         /* sk_err at the transition (ECONNREFUSED, ETIMEDOUT, ...); 0: closed by its process */
	__u32 syn_retrans; /* SYN retransmissions (tcp_sock.total_retrans before ESTABLISHED) */
	__u32 pad;
	struct tcp_endpoints ep;
};

/* hdr.detail of a closed fact: the TCP state the socket left, or this for
 * a connection still open when the sensor stops (its counters so far). */
enum closed_detail {
	CLOSED_SENSOR_STOP = 256,
};

/* A reported connection (marked at ESTABLISHED, see tcp_reported.bpf.h)
 * reached CLOSE: the kernel's own counters at that moment. */
struct tcp_closed_fact {
	struct fact_header hdr;
	__u64 sk;
	__u64 bytes_acked;    /* bytes sent that the peer acknowledged */
	__u64 bytes_received; /* bytes received in sequence */
	__u32 total_retrans;  /* segments retransmitted */
	__u32 srtt_us;        /* smoothed RTT in microseconds */
	__u32 err;            /* sk_err (ECONNRESET, ETIMEDOUT, EPIPE, ...) */
	__u32 pad;
};

/* hdr.detail: the socket's TCP state when accept returned it. Anything but
 * SYN_RECV finished its handshake, and the fact is the connection's report
 * (no fact is written when an inbound handshake ends); a TCP Fast Open child
 * is accepted in SYN_RECV, before it is ESTABLISHED, and may be closed
 * before it ever is. */
struct tcp_accept_fact {
	struct fact_header hdr;
	__u64 sk;
	struct task_ids task;
	__s32 fd; /* -1: a direct descriptor (io_uring) */
	struct tcp_endpoints ep;
};

#define EXEC_PATH_BUF 2048 /* reversed path components, NUL separated */
#define EXEC_ARGS_BUF 4096 /* argv as the kernel holds it, NUL separated */
#define EXEC_NAME_MAX 256
/* Path area rounded up to a power of two, so offsets can be masked for the
 * verifier, followed by the argv area. */
#define EXEC_PATH_AREA 4096
#define EXEC_DATA_BUF (EXEC_PATH_AREA + EXEC_ARGS_BUF)

/* proc_exec_fact.flags */
enum exec_flags {
	EXEC_PATH_TRUNCATED = 1,
	EXEC_ARGS_TRUNCATED = 2,
};

#define CGROUP_BUF 512
#define CGROUP_NAME_MAX 128

/* Identity a process keeps for its life, captured at fork and exec. */
struct proc_identity {
	__u32 ns_tgid;    /* pid in its own pid namespace */
	__u32 cgroup_len; /* bytes of cgroup[] used */
	__u8 cgroup[CGROUP_BUF]; /* cgroup v2 path, leaf first, NUL separated */
};

struct proc_exec_fact {
	struct fact_header hdr;
	struct task_ids task;
	__u32 ppid;
	__u32 flags;
	__u64 start_boot_ns;
	struct proc_identity id;
	__u32 path_len; /* bytes of data[] holding the path */
	__u32 args_len; /* bytes of data[] after the path holding argv */
	/* The path is emitted leaf first ("python3.11\0bin\0usr\0"), which keeps
	 * the verifier's bounds simple; userspace reverses it. */
	__u8 data[EXEC_DATA_BUF];
};

struct proc_fork_fact {
	struct fact_header hdr;
	__u32 parent_tgid;
	__u32 child_tgid;
	__u64 start_boot_ns;
	__u32 uid;
	__u32 pad;
	struct proc_identity id;
};

struct proc_exit_fact {
	struct fact_header hdr;
	__u32 tgid;
	__u32 pad;
};

struct proc_cgroup_fact {
	struct fact_header hdr;
	__u32 tgid;
	__u32 pad;
	struct proc_identity id; /* after the move */
};

/* A UDP flow, the de-duplication key. Addresses are always 16 bytes, IPv4
 * as ::ffff:a.b.c.d, so one flow has one key whatever socket family saw it. */
struct udp_flow_key {
	__u32 netns;
	__u32 tgid;
	__u8 outbound;
	__u8 pad[3];
	__u16 local_port;  /* host order */
	__u16 remote_port; /* host order */
	__u8 local_addr[16];
	__u8 remote_addr[16];
};

/* Which mechanism saw the flow (udp_flow_fact.seen_by). */
enum udp_seen_by {
	UDP_SEEN_SEND = 1,   /* sock_send_length / cgroup sendmsg: process context */
	UDP_SEEN_PACKET = 2, /* consume_skb behind a raw packet socket (the seed's) */
	UDP_SEEN_RECV = 3,   /* sock_recv_length with the datagram's addresses */
};

/* Entries of the per-CPU udp_counters map (udp_flows.bpf.h). */
enum udp_counter {
	UDP_SUPPRESSED = 0, /* packets of flows already reported */
	UDP_TABLE_FULL = 1, /* new flows reported without a table entry */
	UDP_PEER_UNKNOWN = 2, /* receives whose sender could not be determined */
	UDP_SHED = 3, /* new flows not reported: the ring buffer is kept for TCP */
	UDP_SEND_DEST_UNKNOWN = 4, /* unconnected sends egress saw only transformed (IPsec) and no sendmsg hook named */
	UDP_COUNTERS,
};

struct udp_flow_fact {
	struct fact_header hdr;
	struct udp_flow_key key;
	__u32 tid;
	__u32 uid;
	__u32 recorded; /* 0: the flow table was full, userspace must make room */
	__u32 seen_by;
};

/* DNS capture (dns_capture.bpf.h): only packets to port 53 leaving and from
 * port 53 arriving, a bounded copy of the message. */
enum dns_layout {
	DNS_CAPTURE_MAX = 512, /* message bytes copied per packet (UDP payload, TCP segment payload) */
};

/* dns_fact.flags */
enum dns_flags {
	DNS_OUTBOUND = 1, /* seen leaving (cgroup_skb/egress, in the sender's send): a query */
	DNS_TCP = 2,	  /* a TCP segment's payload (length-prefixed messages), else a UDP datagram */
};

/* hdr.detail: bytes of msg[] captured (at most DNS_CAPTURE_MAX). */
struct dns_fact {
	struct fact_header hdr;
	struct task_ids task; /* the sending task for an outbound message, else 0 */
	__u32 netns;	      /* the socket's network namespace */
	__u32 flags;	      /* dns_flags */
	__u32 payload_len;    /* message bytes the packet carried (more than captured when cut) */
	__u32 tcp_seq;	      /* TCP: the segment's sequence number (host order) */
	__u16 local_port;     /* host order */
	__u16 remote_port;    /* host order */
	__u32 pad;
	__u8 local_addr[16];  /* IPv4 as ::ffff:a.b.c.d */
	__u8 remote_addr[16];
	__u8 msg[DNS_CAPTURE_MAX];
};

#endif
