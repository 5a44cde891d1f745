//! `cdpmux crawl` killed with SIGKILL mid-crawl leaves no Chromium behind: the launched
//! browser gets the parent-death signal and its process group empties within 2 s.
//! (Catching SIGINT and SIGTERM is tested with the crawl; SIGKILL cannot be caught.)

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{live_members, processes, require_browser, GroupsGuard};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// How long the browser's group may outlive the killed CLI.
const DIE_WITHIN: Duration = Duration::from_secs(2);
/// Bound on the wait for the crawl's first page.
const START_LIMIT: Duration = Duration::from_secs(120);

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
