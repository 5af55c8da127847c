//! The benchmark's workloads and the load generator's report, shared by the
//! load generator and the runner.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    #[value(name = "tcp_storm", alias = "tcp-storm")]
    TcpStorm,
    #[value(name = "udp_one_flow", alias = "udp-one-flow")]
    UdpOneFlow,
    #[value(name = "udp_many_flows", alias = "udp-many-flows")]
    UdpManyFlows,
}

impl Workload {
    /// The name the command lines use.
    pub fn name(self) -> &'static str {
        match self {
            Workload::TcpStorm => "tcp_storm",
            Workload::UdpOneFlow => "udp_one_flow",
            Workload::UdpManyFlows => "udp_many_flows",
        }
    }
}

/// The load generator's last output line: what it did and how fast.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub workload: Workload,
    pub pid: u32,
    pub requested: u64,
    pub ops: u64,
    pub elapsed_s: f64,
    pub ops_per_s: f64,
    pub timed_out: bool,
    /// Failed send calls (udp); ops counts successful ones only.
    pub send_errors: u64,
    /// Datagrams read by the drain thread (udp_one_flow --udp-drain).
    pub received: u64,
    /// Distinct destination hosts used (udp_many_flows).
    pub hosts: u32,
    pub ipv6: bool,
}
