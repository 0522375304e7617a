//! Routing what the server delivers: each message to its subscription or
//! the inbox, once. Resumes and the server's replays on connect overlap
//! what was already handed out; the seqs remembered here drop the overlap.

use apm_core::message::{Conversation, Deliver, Unsub};
use apm_core::{Frame, Message};
use tokio::sync::mpsc;

use super::{Pending, Reaction, State};
use crate::streams::Event;

impl State {
    /// Hands a message to its stream, unless it was handed out already.
    pub(super) fn route(&mut self, d: Deliver) -> Reaction {
        let Conversation::Channel(channel) = &d.conversation else {
            self.route_private(d);
            return Reaction::Nothing;
        };
        let Some(sub) = self.subs.get_mut(&**channel) else {
            return Reaction::Nothing;
        };
        if d.seq <= sub.last_seq || sub.resuming {
            // Already seen (a resume overlapping what was delivered live),
            // or to come again in the replay of a resume under way.
            return Reaction::Nothing;
        }
        sub.last_seq = d.seq;
        let failed = match sub.tx.try_send(d) {
            Ok(()) => return Reaction::Nothing,
            Err(e) => e,
        };
        let (full, d) = match failed {
            mpsc::error::TrySendError::Full(d) => (true, d),
            mpsc::error::TrySendError::Closed(d) if sub.server => {
                // The app dropped the Subscription it had for a channel
                // the server holds: its messages go to the server-side
                // stream from now on.
                sub.tx = self.server.clone();
                match sub.tx.try_send(d) {
                    Ok(()) => return Reaction::Nothing,
                    Err(e) => (true, e.into_inner()),
                }
            }
            mpsc::error::TrySendError::Closed(d) => (false, d),
        };
        let Conversation::Channel(channel) = d.conversation else {
            unreachable!("routed as a channel message")
        };
        let channel = String::from(channel);
        if full {
            sub.dropped += 1;
            let dropped = sub.dropped;
            self.events.push(Event::Lagged {
                stream: channel,
                dropped,
            });
            return Reaction::Nothing;
        }
        // The Subscription was dropped: leave the channel.
        self.subs.remove(&channel);
        let id = self.request_id();
        self.pending.insert(id, Pending::Ignore);
        Reaction::Send(Frame::new(id, Message::Unsub(Unsub { channel })))
    }

    fn route_private(&mut self, d: Deliver) {
        // The server replays unacknowledged private messages on every
        // connect; drop what this client already handed out. (Copies of
        // what this user sent to others carry the other inbox's seq and are
        // never replayed.)
        let seen = match &d.conversation {
            Conversation::Broadcast => Some(&mut self.broadcast_seen),
            Conversation::User(u) if *u == self.user => Some(&mut self.inbox_seen),
            _ => None,
        };
        if let Some(seen) = &seen
            && d.seq <= **seen
        {
            return;
        }
        let seq = d.seq;
        if self.inbox.try_send(d).is_ok() {
            // Advanced only when handed out, so a message dropped here is
            // taken again when the server replays it.
            if let Some(seen) = seen {
                *seen = seq;
            }
        } else {
            self.inbox_dropped += 1;
            self.events.push(Event::Lagged {
                stream: "inbox".into(),
                dropped: self.inbox_dropped,
            });
        }
    }
}
