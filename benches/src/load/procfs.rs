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

/// CPU use of some processes together (a server, or a cluster's nodes
/// and their Redis) over an interval, as a percentage of one core.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    pids: Vec<u32>,
    start_cpu: f64,
    start: Instant,
}

impl CpuMeter {
    /// Starts measuring `pids` (nothing is measured for none).
    pub fn start(pids: impl IntoIterator<Item = u32>) -> CpuMeter {
        let pids: Vec<u32> = pids.into_iter().collect();
        CpuMeter {
            start_cpu: total_cpu(&pids).unwrap_or(0.0),
            pids,
            start: Instant::now(),
        }
    }

    /// Percent of one core used since `start`.
    pub fn percent(&self) -> Option<f64> {
        let now = total_cpu(&self.pids)?;
        let wall = self.start.elapsed().as_secs_f64();
        (wall > 0.0).then(|| (now - self.start_cpu) / wall * 100.0)
    }
}

/// CPU seconds of `pids` together; `None` for none, or one gone.
fn total_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| cpu_seconds(pid)).sum()
}
