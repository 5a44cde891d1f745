//! The scripts' rules against a real `redis-server` of the test's own (a free loopback
//! port, no persistence, killed on drop). Deterministic: a lease of 0 ms has run out by
//! the next call, so no test waits for time to pass. Without `redis-server` the tests
//! print SKIPPED, and fail when `CDPMUX_REQUIRE_BROWSER=1` (CI installs it).

use super::*;

const P: &str = "cdpmux:t";

struct Server {
    child: std::process::Child,
    port: u16,
}

impl Server {
    fn start() -> Option<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(child) => Some(Server { child, port }),
            Err(e) if std::env::var("CDPMUX_REQUIRE_BROWSER").as_deref() == Ok("1") => {
                panic!("redis-server: {e} (scripts/ensure-redis.sh installs it)")
            }
            Err(e) => {
                eprintln!("SKIPPED: redis-server: {e}");
                None
            }
        }
    }

    async fn connect(&self) -> MultiplexedConnection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => return c,
                Err(e) => assert!(Instant::now() < deadline, "redis-server: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn offer(c: &mut MultiplexedConnection, urls: &[&str]) -> Vec<i64> {
    let mut inv = SCRIPTS.offer.arg(P);
    inv.arg(0).arg(-1).arg(-1).arg(-1);
    for url in urls {
        inv.arg(partition::site_of(url)).arg(*url);
    }
    inv.invoke_async(c).await.unwrap()
}

async fn take(
    c: &mut MultiplexedConnection,
    node: &str,
    lease_ms: u64,
    want: usize,
) -> Vec<String> {
    let sites: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{P}:sites"))
        .query_async(c)
        .await
        .unwrap();
    let mut sites = sites;
    sites.sort();
    let mut inv = SCRIPTS.take.arg(P);
    inv.arg(node).arg(lease_ms).arg(want).arg(sites);
    inv.invoke_async(c).await.unwrap()
}

async fn finish(c: &mut MultiplexedConnection, node: &str, entry: &str) -> i64 {
    let mut inv = SCRIPTS.finish.arg(P);
    inv.arg(node).arg(entry).arg(1).arg(-1).arg(-1).arg(-1);
    let r: Vec<i64> = inv.invoke_async(c).await.unwrap();
    r[0]
}

type Status = (Vec<String>, Vec<String>, i64, i64, i64, i64, i64, i64);

async fn status(c: &mut MultiplexedConnection, node: &str, feeding: bool) -> Status {
    let mut inv = SCRIPTS.status.arg(P);
    inv.arg(node)
        .arg(60_000)
        .arg(if feeding { "1" } else { "0" });
    inv.invoke_async(c).await.unwrap()
}

fn urls(entries: &[String]) -> Vec<String> {
    entries
        .iter()
        .map(|e| parse_entry(e).expect("an entry").0)
        .collect()
}

#[tokio::test]
async fn a_url_is_queued_once_and_sites_are_taken_in_turn_oldest_first() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut c = server.connect().await;
    let batch = [
        "http://a.test/1",
        "http://a.test/2",
        "http://a.test/3",
        "http://b.test/1",
    ];
    assert_eq!(offer(&mut c, &batch).await, [4, 0, 0, 0, 0]);
    assert_eq!(offer(&mut c, &batch).await, [0, 4, 0, 0, 0], "all seen");
    let got = take(&mut c, "n", 60_000, 3).await;
    assert_eq!(
        urls(&got),
        ["http://a.test/1", "http://b.test/1", "http://a.test/2"]
    );
    // b.test ran dry and left the set of sites with work; a.test still has one.
    let got = take(&mut c, "n", 60_000, 5).await;
    assert_eq!(urls(&got), ["http://a.test/3"]);
    let (_, sites, open, ..) = status(&mut c, "n", false).await;
    assert!(sites.is_empty(), "{sites:?}");
    assert_eq!(open, 4, "taken, not finished");
}

#[tokio::test]
async fn a_dead_nodes_urls_come_back_and_a_late_finish_is_counted() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut c = server.connect().await;
    let batch = ["http://a.test/0", "http://a.test/1", "http://a.test/2"];
    offer(&mut c, &batch).await;
    // Node a takes two with a lease that has run out by the next call: it is "dead".
    let held = take(&mut c, "a", 0, 2).await;
    assert_eq!(urls(&held), ["http://a.test/0", "http://a.test/1"]);
    let (nodes, _, open, feeding, _, _, reclaimed, _) = status(&mut c, "b", false).await;
    assert_eq!(
        (nodes, open, feeding, reclaimed),
        (vec!["b".to_owned()], 3, 0, 2)
    );

    // a was only stalled: it finishes /0, still queued, so no one visits it again.
    assert_eq!(finish(&mut c, "a", &held[0]).await, 1);
    // b takes the rest, in the old order: /1 went back to the front.
    let got = take(&mut c, "b", 60_000, 5).await;
    assert_eq!(urls(&got), ["http://a.test/1", "http://a.test/2"]);
    // a finishes /1 too, but b holds it now: a duplicate visit, counted as late.
    assert_eq!(finish(&mut c, "a", &held[1]).await, 0);
    for entry in &got {
        assert_eq!(finish(&mut c, "b", entry).await, 1);
    }
    let (_, _, open, feeding, admitted, done, reclaimed, late) = status(&mut c, "b", false).await;
    assert_eq!((open, feeding), (0, 0), "the crawl is over");
    assert_eq!((admitted, done, reclaimed, late), (3, 3, 2, 1));
}

#[tokio::test]
async fn a_node_that_leaves_puts_its_urls_back_in_order_and_feeding_holds_the_end() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut c = server.connect().await;
    // Node a reads its input: while it does, the crawl is not over, even empty.
    let (_, _, open, feeding, ..) = status(&mut c, "a", true).await;
    assert_eq!((open, feeding), (0, 1));
    offer(
        &mut c,
        &["http://a.test/0", "http://a.test/1", "http://a.test/2"],
    )
    .await;
    let held = take(&mut c, "a", 60_000, 2).await;
    let mut inv = SCRIPTS.leave.arg(P);
    inv.arg("a");
    let released: i64 = inv.invoke_async(&mut c).await.unwrap();
    assert_eq!(released, 2);
    let (nodes, _, open, feeding, _, _, reclaimed, _) = status(&mut c, "b", false).await;
    assert_eq!(
        (nodes, open, feeding, reclaimed),
        (vec!["b".to_owned()], 3, 0, 0)
    );
    let got = take(&mut c, "b", 60_000, 5).await;
    assert_eq!(
        urls(&got)[..2],
        urls(&held)[..],
        "given back to the front, in order"
    );
}
