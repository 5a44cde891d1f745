//! How do I give each tenant of a crawl its own identity, and keep its login between
//! runs? With `Isolation::ContextPerKey` every affinity key gets its own browser context;
//! `ContextOptions` give that context a proxy (with credentials), a user agent, extra
//! headers, a locale and a time zone, and `export_cookies` / `import_cookies` carry its
//! cookies across a restart.
//!
//! Run with `cargo run --example identity` (needs Chromium: `apt-get install -y chromium`,
//! or set `CDPMUX_CHROME`). Set `PROXY=http://host:port` (and `PROXY_USER`,
//! `PROXY_PASSWORD` if it asks) to send tenant `a` through a proxy of yours.

use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::identity::{ContextOptions, Cookie, Proxy};
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Affinity, Isolation, Job, Pool};

async fn start_pool() -> cdpmux::Result<Pool> {
    Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .configure(|c| c.isolation = Isolation::ContextPerKey)
        // Every key without options of its own gets these (called on the shard).
        .context_options(|key| ContextOptions::new().user_agent(format!("example-crawler ({key})")))
        .build()
        .await
}

/// What tenant `key`'s page says about itself at `url`.
async fn whoami(pool: &Pool, key: &str, url: &str) -> cdpmux::Result<serde_json::Value> {
    let url = url.to_owned();
    let job = Job::new().affinity(Affinity::sticky(key));
    pool.run(job, async move |page| {
        page.goto(&url).await?;
        page.evaluate_value(
            "({ ua: navigator.userAgent, lang: navigator.language, \
               tz: Intl.DateTimeFormat().resolvedOptions().timeZone, cookie: document.cookie })",
        )
        .await
    })
    .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let site = DemoSite::start(SiteConfig::default())?;
    let url = site.url("/p/1");
    let pool = start_pool().await?;

    // Tenant a: its own user agent, headers, locale, time zone, and maybe a proxy.
    let mut a = ContextOptions::new()
        .user_agent("example-crawler (tenant a)")
        .header("X-Tenant", "a")
        .locale("fr-FR")
        .timezone("Europe/Paris");
    if let Ok(server) = std::env::var("PROXY") {
        let mut proxy = Proxy::new(server).bypass("<-loopback>"); // the demo site is local
        if let (Ok(user), Ok(password)) =
            (std::env::var("PROXY_USER"), std::env::var("PROXY_PASSWORD"))
        {
            proxy = proxy.credentials(user, password);
        }
        a = a.proxy(proxy);
    }
    pool.set_context_options("a", a).await?;
    println!("a: {}", whoami(&pool, "a", &url).await?);
    println!("b: {}", whoami(&pool, "b", &url).await?);

    // Tenant a logs in; its cookies go to a file, as a crawl would keep them.
    let login = url.clone();
    pool.run(
        Job::new().affinity(Affinity::sticky("a")),
        async move |page| {
            page.goto(&login).await?;
            page.evaluate_value("document.cookie = 'session=abc123; max-age=86400'")
                .await
        },
    )
    .await?;
    let file = std::env::temp_dir().join("cdpmux-example-cookies.json");
    let cookies = pool.export_cookies("a").await?;
    std::fs::write(&file, serde_json::to_string_pretty(&cookies)?)?;
    println!(
        "saved {} cookie(s) of a to {}",
        cookies.len(),
        file.display()
    );
    pool.shutdown(Duration::from_secs(5)).await?;

    // The next run: a new pool (a new browser) picks up where tenant a left off.
    let pool = start_pool().await?;
    let saved: Vec<Cookie> = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
    pool.import_cookies("a", saved).await?;
    // Its cookies are back; its options are the provider's now (options live with a
    // pool: set them again on the new one to keep them).
    println!("a after restart: {}", whoami(&pool, "a", &url).await?);
    println!("b after restart: {}", whoami(&pool, "b", &url).await?);
    pool.shutdown(Duration::from_secs(5)).await?;
    let _ = std::fs::remove_file(file);
    Ok(())
}
