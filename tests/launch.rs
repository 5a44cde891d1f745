//! Launching, resolving and stopping a real Chromium; nothing may be left behind.

mod support;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cdpmux::browser::{BrowserKind, Endpoint, Launch, LaunchedBrowser};
use cdpmux::{ErrorKind, TimeoutKind};
use support::{require_browser, require_browser_kind, serve_html};

/// Every await in these tests is bounded.
async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took more than 60 s"))
}

async fn launch() -> LaunchedBrowser {
    let started = Instant::now();
    let browser = bounded("launch", Launch::new().launch())
        .await
        .expect("launch Chromium");
    eprintln!(
        "launch took {:?} (pid {})",
        started.elapsed(),
        browser.pid()
    );
    browser
}

/// `(pid, state, parent pid)` of every process whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<(u32, char, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the `(comm)`, which may itself contain spaces or parens.
            let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
            let state = rest.next()?.chars().next()?;
            let ppid: u32 = rest.next()?.parse().ok()?;
            let pgrp: u32 = rest.next()?.parse().ok()?;
            (pgrp == pgid).then_some((pid, state, ppid))
        })
        .collect()
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
        .collect()
}

/// Asserts that the browser, its process group and its profile are all gone. Orphaned
/// group members are reaped by init, so allow a moment for them to leave /proc.
async fn assert_nothing_left(pid: u32, profile: &Path) {
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "browser pid {pid} still exists (not reaped)"
    );
    assert!(
        !profile.exists(),
        "profile {} still exists",
        profile.display()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live: Vec<_> = group_members(pid)
            .into_iter()
            .filter(|(_, state, _)| *state != 'Z')
            .collect();
        let by_profile = processes_mentioning(&profile.to_string_lossy());
        if live.is_empty() && by_profile.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: group {pid} members {live:?}, processes using the profile {by_profile:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Dead members may linger as zombies until init reaps them; none may be ours to reap.
    let zombies = group_members(pid);
    let ours = std::process::id();
    assert!(
        zombies.iter().all(|(_, _, ppid)| *ppid != ours),
        "zombies left for this process to reap: {zombies:?}"
    );
    if !zombies.is_empty() {
        eprintln!("note: {} zombies of group {pid} await init", zombies.len());
    }
}

#[tokio::test]
async fn launch_resolve_and_shutdown_leave_nothing_behind() {
    if !require_browser() {
        return;
    }
    let mut browser = launch().await;
    assert!(browser.is_running());

    let ws = url::Url::parse(browser.ws_url()).expect("ws url parses");
    assert_eq!(ws.scheme(), "ws");
    assert_eq!(ws.host_str(), Some("127.0.0.1"));
    assert!(ws.path().starts_with("/devtools/browser/"), "{ws}");
    let port = ws.port().expect("ws url has a port");

    let profile = browser.profile_dir().to_path_buf();
    let mode = std::fs::metadata(&profile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "profile dir mode");

    let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let resolved = bounded("resolve", endpoint.resolve(Duration::from_secs(5)))
        .await
        .expect("resolve /json/version");
    assert_eq!(resolved, browser.ws_url());

    let pid = browser.pid();
    let started = Instant::now();
    bounded("shutdown", browser.shutdown())
        .await
        .expect("shutdown");
    eprintln!("shutdown took {:?}", started.elapsed());
    assert_nothing_left(pid, &profile).await;
}

/// Each kind starts the build it names, as the browser process itself (no wrapper script
/// between us and it, so SIGTERM and the parent-death signal reach the browser), and stops
/// leaving nothing behind.
#[tokio::test]
async fn each_browser_kind_launches_itself_and_leaves_nothing_behind() {
    for kind in [BrowserKind::Shell, BrowserKind::Chromium] {
        if !require_browser_kind(kind) {
            continue;
        }
        let overridden = std::env::var_os("CDPMUX_CHROME").is_some_and(|v| !v.is_empty());
        let mut browser = bounded("launch", Launch::new().kind(kind).launch())
            .await
            .unwrap_or_else(|e| panic!("launch {kind}: {e}"));
        assert!(browser.is_running());
        if !overridden {
            assert_eq!(browser.kind(), kind);
        }
        let exe = std::fs::read_link(format!("/proc/{}/exe", browser.pid())).unwrap();
        assert_eq!(
            BrowserKind::of_executable(&exe),
            browser.kind(),
            "the launched pid runs {} (a wrapper script?)",
            exe.display()
        );
        assert!(
            !exe.to_string_lossy().ends_with("/sh") && !exe.to_string_lossy().contains("bash"),
            "the browser pid is a shell: {}",
            exe.display()
        );
        let (pid, profile) = (browser.pid(), browser.profile_dir().to_path_buf());
        bounded("shutdown", browser.shutdown())
            .await
            .unwrap_or_else(|e| panic!("shutdown {kind}: {e}"));
        assert_nothing_left(pid, &profile).await;
    }
}

#[tokio::test]
async fn drop_leaves_nothing_behind() {
    if !require_browser() {
        return;
    }
    let browser = launch().await;
    let (pid, profile) = (browser.pid(), browser.profile_dir().to_path_buf());
    let started = Instant::now();
    drop(browser);
    eprintln!("drop took {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_nothing_left(pid, &profile).await;
}

#[tokio::test]
async fn killed_browser_is_reaped_on_drop() {
    if !require_browser() {
        return;
    }
    let mut browser = launch().await;
    let (pid, profile) = (browser.pid(), browser.profile_dir().to_path_buf());
    browser.kill();
    bounded("browser exit after kill", async {
        while browser.is_running() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(profile.exists(), "kill() keeps the profile");
    let started = Instant::now();
    drop(browser);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "drop of a dead browser waited {:?}",
        started.elapsed()
    );
    assert_nothing_left(pid, &profile).await;
}

#[tokio::test]
async fn missing_executable_says_how_to_install() {
    let err = bounded(
        "launch",
        Launch::new().executable("/nonexistent/chrome").launch(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrowserUnavailable);
    assert!(
        err.message().contains("apt-get install -y chromium"),
        "{err}"
    );
}

#[tokio::test]
async fn browser_exiting_at_startup_is_unavailable() {
    let err = bounded("launch", Launch::new().executable("false").launch())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrowserUnavailable, "{err}");
    assert!(err.message().contains("exited during startup"), "{err}");
}

#[tokio::test]
async fn startup_timeout_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fake-chrome");
    std::fs::write(
        &script,
        "#!/bin/sh\nsleep 60 &\necho $! > \"$(dirname \"$0\")/child\"\nexec sleep 61\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let started = Instant::now();
    let err = bounded(
        "launch",
        Launch::new()
            .executable(&script)
            .startup_timeout(Duration::from_millis(500))
            .launch(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Launch), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let child: u32 = std::fs::read_to_string(dir.path().join("child"))
        .expect("the fake browser started its child")
        .trim()
        .parse()
        .unwrap();
    bounded("the group's child to die", async {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            if state.is_none_or(|s| s.starts_with('Z')) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn endpoint_rejects_what_it_cannot_use() {
    for bad in [
        "ftp://127.0.0.1:9222/devtools/browser/x",
        "https://127.0.0.1",
        "http://127.0.0.1",
        "not a url",
    ] {
        let err = bad.parse::<Endpoint>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
    }
    let ws = "ws://127.0.0.1:1/devtools/browser/x";
    let endpoint = Endpoint::parse(ws).unwrap();
    let resolved = bounded("resolve", endpoint.resolve(Duration::from_secs(1))).await;
    assert_eq!(resolved.unwrap(), ws);
}

#[tokio::test]
async fn endpoint_resolution_errors_are_clear() {
    let resolve = |addr: String, timeout_ms: u64| async move {
        let endpoint = Endpoint::parse(&addr).unwrap();
        bounded(
            "resolve",
            endpoint.resolve(Duration::from_millis(timeout_ms)),
        )
        .await
    };

    // Nothing listening.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let err = resolve(format!("http://{closed}"), 2000).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrowserUnavailable);
    assert!(err.message().contains("connection refused"), "{err}");

    // Something listening that never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let err = resolve(format!("http://{silent_addr}"), 200)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Launch), "{err}");
    drop(silent);

    // An HTTP server that is not a browser.
    let (base, server) = serve_html(vec![("/", "<p>hi</p>".to_string())]).await;
    let err = resolve(base, 2000).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrowserUnavailable);
    assert!(err.message().contains("404"), "{err}");
    server.abort();

    // Answers /json/version, but not with DevTools JSON.
    let (base, server) = serve_html(vec![("/json/version", "<html>".to_string())]).await;
    let err = resolve(base, 2000).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrowserUnavailable);
    assert!(err.message().contains("not JSON"), "{err}");
    server.abort();

    // A well-formed answer.
    let body = r#"{"Browser":"x","webSocketDebuggerUrl":"ws://127.0.0.1:9/devtools/browser/ab"}"#;
    let (base, server) = serve_html(vec![("/json/version", body.to_string())]).await;
    let ws = resolve(base, 2000).await.unwrap();
    assert_eq!(ws, "ws://127.0.0.1:9/devtools/browser/ab");
    server.abort();
}
