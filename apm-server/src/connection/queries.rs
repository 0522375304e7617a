//! Questions that span shards, asked by a client: presence (who is
//! online, a channel's members, the channels) and unread counts. The
//! shards are asked through [`crate::shard::ask`]; what only the session
//! knows (its own channels, what its grants let it see) is added here.

use apm_core::message::{PresenceQuery, PresenceResponse, UnreadRequest};
use apm_core::{Frame, Message};

use crate::shard::ask;

use super::Session;

/// A question for one or several shards.
pub(super) enum Query {
    Presence(PresenceQuery),
    Unread(UnreadRequest),
}

impl Session {
    /// Answers `query` with request id `request_id`.
    pub(super) async fn answer(&self, request_id: u32, query: Query) {
        let message = match query {
            Query::Presence(q) => Message::PresenceResponse(self.presence(q).await),
            Query::Unread(req) => Message::UnreadResponse(
                ask::unread(&self.hub, &self.conn.user, req.conversations).await,
            ),
        };
        self.reply(Frame::new(request_id, message));
    }

    async fn presence(&self, query: PresenceQuery) -> PresenceResponse {
        if let PresenceQuery::MyChannels = query {
            return PresenceResponse::MyChannels {
                channels: self.subs.iter().map(|c| c.to_string()).collect(),
            };
        }
        // Members-only channels are left out for a session that may not
        // read them.
        let access = &self.hub.access;
        let grants = self.grants();
        ask::presence(&self.hub, query, |c| {
            access.is_empty() || access.may_read(c, grants).is_ok()
        })
        .await
    }
}
