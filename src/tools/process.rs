//! What a benchmark reads of a running process from `/proc` (Linux): its resident memory, the CPU
//! time it has used and how often its threads were switched out. `None` where `/proc` cannot be
//! read (another system, a process gone).

/// A `Vm*` line of `/proc/PID/status` (e.g. "VmRSS:"), in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Resident memory now (VmRSS), in KiB.
pub fn resident_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The highest resident memory so far (VmHWM), in KiB.
pub fn peak_resident_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`. Rates on a shared
/// machine move with its load; the CPU a unit of work costs moves much less, so it is the figure
/// to compare two builds by.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `fields` starts at field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant of the running system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

/// Context switches (voluntary and involuntary) of all the process's live threads so far. A
/// thread that has exited no longer counts, so compare readings of a server whose threads live
/// on (a pool's idle connections closing between two readings would hide their switches).
pub fn context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        // A thread may exit between the listing and the read: it is simply not counted.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .filter_map(|line| {
                line.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|count| count.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = std::process::id();
        let rss = resident_kib(me).expect("VmRSS");
        let peak = peak_resident_kib(me).expect("VmHWM");
        assert!(rss > 0 && peak >= rss, "{rss} {peak}");
        // Burn CPU until the count moves (it moves in clock ticks); a count that never moves
        // fails here instead of passing unnoticed.
        let before = cpu_seconds(me).expect("stat");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_seconds(me).expect("stat") <= before {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "CPU time stayed at {before} s"
            );
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        // Sleeping gives the CPU up: at least one voluntary switch.
        let switches = context_switches(me).expect("task status");
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(context_switches(me).expect("task status") > switches);
    }

    #[test]
    fn a_process_that_is_not_there_has_no_figures() {
        // Above the kernel's pid_max (at most 2^22).
        let nobody = 1 << 30;
        assert_eq!(resident_kib(nobody), None);
        assert_eq!(cpu_seconds(nobody), None);
        assert_eq!(context_switches(nobody), None);
    }
}
