//! Publishing a new live configuration to the shards: stored in the pool's `LiveCell`
//! first, then each shard is told (`Msg::Reconfigured`), so a shard that hears of a
//! change always reads it. Used by `Pool::reconfigure` and by the autoscaler's sampler;
//! the order is model-checked by `loom-tests` (`live_config`).

use crate::config::Config;
use crate::shard::msg::Msg;
use crate::sync::{mpsc, LiveCell};

/// Installs a new live configuration, then tells every shard: a shard handling
/// `Reconfigured` sees `next` (or a later one), never the old value. Checked by
/// `loom-tests` (`live_config`).
pub fn publish_config(
    cell: &LiveCell<Config>,
    inboxes: &[mpsc::UnboundedSender<Msg>],
    next: Config,
) {
    let tell = || {
        for inbox in inboxes {
            let _ = inbox.send(Msg::Reconfigured);
        }
    };
    if crate::mutant::config_told_before_stored() {
        tell();
        cell.store(next);
        return;
    }
    cell.store(next);
    tell();
}
