//! Navigation on real Chromium: `goto` matched to its own navigation, wait-until
//! conditions, the navigation's response (status, headers, redirects, `net::ERR_*`
//! failures), client-side redirects, and resource blocking per pool and per job.

mod support;

use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::cdp::PageOptions;
use cdpmux::{Blocking, ErrorKind, GotoOptions, Job, Pool, ResourceType, WaitUntil};
use support::site::{Route, Site};

const LIMIT: Duration = Duration::from_secs(60);

async fn chromium_pool(options: PageOptions) -> Pool {
    Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .sessions_per_shard(1)
        .page_options(options)
        .configure(|c| c.command_timeout = Duration::from_secs(20))
        .build()
        .await
        .expect("launch Chromium and build a pool")
}

async fn within<F: std::future::Future>(limit: Duration, fut: F) -> F::Output {
    tokio::time::timeout(limit, fut)
        .await
        .expect("the test finishes in time")
}

fn no_store(route: Route) -> Route {
    route.header("Cache-Control", "no-store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_navigations_load_never_completes_the_second() {
    if !support::require_browser() {
        return;
    }
    // `/a` commits at once and then loads an image for 2 s; `/b` takes 4 s to answer.
    // Navigating to `/b` right after `/a` committed leaves `/a` loading: its load event
    // fires while `/b` is still on its way, and must not end `goto(/b)`.
    let site = Site::start(vec![
        (
            "/a",
            no_store(Route::html(r#"<title>a</title><img src="/a.png">"#)),
        ),
        (
            "/a.png",
            no_store(Route::ok("image/png", vec![0u8; 16]).delay(Duration::from_secs(2))),
        ),
        (
            "/b",
            no_store(Route::html("<title>b</title>").delay(Duration::from_secs(4))),
        ),
    ])
    .await;
    let pool = chromium_pool(PageOptions::default()).await;
    let (a, b) = (site.url("/a"), site.url("/b"));
    let title = within(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            let committed = page.wait_for_event("Page.frameNavigated");
            page.call("Page.navigate", serde_json::json!({ "url": a }))
                .await?;
            committed.wait(Duration::from_secs(20)).await?;
            page.goto(&b).await?;
            page.title().await
        }),
    )
    .await
    .expect("both navigations");
    assert_eq!(site.served("/b"), 1, "goto(/b) returned before /b arrived");
    assert_eq!(title, "b");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dom_content_loaded_returns_before_a_slow_image_and_load_waits_for_it() {
    if !support::require_browser() {
        return;
    }
    let slow = Duration::from_secs(3);
    let site = Site::start(vec![
        (
            "/dcl",
            no_store(Route::html(r#"<title>d</title><img src="/slow.png">"#)),
        ),
        (
            "/slow.png",
            no_store(Route::ok("image/png", vec![0u8; 16]).delay(slow)),
        ),
        (
            "/load",
            no_store(Route::html(r#"<title>l</title><img src="/slow2.png">"#)),
        ),
        (
            "/slow2.png",
            no_store(Route::ok("image/png", vec![0u8; 16]).delay(slow)),
        ),
    ])
    .await;
    let pool = chromium_pool(PageOptions::default()).await;
    let (dcl, load) = (site.url("/dcl"), site.url("/load"));
    let (at_dcl, at_load) = within(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            let dom = GotoOptions::new().wait_until(WaitUntil::DomContentLoaded);
            let nav = page.goto_with(&dcl, &dom).await?;
            let at_dcl = site.served("/slow.png");
            assert_eq!(nav.status, Some(200));
            page.goto_with(&load, &GotoOptions::new().wait_until(WaitUntil::Load))
                .await?;
            Ok((at_dcl, site.served("/slow2.png")))
        }),
    )
    .await
    .unwrap();
    assert_eq!(at_dcl, 0, "DOMContentLoaded came before the image finished");
    assert_eq!(at_load, 1, "load waited for the image");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_idle_waits_for_a_late_fetch() {
    if !support::require_browser() {
        return;
    }
    // The fetch starts after `load`, from the load handler, and takes 1 s.
    let page_html = r#"<title>start</title><script>
        addEventListener('load', () => setTimeout(() =>
            fetch('/late-data').then(r => r.text()).then(t => { document.title = t; }), 0));
    </script>"#;
    let site = Site::start(vec![
        ("/late", no_store(Route::html(page_html))),
        (
            "/late-data",
            no_store(Route::ok("text/plain", "late").delay(Duration::from_secs(1))),
        ),
    ])
    .await;
    let pool = chromium_pool(PageOptions::default()).await;
    let url = site.url("/late");
    let title = within(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            let idle = GotoOptions::new().wait_until(WaitUntil::network_idle());
            page.goto_with(&url, &idle).await?;
            page.title().await
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        site.served("/late-data"),
        1,
        "the late fetch was waited for"
    );
    assert_eq!(title, "late");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_statuses_headers_and_a_redirect_chain_are_returned() {
    if !support::require_browser() {
        return;
    }
    let site = Site::start(vec![
        ("/missing", Route::html("<title>no</title>").status(404)),
        ("/broken", Route::html("<title>oops</title>").status(500)),
        ("/empty404", Route::ok("text/html", "").status(404)),
        ("/r1", Route::redirect(301, "/r2")),
        ("/r2", Route::redirect(302, "/final")),
        (
            "/final",
            Route::html("<title>final</title>").header("X-Final", "yes"),
        ),
    ])
    .await;
    let pool = chromium_pool(PageOptions::default()).await;
    let urls: Vec<String> = ["/missing", "/broken", "/empty404", "/r1"]
        .iter()
        .map(|p| site.url(p))
        .collect();
    let navs = within(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            let mut navs = Vec::new();
            for url in &urls {
                navs.push(page.goto(url).await?);
            }
            Ok(navs)
        }),
    )
    .await
    .unwrap();
    let statuses: Vec<Option<u16>> = navs.iter().map(|n| n.status).collect();
    assert_eq!(statuses, [Some(404), Some(500), Some(404), Some(200)]);
    let chained = &navs[3];
    assert_eq!(chained.url, site.url("/final"));
    let chain: Vec<(String, Option<u16>)> = chained
        .redirects
        .iter()
        .map(|r| (r.url.clone(), r.status))
        .collect();
    assert_eq!(
        chain,
        [(site.url("/r1"), Some(301)), (site.url("/r2"), Some(302))]
    );
    assert_eq!(chained.header("x-final"), Some("yes"));
    assert_eq!(chained.mime_type.as_deref(), Some("text/html"));
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_and_an_unknown_host_are_navigation_errors() {
    if !support::require_browser() {
        return;
    }
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let pool = chromium_pool(PageOptions::default()).await;
    let refused = format!("http://127.0.0.1:{closed_port}/");
    let errors = within(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            let a = page.goto(&refused).await.unwrap_err();
            let b = page.goto("http://no-such-host.invalid/").await.unwrap_err();
            // The page is still usable after failed navigations.
            page.goto("about:blank").await?;
            Ok((a, b))
        }),
    )
    .await
    .unwrap();
    for (err, text) in [
        (&errors.0, "net::ERR_CONNECTION_REFUSED"),
        (&errors.1, "net::ERR_NAME_NOT_RESOLVED"),
    ] {
        assert_eq!(err.kind(), ErrorKind::Navigation, "{err}");
        assert!(err.to_string().contains(text), "{err}");
        assert!(!err.is_retryable(), "{err}");
    }
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_redirects_are_followed_only_when_asked() {
    if !support::require_browser() {
        return;
    }
    let site = Site::start(vec![
        (
            "/meta",
            no_store(Route::html(
                r#"<meta http-equiv="refresh" content="0;url=/scripted"><title>meta</title>"#,
            )),
        ),
        (
            "/scripted",
            no_store(Route::html(
                "<title>s</title><script>addEventListener('load', () => location.href = '/end')</script>",
            )),
        ),
        ("/end", no_store(Route::html("<title>end</title>"))),
    ])
    .await;
    let pool = chromium_pool(PageOptions::default()).await;
    let meta = site.url("/meta");
    let (plain, followed) = within(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            let plain = page.goto(&meta).await?;
            let follow = GotoOptions::new().follow_client_redirects(5, Duration::from_secs(2));
            let followed = page.goto_with(&meta, &follow).await?;
            Ok((plain, followed))
        }),
    )
    .await
    .unwrap();
    assert_eq!(plain.url, site.url("/meta"), "not followed unless asked");
    assert_eq!(followed.url, site.url("/end"));
    let hops: Vec<(String, Option<u16>)> = followed
        .redirects
        .iter()
        .map(|r| (r.url.clone(), r.status))
        .collect();
    assert_eq!(
        hops,
        [(site.url("/meta"), None), (site.url("/scripted"), None)]
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_resources_are_never_requested_and_a_job_can_change_that_for_itself() {
    if !support::require_browser() {
        return;
    }
    let page_html = r#"<title>blocky</title>
        <link rel="stylesheet" href="/style.css">
        <style>@font-face { font-family: F; src: url(/font.woff2); } body { font-family: F; }</style>
        <img src="/pic.png">
        <script src="/app.js"></script>
        <script src="/tracker.js"></script>
        <p>text</p>"#;
    let site = Site::start(vec![
        ("/blocky", no_store(Route::html(page_html))),
        (
            "/style.css",
            no_store(Route::ok("text/css", "p { color: red }")),
        ),
        (
            "/font.woff2",
            no_store(Route::ok("font/woff2", vec![0u8; 8])),
        ),
        ("/pic.png", no_store(Route::ok("image/png", vec![0u8; 16]))),
        (
            "/app.js",
            no_store(Route::ok("text/javascript", "window.app = 1;")),
        ),
        (
            "/tracker.js",
            no_store(Route::ok("text/javascript", "window.t = 1;")),
        ),
    ])
    .await;
    let block = Blocking::none()
        .resources([
            ResourceType::Image,
            ResourceType::Stylesheet,
            ResourceType::Font,
            // Chromium refuses a `TextTrack` fetch pattern: blocking media must not ask
            // for one, or no page opens.
            ResourceType::Media,
        ])
        .url("*/tracker.js");
    let pool = chromium_pool(PageOptions {
        block,
        ..PageOptions::default()
    })
    .await;
    let url = site.url("/blocky");
    let load = |job: Job| {
        let (pool, url) = (pool.clone(), url.clone());
        async move {
            within(
                LIMIT,
                pool.run(job, async move |page| {
                    page.goto(&url).await?;
                    page.evaluate_value("[window.app, window.t]").await
                }),
            )
            .await
            .unwrap()
        }
    };
    let blocked = ["/style.css", "/font.woff2", "/pic.png", "/tracker.js"];
    let counts = |site: &Site| blocked.map(|p| site.requested(p));

    let scripts = load(Job::new()).await;
    assert_eq!(counts(&site), [0; 4], "the pool's blocking");
    assert_eq!(site.requested("/app.js"), 1);
    assert_eq!(scripts, serde_json::json!([1, null]));
    // Each blocked request counted once (type blocking through Fetch and URL blocking
    // both report it), plus the browser's own `/favicon.ico` (an image by extension)
    // when it asked for it before the snapshot.
    let blocked = pool.metrics().await.counters.blocked_requests;
    assert!(
        (4..=5).contains(&blocked),
        "blocked requests counted: {blocked}"
    );
    assert_eq!(site.requested("/favicon.ico"), 0);

    // One job blocks nothing; the page's own blocking is back for the next one (the
    // pool has a single page, so both run on it).
    load(Job::new().block(Blocking::none())).await;
    assert_eq!(site.requested("/pic.png"), 1, "unblocked for that job");
    assert_eq!(site.requested("/tracker.js"), 1);
    load(Job::new()).await;
    assert_eq!(site.requested("/pic.png"), 1, "blocked again after it");
    assert_eq!(site.requested("/tracker.js"), 1);
    assert_eq!(site.requested("/app.js"), 3);
    assert_eq!(pool.metrics().await.counters.sessions_created, 1);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_gets_the_navigation_too() {
    if !support::require_browser() {
        return;
    }
    let site = Site::start(vec![("/gone", Route::html("<title>x</title>").status(410))]).await;
    let pool = chromium_pool(PageOptions::default()).await;
    let lease = within(LIMIT, pool.acquire(Job::new())).await.unwrap();
    let nav = within(LIMIT, lease.goto(&site.url("/gone"))).await.unwrap();
    assert_eq!(nav.status, Some(410));
    let commit = GotoOptions::new().wait_until(WaitUntil::Commit);
    let nav = within(LIMIT, lease.goto_with(&site.url("/gone"), &commit))
        .await
        .unwrap();
    assert_eq!(nav.url, site.url("/gone"));
    drop(lease);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The simulated browser answers what `goto` needs: each condition ends, and the
/// document's response is reported (always 200 there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_browser_reports_each_condition_and_the_response() {
    let (_sim, pool) = support::one_shard(1).await;
    let conditions = [
        WaitUntil::Commit,
        WaitUntil::DomContentLoaded,
        WaitUntil::Load,
        WaitUntil::NetworkIdle {
            idle: Duration::from_millis(20),
            max_inflight: 0,
        },
    ];
    let navs = within(
        LIMIT,
        pool.run(
            Job::new().block(Blocking::none().resource(ResourceType::Image).url("*.png")),
            async move |page| {
                let mut navs = Vec::new();
                for (i, wait) in conditions.into_iter().enumerate() {
                    let url = format!("https://a.test/{i}");
                    navs.push(
                        page.goto_with(&url, &GotoOptions::new().wait_until(wait))
                            .await?,
                    );
                }
                Ok(navs)
            },
        ),
    )
    .await
    .unwrap();
    for (i, nav) in navs.iter().enumerate() {
        assert_eq!(nav.url, format!("https://a.test/{i}"));
        assert_eq!(nav.status, Some(200));
        assert_eq!(nav.mime_type.as_deref(), Some("text/html"));
    }
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The reset between jobs is a `goto("about:blank")` too: it must reach its own load
/// (not the previous page's, still loading), or the page would be retired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reset_to_about_blank_between_jobs_is_reused() {
    if !support::require_browser() {
        return;
    }
    let site = Site::start(vec![
        (
            "/p",
            no_store(Route::html(r#"<title>p</title><img src="/p.png">"#)),
        ),
        (
            "/p.png",
            no_store(Route::ok("image/png", vec![0u8; 16]).delay(Duration::from_secs(1))),
        ),
    ])
    .await;
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .sessions_per_shard(1)
        .configure(|c| c.reset = cdpmux::Reset::AboutBlank)
        .build()
        .await
        .expect("launch Chromium and build a pool");
    for _ in 0..3 {
        let url = site.url("/p");
        let commit = GotoOptions::new().wait_until(WaitUntil::Commit);
        within(
            LIMIT,
            pool.run(Job::new(), async move |page| {
                page.goto_with(&url, &commit).await
            }),
        )
        .await
        .unwrap();
    }
    let snap = support::settled(&pool, LIMIT, "after three jobs").await;
    assert_eq!(
        (
            snap.counters.sessions_created,
            snap.counters.sessions_crashed
        ),
        (1, 0),
        "one page, reset and reused"
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A page whose own blocking cannot be put back after a job that changed it is retired,
/// whatever the job's outcome: the next job never gets a page blocking the wrong things.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_blocking_cannot_be_restored_is_retired() {
    let (sim, pool) = support::sim_pool(cdpmux::sim::SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 1;
        c.command_timeout = Duration::from_millis(300);
    })
    .await;
    let sim = std::sync::Arc::new(sim);
    let hole = sim.clone();
    // The job blocks images for itself (Fetch.enable answered); then putting the pool's
    // blocking back (Fetch.disable) is never answered.
    let uses = within(
        LIMIT,
        pool.run(
            Job::new().block(Blocking::none().resource(ResourceType::Image)),
            async move |page| {
                hole.black_hole(Some("Fetch.disable"));
                page.goto("https://a.test/").await?;
                Ok(page.uses())
            },
        ),
    )
    .await
    .unwrap();
    assert_eq!(uses, 1);
    sim.black_hole(None);
    let next = within(LIMIT, pool.run(Job::new(), async |page| Ok(page.uses())))
        .await
        .unwrap();
    assert_eq!(next, 1, "the next job gets a fresh page");
    let snap = support::settled(&pool, LIMIT, "after both jobs").await;
    assert_eq!(
        (
            snap.counters.sessions_created,
            snap.counters.sessions_crashed
        ),
        (2, 1)
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
