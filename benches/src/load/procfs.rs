//! CPU time and memory of processes, read from /proc (Linux).

use std::time::Instant;

/// Clock ticks per second in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU seconds a process has used, or `None` if it is
/// not there to read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The first process whose name is `name`.
pub fn find_process(name: &str) -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| {
                let c = c.trim();
                // comm is cut to 15 bytes.
                c == name || (c.len() == 15 && name.starts_with(c))
            })
            .unwrap_or(false)
    })
}

/// CPU use of a process over an interval, as a percentage of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: Option<u32>,
    start_cpu: f64,
    start: Instant,
}

impl CpuMeter {
    /// Starts measuring `pid` (nothing is measured for `None`).
    pub fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            start_cpu: pid.and_then(cpu_seconds).unwrap_or(0.0),
            start: Instant::now(),
        }
    }

    /// Percent of one core used since `start`.
    pub fn percent(&self) -> Option<f64> {
        let now = cpu_seconds(self.pid?)?;
        let wall = self.start.elapsed().as_secs_f64();
        (wall > 0.0).then(|| (now - self.start_cpu) / wall * 100.0)
    }
}
