//! The kernel contract: every fact layout and constant the eBPF programs
//! write, generated from `src/bpf/facts.h` (through `facts.bpf.c`, an object
//! built for its types only). Nothing here is written by hand, so the two
//! sides cannot drift: a changed field or kind changes this code, and
//! src/decode.rs's tests check each layout against what it reads.
#[allow(clippy::all, clippy::pedantic, non_camel_case_types, non_upper_case_globals, dead_code, unused_imports)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/facts.skel.rs"));
}

pub use generated::types::*;
