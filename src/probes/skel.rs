//! The generated libbpf-rs skeletons, one per eBPF program file.
#![allow(clippy::all, clippy::pedantic, non_camel_case_types, dead_code, unused_imports)]

pub mod tcp_state {
    include!(concat!(env!("OUT_DIR"), "/tcp_state.skel.rs"));
}
pub mod tcp_accept {
    include!(concat!(env!("OUT_DIR"), "/tcp_accept.skel.rs"));
}
pub mod tcp_accept_uring {
    include!(concat!(env!("OUT_DIR"), "/tcp_accept_uring.skel.rs"));
}
pub mod process {
    include!(concat!(env!("OUT_DIR"), "/process.skel.rs"));
}
pub mod udp_send {
    include!(concat!(env!("OUT_DIR"), "/udp_send.skel.rs"));
}
pub mod udp_packet {
    include!(concat!(env!("OUT_DIR"), "/udp_packet.skel.rs"));
}
pub mod udp_recv {
    include!(concat!(env!("OUT_DIR"), "/udp_recv.skel.rs"));
}
