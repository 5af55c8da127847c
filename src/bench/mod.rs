//! The benchmark's shared vocabulary (its binaries are src/bin/sockscope-bench.rs
//! and src/bin/sockscope-loadgen.rs): workloads and the load generator's report.
pub mod workload;
