//! The benchmark's shared vocabulary (its binaries are src/bin/sockscope-bench.rs
//! and src/bin/sockscope-loadgen.rs): workloads, the load generator's report, the soak,
//! and reading a process's CPU time.
pub mod soak;
pub mod workload;

use anyhow::{anyhow, Context, Result};

pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime+stime of the whole process (every thread, live or exited), seconds.
pub fn process_cpu_s(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // comm may hold spaces and parentheses: the fields start after the last ')'.
    let rest = text.rfind(')').map(|i| &text[i + 1..]).ok_or_else(|| anyhow!("unexpected {path}: {text:?}"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let field = |i: usize| -> Result<u64> {
        f.get(i - 3)
            .ok_or_else(|| anyhow!("{path}: no field {i}"))?
            .parse::<u64>()
            .with_context(|| format!("{path}: field {i}"))
    };
    Ok((field(14)? + field(15)?) as f64 / clock_ticks_per_sec())
}
