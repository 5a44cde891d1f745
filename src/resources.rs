//! Reading the machine: CPU time and memory, from the cgroup when there is one and from
//! `/proc` otherwise, and a process tree's CPU time and RSS.
//!
//! Two CPU figures: [`CpuMeter`] measures the whole machine (or container), and
//! [`OwnCpuMeter`] measures our own work (the launched browsers' process trees and this
//! process, not its other children), both as shares of the cores the cgroup allows. The
//! autoscaler takes "outside" use as the difference. CPU ticks are converted with
//! `sysconf(_SC_CLK_TCK)` (the `libc` crate, already a dependency for process control).
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
    parse_proc_stat(&read("/proc/stat")?, clock_ticks())
}

/// Kernel clock ticks a second, the unit of `/proc/stat` and `/proc/<pid>/stat` times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the running system; it has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
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

/// Measures the share of the allowed cores used by our own work between two calls: the
/// process trees of the given roots (the launched browsers) plus this process's own
/// threads. This process's other children (a test's CPU hog, say) are not counted.
pub(crate) struct OwnCpuMeter {
    last: Option<(Instant, HashMap<u32, u64>)>,
    cores: f64,
    ticks: f64,
}

impl OwnCpuMeter {
    pub(crate) fn new() -> Self {
        OwnCpuMeter {
            last: None,
            cores: allowed_cores(),
            ticks: clock_ticks(),
        }
    }

    /// Share of the allowed cores our own work used since the previous call (0 on the
    /// first call or when `/proc` cannot be read). Reads every `/proc/<pid>/stat` once.
    pub(crate) fn sample(&mut self, roots: &[u32]) -> f64 {
        let Some(table) = proc_table() else {
            return 0.0;
        };
        let me = std::process::id();
        let mut now: HashMap<u32, u64> = HashMap::new();
        if let Some(t) = table.get(&me) {
            now.insert(me, t.1);
        }
        for root in roots {
            for pid in descendants(&table, *root) {
                if let Some(t) = table.get(&pid) {
                    now.insert(pid, t.1);
                }
            }
        }
        let at = Instant::now();
        let share = match self.last.take() {
            Some((before, prev)) => {
                let wall = at.duration_since(before).as_secs_f64();
                if wall > 0.0 {
                    ticks_since(&prev, &now) as f64 / self.ticks / wall / self.cores
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((at, now));
        share
    }
}

/// CPU ticks spent between two readings of the same set of processes (pid to
/// utime + stime): a process seen in both counts its growth, a new one (or a reused pid
/// whose count went down) counts all of its ticks, one gone since counts nothing.
fn ticks_since(prev: &HashMap<u32, u64>, now: &HashMap<u32, u64>) -> u64 {
    now.iter()
        .map(|(pid, t)| match prev.get(pid) {
            Some(p) if p <= t => t - p,
            _ => *t,
        })
        .sum()
}

/// The resident memory of `root` and every process descended from it, in bytes.
pub(crate) fn tree_rss(root: u32) -> Option<u64> {
    let page = 4096u64;
    let mut total = 0;
    for pid in descendants(&proc_table()?, root) {
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

/// Every process: pid to (parent pid, utime + stime ticks), from `/proc/<pid>/stat`.
fn proc_table() -> Option<HashMap<u32, (u32, u64)>> {
    let mut table = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(line) = read(&format!("/proc/{pid}/stat")).and_then(|s| parse_stat(&s)) {
            table.insert(pid, line);
        }
    }
    Some(table)
}

/// `root` and its descendants in `table` (pid to parent, ticks).
fn descendants(table: &HashMap<u32, (u32, u64)>, root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, (ppid, _)) in table {
        children.entry(*ppid).or_default().push(*pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids);
        }
        i += 1;
    }
    out
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
/// system, irq, softirq, steal; not idle or iowait), at `ticks` a second.
fn parse_proc_stat(text: &str, ticks: f64) -> Option<f64> {
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
    Some(busy as f64 / ticks)
}

/// The parent pid and the CPU ticks (utime + stime, fields 14 and 15) in
/// `/proc/<pid>/stat`. The fields are counted after the `(comm)`, which may hold spaces
/// and parentheses itself.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state (3), ppid (4), ... utime (14), stime (15).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
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
        assert_eq!(parse_proc_stat(text, 100.0), Some(1.7));
        assert_eq!(parse_proc_stat(text, 50.0), Some(3.4));
    }

    #[test]
    fn stat_gives_parent_and_cpu_ticks_despite_odd_process_names() {
        let line = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 250 30 5 6 20 0 1 0 9 0 0";
        assert_eq!(parse_stat(line), Some((7, 280)));
        assert_eq!(parse_stat("garbage"), None);
        // Cut short before stime.
        assert_eq!(
            parse_stat("42 (a) S 7 42 42 0 -1 4194560 100 0 0 0 250"),
            None
        );
    }

    #[test]
    fn ticks_count_growth_new_processes_and_reused_pids() {
        let prev = HashMap::from([(1, 100), (2, 50), (3, 70)]);
        // 1 grew by 20, 2 is gone, 3's pid was reused (count went down), 4 is new.
        let now = HashMap::from([(1, 120), (3, 10), (4, 5)]);
        assert_eq!(ticks_since(&prev, &now), 20 + 10 + 5);
        assert_eq!(ticks_since(&now, &now), 0);
    }

    #[test]
    fn descendants_follow_parents_only_from_the_root() {
        let table = HashMap::from([(1, (0, 0)), (10, (1, 0)), (11, (10, 0)), (20, (2, 0))]);
        let mut tree = descendants(&table, 1);
        tree.sort();
        assert_eq!(tree, [1, 10, 11]);
    }

    /// A spinning child process, killed and reaped on drop.
    struct Spinner(std::process::Child);

    impl Drop for Spinner {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_root_s_tree_counts_its_children_s_cpu_and_this_process_does_not() {
        let child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .map(Spinner)
            .expect("spawn sh");
        let pid = child.0.id();
        let me = std::process::id();
        // Poll (bounded) until the kernel has charged the spinning child a tick.
        let mut ticks = 0;
        for _ in 0..500 {
            let table = proc_table().expect("/proc");
            assert_eq!(table.get(&pid).map(|t| t.0), Some(me));
            assert!(descendants(&table, me).contains(&pid));
            ticks = table[&pid].1;
            if ticks > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(ticks > 0, "the spinning child was never charged CPU");
        // Measured as a root, the child is our own work; without it, only this process
        // counts, which mostly sleeps here: less than the child's full core. (The two
        // meters' spans differ by a little, so a single span may disagree; a bounded
        // number of them cannot all.)
        let mut with = OwnCpuMeter::new();
        let mut without = OwnCpuMeter::new();
        with.sample(&[pid]);
        without.sample(&[]);
        let mut got = (0.0, 0.0);
        for _ in 0..500 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            got = (with.sample(&[pid]), without.sample(&[]));
            if got.0 > got.1 {
                break;
            }
        }
        assert!(got.0 > got.1, "{got:?}");
        drop(child);
    }

    #[test]
    fn this_process_counts_as_own_work() {
        let mut meter = OwnCpuMeter::new();
        assert_eq!(
            meter.sample(&[]),
            0.0,
            "the first call has nothing to compare"
        );
        // Spin until this process's own tick count moves (bounded by the ticks seen).
        let mut x = 0u64;
        let mut share = 0.0;
        for _ in 0..200 {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            share = meter.sample(&[]);
            if share > 0.0 {
                break;
            }
        }
        assert!(share > 0.0, "{x}");
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
