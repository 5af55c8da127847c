//! Compiles each eBPF program file (`src/bpf/*.bpf.c`, one concern per file)
//! into a libbpf-rs skeleton, and writes `skels.rs`, one module per file, for
//! src/probes/skel.rs to include: a new program file needs no line here.
//! `facts.bpf.c` is the kernel contract, built only for its generated types
//! (src/contract.rs).
use std::{env, fmt::Write, path::PathBuf};

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("unsupported target arch {other}"),
        Err(e) => panic!("CARGO_CFG_TARGET_ARCH: {e}"),
    };
    let mut names: Vec<String> = std::fs::read_dir("src/bpf")
        .expect("src/bpf")
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".bpf.c").map(str::to_string))
        .collect();
    names.sort();
    let mut modules = String::new();
    for name in &names {
        let src = format!("src/bpf/{name}.bpf.c");
        SkeletonBuilder::new()
            .source(&src)
            .clang_args([format!("-D__TARGET_ARCH_{arch}"), "-Isrc/bpf".to_string(), "-Wall".to_string()])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {src}: {e:#}"));
        println!("cargo:rerun-if-changed={src}");
        if name == "facts" {
            continue; // the contract: src/contract.rs includes it
        }
        writeln!(modules, "pub mod {name} {{\n    include!(concat!(env!(\"OUT_DIR\"), \"/{name}.skel.rs\"));\n}}")
            .expect("writing to a String");
    }
    std::fs::write(out.join("skels.rs"), modules).expect("writing skels.rs");
    println!("cargo:rerun-if-changed=src/bpf");
}
