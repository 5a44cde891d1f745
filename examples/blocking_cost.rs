//! Which way of blocking resources costs Chromium less: `Fetch.enable` with patterns
//! (each blocked request paused, then failed by cdpmux) or `Network.setBlockedURLs`
//! (URL patterns only, failed inside Chromium)? And what does either save over loading
//! everything?
//!
//! Four pools, one browser each, run the same page (20 SVG images, 4 stylesheets, 2
//! web fonts) in interleaved rounds:
//! - no blocking;
//! - by type, on a copy of the page whose resource URLs have no known extension
//!   (`/i3.img`): every blocked request goes through `Fetch` (paused, then failed);
//! - by type, resource URLs with their usual extensions (`/i3.svg`): the type's
//!   extension patterns catch them in `Network.setBlockedURLs` first (what
//!   [`Blocking::resource`] ships);
//! - by URL pattern only (`*.svg*`, ...): `Network.setBlockedURLs` alone.
//!
//! Per arm it prints pages/s, the browser's CPU milliseconds per page (utime + stime of
//! its process group, from `/proc`), the requests per page that reached the server and
//! the pool's blocked-request counter.
//!
//! `cargo run --release --example blocking_cost [pages_per_round] [rounds]`
//! (`BLOCKING_COST_DEBUG=1` prints every path the server was asked for).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use cdpmux::cdp::PageOptions;
use cdpmux::{Blocking, Job, Pool, ResourceType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SESSIONS: usize = 4;

#[derive(Clone, Copy, PartialEq)]
enum Arm {
    Nothing,
    TypeThroughFetch,
    TypeByExtension,
    UrlOnly,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Nothing => "no blocking",
            Arm::TypeThroughFetch => "by type, all through Fetch",
            Arm::TypeByExtension => "by type, caught by extension",
            Arm::UrlOnly => "by URL pattern only",
        }
    }

    /// The page this arm loads: resource URLs with or without their usual extensions.
    fn page(self) -> &'static str {
        match self {
            Arm::TypeThroughFetch => "/plain",
            _ => "/page",
        }
    }

    fn blocking(self) -> Blocking {
        let types = [
            ResourceType::Image,
            ResourceType::Stylesheet,
            ResourceType::Font,
        ];
        match self {
            Arm::Nothing => Blocking::none(),
            Arm::TypeThroughFetch | Arm::TypeByExtension => Blocking::none().resources(types),
            Arm::UrlOnly => Blocking::none().url("*.svg*").url("*.css*").url("*.woff2*"),
        }
    }
}

struct Measured {
    arm: Arm,
    pool: Pool,
    browser: u32,
    pages: u64,
    wall: Duration,
    cpu_ticks: u64,
    requests: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> cdpmux::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().ok());
    let per_round = args.next().flatten().unwrap_or(40);
    let rounds = args.next().flatten().unwrap_or(3);
    let requests = Arc::new(AtomicU64::new(0));
    let base = serve(requests.clone()).await;

    let mut arms = Vec::new();
    for arm in [
        Arm::Nothing,
        Arm::TypeThroughFetch,
        Arm::TypeByExtension,
        Arm::UrlOnly,
    ] {
        let options = PageOptions {
            block: arm.blocking(),
            ..PageOptions::default()
        };
        let pool = Pool::builder()
            .launch(Launch::new())
            .shards(1)
            .sessions_per_shard(SESSIONS)
            .page_options(options)
            .build()
            .await?;
        let browser = pool
            .run(Job::new(), async |page| {
                let info = page
                    .connection()
                    .call("SystemInfo.getProcessInfo", serde_json::json!({}))
                    .await?;
                Ok(info["processInfo"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["type"] == "browser")
                    .and_then(|p| p["id"].as_u64())
                    .unwrap_or(0) as u32)
            })
            .await?;
        arms.push(Measured {
            arm,
            pool,
            browser,
            pages: 0,
            wall: Duration::ZERO,
            cpu_ticks: 0,
            requests: 0,
        });
    }
    // A warm-up round per arm (pages opened, caches of the binary warm), not measured.
    for m in &arms {
        crawl(m.arm, &m.pool, &base, SESSIONS as u64).await?;
    }
    for _ in 0..rounds {
        for m in arms.iter_mut() {
            let (cpu0, req0, t0) = (
                cpu_ticks(m.browser),
                requests.load(Ordering::Relaxed),
                Instant::now(),
            );
            crawl(m.arm, &m.pool, &base, per_round).await?;
            m.wall += t0.elapsed();
            m.cpu_ticks += cpu_ticks(m.browser) - cpu0;
            m.requests += requests.load(Ordering::Relaxed) - req0;
            m.pages += per_round;
        }
    }
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "{} pages per arm, {rounds} interleaved rounds, {SESSIONS} pages in parallel",
        per_round * rounds
    );
    println!(
        "{:<34} {:>8} {:>14} {:>14} {:>10}",
        "arm", "pages/s", "CPU ms/page", "requests/page", "blocked"
    );
    for m in &arms {
        let snap = m.pool.metrics().await;
        println!(
            "{:<34} {:>8.1} {:>14.1} {:>14.1} {:>10}",
            m.arm.name(),
            m.pages as f64 / m.wall.as_secs_f64(),
            m.cpu_ticks as f64 / hz * 1000.0 / m.pages as f64,
            m.requests as f64 / m.pages as f64,
            snap.counters.blocked_requests,
        );
    }
    for m in arms {
        m.pool.shutdown(Duration::from_secs(5)).await?;
    }
    Ok(())
}

/// Loads `pages` pages, `SESSIONS` at a time.
async fn crawl(arm: Arm, pool: &Pool, base: &str, pages: u64) -> cdpmux::Result<()> {
    let mut running = tokio::task::JoinSet::new();
    for i in 0..pages {
        let (pool, url) = (pool.clone(), format!("{base}{}?{i}", arm.page()));
        running.spawn(async move {
            pool.run(Job::new(), async move |page| page.goto(&url).await)
                .await
        });
        while running.len() >= SESSIONS {
            running
                .join_next()
                .await
                .expect("a task")
                .expect("no panic")?;
        }
    }
    while let Some(done) = running.join_next().await {
        done.expect("no panic")?;
    }
    Ok(())
}

/// CPU ticks (user + system) of the live processes in the browser's process group.
fn cpu_ticks(browser: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After `(comm)`: state ppid pgrp ... utime is field 14, stime 15 (1-based).
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let pgrp: u32 = fields.get(2)?.parse().ok()?;
            (pgrp == browser).then(|| {
                fields
                    .get(11)
                    .and_then(|u| u.parse::<u64>().ok())
                    .unwrap_or(0)
                    + fields
                        .get(12)
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0)
            })
        })
        .sum()
}

/// Serves the page and its resources on 127.0.0.1, counting requests. Nothing is cached.
async fn serve(requests: Arc<AtomicU64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    // `plain`: the same resources at URLs without a known extension.
    let page_with = |css: &str, img: &str, font: &str| {
        let mut page = String::from("<!doctype html><title>heavy</title>");
        for i in 0..4 {
            page.push_str(&format!(r#"<link rel="stylesheet" href="/s{i}.{css}">"#));
        }
        page.push_str(&format!(
            "<style>@font-face{{font-family:A;src:url(/a.{font})}}\
             @font-face{{font-family:B;src:url(/b.{font})}}h1{{font-family:A}}p{{font-family:B}}\
             </style><h1>Heavy</h1>"
        ));
        for i in 0..20 {
            page.push_str(&format!(
                r#"<img src="/i{i}.{img}" width="64" height="64">"#
            ));
        }
        page.push_str(&"<p>Some text in a paragraph. </p>".repeat(50));
        page
    };
    let page = page_with("css", "svg", "woff2");
    let plain = Arc::new(page_with("style", "img", "font"));
    let css: String = (0..400)
        .map(|i| {
            format!(
                ".c{i} p, div > .x{i} {{ margin: {}px; color: #{:06x}; }}\n",
                i % 7,
                i * 97
            )
        })
        .collect();
    let svg: String = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">{}</svg>"#,
        (0..60)
            .map(|i| format!(
                r##"<circle cx="{}" cy="{}" r="{}" fill="#{:06x}"/>"##,
                i % 64,
                (i * 7) % 64,
                3 + i % 9,
                i * 4099
            ))
            .collect::<String>()
    );
    let (page, css, svg) = (Arc::new(page), Arc::new(css), Arc::new(svg));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (page, plain, css, svg, requests) = (
                page.clone(),
                plain.clone(),
                css.clone(),
                svg.clone(),
                requests.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                requests.fetch_add(1, Ordering::Relaxed);
                let head = String::from_utf8_lossy(&got);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                if std::env::var_os("BLOCKING_COST_DEBUG").is_some() {
                    eprintln!("{path}");
                }
                let path = path.split('?').next().unwrap_or("/");
                let (kind, body): (&str, Vec<u8>) =
                    if path.ends_with("css") || path.ends_with(".style") {
                        ("text/css", css.as_bytes().to_vec())
                    } else if path.ends_with(".svg") || path.ends_with(".img") {
                        ("image/svg+xml", svg.as_bytes().to_vec())
                    } else if path.ends_with(".woff2") || path.ends_with(".font") {
                        ("font/woff2", vec![0u8; 20_000])
                    } else if path == "/plain" {
                        ("text/html", plain.as_bytes().to_vec())
                    } else {
                        ("text/html", page.as_bytes().to_vec())
                    };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    base
}
