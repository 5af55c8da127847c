//! Track: state that spans several kernel facts (pending TCP handshakes, the
//! process table, open connections and repeated failures), kept and aged in
//! userspace.
pub mod container;
pub mod lifecycle;
pub mod process;
pub mod table;
pub mod tcp;
pub mod udp;
