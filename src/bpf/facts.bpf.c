// SPDX-License-Identifier: GPL-2.0
/* The kernel contract, compiled only for its types and never loaded: one
 * global of every fact layout and constant in facts.h puts each into this
 * object's BTF, from which libbpf-cargo generates the Rust side
 * (src/contract.rs). Nothing in Rust is written twice. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "facts.h"

char LICENSE[] SEC("license") = "GPL";

enum fact_kind _fact_kind = 0;
enum exec_flags _exec_flags = 0;
enum endpoints_layout _endpoints_layout = 0;
enum udp_seen_by _udp_seen_by = 0;
enum udp_counter _udp_counter = 0;
enum closed_detail _closed_detail = 0;
enum dns_layout _dns_layout = 0;
enum dns_flags _dns_flags = 0;
struct fact_header _fact_header = {};
struct tcp_connect_fact _tcp_connect_fact = {};
struct tcp_established_fact _tcp_established_fact = {};
struct tcp_aborted_fact _tcp_aborted_fact = {};
struct tcp_accept_fact _tcp_accept_fact = {};
struct tcp_closed_fact _tcp_closed_fact = {};
struct proc_exec_fact _proc_exec_fact = {};
struct proc_fork_fact _proc_fork_fact = {};
struct proc_exit_fact _proc_exit_fact = {};
struct proc_cgroup_fact _proc_cgroup_fact = {};
struct udp_flow_fact _udp_flow_fact = {};
struct dns_fact _dns_fact = {};
