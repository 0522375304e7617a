//! Server-side subscriptions: channels the server joins this user to
//! (capability `SERVER_SUBS`). The server says so with `ServerSub` at
//! every handshake and whenever a backend adds one, and `ServerUnsub` when
//! one ends; their messages go to one stream of their own.
//!
//! After a reconnect the server joins them again from their newest
//! message; a channel this client held before is then resumed with a
//! `Sub` from its last seq, and what arrives live meanwhile is dropped, as
//! the resume's replay brings it again, in order.

use apm_core::message::{Sub, SubOk};
use apm_core::{Frame, Message};

use super::{Pending, Reaction, State, SubState};
use crate::error::Error;
use crate::streams::Event;

impl State {
    /// `ServerSub`: a channel the server holds for this user.
    pub(super) fn server_sub(&mut self, ok: SubOk) -> Reaction {
        let Some(sub) = self.subs.get_mut(&ok.channel) else {
            let sub = SubState {
                server: true,
                confirmed: true,
                ..SubState::new(self.server.clone(), ok.seq)
            };
            self.subs.insert(ok.channel.clone(), sub);
            self.events.push(Event::ServerSubscribed {
                channel: ok.channel,
            });
            return Reaction::Nothing;
        };
        let known = sub.server;
        sub.server = true;
        sub.confirmed = true;
        if !known {
            // The app subscribed to it too: its Subscription keeps the
            // messages, and the server decides when it ends.
            self.events.push(Event::ServerSubscribed {
                channel: ok.channel,
            });
            return Reaction::Nothing;
        }
        if sub.last_seq >= ok.seq || sub.resuming {
            return Reaction::Nothing;
        }
        // Held before this connection, with messages since: resume.
        sub.resuming = true;
        let since = sub.last_seq;
        let id = self.request_id();
        self.pending.insert(
            id,
            Pending::ServerResume {
                channel: ok.channel.clone(),
            },
        );
        let resume = Message::Sub(Sub {
            channel: ok.channel,
            since: Some(since),
        });
        Reaction::Send(Frame::new(id, resume))
    }

    /// `ServerUnsub`: the server ended one; nothing of it follows.
    pub(super) fn server_unsub(&mut self, channel: &str) {
        if self.subs.get(channel).is_some_and(|s| s.server) {
            self.subs.remove(channel);
            self.events.push(Event::ServerUnsubscribed {
                channel: channel.to_owned(),
            });
        }
    }

    /// The answer to a resume started by `server_sub`.
    pub(super) fn server_resumed(&mut self, channel: &str, result: Result<Frame, Error>) {
        let Some(sub) = self.subs.get_mut(channel) else {
            return;
        };
        sub.resuming = false;
        match result.map(|f| f.message) {
            Ok(Message::SubOk(ok)) => {
                if ok.oldest > sub.last_seq + 1 {
                    sub.dropped += ok.oldest - sub.last_seq - 1;
                    self.events.push(Event::Lagged {
                        stream: channel.to_owned(),
                        dropped: sub.dropped,
                    });
                }
                sub.last_seq = sub.last_seq.max(ok.oldest.saturating_sub(1));
            }
            other => {
                // Live delivery goes on; what the resume would have
                // brought back is lost to this stream.
                let reason = match other {
                    Ok(Message::Error(e)) => format!("{}: {}", e.code, e.message),
                    Ok(m) => format!("unexpected {:?}", m.message_type()),
                    Err(e) => e.to_string(),
                };
                tracing::debug!(
                    channel,
                    reason,
                    "a server-side subscription's resume failed"
                );
                sub.dropped += 1;
                self.events.push(Event::Lagged {
                    stream: channel.to_owned(),
                    dropped: sub.dropped,
                });
            }
        }
    }

    /// The connection is gone. A server-side subscription the server did
    /// not confirm during a whole connection has ended while this client
    /// was away; the others wait for the next connection's `ServerSub`.
    pub(super) fn server_subs_disconnected(&mut self) {
        let ended: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.server && !s.confirmed)
            .map(|(c, _)| c.clone())
            .collect();
        for channel in ended {
            self.subs.remove(&channel);
            self.events.push(Event::ServerUnsubscribed { channel });
        }
        for sub in self.subs.values_mut().filter(|s| s.server) {
            sub.confirmed = false;
            sub.resuming = false;
        }
    }
}
