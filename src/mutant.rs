//! Seeded bugs for the loom models: one named hook per protocol step, each switchable on
//! its own.
//!
//! Each hook is the one step of a cross-thread protocol that a model in `loom-tests/`
//! must be shown to depend on. Production code calls the hook instead of writing the step
//! inline, so no production function body carries a seeded bug, and this is the only file
//! that names `cdpmux_loom_mutant`.
//!
//! A hook does the right thing unless its [`Mutant`] is seeded. Seeding exists only in a
//! build with `--cfg cdpmux_loom_mutant` (`CDPMUX_LOOM_MUTANT=1`, see `build.rs`), where a
//! model calls `loom_api::seed(Mutant::X)` before `loom::model`: then `X`, and only `X`,
//! is on, for that test's thread. In every other build a hook's check is a constant
//! `false` and costs nothing.
//!
//! The seed is a thread-local because loom runs all of a model's threads as coroutines on
//! the OS thread that called `loom::model` (the test's own thread), so every loom thread
//! sees the seed of its test and no other test's: the tests can run in parallel. The model
//! `seed_reaches_every_loom_thread` checks that claim.

use crate::sync::{mpsc, oneshot};

/// A seeded bug, named after what it does wrong. Each is caught by one loom model
/// (`loom-tests/README.md` has the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    /// `deliver_grant` trusts an earlier `is_closed` and forgets the grant `send` hands
    /// back: the session is lost. Caught by `lease_grant_races_caller_leaving`.
    GrantTrustsIsClosed,
    /// `park_skips_recheck`: a shard announcing that it parks does not look at the
    /// overflow again, so a request pushed in between never wakes it. Caught by
    /// `overflow_push_races_idle_shard_parking`.
    ParkSkipsRecheck,
    /// `close_then_drain` drains before closing: a message sent in between is dropped
    /// with the inbox, unanswered. Caught by `shutdown_races_submission`.
    DrainBeforeClose,
    /// `gauge_decrement_torn`: a load gauge counts out with a separate load and store,
    /// which loses a concurrent update. Caught by `load_gauges_count_in_and_out`.
    GaugeDecrementTorn,
    /// `config_told_before_stored`: the shards hear `Reconfigured` before the new
    /// configuration is stored, and may act on the old one. Caught by
    /// `live_config_reaches_shard_before_its_message`.
    ConfigToldBeforeStored,
    /// `passed_recorded_after_send`: a lease records its hand-off after the new holder
    /// has the session, whose commands may then overtake the record. Caught by
    /// `handoff_races_reclaim`.
    PassedRecordedAfterSend,
    /// `served_told_to_sessions_shard`: a lease serving a caller of another shard's
    /// line tells the session's own shard, so the caller's shard keeps a record of someone
    /// already served. Caught by `handoff_serves_another_shards_line`.
    ServedToldToSessionsShard,
    /// `join_trusts_first_look`: a caller who joined a line trusts its first look at
    /// `open`, and may wait in a line that closed and was drained in between. Caught by
    /// `joining_races_the_line_closing`.
    JoinTrustsFirstLook,
}

#[cfg(cdpmux_loom_mutant)]
std::thread_local! {
    static SEEDED: std::cell::Cell<Option<Mutant>> = const { std::cell::Cell::new(None) };
}

/// Whether `mutant` is seeded on this thread: never, outside a mutant build.
#[inline(always)]
fn on(mutant: Mutant) -> bool {
    #[cfg(cdpmux_loom_mutant)]
    let seeded = SEEDED.with(|s| s.get());
    #[cfg(not(cdpmux_loom_mutant))]
    let seeded: Option<Mutant> = None;
    seeded == Some(mutant)
}

/// Switches `mutant` on for this thread (and so for the loom threads of a model run from
/// it) until the returned guard is dropped. One at a time. Panics outside a mutant build
/// (`CDPMUX_LOOM_MUTANT=1`), where no bug can be switched on.
#[cfg(cdpmux_loom)]
pub fn seed(mutant: Mutant) -> Seeded {
    assert!(
        cfg!(cdpmux_loom_mutant),
        "seed({mutant:?}): built without CDPMUX_LOOM_MUTANT=1, no seeded bug can be on"
    );
    #[cfg(cdpmux_loom_mutant)]
    SEEDED.with(|s| {
        let before = s.replace(Some(mutant));
        assert_eq!(before, None, "one seeded bug at a time");
    });
    Seeded(())
}

/// The mutant seeded on this thread, if any.
#[cfg(cdpmux_loom)]
pub fn seeded() -> Option<Mutant> {
    #[cfg(cdpmux_loom_mutant)]
    let seeded = SEEDED.with(|s| s.get());
    #[cfg(not(cdpmux_loom_mutant))]
    let seeded = None;
    seeded
}

/// Keeps a [`seed`]ed mutant on; switches it off when dropped (also when its model
/// panics, as a model that catches its bug does).
#[cfg(cdpmux_loom)]
#[must_use = "the mutant is switched off again when this is dropped"]
pub struct Seeded(());

#[cfg(cdpmux_loom)]
impl Drop for Seeded {
    fn drop(&mut self) {
        #[cfg(cdpmux_loom_mutant)]
        SEEDED.with(|s| s.set(None));
    }
}

/// Sends a granted session to its caller: `send`, and a grant handed back (the caller
/// left) is dropped, which releases it. Seeded: [`Mutant::GrantTrustsIsClosed`].
pub(crate) fn deliver_grant<T>(tx: oneshot::Sender<crate::error::Result<T>>, grant: T) {
    if on(Mutant::GrantTrustsIsClosed) {
        if !tx.is_closed() {
            if let Err(Ok(grant)) = tx.send(Ok(grant)) {
                std::mem::forget(grant);
            }
        }
        return;
    }
    let _ = tx.send(Ok(grant));
}

/// Closes an inbox, then answers what is left in it. Seeded: [`Mutant::DrainBeforeClose`].
pub(crate) async fn close_then_drain<M>(inbox: &mut mpsc::UnboundedReceiver<M>, answer: fn(M)) {
    if on(Mutant::DrainBeforeClose) {
        while let Ok(msg) = inbox.try_recv() {
            answer(msg);
        }
        inbox.close();
        return;
    }
    inbox.close();
    while let Some(msg) = inbox.recv().await {
        answer(msg);
    }
}

/// A shard about to park skips its re-check of the overflow. Seeded:
/// [`Mutant::ParkSkipsRecheck`].
#[inline(always)]
pub(crate) fn park_skips_recheck() -> bool {
    on(Mutant::ParkSkipsRecheck)
}

/// A load gauge counts out with a load and a store instead of one `fetch_sub`. Seeded:
/// [`Mutant::GaugeDecrementTorn`].
#[inline(always)]
pub(crate) fn gauge_decrement_torn() -> bool {
    on(Mutant::GaugeDecrementTorn)
}

/// `publish_config` tells the shards before it stores. Seeded:
/// [`Mutant::ConfigToldBeforeStored`].
#[inline(always)]
pub(crate) fn config_told_before_stored() -> bool {
    on(Mutant::ConfigToldBeforeStored)
}

/// A lease records its `Passed` after the send that gives the new holder the session.
/// Seeded: [`Mutant::PassedRecordedAfterSend`].
#[inline(always)]
pub(crate) fn passed_recorded_after_send() -> bool {
    on(Mutant::PassedRecordedAfterSend)
}

/// A lease serving another shard's caller tells its own shard `Served`. Seeded:
/// [`Mutant::ServedToldToSessionsShard`].
#[inline(always)]
pub(crate) fn served_told_to_sessions_shard() -> bool {
    on(Mutant::ServedToldToSessionsShard)
}

/// A caller who joined a line does not look at `open` again. Seeded:
/// [`Mutant::JoinTrustsFirstLook`].
#[inline(always)]
pub(crate) fn join_trusts_first_look() -> bool {
    on(Mutant::JoinTrustsFirstLook)
}
