//! How do I retry a job that hit a busy site (HTTP 429/503) or a flaky network? Give the
//! job a `RetryPolicy`: it says which failures retry, how long to back off (doubling,
//! with jitter), and honours the site's `Retry-After`. The job returns the status as an
//! error with `Navigation::error_for_status`; while it waits to retry it holds no page.
//!
//! A local server here answers 503 with `Retry-After: 1` twice, then 200.
//!
//! Run with `cargo run --example retry` (needs Chromium: `apt-get install -y chromium`,
//! or set `CDPMUX_CHROME`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use cdpmux::{Job, Pool, RetryCause, RetryPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = busy_site(2).await?;
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .sessions_per_shard(2)
        // The pool's default for every job: up to 2 retries, crashes and lost sockets only.
        .configure(|c| {
            c.retry = RetryPolicy::new(2).only(&[RetryCause::Crash, RetryCause::ConnectionLost])
        })
        .build()
        .await?;

    // This job's own policy: 4 retries on anything retryable, 200 ms doubling to 5 s,
    // a Retry-After of up to 30 s honoured, and a fresh page for each retry.
    let policy = RetryPolicy::new(4)
        .backoff(Duration::from_millis(200), Duration::from_secs(5))
        .max_retry_after(Duration::from_secs(30))
        .fresh_page(true);
    let started = Instant::now();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let job = Job::new().timeout(Duration::from_secs(60)).retry(policy);
    let title = pool
        .run(job, async move |page| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            println!("attempt {n} at {:?}", started.elapsed());
            page.goto(&url).await?.error_for_status()?;
            page.title().await
        })
        .await?;
    println!(
        "got {title:?} after {} attempts in {:?}",
        attempts.load(Ordering::SeqCst),
        started.elapsed()
    );
    let c = pool.metrics().await.counters;
    println!(
        "retries by cause: http_status {}, navigation {}, timeout {}, crash {}",
        c.retries_http_status, c.retries_navigation, c.retries_timeout, c.retries_crash
    );
    pool.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

/// A server that answers 503 with `Retry-After: 1` the first `busy` times, then 200.
async fn busy_site(busy: usize) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let served = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let served = served.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let Ok(n) = stream.read(&mut buf).await else {
                    return;
                };
                let page = buf[..n].starts_with(b"GET / ");
                let head = if page && served.fetch_add(1, Ordering::SeqCst) < busy {
                    "503 Service Unavailable\r\nRetry-After: 1"
                } else if page {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let body = "<title>finally</title>";
                let response = format!(
                    "HTTP/1.1 {head}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(url)
}
