//! Questions that span shards: presence (who is online, a channel's
//! members, the channels) and unread counts. Every shard concerned is asked
//! at once, and the answers are merged into one page.

use apm_core::message::{
    Conversation, PresenceQuery, PresenceResponse, Unread, UnreadRequest, UnreadResponse,
};
use apm_core::{Frame, Message};
use tokio::sync::oneshot;

use crate::conversation::ConversationId;
use crate::shard::{Answer, Command};

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
            Query::Unread(req) => Message::UnreadResponse(self.unread(req).await),
        };
        self.reply(Frame::new(request_id, message));
    }

    /// Asks `shard`; `None` if it did not answer (shutting down).
    async fn ask(&self, shard: usize, query: PresenceQuery) -> Option<Answer> {
        let (reply, rx) = oneshot::channel();
        self.hub
            .submit(shard, Command::Query { query, reply })
            .await;
        rx.await.ok()
    }

    /// Asks every shard at once, then gathers their answers.
    async fn ask_all(&self, query: PresenceQuery) -> Vec<Answer> {
        let mut pending = Vec::with_capacity(self.hub.shards.len());
        for shard in 0..self.hub.shards.len() {
            let (reply, rx) = oneshot::channel();
            let query = query.clone();
            self.hub
                .submit(shard, Command::Query { query, reply })
                .await;
            pending.push(rx);
        }
        let mut answers = Vec::with_capacity(pending.len());
        for rx in pending {
            answers.extend(rx.await.ok());
        }
        answers
    }

    async fn presence(&self, query: PresenceQuery) -> PresenceResponse {
        let cap = self.hub.config.presence_page_max;
        match query {
            PresenceQuery::IsOnline { user } => {
                let shard = self.hub.shard_of(&user);
                let connections = match self
                    .ask(shard, PresenceQuery::IsOnline { user: user.clone() })
                    .await
                {
                    Some(Answer::Connections(n)) => n,
                    _ => 0,
                };
                PresenceResponse::IsOnline { user, connections }
            }
            PresenceQuery::OnlineUsers { after, limit } => {
                let limit = limit.min(cap);
                let mut users: Vec<String> = self
                    .ask_all(PresenceQuery::OnlineUsers { after, limit })
                    .await
                    .into_iter()
                    .flat_map(|a| match a {
                        Answer::Names(n) => n,
                        _ => Vec::new(),
                    })
                    .collect();
                users.sort_unstable();
                let next = page(&mut users, limit, |u| u.clone());
                PresenceResponse::Users { users, next }
            }
            PresenceQuery::ChannelMembers {
                channel,
                after,
                limit,
            } => {
                let limit = limit.min(cap);
                let shard = self.hub.shard_of(&channel);
                let q = PresenceQuery::ChannelMembers {
                    channel: channel.clone(),
                    after,
                    limit,
                };
                let mut users = match self.ask(shard, q).await {
                    Some(Answer::Names(n)) => n,
                    _ => Vec::new(),
                };
                let next = page(&mut users, limit, |u| u.clone());
                PresenceResponse::Members {
                    channel,
                    users,
                    next,
                }
            }
            PresenceQuery::Channels { after, limit } => {
                let limit = limit.min(cap);
                let mut channels: Vec<(String, u32)> = self
                    .ask_all(PresenceQuery::Channels { after, limit })
                    .await
                    .into_iter()
                    .flat_map(|a| match a {
                        Answer::Counts(c) => c,
                        _ => Vec::new(),
                    })
                    .collect();
                channels.sort_unstable();
                let next = page(&mut channels, limit, |(c, _)| c.clone());
                // Members-only channels are left out for a session that
                // may not read them (after paging, so `next` still counts
                // them: a page may come out short).
                if !self.hub.access.is_empty() {
                    let grants = self.grants();
                    channels.retain(|(c, _)| self.hub.access.may_read(c, grants).is_ok());
                }
                PresenceResponse::Channels { channels, next }
            }
            PresenceQuery::MyChannels => PresenceResponse::MyChannels {
                channels: self.subs.iter().map(|c| c.to_string()).collect(),
            },
        }
    }

    /// Asks each shard owning some of the conversations for the user's
    /// counts there, and answers in the order asked. Only the user's own
    /// inbox is answered among inboxes; others count as empty.
    async fn unread(&self, req: UnreadRequest) -> UnreadResponse {
        let hub = &self.hub;
        let cap = hub.config.unread_page_max as usize;
        let mut per_shard: Vec<Vec<(usize, Conversation)>> = vec![Vec::new(); hub.shards.len()];
        let asked: Vec<Conversation> = req.conversations.into_iter().take(cap).collect();
        let mut counts: Vec<Option<Unread>> = vec![None; asked.len()];
        for (i, conversation) in asked.iter().enumerate() {
            if matches!(conversation, Conversation::User(u) if **u != *self.conn.user) {
                // Not this user's to count: answered as empty below.
                continue;
            }
            let shard = hub.shard_of_conversation(&ConversationId::from(conversation));
            per_shard[shard].push((i, conversation.clone()));
        }
        let mut pending = Vec::new();
        for (shard, conversations) in per_shard.into_iter().enumerate() {
            if conversations.is_empty() {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let cmd = Command::Unread {
                user: self.conn.user.clone(),
                conversations,
                reply,
            };
            hub.submit(shard, cmd).await;
            pending.push(rx);
        }
        for rx in pending {
            for (i, unread) in rx.await.unwrap_or_default() {
                counts[i] = Some(unread);
            }
        }
        // Another user's inbox, or a shard that did not answer (shutting
        // down), counts as empty: one entry per conversation asked.
        let counts = counts
            .into_iter()
            .zip(asked)
            .map(|(count, conversation)| {
                count.unwrap_or(Unread {
                    conversation,
                    last: 0,
                    acked: 0,
                })
            })
            .collect();
        UnreadResponse { counts }
    }
}

/// Cuts a sorted list to one page; the cursor for the next page if more
/// remain.
fn page<T>(items: &mut Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Option<String> {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(key)
    } else {
        None
    }
}
