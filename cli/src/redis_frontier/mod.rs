//! A crawl frontier shared by any number of `cdpmux crawl` processes (nodes) through one
//! Redis server: `--frontier redis://HOST:PORT/NAME`. This module is the IO shell: one
//! task per node talks to Redis; the crawl loop talks to that task through channels and
//! never waits on Redis itself. The rules live in the Lua scripts ([`scripts`], each
//! atomic on the server) and in the pure [`crate::partition`] (who owns a site). It must
//! never hold a taken URL only in memory: a URL stays in Redis, in this node's in-flight
//! list, until its line is written.
//!
//! Design:
//! - **Crawled once.** A URL is queued only if `SADD P:seen URL` added it, whichever node
//!   found it and however often.
//! - **Queues by site, owners by hash.** Each site (`host:port`) has its own list, FIFO.
//!   A node takes only from the sites it owns by rendezvous hashing over the live nodes
//!   ([`crate::partition`]), so a site is visited by one node at a time (its politeness
//!   and affinity hold) and keeps its order. Nodes joining or leaving move no key: only
//!   ownership moves, about 1/n of the sites.
//! - **Reliable queue with leases.** A node takes an entry by `LMOVE`-ing it from the
//!   site's list to its own in-flight list, and removes it from there when the page's
//!   line is written. Its lease on everything in that list lasts as long as its
//!   heartbeat: every take and every status call (each `lease / 3`) pushes its deadline
//!   in `P:nodes` to now + lease, in server time. Any node's status call puts back the
//!   entries of a node whose deadline passed (counted as reclaimed), at the front of
//!   their lists. So no URL is lost; a URL is visited twice only when its node died (or
//!   stalled past its lease) after taking it, and such visits are counted (`late` when
//!   the stalled node finishes after all).
//! - **Polling, not `BLMOVE`.** A node takes from all the sites it owns, in turn, in one
//!   script call; `BLMOVE` blocks on one list only. A node with nothing to take polls,
//!   from 20 ms doubling to 500 ms, and at once after it queued new URLs itself.
//! - **Ending.** The crawl is over for every node when no entry is queued or in flight
//!   anywhere (`P:open` = 0) and no node still reads its input (`P:feeding` empty): each
//!   node sees it on its own and ends. A node that stops early (a signal) gives its
//!   unfinished entries back (released) before it exits.
//!
//! Client: the `redis` crate (tokio, multiplexed connection, `EVALSHA` with a fallback
//! to `EVAL` through its `Script`): the most used Redis client for Rust, maintained by
//! the Redis organisation, and small with default features off. `fred` does more (pools,
//! cluster routing) than one connection per node needs.
//!
//! Not supported: Redis Cluster (the scripts touch keys they compute).

pub mod scripts;
pub mod spec;

use std::collections::VecDeque;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Script;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::frontier::{self, Dropped, Limits, Offer};
use crate::partition;
pub use spec::FrontierSpec;

/// Seeds sent to Redis in one script call at most.
const SEED_BATCH: usize = 500;
/// Longest wait for a connection or one script call.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// Shortest and longest pause between two empty takes.
const POLL_MIN: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(500);

/// The whole crawl's counts, read from Redis, and this node's own share of the Redis
/// work.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// URLs ever queued, by every node.
    pub admitted: u64,
    /// Entries finished (their line written by the node that held the lease).
    pub done: u64,
    /// Entries put back after their node's lease ran out: each may be visited twice.
    pub reclaimed: u64,
    /// Pages finished by a node after its lease had been reclaimed and the entry taken
    /// again: visited twice.
    pub late: u64,
    /// Live nodes when this node last looked.
    pub nodes: usize,
    /// This node's script calls to Redis.
    pub round_trips: u64,
    /// Time this node spent waiting on those calls.
    pub redis_time: Duration,
    /// Entries this node gave back when it left early.
    pub released: u64,
    /// Links this node queued (found on its pages, new to the crawl).
    pub links_queued: u64,
}

/// What the crawl loop asks of the Redis task.
enum Command {
    Seed {
        site: String,
        url: String,
    },
    Finish {
        entry: String,
        links: Vec<(String, String)>,
        depth: u32,
    },
    InputDone,
    Leave,
}

/// The crawl loop's handle on a shared frontier. Entries arrive already leased to this
/// node; [`SharedFrontier::finished`] must be called once for each taken entry.
pub struct SharedFrontier {
    commands: mpsc::UnboundedSender<Command>,
    ready: mpsc::Receiver<(String, u32)>,
    next: VecDeque<(String, u32)>,
    /// The crawl is over for every node (or the Redis task failed).
    ended: bool,
    task: JoinHandle<Result<(Totals, Dropped), String>>,
    limits: Limits,
    outside: u64,
}

impl SharedFrontier {
    /// Connects to the frontier's Redis server and joins the crawl as `node` with the
    /// given `lease`. `prefetch` entries at most are taken ahead of the crawl loop.
    /// Cancel-safe: dropped before it returns, nothing is registered or only a lease that
    /// runs out.
    pub async fn join(
        spec: &FrontierSpec,
        node: String,
        lease: Duration,
        limits: Limits,
        prefetch: usize,
    ) -> Result<SharedFrontier, String> {
        let client = redis::Client::open(spec.server.as_str())
            .map_err(|e| format!("bad Redis address {}: {e}", spec.server))?;
        // The client's own default (500 ms a reply) is too short for a server shared by
        // busy nodes on loaded machines; a call that fails ends this node's crawl.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_LIMIT))
            .set_response_timeout(Some(CALL_LIMIT));
        let connection = tokio::time::timeout(
            CALL_LIMIT,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| {
            format!(
                "Redis at {} did not answer within {CALL_LIMIT:?}",
                spec.server
            )
        })?
        .map_err(|e| format!("could not reach Redis at {}: {e}", spec.server))?;
        let (commands, inbox) = mpsc::unbounded_channel();
        let (ready_tx, ready) = mpsc::channel(prefetch.max(1));
        let mut shell = Shell {
            con: connection,
            prefix: spec.prefix(),
            node,
            lease,
            limits,
            inbox,
            held: None,
            ready: Some(ready_tx),
            batch: (prefetch / 2).max(1),
            feeding: true,
            nodes: Vec::new(),
            sites: Vec::new(),
            totals: Totals::default(),
            dropped: Dropped::default(),
        };
        // Registers the node (as feeding) before any seed: no one may end the crawl
        // while this node's input is unread.
        shell.status().await?;
        let task = tokio::spawn(shell.run());
        Ok(SharedFrontier {
            commands,
            ready,
            next: VecDeque::new(),
            ended: false,
            task,
            limits,
            outside: 0,
        })
    }

    /// Offers an input URL. Whether it was new is decided in Redis; an invalid one is
    /// reported at once, as by the local frontier.
    pub fn offer_seed(&mut self, raw: &str) -> Offer {
        match frontier::normalize(raw) {
            Ok(url) => {
                let url = String::from(url);
                let site = partition::site_of(&url);
                let _ = self.commands.send(Command::Seed { site, url });
                Offer::Queued
            }
            Err(why) => Offer::Invalid(why),
        }
    }

    /// Finishes an entry taken from [`SharedFrontier::pop`] (its line is written), and
    /// offers the links its page gave, if any and if they are to be followed.
    pub fn finished(&mut self, url: &str, depth: u32, parent_links: Option<&[String]>) {
        let mut links = Vec::new();
        if let (Some(found), true) = (parent_links, self.follows_from(depth)) {
            let mut dropped = Dropped::default();
            for link in frontier::in_scope(self.limits.follow, url, found, &mut dropped) {
                links.push((partition::site_of(&link), link));
            }
            self.outside += dropped.outside;
        }
        let entry = entry_of(url, depth);
        let _ = self.commands.send(Command::Finish {
            entry,
            links,
            depth: depth + 1,
        });
    }

    /// The next entry taken for this node, if one has arrived.
    pub fn pop(&mut self) -> Option<(String, u32)> {
        self.next.pop_front().or_else(|| self.ready.try_recv().ok())
    }

    /// Waits for the next entry (kept for [`SharedFrontier::pop`]) or for the end of
    /// the crawl. Cancel-safe: an entry received is kept, never lost.
    pub async fn wait(&mut self) {
        match self.ready.recv().await {
            Some(entry) => self.next.push_back(entry),
            None => self.ended = true,
        }
    }

    /// Entries taken and not yet started.
    pub fn len(&self) -> usize {
        self.next.len() + self.ready.len()
    }

    /// True once the crawl is over for every node and nothing taken is left to start.
    pub fn is_over(&self) -> bool {
        self.ended && self.next.is_empty() && self.ready.is_empty()
    }

    /// This node has read all its input.
    pub fn input_done(&mut self) {
        let _ = self.commands.send(Command::InputDone);
    }

    /// True when `depth` is below the link-following limit.
    pub fn follows_from(&self, depth: u32) -> bool {
        depth < self.limits.max_depth
    }

    /// Leaves the crawl: what this node took and did not finish goes back to the
    /// queues. Returns the crawl's totals. Cancel-safe in effect: if dropped before it
    /// ends, the entries go back when this node's lease runs out.
    pub async fn leave(self) -> Result<(Totals, Dropped), String> {
        let _ = self.commands.send(Command::Leave);
        drop(self.ready);
        let (totals, mut dropped) = match self.task.await {
            Ok(Ok(totals)) => totals,
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("the Redis task ended abnormally: {e}")),
        };
        dropped.outside += self.outside;
        Ok((totals, dropped))
    }
}

/// A node name unique enough for a shared crawl: host, process id, and a random part
/// (a restarted process may reuse a pid; its old name's lease must not be renewed).
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .take(40)
        .collect::<String>();
    let random = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        Instant::now(),
    );
    let host = if host.is_empty() {
        "node".to_owned()
    } else {
        host
    };
    format!("{host}-{}-{:06x}", std::process::id(), random & 0xff_ffff)
}

/// The queue entry of a URL: `DEPTH SITE URL` (see [`scripts`]).
fn entry_of(url: &str, depth: u32) -> String {
    format!("{depth} {} {url}", partition::site_of(url))
}

/// Reads an entry back; `None` for one this version did not write.
fn parse_entry(entry: &str) -> Option<(String, u32)> {
    let (depth, rest) = entry.split_once(' ')?;
    let (_site, url) = rest.split_once(' ')?;
    Some((url.to_owned(), depth.parse().ok()?))
}

struct Scripts {
    offer: Script,
    finish: Script,
    take: Script,
    status: Script,
    leave: Script,
}

/// Compiled once; `Script` sends `EVALSHA` and loads the script on a miss.
static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    offer: Script::new(scripts::OFFER),
    finish: Script::new(scripts::FINISH),
    take: Script::new(scripts::TAKE),
    status: Script::new(scripts::STATUS),
    leave: Script::new(scripts::LEAVE),
});

/// The Redis task of one node.
struct Shell {
    con: MultiplexedConnection,
    prefix: String,
    node: String,
    lease: Duration,
    limits: Limits,
    inbox: mpsc::UnboundedReceiver<Command>,
    /// A command read while batching seeds, handled next.
    held: Option<Command>,
    /// Where taken entries go; `None` once the crawl is over.
    ready: Option<mpsc::Sender<(String, u32)>>,
    /// Free room in `ready` that a take waits for: one call fills half of it, not one
    /// call per page.
    batch: usize,
    feeding: bool,
    nodes: Vec<String>,
    sites: Vec<String>,
    totals: Totals,
    dropped: Dropped,
}

/// Limit arguments of the offer scripts: budget, open cap, per-page cap (-1: none).
/// Seeds have only the budget: as on one node, input URLs are never dropped for a full
/// queue, and they come from no page.
fn limit_args(limits: &Limits, seeds: bool) -> [i64; 3] {
    let budget = limits
        .budget
        .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
    if seeds {
        return [budget, -1, -1];
    }
    let open = i64::try_from(limits.max_queued).unwrap_or(i64::MAX);
    let cap = i64::try_from(limits.links_per_page).unwrap_or(i64::MAX);
    [budget, open, cap]
}

impl Shell {
    async fn run(mut self) -> Result<(Totals, Dropped), String> {
        let mut beat = tokio::time::interval(self.lease / 3);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        let mut poll = POLL_MIN;
        let mut pause_until: Option<tokio::time::Instant> = None;
        loop {
            let command = match self.held.take() {
                Some(c) => Some(c),
                None => {
                    let sender = match (&self.ready, pause_until) {
                        (Some(tx), None) => Some(tx.clone()),
                        _ => None,
                    };
                    let can_take = sender.is_some();
                    let batch = self.batch;
                    let pause = async {
                        match pause_until {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        // The heartbeat first: a long input keeps the inbox busy, and
                        // a lease must never run out on a live node.
                        biased;
                        _ = beat.tick() => {
                            self.status().await?;
                            None
                        }
                        c = self.inbox.recv() => Some(c.unwrap_or(Command::Leave)),
                        room = async {
                            // The permits are dropped at once: only this task sends,
                            // so the room stays until it does.
                            let tx = sender?;
                            tx.reserve_many(batch).await.ok().map(|p| p.len())
                        }, if can_take => {
                            if room.is_some() {
                                if self.take().await? {
                                    poll = POLL_MIN;
                                } else {
                                    pause_until = Some(tokio::time::Instant::now() + poll);
                                    poll = (poll * 2).min(POLL_MAX);
                                }
                            }
                            None
                        }
                        () = pause => {
                            pause_until = None;
                            None
                        }
                    }
                }
            };
            match command {
                None => {}
                Some(Command::Seed { site, url }) => {
                    let mut batch = vec![(site, url)];
                    while batch.len() < SEED_BATCH {
                        match self.inbox.try_recv() {
                            Ok(Command::Seed { site, url }) => batch.push((site, url)),
                            Ok(other) => {
                                self.held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.offer(0, &batch).await?;
                    // New work may be this node's.
                    pause_until = None;
                    poll = POLL_MIN;
                }
                Some(Command::Finish {
                    entry,
                    links,
                    depth,
                }) => {
                    self.finish(&entry, depth, &links).await?;
                    if !links.is_empty() {
                        pause_until = None;
                        poll = POLL_MIN;
                    }
                }
                Some(Command::InputDone) => {
                    self.feeding = false;
                    self.status().await?;
                }
                Some(Command::Leave) => {
                    self.ready = None;
                    let mut invocation = SCRIPTS.leave.arg(&self.prefix);
                    invocation.arg(&self.node);
                    let released: i64 = self.call(&invocation).await?;
                    self.totals.released = u64::try_from(released).unwrap_or(0);
                    // Final figures, read without registering again.
                    return Ok((self.totals, self.dropped));
                }
            }
        }
    }

    /// Runs one script call, timed and counted.
    async fn call<T: redis::FromRedisValue>(
        &mut self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let started = Instant::now();
        let result = tokio::time::timeout(CALL_LIMIT, invocation.invoke_async(&mut self.con)).await;
        self.totals.round_trips += 1;
        self.totals.redis_time += started.elapsed();
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("Redis failed: {e}")),
            Err(_) => Err(format!("Redis did not answer within {CALL_LIMIT:?}")),
        }
    }

    /// Renews the lease, reclaims dead nodes' entries, reads the crawl's state; ends the
    /// crawl for this node when nothing is left anywhere.
    async fn status(&mut self) -> Result<(), String> {
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = SCRIPTS.status.arg(&self.prefix);
        invocation
            .arg(&self.node)
            .arg(lease_ms)
            .arg(if self.feeding { "1" } else { "0" });
        type Status = (Vec<String>, Vec<String>, i64, i64, i64, i64, i64, i64);
        let (nodes, sites, open, feeding, admitted, done, reclaimed, late): Status =
            self.call(&invocation).await?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        self.totals.admitted = n(admitted);
        self.totals.done = n(done);
        self.totals.reclaimed = n(reclaimed);
        self.totals.late = n(late);
        self.totals.nodes = nodes.len();
        self.nodes = nodes;
        self.sites = sites;
        if open <= 0 && feeding <= 0 {
            self.ready = None;
        }
        Ok(())
    }

    /// Takes entries of this node's sites, as many as the crawl loop has room for.
    /// Returns false when there were none (after looking at the crawl's state again).
    async fn take(&mut self) -> Result<bool, String> {
        let want = self.ready.as_ref().map_or(0, mpsc::Sender::capacity);
        let owned = partition::owned_by(&self.node, &self.nodes, &self.sites);
        let entries: Vec<String> = if owned.is_empty() || want == 0 {
            Vec::new()
        } else {
            let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
            let mut invocation = SCRIPTS.take.arg(&self.prefix);
            invocation
                .arg(&self.node)
                .arg(lease_ms)
                .arg(want)
                .arg(&owned);
            self.call(&invocation).await?
        };
        if entries.is_empty() {
            self.status().await?;
            return Ok(false);
        }
        for entry in entries {
            let Some(parsed) = parse_entry(&entry) else {
                // Not ours to read: finish it so the crawl can end, and say so.
                eprintln!("cdpmux: skipping an unreadable frontier entry {entry:?}");
                self.finish(&entry, 0, &[]).await?;
                continue;
            };
            if let Some(tx) = &self.ready {
                // Room was counted above and only this task sends.
                let _ = tx.try_send(parsed);
            }
        }
        Ok(true)
    }

    async fn offer(&mut self, depth: u32, pairs: &[(String, String)]) -> Result<(), String> {
        let [budget, open, cap] = limit_args(&self.limits, true);
        let mut invocation = SCRIPTS.offer.arg(&self.prefix);
        invocation.arg(depth).arg(budget).arg(open).arg(cap);
        for (site, url) in pairs {
            invocation.arg(site).arg(url);
        }
        let counts: Vec<i64> = self.call(&invocation).await?;
        self.count_offer(&counts, false);
        Ok(())
    }

    async fn finish(
        &mut self,
        entry: &str,
        depth: u32,
        links: &[(String, String)],
    ) -> Result<(), String> {
        let [budget, open, cap] = limit_args(&self.limits, false);
        let mut invocation = SCRIPTS.finish.arg(&self.prefix);
        invocation
            .arg(&self.node)
            .arg(entry)
            .arg(depth)
            .arg(budget)
            .arg(open)
            .arg(cap);
        for (site, url) in links {
            invocation.arg(site).arg(url);
        }
        let counts: Vec<i64> = self.call(&invocation).await?;
        self.count_offer(counts.get(1..).unwrap_or_default(), true);
        Ok(())
    }

    /// Adds an offer's {queued, duplicate, over_budget, full, over_cap} to the counts.
    fn count_offer(&mut self, counts: &[i64], links: bool) {
        let n = |i: usize| counts.get(i).map_or(0, |&v| u64::try_from(v).unwrap_or(0));
        if links {
            self.totals.links_queued += n(0);
            self.dropped.queue_full += n(3);
            self.dropped.over_page_cap += n(4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_depth_site_and_url() {
        let e = entry_of("http://a.test:8080/p/1?q=a%20b", 2);
        assert_eq!(e, "2 a.test:8080 http://a.test:8080/p/1?q=a%20b");
        assert_eq!(
            parse_entry(&e),
            Some(("http://a.test:8080/p/1?q=a%20b".to_owned(), 2))
        );
        assert_eq!(parse_entry("x"), None);
        assert_eq!(parse_entry("x a.test http://a.test/"), None);
    }

    #[test]
    fn limits_become_script_arguments() {
        let limits = Limits {
            budget: Some(10),
            max_queued: 100,
            links_per_page: 7,
            ..Limits::default()
        };
        assert_eq!(limit_args(&limits, false), [10, 100, 7]);
        assert_eq!(
            limit_args(&limits, true),
            [10, -1, -1],
            "seeds are never dropped"
        );
        assert_eq!(limit_args(&Limits::default(), false)[0], -1, "no budget");
    }
}

#[cfg(test)]
mod script_tests;
