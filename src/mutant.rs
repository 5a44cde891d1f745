//! Seeded bugs for the loom models, one named hook per protocol step.
//!
//! Each hook is the one line of a cross-thread protocol that a model in `loom-tests/`
//! must be shown to depend on. Built normally, a hook does the right thing and nothing
//! else. Built with `--cfg cdpmux_loom_mutant` (`CDPMUX_LOOM_MUTANT=1`, see `build.rs`),
//! it does the wrong thing its name says, and the model that checks that step must fail.
//! Production code calls the hook instead of writing the step inline, so no production
//! function body carries a seeded bug.

use crate::sync::{mpsc, oneshot};

/// Sends a granted session to its caller. Right: `send`, and a grant handed back (the
/// caller left) is dropped, which releases it. Seeded bug: trusting an earlier
/// `is_closed` and forgetting what `send` hands back (the session is lost).
pub(crate) fn deliver_grant<T>(tx: oneshot::Sender<crate::Result<T>>, grant: T) {
    #[cfg(not(cdpmux_loom_mutant))]
    let _ = tx.send(Ok(grant));
    #[cfg(cdpmux_loom_mutant)]
    if !tx.is_closed() {
        if let Err(Ok(grant)) = tx.send(Ok(grant)) {
            std::mem::forget(grant);
        }
    }
}

/// Closes an inbox, then answers what is left in it. Seeded bug: draining before
/// closing misses a message sent in between (dropped with the inbox, unanswered).
pub(crate) async fn close_then_drain<M>(inbox: &mut mpsc::UnboundedReceiver<M>, answer: fn(M)) {
    #[cfg(not(cdpmux_loom_mutant))]
    {
        inbox.close();
        while let Some(msg) = inbox.recv().await {
            answer(msg);
        }
    }
    #[cfg(cdpmux_loom_mutant)]
    {
        while let Ok(msg) = inbox.try_recv() {
            answer(msg);
        }
        inbox.close();
    }
}

/// A caller who joined a line looks at `open` again (after a fence) before it trusts
/// that the shard will see it. Seeded bug: trusting the first look: a shard that closed
/// and drained in between never sees the caller, who waits for a hand-off that may
/// never come.
pub(crate) const JOIN_RECHECKS_OPEN: bool = !cfg!(cdpmux_loom_mutant);

/// A lease that serves a caller of another shard's line tells that line (the caller's
/// shard forgets its place and deadline). Seeded bug: telling the session's own shard,
/// so the caller's shard keeps a record of someone already served.
pub(crate) const SERVED_TOLD_TO_CALLERS_SHARD: bool = !cfg!(cdpmux_loom_mutant);

/// A lease records its hand-off for the shard before the new holder has the session, so
/// the shard reads it before anything the new holder sends. Seeded bug: recording it
/// after the send lets the new holder's commands overtake it.
pub(crate) const PASSED_RECORDED_BEFORE_SEND: bool = !cfg!(cdpmux_loom_mutant);
