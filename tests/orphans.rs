//! A launched Chromium never outlives the process that launched it; the profile a killed
//! process left behind is removed at the next launch; and the sandbox stays on for an
//! unprivileged user.
//!
//! The process to kill, or to run as another user, is this test binary itself, run again
//! with only `child_role` selected and `CDPMUX_ORPHANS_ROLE` saying what to do.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cdpmux::browser::{Endpoint, Launch, LaunchedBrowser, Sandbox};
use support::require_browser;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const ROLE: &str = "CDPMUX_ORPHANS_ROLE";
/// How long the browser's process group may outlive its killed parent.
const DIE_WITHIN: Duration = Duration::from_secs(2);
/// Bound on every wait for a child process.
const CHILD_LIMIT: Duration = Duration::from_secs(90);

/// Not a test by itself: the tests below run this binary again to play a role.
#[test]
#[ignore = "a child role, run by the other tests in this file"]
fn child_role() {
    match std::env::var(ROLE).as_deref() {
        Ok("hold") => hold_a_browser(),
        Ok("unprivileged") => launch_and_check_sandbox(),
        _ => eprintln!("child_role does something only when run by this file's tests"),
    }
}

/// Launches Chromium from a thread that then exits, reports it, and waits to be killed.
fn hold_a_browser() {
    let browser = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(Launch::new().launch())
            .expect("launch Chromium")
    })
    .join()
    .expect("the launching thread");
    // The launching thread is gone: the browser must still run (checked by the parent).
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "BROWSER {} {} {}",
        browser.pid(),
        browser.ws_url(),
        browser.profile_dir().display()
    )
    .unwrap();
    out.flush().unwrap();
    drop(out);
    loop {
        std::thread::park();
    }
}

/// `(pid, state)` of every process whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<(u32, char)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
            let state = rest.next()?.chars().next()?;
            let pgrp: u32 = rest.nth(1)?.parse().ok()?;
            (pgrp == pgid).then_some((pid, state))
        })
        .collect()
}

fn live_members(pgid: u32) -> Vec<(u32, char)> {
    group_members(pgid)
        .into_iter()
        .filter(|(_, state)| *state != 'Z')
        .collect()
}

/// Kills a process group on drop, so a failing test leaves no browser behind.
struct GroupGuard(u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(-(self.0 as libc::pid_t), libc::SIGKILL);
        }
    }
}

fn this_test_binary(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args(["child_role", "--exact", "--ignored", "--nocapture"])
        .env(ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn browser_dies_with_its_killed_parent_and_its_profile_is_swept() {
    if !require_browser() {
        return;
    }
    let mut child = this_test_binary("hold").spawn().expect("run the child");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(CHILD_LIMIT, async {
        while let Some(line) = lines.next_line().await.expect("read the child") {
            if let Some(rest) = line.strip_prefix("BROWSER ") {
                return rest.to_owned();
            }
        }
        panic!("the child ended without launching a browser")
    })
    .await
    .expect("the child launched a browser in time");
    let mut fields = line.split(' ');
    let pid: u32 = fields.next().unwrap().parse().unwrap();
    let ws_url = fields.next().unwrap().to_owned();
    let profile = PathBuf::from(fields.next().unwrap());
    let _guard = GroupGuard(pid);

    // Alive after the thread that launched it exited: its DevTools endpoint answers.
    let port = url::Url::parse(&ws_url).unwrap().port().unwrap();
    let resolved = Endpoint::parse(&format!("http://127.0.0.1:{port}"))
        .unwrap()
        .resolve(Duration::from_secs(10))
        .await
        .expect("the browser outlives the thread that launched it");
    assert_eq!(resolved, ws_url);
    assert!(!live_members(pid).is_empty());

    child.start_kill().expect("SIGKILL the child");
    let killed = Instant::now();
    child.wait().await.expect("reap the child");
    loop {
        let live = live_members(pid);
        if live.is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < DIE_WITHIN,
            "{} ms after the parent's SIGKILL, the browser's group still has {live:?}",
            killed.elapsed().as_millis()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "browser group gone {} ms after its parent was killed",
        killed.elapsed().as_millis()
    );

    // Nobody cleaned up after the killed process; the next launch does.
    assert!(profile.exists(), "the killed process left its profile");
    let fresh = tokio::time::timeout(CHILD_LIMIT, Launch::new().launch())
        .await
        .expect("launch in time")
        .expect("launch");
    assert!(
        !profile.exists(),
        "{} survived the next launch",
        profile.display()
    );
    fresh.shutdown().await.expect("shutdown");
}

/// In the child, as an unprivileged user: launch with the default sandbox choice and
/// check it is on, down to the renderer's seccomp filter.
fn launch_and_check_sandbox() {
    // SAFETY: geteuid(2) cannot fail.
    assert_ne!(unsafe { libc::geteuid() }, 0, "this role runs unprivileged");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let browser = tokio::time::timeout(CHILD_LIMIT, Launch::new().launch())
            .await
            .expect("launch in time")
            .expect("launch unprivileged with the sandbox");
        check_sandboxed(&browser).await;
        browser.shutdown().await.expect("shutdown");
    });
    println!("SANDBOXED");
}

async fn check_sandboxed(browser: &LaunchedBrowser) {
    let cmdline = |pid: u32| {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&raw).replace('\0', " ")
    };
    let main = cmdline(browser.pid());
    assert!(
        !main.contains("--no-sandbox"),
        "browser started with {main}"
    );
    // The about:blank tab's renderer runs under Chromium's seccomp-bpf filter ("2")
    // only when sandboxed.
    let deadline = Instant::now() + CHILD_LIMIT;
    loop {
        let filtered = live_members(browser.pid()).into_iter().any(|(pid, _)| {
            cmdline(pid).contains("--type=renderer")
                && std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .is_ok_and(|s| s.lines().any(|l| l.replace(' ', "") == "Seccomp:\t2"))
        });
        if filtered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no seccomp-filtered renderer in {:?}",
            live_members(browser.pid())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sandbox_stays_on_for_an_unprivileged_user() {
    if !require_browser() {
        return;
    }
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: check in this process.
        let browser = Launch::new().sandbox(Sandbox::Auto).launch().await.unwrap();
        check_sandboxed(&browser).await;
        browser.shutdown().await.unwrap();
        return;
    }
    let setpriv = Path::new("/usr/bin/setpriv");
    assert!(
        setpriv.exists(),
        "running as root, this test needs setpriv (util-linux) to drop to `nobody`"
    );
    // A home and temporary directory the unprivileged child may write to.
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).unwrap();
    // A copy of this binary where `nobody` may run it: the build directory may sit under
    // a home that only root can enter.
    let exe = home.path().join("orphans-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(setpriv);
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(&exe)
    .args(["child_role", "--exact", "--ignored", "--nocapture"])
    .current_dir(home.path())
    .env(ROLE, "unprivileged")
    .env("HOME", home.path())
    .env("TMPDIR", home.path())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(CHILD_LIMIT, cmd.output())
        .await
        .expect("the unprivileged child finished in time")
        .expect("run the unprivileged child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "SANDBOXED"),
        "unprivileged launch failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
