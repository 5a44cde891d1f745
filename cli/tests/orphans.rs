//! `cdpmux crawl` killed with SIGKILL mid-crawl leaves no Chromium behind: the launched
//! browser gets the parent-death signal and its process group empties within 2 s.
//! (Catching SIGINT and SIGTERM is tested with the crawl; SIGKILL cannot be caught.)

use std::process::Stdio;
use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// How long the browser's group may outlive the killed CLI.
const DIE_WITHIN: Duration = Duration::from_secs(2);
/// Bound on the wait for the crawl's first page.
const START_LIMIT: Duration = Duration::from_secs(120);

/// True when Chromium is available; fails instead with `CDPMUX_REQUIRE_BROWSER=1`.
fn require_browser() -> bool {
    match Launch::new().find_executable() {
        Ok(_) => true,
        Err(e) if std::env::var("CDPMUX_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("CDPMUX_REQUIRE_BROWSER=1 but no browser is available: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no chromium ({e})");
            false
        }
    }
}

/// `(pid, ppid, pgrp, state)` of every process.
fn processes() -> Vec<(u32, u32, u32, char)> {
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

/// Live (not zombie) members of process group `pgid`.
fn live_members(pgid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|&(_, _, pgrp, state)| pgrp == pgid && state != 'Z')
        .map(|(pid, ..)| pid)
        .collect()
}

/// Kills the groups on drop, so a failing test leaves no browser behind.
struct GroupsGuard(Vec<u32>);

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

#[tokio::test]
async fn sigkill_mid_crawl_leaves_no_browser() {
    if !require_browser() {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdpmux"))
        .args(["crawl", "--demo", "--quiet", "--concurrency", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start cdpmux");
    let cli = child.id().expect("cdpmux runs");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(START_LIMIT, stdout.next_line())
        .await
        .expect("the first page within the limit")
        .expect("read stdout");
    assert!(first.is_some(), "cdpmux ended before its first page");

    // The browsers it launched: its children that lead their own process group.
    let browsers: Vec<u32> = processes()
        .into_iter()
        .filter(|&(pid, ppid, pgrp, _)| ppid == cli && pgrp == pid)
        .map(|(pid, ..)| pid)
        .collect();
    assert!(!browsers.is_empty(), "cdpmux launched no browser");
    let _guard = GroupsGuard(browsers.clone());

    child.start_kill().expect("SIGKILL cdpmux");
    let killed = Instant::now();
    child.wait().await.expect("reap cdpmux");
    loop {
        let left: Vec<(u32, Vec<u32>)> = browsers
            .iter()
            .map(|&b| (b, live_members(b)))
            .filter(|(_, live)| !live.is_empty())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < DIE_WITHIN,
            "{} ms after cdpmux was killed, browser groups still run: {left:?}",
            killed.elapsed().as_millis()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{} browser group(s) gone {} ms after cdpmux was killed",
        browsers.len(),
        killed.elapsed().as_millis()
    );
}
