//! The benchmark's workloads, shared by the load generator and the runner
//! (both binaries include this file).

use clap::ValueEnum;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    #[value(name = "tcp_storm", alias = "tcp-storm")]
    TcpStorm,
    #[value(name = "udp_one_flow", alias = "udp-one-flow")]
    UdpOneFlow,
    #[value(name = "udp_many_flows", alias = "udp-many-flows")]
    UdpManyFlows,
}
