//! The generated libbpf-rs skeletons, one module per eBPF program file
//! (build.rs writes the list).
#![allow(clippy::all, clippy::pedantic, non_camel_case_types, dead_code, unused_imports)]

include!(concat!(env!("OUT_DIR"), "/skels.rs"));
