//! Who gives a conversation its order: the seq of each new message and
//! the epoch those seqs belong to.
//!
//! On one node the shard loop that owns a conversation sequences it
//! through the conversation's [`Log`]. Cluster mode puts another
//! implementation here (a script in the shared engine that checks the
//! retry, increments the seq and appends in one step), and the loop's
//! delivery path stays as it is.

use crate::dedup::Window;
use std::fmt::Debug;

use crate::conversation::ConversationId;

use super::log::{Admitted, Log, Offer};

/// Assigns seqs and names the epoch they belong to.
pub(crate) trait Sequencer: Send + Sync + Debug + 'static {
    /// The epoch seqs belong to: a client that sees it change knows its
    /// positions mean nothing any more.
    fn epoch(&self) -> u64;

    /// Places `offer` in `conversation` (whose local state is `log`), or
    /// recognises it as a retry. `window` is how much of its client
    /// message ids a conversation remembers.
    fn admit(
        &self,
        log: &mut Log,
        conversation: ConversationId,
        offer: Offer<'_>,
        window: Window,
    ) -> Admitted;
}

/// The owning shard loop sequences: one consumer per conversation gives
/// it one total order with no coordination.
#[derive(Debug)]
pub(crate) struct LocalSequencer {
    epoch: u64,
}

impl LocalSequencer {
    /// Seqs in the store's epoch.
    pub(crate) fn new(epoch: u64) -> LocalSequencer {
        LocalSequencer { epoch }
    }
}

impl Sequencer for LocalSequencer {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn admit(
        &self,
        log: &mut Log,
        conversation: ConversationId,
        offer: Offer<'_>,
        window: Window,
    ) -> Admitted {
        log.admit(conversation, offer, window)
    }
}
