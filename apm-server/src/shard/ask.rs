//! Questions that span shards, asked from outside the loops: presence
//! (who is online, a channel's members, the channels) and unread counts.
//! Every shard concerned is asked at once, and the answers are merged into
//! one page. A client's session and the HTTP API both ask this way.
//!
//! In cluster mode presence is also asked of Redis, which counts every
//! node's, and the two answers merged: what this node holds shows at
//! once, even before its counts reach Redis.

use apm_core::message::{Conversation, PresenceQuery, PresenceResponse, Unread, UnreadResponse};
use tokio::sync::oneshot;

use crate::cluster::presence::query;
use crate::conversation::ConversationId;
use crate::hub::Hub;

use super::command::{Answer, Command};

/// Asks `shard`; `None` if it did not answer (shutting down).
async fn ask(hub: &Hub, shard: usize, query: PresenceQuery) -> Option<Answer> {
    let (reply, rx) = oneshot::channel();
    hub.submit(shard, Command::Query { query, reply }).await;
    rx.await.ok()
}

/// Asks every shard at once, then gathers their answers.
async fn ask_all(hub: &Hub, query: PresenceQuery) -> Vec<Answer> {
    let mut pending = Vec::with_capacity(hub.shards.len());
    for shard in 0..hub.shards.len() {
        let (reply, rx) = oneshot::channel();
        let query = query.clone();
        hub.submit(shard, Command::Query { query, reply }).await;
        pending.push(rx);
    }
    let mut answers = Vec::with_capacity(pending.len());
    for rx in pending {
        answers.extend(rx.await.ok());
    }
    answers
}

/// Answers a presence query that the shards' tables answer (every one
/// but `MyChannels`, which only the asking session knows: answered
/// empty). Channels `may_read` refuses are left out of a channel list
/// (after paging, so `next` still counts them: a page may come out short).
pub(crate) async fn presence(
    hub: &Hub,
    query: PresenceQuery,
    may_read: impl Fn(&str) -> bool,
) -> PresenceResponse {
    let cap = hub.config.presence_page_max;
    match query {
        PresenceQuery::IsOnline { user } => {
            let shard = hub.shard_of(&user);
            let asked = PresenceQuery::IsOnline { user: user.clone() };
            let mut connections = match ask(hub, shard, asked).await {
                Some(Answer::Connections(n)) => n,
                _ => 0,
            };
            let user_ = user.clone();
            let cluster = from_cluster(hub, |mut c| async move {
                query::connections(&mut c, &user_).await
            });
            if let Some(n) = cluster.await {
                connections = connections.max(n);
            }
            PresenceResponse::IsOnline { user, connections }
        }
        PresenceQuery::OnlineUsers { after, limit } => {
            let limit = limit.min(cap);
            let after_ = after.clone();
            let cluster = from_cluster(hub, |mut c| async move {
                query::users(&mut c, &after_, limit).await
            });
            let mut users: Vec<String> = ask_all(hub, PresenceQuery::OnlineUsers { after, limit })
                .await
                .into_iter()
                .flat_map(|a| match a {
                    Answer::Names(n) => n,
                    _ => Vec::new(),
                })
                .chain(cluster.await.into_iter().flatten())
                .collect();
            users.sort_unstable();
            users.dedup();
            let next = page(&mut users, limit, |u| u.clone());
            PresenceResponse::Users { users, next }
        }
        PresenceQuery::ChannelMembers {
            channel,
            after,
            limit,
        } => {
            let limit = limit.min(cap);
            let shard = hub.shard_of(&channel);
            let (channel_, after_) = (channel.clone(), after.clone());
            let cluster = from_cluster(hub, |mut c| async move {
                query::members(&mut c, &channel_, &after_, limit).await
            });
            let q = PresenceQuery::ChannelMembers {
                channel: channel.clone(),
                after,
                limit,
            };
            let mut users = match ask(hub, shard, q).await {
                Some(Answer::Names(n)) => n,
                _ => Vec::new(),
            };
            if let Some(more) = cluster.await {
                users.extend(more);
                users.sort_unstable();
                users.dedup();
            }
            let next = page(&mut users, limit, |u| u.clone());
            PresenceResponse::Members {
                channel,
                users,
                next,
            }
        }
        PresenceQuery::Channels { after, limit } => {
            let limit = limit.min(cap);
            let after_ = after.clone();
            let cluster = from_cluster(hub, |mut c| async move {
                query::channels(&mut c, &after_, limit).await
            });
            let mut channels: Vec<(String, u32)> =
                ask_all(hub, PresenceQuery::Channels { after, limit })
                    .await
                    .into_iter()
                    .flat_map(|a| match a {
                        Answer::Counts(c) => c,
                        _ => Vec::new(),
                    })
                    .chain(cluster.await.into_iter().flatten())
                    .collect();
            // Per channel the larger count: Redis's, unless this node's
            // newest members have not reached it yet.
            channels.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            channels.dedup_by(|later, first| later.0 == first.0);
            let next = page(&mut channels, limit, |(c, _)| c.clone());
            channels.retain(|(c, _)| may_read(c));
            PresenceResponse::Channels { channels, next }
        }
        PresenceQuery::MyChannels => PresenceResponse::MyChannels {
            channels: Vec::new(),
        },
    }
}

/// Asks the cluster's Redis with `ask`, in cluster mode; `None` on one
/// node, or when Redis did not answer (the node's own answer stands).
async fn from_cluster<T, F, Fut>(hub: &Hub, ask: F) -> Option<T>
where
    F: FnOnce(redis::aio::ConnectionManager) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let conn = hub.cluster.as_ref()?.conn()?;
    match ask(conn).await {
        Ok(answer) => Some(answer),
        Err(e) => {
            tracing::warn!(error = %e, "the cluster's presence could not be read: answering for this node");
            None
        }
    }
}

/// How far `user` has read `conversations`: asks each shard owning some
/// of them, and answers in the order asked (at most the unread page size).
/// Among inboxes only `user`'s own is counted; another user's inbox, or a
/// shard that did not answer (shutting down), counts as empty.
pub(crate) async fn unread(
    hub: &Hub,
    user: &std::sync::Arc<str>,
    conversations: Vec<Conversation>,
) -> UnreadResponse {
    let cap = hub.config.unread_page_max as usize;
    let mut per_shard: Vec<Vec<(usize, Conversation)>> = vec![Vec::new(); hub.shards.len()];
    let asked: Vec<Conversation> = conversations.into_iter().take(cap).collect();
    let mut counts: Vec<Option<Unread>> = vec![None; asked.len()];
    for (i, conversation) in asked.iter().enumerate() {
        if matches!(conversation, Conversation::User(u) if **u != **user) {
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
            user: user.clone(),
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
