//! Helpers shared by the CLI's integration tests; each test file uses a subset.
#![allow(dead_code)]

use cdpmux::browser::Launch;

/// True when Chromium is available. Without it, panics when `CDPMUX_REQUIRE_BROWSER=1`
/// (CI), else prints a loud SKIPPED line and returns false.
pub fn require_browser() -> bool {
    match Launch::new().find_executable() {
        Ok(_) => true,
        Err(e) => skip_unless_required(&format!("no browser is available: {e}")),
    }
}

/// For a test that cannot run because of `why`: panics when `CDPMUX_REQUIRE_BROWSER=1`,
/// else prints SKIPPED and returns false.
pub fn skip_unless_required(why: &str) -> bool {
    if std::env::var("CDPMUX_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("CDPMUX_REQUIRE_BROWSER=1 but {why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// `(pid, ppid, pgrp, state)` of every process.
pub fn processes() -> Vec<(u32, u32, u32, char)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
            let state = rest.next()?.chars().next()?;
            let ppid: u32 = rest.next()?.parse().ok()?;
            let pgrp: u32 = rest.next()?.parse().ok()?;
            Some((pid, ppid, pgrp, state))
        })
        .collect()
}

/// The browsers `pid` launched: its children leading their own process group.
pub fn browsers_of(pid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|&(p, ppid, pgrp, _)| ppid == pid && pgrp == p)
        .map(|(p, ..)| p)
        .collect()
}

/// Live (not zombie) members of process group `pgid`.
pub fn live_members(pgid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|&(_, _, pgrp, state)| pgrp == pgid && state != 'Z')
        .map(|(pid, ..)| pid)
        .collect()
}

/// Kills the process groups on drop, so a failing test leaves no browser behind.
pub struct GroupsGuard(pub Vec<u32>);

impl Drop for GroupsGuard {
    fn drop(&mut self) {
        for pgid in &self.0 {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(-(*pgid as libc::pid_t), libc::SIGKILL);
            }
        }
    }
}
