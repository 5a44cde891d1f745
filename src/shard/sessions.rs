//! A shard's sessions: the slab, the idle list, what is busy or opening, and when a
//! session is due for retirement.
//!
//! Pure data over a page handle `P` (the shell's `Rc<Page>`, a stand-in in tests): the
//! only thing read from a page is whether it is still alive. Capacity arithmetic (the
//! critical reserve, whom a freed session may serve) is written here once.

use std::collections::HashMap;
use std::sync::Arc as StdArc;
use std::time::Duration;

use tokio::time::Instant;

use super::waiters::SessionKey;
use crate::config::Config;
use crate::job::Priority;
use crate::queue::Admit;
use crate::sync::atomic::AtomicBool;
use crate::sync::Arc;

/// What the plan needs of a page: whether it is alive, and the two per-job settings the
/// shard writes into it.
pub(crate) trait PageHandle: Clone {
    /// False once the page crashed, was closed, or lost its socket.
    fn is_alive(&self) -> bool;
    /// How many jobs it has served (the page reports it to its jobs).
    fn set_uses(&self, uses: u32);
    /// The deadline of each of its commands for the job it serves now.
    fn set_command_timeout(&self, timeout: Duration);
    /// True when its browser is being recycled: it reads as not alive too, so it is
    /// never handed out again, and it is counted as retired, not crashed.
    fn is_retiring(&self) -> bool {
        false
    }
}

/// One page session and its history.
pub(crate) struct Session<P> {
    pub(crate) page: P,
    pub(crate) browser: usize,
    pub(crate) created: Instant,
    pub(crate) last_used: Instant,
    pub(crate) uses: u32,
    pub(crate) lease: Option<u64>,
    /// Whether its lease may pass it straight to the next caller (see `handoff`).
    pub(crate) passable: Arc<AtomicBool>,
    /// The affinity key whose browser context it lives in (`ContextPerKey`).
    pub(crate) owner: Option<StdArc<str>>,
    /// Its own browser context, disposed with it (`ContextPerJob`).
    pub(crate) own_context: Option<String>,
}

impl<P> Session<P> {
    /// Due for retirement by uses, age or idleness.
    pub(crate) fn expired(&self, cfg: &Config, now: Instant) -> bool {
        (cfg.max_uses > 0 && self.uses >= cfg.max_uses)
            || (!cfg.max_lifetime.is_zero()
                && now.saturating_duration_since(self.created) >= cfg.max_lifetime)
            || (!cfg.idle_timeout.is_zero()
                && now.saturating_duration_since(self.last_used) >= cfg.idle_timeout)
    }
}

/// The slab and its counts. `idle`, `busy` (jobs, leases, probes, stops and resets) and
/// `creating` never overlap; `idle.len() + busy + creating` is what the shard holds or
/// is opening.
pub(crate) struct Sessions<P> {
    slab: HashMap<SessionKey, Session<P>>,
    /// Idle sessions, most recently used last.
    pub(crate) idle: Vec<SessionKey>,
    pub(crate) busy: usize,
    pub(crate) creating: usize,
    /// Idle sessions out for a health probe (counted in `busy` too).
    pub(crate) probing: usize,
    next_key: SessionKey,
}

impl<P> Default for Sessions<P> {
    fn default() -> Self {
        Sessions {
            slab: HashMap::new(),
            idle: Vec::new(),
            busy: 0,
            creating: 0,
            probing: 0,
            next_key: 0,
        }
    }
}

impl<P: PageHandle> Sessions<P> {
    /// Sessions open, busy or idle.
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Sessions open or being opened: what counts against the limit.
    pub(crate) fn live(&self) -> usize {
        self.slab.len() + self.creating
    }

    pub(crate) fn get(&self, key: SessionKey) -> Option<&Session<P>> {
        self.slab.get(&key)
    }

    pub(crate) fn get_mut(&mut self, key: SessionKey) -> Option<&mut Session<P>> {
        self.slab.get_mut(&key)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&SessionKey, &Session<P>)> {
        self.slab.iter()
    }

    /// Adds a freshly opened session, idle.
    pub(crate) fn insert(&mut self, session: Session<P>) -> SessionKey {
        let key = self.next_key;
        self.next_key += 1;
        self.slab.insert(key, session);
        self.idle.push(key);
        key
    }

    /// Takes a session out of the slab (it is neither idle nor busy any more).
    pub(crate) fn remove(&mut self, key: SessionKey) -> Option<Session<P>> {
        self.slab.remove(&key)
    }

    /// Takes every session out (shutdown).
    pub(crate) fn drain(&mut self) -> Vec<Session<P>> {
        self.idle.clear();
        self.slab.drain().map(|(_, s)| s).collect()
    }

    /// Takes idle session `key` if it is idle.
    pub(crate) fn take_idle_key(&mut self, key: SessionKey) -> bool {
        match self.idle.iter().position(|k| *k == key) {
            Some(i) => {
                self.idle.remove(i);
                true
            }
            None => false,
        }
    }
}

/// How many sessions a request of `priority` may find busy and still be served: all of
/// them for `Critical`, all but the reserve otherwise.
pub(crate) fn room(cfg: &Config, priority: Priority) -> usize {
    if priority == Priority::Critical {
        cfg.sessions_per_shard
    } else {
        general_room(cfg)
    }
}

/// Sessions any class may use: all but the critical reserve.
pub(crate) fn general_room(cfg: &Config) -> usize {
    cfg.sessions_per_shard.saturating_sub(cfg.critical_reserve)
}

/// Which classes may be served with `busy` sessions busy.
pub(crate) fn admit_at(cfg: &Config, busy: usize) -> Option<Admit> {
    if busy < general_room(cfg) {
        Some(Admit::All)
    } else if busy < cfg.sessions_per_shard {
        Some(Admit::CriticalOnly)
    } else {
        None
    }
}

/// Whom a session given back now would serve (one fewer busy).
pub(crate) fn admit_after_release(cfg: &Config, busy: usize) -> Admit {
    admit_at(cfg, busy.saturating_sub(1)).unwrap_or(Admit::CriticalOnly)
}
