//! The CDP transport against a real headless Chromium: navigation and typed calls, a
//! crash by `Page.crash`, a renderer killed by pid, a hung renderer, and a clean shutdown.
//!
//! Each test calls `support::require_browser()` first: with `CDPMUX_REQUIRE_BROWSER=1` a
//! missing browser fails the test, otherwise the test says SKIPPED and passes.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use cdpmux::browser::{Launch, LaunchedBrowser};
use cdpmux::cdp::{Connection, ConnectionConfig, Page, PageOptions};
use cdpmux::js_protocol::runtime::EvaluateParams;
use cdpmux::{Error, ErrorKind, TimeoutKind};
use futures_util::FutureExt;
use serde_json::json;

/// The bound on every single await. Shorter than the 30 s command deadline the crash tests
/// set, so a call that fails within it was failed by the crash, not by its deadline.
const STEP: Duration = Duration::from_secs(20);

/// A call that never settles by itself within the tests' bounds.
const SLOW_PROMISE: &str = "new Promise(r => setTimeout(r, 10000))";

async fn local<F: Future<Output = ()>>(body: F) {
    tokio::task::LocalSet::new()
        .run_until(async {
            tokio::time::timeout(Duration::from_secs(120), body)
                .await
                .expect("test took more than 120 s")
        })
        .await
}

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {STEP:?}"))
}

fn error_of<T>(r: Result<T, Error>) -> Error {
    match r {
        Ok(_) => panic!("expected an error, got a success"),
        Err(e) => e,
    }
}

async fn start() -> (LaunchedBrowser, Connection) {
    let browser = within("launch", Launch::new().launch())
        .await
        .expect("launch Chromium");
    let conn = within(
        "connect",
        Connection::connect(browser.ws_url(), ConnectionConfig::default()),
    )
    .await
    .expect("connect to Chromium");
    (browser, conn)
}

async fn open(conn: &Connection) -> Page {
    within("open a page", conn.new_page(&PageOptions::default()))
        .await
        .expect("open a page")
}

/// `(state, process group)` of `pid` from `/proc`, or `None` if there is no such process.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after `(comm)`, which may itself hold spaces or parentheses.
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let _ppid = rest.next()?;
    Some((state, rest.next()?.parse().ok()?))
}

/// Live processes of the browser's process group (the browser leads its own group).
fn group_members(browser_pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            proc_stat(pid).is_some_and(|(state, pgid)| pgid == browser_pid && state != 'Z')
        })
        .collect()
}

/// The browser's renderer processes (`--type=renderer` on their command line). Chromium
/// rewrites its children's command lines into one space-separated string, so this looks
/// for the flag anywhere in it.
fn renderers(browser_pid: u32) -> Vec<u32> {
    const NEEDLE: &[u8] = b"--type=renderer";
    group_members(browser_pid)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(NEEDLE.len()).any(|w| w == NEEDLE))
        })
        .collect()
}

/// Resident memory of `pid` in KiB (0 if it is gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4)
}

/// The renderer process of `page`. Comparing the renderers before and after opening a
/// page is not enough: Chromium keeps a spare renderer warm and hands it to the next new
/// page. So the page marks its own process instead: it fills 256 MiB, and its renderer is
/// the one whose resident memory grew by more than 200 MiB.
async fn renderer_of(page: &Page, browser_pid: u32) -> u32 {
    let before: Vec<(u32, u64)> = renderers(browser_pid)
        .into_iter()
        .map(|pid| (pid, rss_kib(pid)))
        .collect();
    within(
        "mark the renderer",
        page.evaluate_value("globalThis.cdpmuxMarker = new Uint8Array(256 << 20).fill(7); 1"),
    )
    .await
    .expect("allocate the marker");
    let grown: Vec<u32> = before
        .into_iter()
        .filter(|&(pid, rss)| rss_kib(pid).saturating_sub(rss) > 200 << 10)
        .map(|(pid, _)| pid)
        .collect();
    match grown[..] {
        [pid] => pid,
        _ => panic!("expected one renderer to grow by 256 MiB, found {grown:?}"),
    }
}

/// Stops the browser and checks that none of its processes is left.
///
/// The browser itself must be gone and reaped as soon as `shutdown` returns. The other
/// members of its group got SIGKILL but are reaped by init, not by us, and the kernel
/// gives no notice of that, so they are polled for (bounded).
async fn shut_down(browser: LaunchedBrowser) {
    let pid = browser.pid();
    within("shutdown", browser.shutdown())
        .await
        .expect("shutdown");
    assert_eq!(proc_stat(pid), None, "the browser {pid} is gone and reaped");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = group_members(pid);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes of the browser's group still alive 5 s after shutdown: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn navigates_reads_the_title_and_shuts_down_cleanly() {
    if !support::require_browser() {
        return;
    }
    local(async {
        let (base, server) = support::serve_html(vec![(
            "/hello",
            "<!doctype html><title>Hello from cdpmux</title><p>hi</p>".to_owned(),
        )])
        .await;
        let (browser, conn) = start().await;
        let page = open(&conn).await;

        within("goto", page.goto(&format!("{base}/hello")))
            .await
            .expect("navigate to the local page");
        assert_eq!(
            within("title", page.title()).await.expect("title"),
            "Hello from cdpmux"
        );
        let typed = within(
            "typed evaluate",
            page.execute(EvaluateParams::new("document.title")),
        )
        .await
        .expect("typed evaluate");
        assert_eq!(typed.result.value, Some(json!("Hello from cdpmux")));
        assert_eq!(
            within("evaluate", page.evaluate_value("6*7"))
                .await
                .unwrap(),
            json!(42)
        );

        let err = error_of(within("unknown method", page.call("Nope.nothing", json!({}))).await);
        assert_eq!(
            (err.kind(), err.cdp_code()),
            (ErrorKind::Protocol, Some(-32601))
        );

        within("close", page.close()).await.expect("close the page");
        assert_eq!(conn.stats().pending_calls, 0);
        assert!(!conn.is_closed());
        server.abort();
        drop(conn);
        shut_down(browser).await;
    })
    .await
}

#[tokio::test]
async fn page_crash_fails_the_pending_call_and_every_later_one() {
    if !support::require_browser() {
        return;
    }
    local(async {
        let (browser, conn) = start().await;
        let survivor = open(&conn).await;
        let page = open(&conn).await;
        page.set_command_timeout(Duration::from_secs(30));

        let pending = page.evaluate_value(SLOW_PROMISE);
        // Chromium never answers `Page.crash` either: the crash event ends both.
        let crash = page.call("Page.crash", json!({}));
        let started = Instant::now();
        let (pending, crash) = within("Page.crash", async { tokio::join!(pending, crash) }).await;
        eprintln!(
            "Page.crash: the pending call failed after {:?}",
            started.elapsed()
        );
        let err = error_of(pending);
        assert_eq!(err.kind(), ErrorKind::SessionCrashed, "{err}");
        assert_eq!(error_of(crash).kind(), ErrorKind::SessionCrashed);
        assert!(!page.is_alive());

        let next = page
            .evaluate_value("1+1")
            .now_or_never()
            .expect("a crashed page refuses at once");
        assert_eq!(error_of(next).kind(), ErrorKind::SessionCrashed);

        assert_eq!(
            within("survivor", survivor.evaluate_value("1+1"))
                .await
                .unwrap(),
            json!(2)
        );
        drop(page);
        drop(survivor);
        drop(conn);
        shut_down(browser).await;
    })
    .await
}

#[tokio::test]
async fn a_renderer_killed_by_pid_fails_the_pending_call() {
    if !support::require_browser() {
        return;
    }
    local(async {
        let (browser, conn) = start().await;
        let survivor = open(&conn).await;
        let page = open(&conn).await;
        let renderer = renderer_of(&page, browser.pid()).await;
        page.set_command_timeout(Duration::from_secs(30));

        let pending = page.evaluate_value(SLOW_PROMISE);
        let (pending, killed_at) = within("kill the renderer", async {
            tokio::join!(pending, async {
                // Answered by the same renderer, so the slow call is running by now.
                let two = page.evaluate_value("1+1").await;
                assert_eq!(two.expect("1+1"), json!(2));
                // SAFETY: plain kill(2) on a pid of the browser's own process group.
                let rc = unsafe { libc::kill(renderer as libc::pid_t, libc::SIGKILL) };
                assert_eq!(rc, 0, "kill -9 {renderer}");
                Instant::now()
            })
        })
        .await;
        eprintln!(
            "kill -9 renderer {renderer}: the pending call failed after {:?}",
            killed_at.elapsed()
        );
        let err = error_of(pending);
        assert_eq!(err.kind(), ErrorKind::SessionCrashed, "{err}");
        assert!(!page.is_alive());
        let next = page.evaluate_value("1+1").now_or_never().expect("at once");
        assert_eq!(error_of(next).kind(), ErrorKind::SessionCrashed);

        assert_eq!(
            within("survivor", survivor.evaluate_value("2+2"))
                .await
                .unwrap(),
            json!(4)
        );
        drop(page);
        drop(survivor);
        drop(conn);
        shut_down(browser).await;
    })
    .await
}

#[tokio::test]
async fn a_hung_renderer_times_out_and_terminate_execution_frees_it() {
    if !support::require_browser() {
        return;
    }
    local(async {
        let (browser, conn) = start().await;
        let page = open(&conn).await;
        page.set_command_timeout(Duration::from_millis(500));

        let err = error_of(within("hang", page.evaluate_value("while(true){}")).await);
        assert_eq!(
            err.kind(),
            ErrorKind::Timeout(TimeoutKind::Command),
            "{err}"
        );
        assert!(page.is_alive(), "a hung page is not a dead one");

        // A hung renderer still lets the browser answer this one. The transport may have
        // sent one itself when the deadline passed; Chromium then refuses a second while
        // the first is in progress, which frees the renderer just the same.
        page.set_command_timeout(Duration::from_secs(10));
        match within(
            "terminate",
            page.call("Runtime.terminateExecution", json!({})),
        )
        .await
        {
            Ok(_) => {}
            Err(e) if e.cdp_code() == Some(-32000) && e.message().contains("termination") => {}
            Err(e) => panic!("Runtime.terminateExecution: {e}"),
        }
        assert_eq!(
            within("1+1 after the hang", page.evaluate_value("1+1"))
                .await
                .expect("the renderer is free again"),
            json!(2)
        );
        assert_eq!(conn.stats().pending_calls, 0);
        drop(page);
        drop(conn);
        shut_down(browser).await;
    })
    .await
}
