//! The few operating-system calls the harness needs: CPU pinning, the file-descriptor limit, and
//! reading a process's CPU time and resident memory from `/proc`.

use std::time::Duration;

/// Pins the calling thread (and every thread it starts afterwards) to `core`.
pub fn pin_to_core(core: usize) -> std::io::Result<()> {
    // SAFETY: `set` is a plain bitmask owned by this frame; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: plain struct in and out of getrlimit/setrlimit.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        let mut now: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut now);
        now.rlim_cur as u64
    }
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// User + system CPU time of process `pid` (every thread), from `/proc/<pid>/stat`.
/// Resolution is one clock tick (10 ms): windows of several seconds keep the error small.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is index 0 here, so utime (14) and stime (15) are 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_micros(ticks * 1_000_000 / clock_ticks_per_second()))
}

/// Resident set size of process `pid` in bytes, from `/proc/<pid>/status` (VmRSS).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time of every live thread of process `pid`, in nanoseconds, from
/// `/proc/<pid>/task/*/schedstat`: far finer than the 10 ms ticks of `/proc/<pid>/stat`, but a
/// thread that exits takes its time with it (see [`CpuMark::elapsed`]).
pub fn cpu_time_fine(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        total += text.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(Duration::from_nanos(total))
}

/// Bytes process `pid` has caused to be written to storage (`write_bytes` of `/proc/<pid>/io`:
/// page-cache pages dirtied by writes to files, such as SQLite's log and database).
pub fn storage_written(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok())
}

/// Voluntary and involuntary context switches of every live thread of `pid`.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        for line in status.lines() {
            if let Some(n) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// CPU of a process and its children (PostgreSQL: the postmaster and its backends and workers).
/// A child that exits between two readings takes its time with it: the phases keep their
/// connections open, so only short-lived workers are missed.
/// The machine's CPU time so far, every core together: (busy, total), from `/proc/stat`.
pub fn machine_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

pub fn tree_cpu(root: u32) -> Duration {
    let mut total = cpu_time_fine(root).unwrap_or_default();
    let Ok(entries) = std::fs::read_dir("/proc") else { return total };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else { continue };
        // Fields after the name: state, ppid, …
        if rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(root) {
            total += cpu_time_fine(pid).unwrap_or_default();
        }
    }
    total
}

/// CPU time of a process between two instants, as a tiny helper for reports.
#[derive(Clone, Copy)]
pub struct CpuMark {
    pid: Option<u32>,
    start: Option<Duration>,
    /// Set by [`CpuMark::fine`]: the per-thread nanosecond reading at the start.
    fine: Option<Duration>,
}

impl CpuMark {
    pub fn start(pid: Option<u32>) -> Self {
        Self { pid, start: pid.and_then(cpu_time), fine: None }
    }

    /// Like [`CpuMark::start`], but read to the nanosecond (for phases of tens of milliseconds).
    pub fn fine(pid: Option<u32>) -> Self {
        Self { pid, start: pid.and_then(cpu_time), fine: pid.and_then(cpu_time_fine) }
    }

    /// CPU time used since `start`, if the process could be read both times. A fine mark uses
    /// the per-thread reading unless it falls short of the tick reading by more than two ticks
    /// (a thread exited in between and took its time with it).
    pub fn elapsed(&self) -> Option<Duration> {
        let ticks = cpu_time(self.pid?)?.saturating_sub(self.start?);
        let Some(fine) = self.fine.zip(cpu_time_fine(self.pid?)).map(|(a, b)| b.saturating_sub(a)) else {
            return Some(ticks);
        };
        Some(if fine + Duration::from_millis(20) < ticks { ticks } else { fine })
    }
}

/// Least-squares slope of y over x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line() {
        let points = [(0.0, 10.0), (1.0, 12.0), (2.0, 14.0)];
        assert!((slope(&points).unwrap() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_time(pid).is_some());
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_time_fine(pid).unwrap() > Duration::ZERO);
        assert!(storage_written(pid).is_some());
    }
}
