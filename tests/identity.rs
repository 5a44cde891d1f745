//! Identity per key against real Chromium: a key's proxy (with credentials, beside
//! type blocking and a job's interceptor), user agent, headers, locale and time zone,
//! and its cookies carried across a pool restart.

mod support;

use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::cdp::{Decision, Interceptor};
use cdpmux::identity::{ContextOptions, Cookie, Proxy};
use cdpmux::{Affinity, Blocking, ErrorKind, Isolation, Job, Pool, ResourceType};
use support::proxy::{header, ForwardProxy, RecordingSite};

const LIMIT: Duration = Duration::from_secs(60);

async fn keyed_pool(configure: impl FnOnce(cdpmux::PoolBuilder) -> cdpmux::PoolBuilder) -> Pool {
    let builder = Pool::builder()
        .launch(Launch::default())
        .shards(1)
        .configure(|c| {
            c.isolation = Isolation::ContextPerKey;
            c.sessions_per_shard = 2;
        });
    configure(builder)
        .build()
        .await
        .expect("a pool on Chromium")
}

fn key(k: &str) -> Job {
    Job::new()
        .affinity(Affinity::sticky(k))
        .timeout(Duration::from_secs(30))
}

/// What a page of `k` shows at `url`: its user agent, language, time zone and body.
async fn visit(pool: &Pool, k: &str, url: &str) -> cdpmux::Result<serde_json::Value> {
    let url = url.to_owned();
    let run = pool.run(key(k), async move |page| {
        let nav = page.goto(&url).await?;
        let mut seen = page
            .evaluate_value(
                "({ ua: navigator.userAgent, lang: navigator.language, \
                   tz: Intl.DateTimeFormat().resolvedOptions().timeZone, \
                   body: document.body.innerText, cookie: document.cookie })",
            )
            .await?;
        seen["status"] = nav.status.into();
        Ok(seen)
    });
    tokio::time::timeout(LIMIT, run)
        .await
        .expect("the job ends in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_goes_through_its_proxy_with_its_identity_and_another_key_does_not() {
    if !support::require_browser() {
        return;
    }
    let proxy = ForwardProxy::start(Some(("crawler", "s3cret"))).await;
    let site = RecordingSite::start("<p>hello</p>").await;
    let pool = keyed_pool(|b| b).await;
    let a = ContextOptions::new()
        // Chromium never proxies loopback unless told to.
        .proxy(
            Proxy::new(proxy.url())
                .bypass("<-loopback>")
                .credentials("crawler", "s3cret"),
        )
        .user_agent("cdpmux-identity-test/A")
        .header("X-Tenant", "a")
        .locale("de-DE")
        .timezone("Asia/Tokyo");
    pool.set_context_options("a", a).await.unwrap();

    let seen = visit(&pool, "a", &site.url("/a")).await.unwrap();
    assert_eq!(seen["status"], 200, "{seen}");
    assert_eq!(seen["body"], "hello");
    assert_eq!(seen["ua"], "cdpmux-identity-test/A");
    assert_eq!(seen["lang"], "de-DE");
    assert_eq!(seen["tz"], "Asia/Tokyo");
    assert!(proxy.challenged() >= 1, "the proxy asked for credentials");
    assert!(
        proxy.passed_path("/a"),
        "key a's page went through the proxy"
    );
    let heads = site.heads_for("/a");
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(
        header(&heads[0], "User-Agent"),
        Some("cdpmux-identity-test/A")
    );
    assert_eq!(header(&heads[0], "X-Tenant"), Some("a"));
    assert_eq!(header(&heads[0], "Accept-Language"), Some("de-DE"));

    let seen = visit(&pool, "b", &site.url("/b")).await.unwrap();
    assert_eq!(seen["body"], "hello");
    assert_ne!(seen["ua"], "cdpmux-identity-test/A");
    assert!(
        !proxy.passed_path("/b"),
        "key b's page did not use the proxy"
    );
    let heads = site.heads_for("/b");
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(header(&heads[0], "X-Tenant"), None);
    assert_ne!(
        header(&heads[0], "User-Agent"),
        Some("cdpmux-identity-test/A")
    );

    // Key a's page is reused and still answers its proxy.
    visit(&pool, "a", &site.url("/a2")).await.unwrap();
    assert!(proxy.passed_path("/a2"));

    // Type blocking shares the page's Fetch with the proxy's answers: an image is
    // failed before it leaves, the document still goes through the proxy.
    let images = Blocking::none().resource(ResourceType::Image);
    let url = site.url("/a-img");
    let image = r#"new Promise(done => { const i = new Image();
        i.onload = () => done("loaded"); i.onerror = () => done("failed");
        i.src = "/picture"; })"#;
    let with_images_blocked = pool.run(key("a").block(images), async move |page| {
        let status = page.goto(&url).await?.status;
        Ok((status, page.evaluate_value(image).await?))
    });
    let (status, image) = with_images_blocked.await.unwrap();
    assert_eq!((status, image.as_str()), (Some(200), Some("failed")));
    assert!(proxy.passed_path("/a-img"));
    assert!(!proxy.passed_path("/picture"), "a blocked image");
    assert!(site.heads_for("/picture").is_empty());
    let urls = Blocking::none().url("*.png");
    let url = site.url("/a3");
    let blocked_by_url = pool.run(key("a").block(urls), async move |page| {
        page.goto(&url).await.map(|nav| nav.status)
    });
    assert_eq!(blocked_by_url.await.unwrap(), Some(200));
    assert!(proxy.passed_path("/a3"));
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interceptor_on_a_proxied_key_answers_one_request_and_the_rest_use_the_proxy() {
    if !support::require_browser() {
        return;
    }
    let proxy = ForwardProxy::start(Some(("crawler", "s3cret"))).await;
    let site = RecordingSite::start("<p>hello</p>").await;
    let pool = keyed_pool(|b| b).await;
    let creds = Proxy::new(proxy.url())
        .bypass("<-loopback>")
        .credentials("crawler", "s3cret");
    pool.set_context_options("a", ContextOptions::new().proxy(creds))
        .await
        .unwrap();
    let (doc, other) = (site.url("/doc"), site.url("/other"));
    let fetch = |path: &str| format!("fetch({path:?}).then(r => r.text())");
    let (faked, passed) = (fetch("/faked"), fetch("/other"));
    let job = pool.run(key("a"), async move |page| {
        let interceptor = Interceptor::new(async |request| {
            if request.url().ends_with("/faked") {
                Decision::fulfill(200, "text/plain", "from the handler")
            } else {
                Decision::proceed()
            }
        });
        let _guard = page.intercept(interceptor).await?;
        // The page's first request through the proxy is challenged while intercepting.
        let status = page.goto(&doc).await?.status;
        let faked = page.evaluate_value(&faked).await?;
        let passed = page.evaluate_value(&passed).await?;
        Ok((status, faked, passed))
    });
    let (status, faked, passed) = tokio::time::timeout(LIMIT, job)
        .await
        .expect("the job ends in time")
        .unwrap();
    assert_eq!(status, Some(200), "the proxy's challenge was answered");
    assert_eq!(faked, "from the handler");
    assert_eq!(passed, "<p>hello</p>");
    assert!(proxy.challenged() >= 1, "the proxy asked for credentials");
    assert!(proxy.passed_path("/doc") && proxy.passed_path("/other"));
    assert!(
        !proxy.passed_path("/faked"),
        "the fulfilled request stayed home"
    );
    assert!(site.heads_for("/faked").is_empty());
    // The interception ended with the job; the page still answers its proxy.
    let seen = visit(&pool, "a", &other).await.unwrap();
    assert_eq!(seen["status"], 200, "{seen}");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_proxy_credentials_end_in_the_proxys_answer_not_a_loop() {
    if !support::require_browser() {
        return;
    }
    let proxy = ForwardProxy::start(Some(("crawler", "right"))).await;
    let site = RecordingSite::start("<p>never</p>").await;
    let pool = keyed_pool(|b| b).await;
    let wrong = Proxy::new(proxy.url())
        .bypass("<-loopback>")
        .credentials("crawler", "wrong");
    pool.set_context_options("a", ContextOptions::new().proxy(wrong))
        .await
        .unwrap();
    let url = site.url("/secret");
    let run = pool.run(key("a"), async move |page| {
        page.goto(&url).await.map(|nav| nav.status)
    });
    let status = tokio::time::timeout(LIMIT, run)
        .await
        .expect("no endless challenge");
    assert_eq!(
        status.unwrap(),
        Some(407),
        "the proxy's refusal is the page"
    );
    assert!(site.heads_for("/secret").is_empty());
    let challenged = proxy.challenged();
    assert!(
        (1..=4).contains(&challenged),
        "one answer per challenge, then CancelAuth: {challenged}"
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_gives_each_key_its_options_and_a_refused_option_fails_only_its_key() {
    if !support::require_browser() {
        return;
    }
    let site = RecordingSite::start("<p>hi</p>").await;
    let pool = keyed_pool(|b| {
        b.context_options(|key| match key {
            "bad" => ContextOptions::new().timezone("Not/AZone"),
            k => ContextOptions::new().user_agent(format!("ua-for-{k}")),
        })
        .configure(|c| c.breaker_threshold = 1)
    })
    .await;
    let seen = visit(&pool, "x", &site.url("/x")).await.unwrap();
    assert_eq!(seen["ua"], "ua-for-x");
    let err = visit(&pool, "bad", &site.url("/bad")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.message().contains("\"bad\""), "{err}");
    // The browser was not blamed (its breaker opens at the first failure it counts).
    let seen = visit(&pool, "y", &site.url("/y")).await.unwrap();
    assert_eq!(seen["ua"], "ua-for-y");
    let err = pool
        .set_context_options("z", ContextOptions::new().header("Bad Name", "v"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_cookies_survive_a_pool_restart_and_stay_its_own() {
    if !support::require_browser() {
        return;
    }
    let site = RecordingSite::start("<p>shop</p>").await;
    let login = site.url("/login");
    let pool = keyed_pool(|b| b).await;
    let url = login.clone();
    pool.run(key("a"), async move |page| {
        page.goto(&url).await?;
        page.evaluate_value("document.cookie = 'sid=42; max-age=3600'; document.cookie = 'tmp=1'")
            .await
    })
    .await
    .unwrap();
    let exported = pool.export_cookies("a").await.unwrap();
    let names: Vec<&str> = exported.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"sid") && names.contains(&"tmp"),
        "{exported:?}"
    );
    let sid = exported.iter().find(|c| c.name == "sid").unwrap();
    assert!(
        sid.expires.is_some(),
        "a persistent cookie keeps its expiry"
    );
    assert!(pool.export_cookies("b").await.unwrap().is_empty());
    // Kept as JSON, as a crawl would keep them in a file.
    let saved = serde_json::to_string(&exported).unwrap();
    pool.shutdown(Duration::from_secs(5)).await.unwrap();

    let pool = keyed_pool(|b| b).await;
    let restored: Vec<Cookie> = serde_json::from_str(&saved).unwrap();
    pool.import_cookies("a", restored.clone()).await.unwrap();
    assert_eq!(
        pool.export_cookies("a").await.unwrap(),
        restored,
        "before first use, a key exports what was imported for it"
    );
    let seen = visit(&pool, "a", &site.url("/account")).await.unwrap();
    let cookie = seen["cookie"].as_str().unwrap();
    assert!(
        cookie.contains("sid=42") && cookie.contains("tmp=1"),
        "{cookie}"
    );
    let heads = site.heads_for("/account");
    let sent = header(&heads[0], "Cookie").unwrap_or("");
    assert!(
        sent.contains("sid=42"),
        "the site sees key a's session: {sent:?}"
    );
    let seen = visit(&pool, "b", &site.url("/other")).await.unwrap();
    assert_eq!(seen["cookie"], "", "key b does not see key a's cookies");
    assert_eq!(header(&site.heads_for("/other")[0], "Cookie"), None);

    // Imported into a context already open: it has them at once.
    let more = vec![Cookie::new("late", "7", "127.0.0.1")];
    pool.import_cookies("a", more).await.unwrap();
    let names: Vec<String> = pool
        .export_cookies("a")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(names.contains(&"late".to_owned()), "{names:?}");
    let err = pool
        .import_cookies("a", vec![Cookie::new("x", "y", "")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
