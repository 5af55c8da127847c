//! sockscope: every network connection, with the process behind it.
//!
//! One pipeline, one direction, a module per stage:
//!
//! ```text
//! probes (eBPF, src/bpf) -> ring buffer -> decode -> track -> enrich -> filter -> format -> sink
//! ```
//!
//! Around it: `cli` and `settings` (what was asked), `startup` (the user's
//! files, the host, loading and attaching, building the pipeline), `reader`
//! (the main loop), `backpressure` (keeping up without making the host wait),
//! `health` (loss and stats counters), `contract` (the kernel's fact layouts,
//! generated), `privilege` (what the sensor keeps once attached), and the
//! leaves `clock`, `text` and `event`.
//! Dependencies point down this list of stages, never back (tests/layout.rs).

pub mod backpressure;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod contract;
pub mod decode;
pub mod dns;
pub mod enrich;
pub mod event;
pub mod filter;
pub mod format;
pub mod health;
pub mod pipeline;
pub mod privilege;
pub mod probes;
pub mod reader;
pub mod settings;
pub mod sink;
pub mod startup;
pub mod text;
pub mod track;
