//! Presence across a restart. A graceful shutdown does not announce its
//! users as gone: each loop writes who was online and who was in which
//! channel to the store. The next start takes that list back as
//! *presumed*: a presumed user who reconnects within the grace period is
//! not announced as coming online, nor as joining a channel it was in;
//! whoever has not come back by then is announced as gone.

use std::collections::HashSet;
use std::sync::Arc;

use apm_core::ErrorCode;
use apm_core::message::PresenceEvent;
use tokio::time::Instant;

use crate::outbox::Conn;

use super::Shard;

/// Who a loop presumes online after a restart, until `until`.
#[derive(Debug, Default)]
pub(crate) struct Presumed {
    pub(super) users: HashSet<Arc<str>>,
    /// (channel, user).
    pub(super) members: HashSet<(Arc<str>, Arc<str>)>,
    pub(super) until: Option<Instant>,
}

/// Who left because the server is shutting down, to be written to the
/// store when the loop stops.
#[derive(Debug, Default)]
pub(crate) struct Departed {
    pub(super) users: HashSet<Arc<str>>,
    pub(super) members: HashSet<(Arc<str>, Arc<str>)>,
}

/// Whether a connection went away because the server is shutting down
/// (its user did not choose to leave).
pub(super) fn in_shutdown(conn: &Conn) -> bool {
    conn.close_code() == Some(ErrorCode::ServerShutdown)
}

impl Shard {
    /// The grace period's end, while some presumed users have not come
    /// back.
    pub(crate) fn grace_deadline(&self) -> Option<Instant> {
        self.tables.presumed.until
    }

    /// Whether `user`'s coming online is a return from before the restart
    /// (so not news).
    pub(super) fn returning_user(&mut self, user: &Arc<str>) -> bool {
        self.tables.presumed.users.remove(user)
    }

    /// Whether `user`'s joining `channel` is a return from before the
    /// restart.
    pub(super) fn returning_member(&mut self, channel: &str, user: &Arc<str>) -> bool {
        let presumed = &mut self.tables.presumed;
        !presumed.members.is_empty() && presumed.members.remove(&(Arc::from(channel), user.clone()))
    }

    /// The grace period is over: whoever has not come back is announced
    /// as gone.
    pub(crate) fn end_grace(&mut self) {
        let presumed = std::mem::take(&mut self.tables.presumed);
        for (channel, user) in presumed.members {
            let still_in = self
                .tables
                .channels
                .get(&*channel)
                .is_some_and(|ch| ch.users.contains_key(&user));
            if !still_in {
                self.channel_event(
                    &channel,
                    PresenceEvent::Leave {
                        channel: channel.to_string(),
                        user: user.to_string(),
                    },
                    super::NOBODY,
                );
            }
        }
        for user in presumed.users {
            if !self.tables.users.contains_key(&user) {
                self.presence_event(PresenceEvent::Offline {
                    user: user.to_string(),
                });
            }
        }
    }

    /// Writes who was online when the shutdown began (this loop's users
    /// and channel members), for the next start.
    pub(crate) fn save_presence(&mut self) {
        let departed = std::mem::take(&mut self.tables.departed);
        let mut users: Vec<String> = departed.users.iter().map(|u| u.to_string()).collect();
        users.extend(self.tables.users.names().iter().map(|u| u.to_string()));
        let mut members: Vec<(String, String)> = departed
            .members
            .iter()
            .map(|(c, u)| (c.to_string(), u.to_string()))
            .collect();
        for (name, ch) in &self.tables.channels {
            members.extend(ch.users.keys().map(|u| (name.to_string(), u.to_string())));
        }
        if users.is_empty() && members.is_empty() {
            return;
        }
        if let Err(e) = self.ctx.hub.store.save_presence(&users, &members) {
            tracing::warn!(error = %e, "presence not saved: returning users will be announced");
        }
    }
}
