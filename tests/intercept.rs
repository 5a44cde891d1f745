//! Request interception on real Chromium: a handler fulfils, fails or changes the
//! requests a page sends; one that never answers cannot hang the page; blocking comes
//! first; and the interception ends with its job.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::cdp::{Decision, FailReason, Interceptor, PageOptions};
use cdpmux::{Blocking, Job, Pool, ResourceType};
use support::site::{Route, Site};

const LIMIT: Duration = Duration::from_secs(60);

/// One shard, one page: every job of a test gets the same page.
async fn pool_of_one(options: PageOptions) -> Pool {
    Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .sessions_per_shard(1)
        .page_options(options)
        .build()
        .await
        .expect("launch Chromium and build a pool")
}

/// Fulfils every request for a path ending in `/fake` with `body` as HTML.
fn fake_document(body: &'static str) -> Interceptor {
    Interceptor::new(async move |request| {
        if request.url().ends_with("/fake") {
            Decision::fulfill(200, "text/html", body)
        } else {
            Decision::proceed()
        }
    })
}

async fn text_of(page: &cdpmux::Page, id: &str) -> cdpmux::Result<serde_json::Value> {
    page.evaluate_value(&format!(
        "document.getElementById('{id}')?.textContent ?? null"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fulfilled_document_is_what_the_page_shows_and_the_site_never_sees_it() {
    if !support::require_browser() {
        return;
    }
    let site = Site::start(vec![]).await;
    let pool = pool_of_one(PageOptions::default()).await;
    let url = site.url("/fake");
    let (status, text) = tokio::time::timeout(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            let _guard = page
                .intercept(fake_document("<p id=x>from the handler</p>"))
                .await?;
            let nav = page.goto(&url).await?;
            Ok((nav.status, text_of(page, "x").await?))
        }),
    )
    .await
    .expect("the job ends")
    .expect("the job succeeds");
    assert_eq!(status, Some(200));
    assert_eq!(text, "from the handler");
    assert_eq!(
        site.requested("/fake"),
        0,
        "the request never left the browser"
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_image_is_missing_and_blocking_applies_before_the_handler() {
    if !support::require_browser() {
        return;
    }
    let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="3" height="2"></svg>"#;
    let site = Site::start(vec![
        (
            "/page",
            Route::html(
                r#"<link rel=stylesheet href="/style?v=1">
                   <img id=ok src="/ok.svg"><img id=bad src="/bad.svg">"#,
            ),
        ),
        ("/ok.svg", Route::ok("image/svg+xml", svg)),
        ("/bad.svg", Route::ok("image/svg+xml", svg)),
        ("/style", Route::ok("text/css", "p { color: red }")),
    ])
    .await;
    // The pool blocks stylesheets; the handler fails one image.
    let options = PageOptions {
        block: Blocking::none().resource(ResourceType::Stylesheet),
        ..PageOptions::default()
    };
    let pool = pool_of_one(options).await;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let url = site.url("/page");
    let saw = seen.clone();
    let widths = tokio::time::timeout(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            let saw = saw.clone();
            let interceptor = Interceptor::new(async move |request| {
                saw.lock().unwrap().push(request.resource_type().to_owned());
                if request.url().ends_with("/bad.svg") {
                    Decision::Fail(FailReason::BlockedByClient)
                } else {
                    Decision::proceed()
                }
            });
            let _guard = page.intercept(interceptor).await?;
            page.goto(&url).await?;
            page.evaluate_value(
                "[document.getElementById('ok').naturalWidth, document.getElementById('bad').naturalWidth]",
            )
            .await
        }),
    )
    .await
    .expect("the job ends")
    .expect("the job succeeds");
    assert_eq!(
        widths,
        serde_json::json!([3, 0]),
        "ok.svg loaded, bad.svg failed"
    );
    assert_eq!(site.requested("/ok.svg"), 1);
    assert_eq!(
        site.requested("/bad.svg"),
        0,
        "the failed image never reached the site"
    );
    assert_eq!(
        site.requested("/style"),
        0,
        "the pool's blocking still applies"
    );
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&"Document".to_owned()), "{seen:?}");
    assert!(
        !seen.contains(&"Stylesheet".to_owned()),
        "a blocked request never reaches the handler: {seen:?}"
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continued_request_carries_the_headers_the_handler_set() {
    if !support::require_browser() {
        return;
    }
    let site = Site::start(vec![("/page", Route::html("<p id=x>page</p>"))]).await;
    let pool = pool_of_one(PageOptions::default()).await;
    let url = site.url("/page");
    tokio::time::timeout(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            let interceptor = Interceptor::new(async |request| {
                let mut headers = request.headers().to_vec();
                headers.push(("X-Crawler".to_owned(), "cdpmux-test".to_owned()));
                Decision::Continue {
                    url: None,
                    headers: Some(headers),
                    post_data: None,
                }
            });
            let _guard = page.intercept(interceptor).await?;
            page.goto(&url).await?;
            text_of(page, "x").await
        }),
    )
    .await
    .expect("the job ends")
    .expect("the job succeeds");
    let head = site.last_head("/page").expect("the site got the request");
    assert!(
        head.to_ascii_lowercase().contains("x-crawler: cdpmux-test"),
        "{head}"
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_never_answers_cannot_hang_the_page_and_is_counted() {
    if !support::require_browser() {
        return;
    }
    let site = Site::start(vec![("/page", Route::html("<p id=x>loaded</p>"))]).await;
    let pool = pool_of_one(PageOptions::default()).await;
    let url = site.url("/page");
    let text = tokio::time::timeout(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            let never = Interceptor::new(async |_| std::future::pending::<Decision>().await)
                .deadline(Duration::from_millis(200));
            let _guard = page.intercept(never).await?;
            page.goto(&url).await?;
            text_of(page, "x").await
        }),
    )
    .await
    .expect("the job ends")
    .expect("the page loads without its handler's answer");
    assert_eq!(text, "loaded");
    let snap = pool.metrics().await;
    assert!(
        snap.counters.intercept_timeouts >= 1,
        "the document waited out its deadline: {:?}",
        snap.counters
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_paused_when_the_interception_ends_is_sent() {
    if !support::require_browser() {
        return;
    }
    let site = Site::start(vec![("/page", Route::html("<p id=x>sent</p>"))]).await;
    let pool = pool_of_one(PageOptions::default()).await;
    let url = site.url("/page");
    let text = tokio::time::timeout(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            let (paused_tx, mut paused) = tokio::sync::mpsc::unbounded_channel();
            let hold = Interceptor::new(async move |request| {
                let _ = paused_tx.send(request.url().to_owned());
                std::future::pending::<Decision>().await
            })
            .deadline(Duration::from_secs(600));
            let guard = page.intercept(hold).await?;
            let loaded = page.wait_for_event("Page.loadEventFired");
            let navigate = page.call("Page.navigate", serde_json::json!({ "url": url }));
            let release = async move {
                paused.recv().await;
                drop(guard); // the handler never answered: the request goes on as it was
            };
            let (navigated, ()) = tokio::join!(navigate, release);
            navigated?;
            loaded.wait(LIMIT).await?;
            text_of(page, "x").await
        }),
    )
    .await
    .expect("the job ends")
    .expect("the job succeeds");
    assert_eq!(text, "sent");
    assert_eq!(site.requested("/page"), 1);
    assert_eq!(pool.metrics().await.counters.intercept_timeouts, 0);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_job_on_the_same_page_is_not_intercepted() {
    if !support::require_browser() {
        return;
    }
    let site = Site::start(vec![]).await;
    let pool = pool_of_one(PageOptions::default()).await;
    let url = site.url("/fake");
    let first = {
        let url = url.clone();
        pool.run(Job::new(), async move |page| {
            let guard = page.intercept(fake_document("<p id=x>faked</p>")).await?;
            page.goto(&url).await?;
            // Even a guard the job never drops ends with the job.
            std::mem::forget(guard);
            Ok((page.target_id().to_owned(), text_of(page, "x").await?))
        })
    };
    let (target, text) = tokio::time::timeout(LIMIT, first)
        .await
        .expect("the first job ends")
        .expect("the first job succeeds");
    assert_eq!(text, "faked");
    let (again, status, title) = tokio::time::timeout(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            let nav = page.goto(&url).await?;
            Ok((page.target_id().to_owned(), nav.status, page.title().await?))
        }),
    )
    .await
    .expect("the second job ends")
    .expect("the second job succeeds");
    assert_eq!(again, target, "the same page");
    assert_eq!(status, Some(404), "the site's own answer");
    assert_eq!(title, "not found");
    assert_eq!(site.requested("/fake"), 1, "only the second job's request");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pools_interceptor_comes_back_after_a_jobs_own() {
    if !support::require_browser() {
        return;
    }
    let site = Site::start(vec![]).await;
    let options = PageOptions {
        intercept: Some(fake_document("<p id=x>pool</p>")),
        ..PageOptions::default()
    };
    let pool = pool_of_one(options).await;
    let url = site.url("/fake");
    let read = |url: String| {
        async move |page: &cdpmux::Page| {
            page.goto(&url).await?;
            text_of(page, "x").await
        }
    };
    let pooled = pool.run(Job::new(), read(url.clone())).await.unwrap();
    assert_eq!(pooled, "pool");
    let own = {
        let url = url.clone();
        pool.run(Job::new(), async move |page| {
            let _guard = page.intercept(fake_document("<p id=x>job</p>")).await?;
            page.goto(&url).await?;
            text_of(page, "x").await
        })
    };
    assert_eq!(
        tokio::time::timeout(LIMIT, own).await.unwrap().unwrap(),
        "job"
    );
    let back = pool.run(Job::new(), read(url)).await.unwrap();
    assert_eq!(back, "pool", "the page's own interceptor is back");
    assert_eq!(site.requested("/fake"), 0);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cut_off_by_its_deadline_leaves_nothing_paused_for_the_next() {
    if !support::require_browser() {
        return;
    }
    let site = Site::start(vec![("/page", Route::html("<p id=x>next</p>"))]).await;
    let pool = pool_of_one(PageOptions::default()).await;
    let url = site.url("/page");
    let stuck = {
        let url = url.clone();
        pool.run(
            Job::new().timeout(Duration::from_secs(3)),
            async move |page| {
                let never = Interceptor::new(async |_| std::future::pending::<Decision>().await)
                    .deadline(Duration::from_secs(600));
                let _guard = page.intercept(never).await?;
                page.goto(&url).await?; // its document waits on the handler
                Ok(())
            },
        )
    };
    let err = tokio::time::timeout(LIMIT, stuck)
        .await
        .expect("the job ends")
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let text = tokio::time::timeout(
        LIMIT,
        pool.run(Job::new(), async move |page| {
            page.goto(&url).await?;
            text_of(page, "x").await
        }),
    )
    .await
    .expect("the next job ends")
    .expect("the next job loads its page, unintercepted");
    assert_eq!(text, "next");
    assert_eq!(pool.metrics().await.counters.intercept_timeouts, 0);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
