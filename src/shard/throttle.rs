//! A shard's enforcement of per-key [`Politeness`]: for the keys that hash to this shard,
//! per key, the jobs running, the one request let into the shard's queue (its "ticket"),
//! the earliest next start, and the requests held back for their key's turn (in the
//! queue's own order: strict priority, FIFO, aging). Held requests are not in the shard's
//! queue, so a throttled key never stands in front of another key's requests: no
//! head-of-line blocking. A key lets one request into the queue at a time, and only when
//! it could start now; its next start is counted from the moment that request really
//! starts, so starts are spaced by `interval` whatever the queue did.
//!
//! Pure data: no IO, no clock (`now` comes in), no sessions (the plan says when a request
//! starts, a job ends or a request leaves). What it must never do: share state with
//! another shard (a key lives on the one shard its hash picks), or let a key's request
//! into the queue while its ticket is out.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::job::{later, Priority};
use crate::politeness::Politeness;
use crate::queue::{Admit, WaitQueue};

/// A request held for its key's turn, with its wait deadline.
struct Held<T> {
    deadline: Instant,
    value: T,
}

/// One key's state on its shard.
struct KeyState<T> {
    running: usize,
    /// The arrival number of the request let into the queue and not started yet.
    ticket: Option<u64>,
    /// No start before this.
    next_start: Option<Instant>,
    held: WaitQueue<Held<T>>,
    /// The key's entry in `Throttle::wakes`, if it has one.
    wake: Option<Instant>,
}

impl<T> Default for KeyState<T> {
    fn default() -> Self {
        KeyState {
            running: 0,
            ticket: None,
            next_start: None,
            held: WaitQueue::default(),
            wake: None,
        }
    }
}

impl<T> KeyState<T> {
    /// What keeps the key from letting a request into the queue now: `None` when
    /// nothing does, `Some(Some(t))` when only the clock does (until `t`), `Some(None)`
    /// when a running job or the ticket does.
    fn blocked(&self, rule: Politeness, now: Instant) -> Option<Option<Instant>> {
        if !rule.is_limited() {
            return None;
        }
        if self.ticket.is_some() || (rule.max_in_flight > 0 && self.running >= rule.max_in_flight) {
            return Some(None);
        }
        match self.next_start {
            Some(t) if t > now => Some(Some(t)),
            _ => None,
        }
    }

    fn is_spent(&self, now: Instant) -> bool {
        self.running == 0
            && self.ticket.is_none()
            && self.held.is_empty()
            && self.next_start.is_none_or(|t| t <= now)
    }
}

/// One shard's politeness state (see the module header).
pub(crate) struct Throttle<T> {
    overrides: HashMap<Arc<str>, Politeness>,
    keys: HashMap<Arc<str>, KeyState<T>>,
    /// The key of each request let into the queue and not started yet.
    tickets: HashMap<u64, Arc<str>>,
    /// The key of each session running one of its jobs.
    running: HashMap<u64, Arc<str>>,
    /// The key of each held request.
    held_keys: HashMap<u64, Arc<str>>,
    /// Held requests' wait deadlines.
    deadlines: BTreeSet<(Instant, u64)>,
    /// When a key held back only by the clock may let its next request in.
    wakes: BTreeSet<(Instant, Arc<str>)>,
    /// Keys whose state changed: they may let a request in.
    ready: Vec<Arc<str>>,
    held_by_class: [usize; 4],
}

impl<T> Default for Throttle<T> {
    fn default() -> Self {
        Throttle {
            overrides: HashMap::new(),
            keys: HashMap::new(),
            tickets: HashMap::new(),
            running: HashMap::new(),
            held_keys: HashMap::new(),
            deadlines: BTreeSet::new(),
            wakes: BTreeSet::new(),
            ready: Vec::new(),
            held_by_class: [0; 4],
        }
    }
}

impl<T> Throttle<T> {
    /// True when no key can be limited: no default rule and no key's own. Then keyed
    /// requests skip the throttle entirely.
    pub(crate) fn is_off(&self, default: Politeness) -> bool {
        !default.is_limited() && self.overrides.is_empty()
    }

    /// The rule for `key`: its own, or `default`.
    pub(crate) fn rule(&self, key: &str, default: Politeness) -> Politeness {
        self.overrides.get(key).copied().unwrap_or(default)
    }

    /// Sets `key`'s own rule, or drops it (`None`: the default applies again).
    pub(crate) fn set(&mut self, key: Arc<str>, rule: Option<Politeness>) {
        match rule {
            Some(rule) => self.overrides.insert(key.clone(), rule),
            None => self.overrides.remove(&key),
        };
        self.ready.push(key);
    }

    /// The rules may have changed (a new default): every key looks again.
    pub(crate) fn touch_all(&mut self) {
        self.ready.extend(self.keys.keys().cloned());
    }

    /// May request `id` of `key` go on to the queue now? If so and the key is limited,
    /// it takes the key's ticket. If not, the caller must [`hold`](Self::hold) it.
    pub(crate) fn admit(
        &mut self,
        key: &Arc<str>,
        id: u64,
        now: Instant,
        default: Politeness,
    ) -> bool {
        let rule = self.rule(key, default);
        if !rule.is_limited() {
            return true;
        }
        let state = self.keys.entry(key.clone()).or_default();
        // Held requests of the key came first.
        if !state.held.is_empty() || state.blocked(rule, now).is_some() {
            return false;
        }
        state.ticket = Some(id);
        self.tickets.insert(id, key.clone());
        true
    }

    /// Holds request `id` of `key` until its key's turn or `deadline`.
    pub(crate) fn hold(
        &mut self,
        key: &Arc<str>,
        id: u64,
        priority: Priority,
        since: Instant,
        deadline: Instant,
        value: T,
    ) {
        let state = self.keys.entry(key.clone()).or_default();
        let held = Held { deadline, value };
        if state
            .held
            .push_with_id(id, priority, since.into_std(), held, usize::MAX)
            .is_err()
        {
            unreachable!("an unbounded push is never refused");
        }
        self.held_by_class[priority.index()] += 1;
        self.held_keys.insert(id, key.clone());
        self.deadlines.insert((deadline, id));
        self.ready.push(key.clone());
    }

    /// Request `id` got a session (as `session`): its key's ticket becomes a running
    /// job, and the key's next start is `interval` from now.
    pub(crate) fn started(&mut self, id: u64, session: u64, now: Instant, default: Politeness) {
        if self.tickets.is_empty() {
            return; // the common case: nothing throttled
        }
        let Some(key) = self.tickets.remove(&id) else {
            return;
        };
        let rule = self.rule(&key, default);
        if let Some(state) = self.keys.get_mut(&key) {
            state.ticket = None;
            state.running += 1;
            if !rule.interval.is_zero() {
                state.next_start = Some(later(now, rule.interval));
            }
        }
        self.running.insert(session, key.clone());
        self.ready.push(key);
    }

    /// Request `id` left without starting (failed, abandoned, refused): its ticket, if
    /// it had one, goes back to its key.
    pub(crate) fn left(&mut self, id: u64) {
        let Some(key) = self.tickets.remove(&id) else {
            return;
        };
        if let Some(state) = self.keys.get_mut(&key) {
            state.ticket = None;
        }
        self.ready.push(key);
    }

    /// The job on `session` is over (the session came back, whatever its state).
    pub(crate) fn finished(&mut self, session: u64) {
        if self.running.is_empty() {
            return;
        }
        let Some(key) = self.running.remove(&session) else {
            return;
        };
        if let Some(state) = self.keys.get_mut(&key) {
            state.running -= 1;
        }
        self.ready.push(key);
    }

    /// True when `session` runs a job of a limited key (its end must reach the shard).
    pub(crate) fn is_running(&self, session: u64) -> bool {
        self.running.contains_key(&session)
    }

    /// True when request `id` holds its key's ticket (it must start on this shard).
    pub(crate) fn has_ticket(&self, id: u64) -> bool {
        self.tickets.contains_key(&id)
    }

    /// The next held request whose key may let it in now, with the key's ticket taken
    /// for it. Among a key's held requests, the queue's rules pick (`aging`).
    pub(crate) fn release(
        &mut self,
        now: Instant,
        aging: Duration,
        default: Politeness,
    ) -> Option<T> {
        while let Some((at, _)) = self.wakes.first() {
            if *at > now {
                break;
            }
            let Some((_, key)) = self.wakes.pop_first() else {
                break;
            };
            if let Some(state) = self.keys.get_mut(&key) {
                state.wake = None;
            }
            self.ready.push(key);
        }
        while let Some(key) = self.ready.pop() {
            let rule = self.rule(&key, default);
            let Some(state) = self.keys.get_mut(&key) else {
                continue;
            };
            match state.blocked(rule, now) {
                None => {
                    let Some(w) = state.held.pop(now.into_std(), aging, Admit::All) else {
                        if state.is_spent(now) {
                            self.keys.remove(&key);
                        }
                        continue;
                    };
                    if rule.is_limited() {
                        state.ticket = Some(w.id);
                        self.tickets.insert(w.id, key.clone());
                    }
                    // More may follow (an unlimited rule lets every one in).
                    self.ready.push(key);
                    self.held_by_class[w.priority.index()] -= 1;
                    self.held_keys.remove(&w.id);
                    self.deadlines.remove(&(w.value.deadline, w.id));
                    return Some(w.value.value);
                }
                Some(Some(until)) if !state.held.is_empty() && state.wake != Some(until) => {
                    if let Some(old) = state.wake.replace(until) {
                        self.wakes.remove(&(old, key.clone()));
                    }
                    self.wakes.insert((until, key));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Takes the next held request whose wait deadline has passed by `now`.
    pub(crate) fn expire_one(&mut self, now: Instant) -> Option<T> {
        let (at, id) = *self.deadlines.first().filter(|(at, _)| *at <= now)?;
        self.deadlines.remove(&(at, id));
        let key = self.held_keys.remove(&id)?;
        let state = self.keys.get_mut(&key)?;
        let w = state.held.remove(id)?;
        self.held_by_class[w.priority.index()] -= 1;
        self.ready.push(key);
        Some(w.value.value)
    }

    /// The earliest instant something falls due: a held request's deadline or a key's
    /// next start.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let deadline = self.deadlines.first().map(|(at, _)| *at);
        let wake = self.wakes.first().map(|(at, _)| *at);
        match (deadline, wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Held requests, per class, `Low` first.
    pub(crate) fn held_by_class(&self) -> [usize; 4] {
        self.held_by_class
    }

    /// Held requests.
    pub(crate) fn held_len(&self) -> usize {
        self.held_by_class.iter().sum()
    }

    /// Forgets keys with nothing running, held or due (the health round): memory stays
    /// bounded by the keys in use, plus the rules set with `set`.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.keys.retain(|_, s| !s.is_spent(now));
    }

    /// Takes every held request (shutdown).
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.deadlines.clear();
        self.wakes.clear();
        self.held_keys.clear();
        self.held_by_class = [0; 4];
        let mut all = Vec::new();
        for state in self.keys.values_mut() {
            state.wake = None;
            all.extend(state.held.drain().map(|w| w.value.value));
        }
        all
    }

    /// Keys known (tests).
    #[cfg(test)]
    pub(crate) fn keys_len(&self) -> usize {
        self.keys.len()
    }

    /// Checks the indexes agree with the keys' states, and no key is over `default`'s
    /// limit unless it has its own rule (tests).
    #[cfg(test)]
    pub(crate) fn check(&self, default: Politeness) {
        let held: usize = self.keys.values().map(|s| s.held.len()).sum();
        assert_eq!(held, self.held_len(), "held counts out of step");
        assert_eq!(held, self.held_keys.len());
        assert_eq!(
            held,
            self.deadlines.len(),
            "a held request without one deadline"
        );
        for (id, key) in &self.tickets {
            assert_eq!(
                self.keys[key].ticket,
                Some(*id),
                "a ticket its key does not know"
            );
        }
        for (key, state) in &self.keys {
            let running = self.running.values().filter(|k| *k == key).count();
            assert_eq!(running, state.running, "running jobs of {key} out of step");
            let rule = self.rule(key, default);
            if rule.max_in_flight > 0 {
                assert!(state.running <= rule.max_in_flight, "{key} over its limit");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const MS: Duration = Duration::from_millis(1);

    fn key(k: &str) -> Arc<str> {
        Arc::from(k)
    }

    fn one_per(interval: Duration) -> Politeness {
        Politeness::new().max_in_flight(1).interval(interval)
    }

    /// Everything released by `now`.
    fn releases(t: &mut Throttle<u64>, now: Instant, rule: Politeness) -> Vec<u64> {
        std::iter::from_fn(|| t.release(now, Duration::ZERO, rule)).collect()
    }

    #[test]
    fn an_unlimited_key_is_never_held() {
        let mut t = Throttle::<u64>::default();
        let now = Instant::now();
        for id in 0..10 {
            assert!(t.admit(&key("a"), id, now, Politeness::default()));
        }
        assert!(!t.has_ticket(0));
        assert_eq!(t.keys_len(), 0);
    }

    #[test]
    fn one_ticket_at_a_time_and_starts_spaced_by_the_interval() {
        let mut t = Throttle::<u64>::default();
        let rule = one_per(200 * MS);
        let t0 = Instant::now();
        let a = key("a");
        assert!(t.admit(&a, 1, t0, rule));
        assert!(!t.admit(&a, 2, t0, rule), "the ticket is out");
        t.hold(&a, 2, Priority::Normal, t0, t0 + 10_000 * MS, 2);
        assert!(releases(&mut t, t0, rule).is_empty());
        t.started(1, 100, t0 + 5 * MS, rule);
        t.finished(100);
        // Done at once, but the next start waits out the interval from the first start.
        assert!(releases(&mut t, t0 + 204 * MS, rule).is_empty());
        assert_eq!(t.next_wake(), Some(t0 + 205 * MS));
        assert_eq!(releases(&mut t, t0 + 205 * MS, rule), [2]);
        assert!(t.has_ticket(2));
    }

    #[test]
    fn the_limit_holds_while_jobs_run() {
        let mut t = Throttle::<u64>::default();
        let rule = Politeness::new().max_in_flight(2);
        let now = Instant::now();
        let a = key("a");
        assert!(t.admit(&a, 1, now, rule));
        t.started(1, 10, now, rule);
        assert!(t.admit(&a, 2, now, rule));
        t.started(2, 11, now, rule);
        assert!(!t.admit(&a, 3, now, rule));
        t.hold(&a, 3, Priority::Normal, now, now + 1000 * MS, 3);
        assert!(releases(&mut t, now, rule).is_empty());
        assert_eq!(
            t.next_wake(),
            Some(now + 1000 * MS),
            "no clock wake: a job must end"
        );
        t.finished(10);
        assert_eq!(releases(&mut t, now, rule), [3]);
    }

    #[test]
    fn a_ticket_that_leaves_unstarted_lets_the_next_in() {
        let mut t = Throttle::<u64>::default();
        let rule = one_per(100 * MS);
        let now = Instant::now();
        let a = key("a");
        assert!(t.admit(&a, 1, now, rule));
        t.hold(&a, 2, Priority::Normal, now, now + 1000 * MS, 2);
        t.left(1);
        assert_eq!(releases(&mut t, now, rule), [2]);
    }

    #[test]
    fn held_requests_follow_the_queue_rules_and_expire() {
        let mut t = Throttle::<u64>::default();
        let rule = Politeness::new().max_in_flight(1);
        let now = Instant::now();
        let a = key("a");
        assert!(t.admit(&a, 1, now, rule));
        t.hold(&a, 2, Priority::Low, now, now + 1000 * MS, 2);
        t.hold(&a, 3, Priority::High, now, now + 1000 * MS, 3);
        t.hold(&a, 4, Priority::High, now, now + 50 * MS, 4);
        assert_eq!(t.held_len(), 3);
        assert_eq!(t.next_wake(), Some(now + 50 * MS));
        assert_eq!(t.expire_one(now + 50 * MS), Some(4));
        assert_eq!(t.expire_one(now + 50 * MS), None);
        t.started(1, 9, now, rule);
        t.finished(9);
        assert_eq!(releases(&mut t, now + 60 * MS, rule), [3], "priority first");
        t.left(3);
        assert_eq!(releases(&mut t, now + 60 * MS, rule), [2]);
        assert_eq!(t.held_len(), 0);
    }

    #[test]
    fn keys_do_not_wait_for_each_other() {
        let mut t = Throttle::<u64>::default();
        let rule = one_per(1000 * MS);
        let now = Instant::now();
        let (a, b) = (key("a"), key("b"));
        assert!(t.admit(&a, 1, now, rule));
        t.hold(&a, 2, Priority::Normal, now, now + 5000 * MS, 2);
        assert!(t.admit(&b, 3, now, rule), "another key is not behind a's");
    }

    #[test]
    fn a_rule_set_at_run_time_applies_to_its_key_only_and_can_be_lifted() {
        let mut t = Throttle::<u64>::default();
        let now = Instant::now();
        let a = key("a");
        t.set(a.clone(), Some(one_per(500 * MS)));
        assert!(t.admit(&a, 1, now, Politeness::default()));
        assert!(!t.admit(&a, 2, now, Politeness::default()));
        t.hold(&a, 2, Priority::Normal, now, now + 5000 * MS, 2);
        t.hold(&a, 3, Priority::Normal, now, now + 5000 * MS, 3);
        assert!(t.admit(&key("b"), 4, now, Politeness::default()));
        assert!(!t.has_ticket(4));
        t.set(a.clone(), None);
        assert_eq!(releases(&mut t, now, Politeness::default()), [2, 3]);
    }

    #[test]
    fn spent_keys_are_forgotten_and_drain_takes_everything() {
        let mut t = Throttle::<u64>::default();
        let rule = one_per(100 * MS);
        let now = Instant::now();
        let (a, b) = (key("a"), key("b"));
        assert!(t.admit(&a, 1, now, rule));
        t.started(1, 5, now, rule);
        t.finished(5);
        t.sweep(now + 50 * MS);
        assert_eq!(t.keys_len(), 1, "a's next start is still ahead");
        t.sweep(now + 100 * MS);
        assert_eq!(t.keys_len(), 0);
        assert!(t.admit(&b, 2, now, rule));
        t.hold(&b, 3, Priority::Normal, now, now + 100 * MS, 3);
        assert_eq!(t.drain(), [3]);
        assert_eq!(t.next_wake(), None);
        assert_eq!(t.held_len(), 0);
    }

    #[test]
    fn absurd_intervals_are_refused() {
        let rule = Politeness::new().interval(Duration::from_secs(400 * 24 * 3600));
        assert_eq!(rule.validate().unwrap_err().kind(), ErrorKind::InvalidInput);
        one_per(MS).validate().unwrap();
    }
}
