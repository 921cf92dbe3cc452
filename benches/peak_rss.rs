//! The process's peak resident set (Linux `VmHWM`), and resetting it so one process can
//! measure several runs one after another.

/// Peak resident set of this process since start or the last [`reset`], MiB (NaN where
/// `/proc` has no figure).
pub fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Sets the peak to the current resident set (Linux >= 4.0; ignored elsewhere).
pub fn reset() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
