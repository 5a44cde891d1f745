//! Reading the machine: CPU time and memory, from the cgroup when there is one and from
//! `/proc` otherwise, and a process tree's CPU time and RSS.
//!
//! Owns the parsing of those files (pure functions, unit-tested on literal text) and the
//! thin reads around them. Called only by the sampler thread, on its timer: never on a
//! request's path, never from a shard. Linux only; elsewhere every read returns `None`
//! and the autoscaler sees an idle machine with unknown memory.

use std::collections::HashMap;
use std::time::Instant;

/// Cores this process may use: the cgroup v2 `cpu.max` quota, the v1 CFS quota, else the
/// cores the scheduler gives it.
pub(crate) fn allowed_cores() -> f64 {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let quota = read(&cgroup_v2_file("cpu.max"))
        .and_then(|t| parse_cpu_max(&t))
        .or_else(|| {
            let q = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?;
            let p = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?;
            let (q, p) = (q.trim().parse::<f64>().ok()?, p.trim().parse::<f64>().ok()?);
            (q > 0.0 && p > 0.0).then_some(q / p)
        });
    quota.map_or(nproc, |q| q.min(nproc)).max(0.01)
}

/// Share of memory in use (0..1): the cgroup's working set (usage less inactive file
/// cache) against its limit when it has one, the machine's `MemAvailable` otherwise.
pub(crate) fn memory_in_use() -> Option<f64> {
    if let (Some(cur), Some(max)) = (
        read(&cgroup_v2_file("memory.current")),
        read(&cgroup_v2_file("memory.max")),
    ) {
        if let (Ok(cur), Ok(max)) = (cur.trim().parse::<u64>(), max.trim().parse::<u64>()) {
            let inactive = read(&cgroup_v2_file("memory.stat"))
                .and_then(|s| stat_field(&s, "inactive_file"))
                .unwrap_or(0);
            return Some(cur.saturating_sub(inactive) as f64 / max.max(1) as f64);
        }
    }
    let meminfo = read("/proc/meminfo")?;
    parse_meminfo(&meminfo)
}

/// Cumulative CPU seconds used by the whole machine (or the cgroup, on v2), for deltas.
fn cpu_seconds_total() -> Option<f64> {
    if let Some(stat) = read(&cgroup_v2_file("cpu.stat")) {
        if let Some(us) = stat_field(&stat, "usage_usec") {
            return Some(us as f64 / 1e6);
        }
    }
    parse_proc_stat(&read("/proc/stat")?)
}

/// Measures the share of the allowed cores in use between two calls.
pub(crate) struct CpuMeter {
    last: Option<(Instant, f64)>,
    cores: f64,
}

impl CpuMeter {
    pub(crate) fn new() -> Self {
        CpuMeter {
            last: None,
            cores: allowed_cores(),
        }
    }

    /// Share of the allowed cores used since the previous call (0 on the first call or
    /// when nothing can be read).
    pub(crate) fn sample(&mut self) -> f64 {
        let Some(total) = cpu_seconds_total() else {
            return 0.0;
        };
        let now = Instant::now();
        let share = match self.last {
            Some((at, before)) => {
                let wall = now.duration_since(at).as_secs_f64();
                if wall > 0.0 {
                    (total - before).max(0.0) / wall / self.cores
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, total));
        share
    }
}

/// The resident memory of `root` and every process descended from it, in bytes.
pub(crate) fn tree_rss(root: u32) -> Option<u64> {
    let page = 4096u64;
    let mut total = 0;
    for pid in tree(root)? {
        if let Some(statm) = read(&format!("/proc/{pid}/statm")) {
            let rss: u64 = statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            total += rss * page;
        }
    }
    Some(total)
}

/// `root` and its descendants, from each process's parent in `/proc/<pid>/stat`.
fn tree(root: u32) -> Option<Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(ppid) = read(&format!("/proc/{pid}/stat")).and_then(|s| parse_ppid(&s)) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids);
        }
        i += 1;
    }
    Some(out)
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A file of this process's cgroup v2 directory (empty path when there is none).
fn cgroup_v2_file(name: &str) -> String {
    let dir = read("/proc/self/cgroup")
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
        .unwrap_or_default();
    if dir.is_empty() || !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return String::new();
    }
    format!("/sys/fs/cgroup{}/{name}", dir.trim_end_matches('/'))
}

/// `cpu.max`: `"<quota> <period>"` or `"max <period>"` (no limit).
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let quota = it.next()?.parse::<f64>().ok()?;
    let period = it.next()?.parse::<f64>().ok()?;
    (period > 0.0).then_some(quota / period)
}

/// A `key value` line of `cpu.stat` or `memory.stat`.
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Share in use from `/proc/meminfo`: `1 - MemAvailable / MemTotal`.
fn parse_meminfo(text: &str) -> Option<f64> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    let (total, available) = (field("MemTotal")?, field("MemAvailable")?);
    (total > 0.0).then(|| (1.0 - available / total).clamp(0.0, 1.0))
}

/// CPU seconds spent busy on every core, from the `cpu` line of `/proc/stat` (user, nice,
/// system, irq, softirq, steal; not idle or iowait). Assumes 100 ticks a second, the
/// value on every Linux build we run on.
fn parse_proc_stat(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return None;
    }
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Some(busy as f64 / 100.0)
}

/// The parent pid in `/proc/<pid>/stat` (the field after the `(comm)`, which may hold
/// spaces and parentheses itself).
fn parse_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_reads_a_quota_or_none() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
    }

    #[test]
    fn meminfo_gives_the_share_in_use() {
        let text = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_meminfo(text), Some(0.75));
        assert_eq!(parse_meminfo("MemTotal: 10 kB\n"), None);
    }

    #[test]
    fn proc_stat_counts_busy_ticks_only() {
        let text = "cpu  100 10 50 9000 40 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n";
        assert_eq!(parse_proc_stat(text), Some(1.7));
    }

    #[test]
    fn ppid_survives_odd_process_names() {
        assert_eq!(parse_ppid("42 (a) b (c)) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn stat_fields_are_found_by_name() {
        let text = "usage_usec 1500000\nuser_usec 1000000\n";
        assert_eq!(stat_field(text, "usage_usec"), Some(1_500_000));
        assert_eq!(stat_field(text, "nope"), None);
    }

    #[test]
    fn this_process_tree_has_memory() {
        assert!(tree_rss(std::process::id()).is_some_and(|b| b > 0));
    }
}
