//! What the API reads: presence pages, history pages, unread counts and
//! the server's own state. Asked of the shards the way a client's session
//! asks them, without a session's limits: a backend sees every channel
//! and may read any user's inbox and positions.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use apm_core::message::{Conversation, HistoryRequest, PresenceQuery, PresenceResponse};
use apm_core::names::validate_name;
use apm_core::{ErrorCode, Message};
use serde_json::{Value, json};

use crate::hub::Hub;
use crate::shard::{Command, ask};

use super::error::ApiError;
use super::json::{self, DEFAULT_PAGE, HistoryParams, PageParams, UnreadParams};
use super::slot::ReplySlot;

/// Checks a channel name or user id a request gives.
fn valid(hub: &Hub, what: &str, name: &str) -> Result<(), ApiError> {
    validate_name(name, &hub.limits).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

fn check_conversation(hub: &Hub, c: &Conversation) -> Result<(), ApiError> {
    match c {
        Conversation::Channel(name) => valid(hub, "channel", name),
        Conversation::User(user) => valid(hub, "user", user),
        Conversation::Broadcast => Ok(()),
    }
}

/// `is_online`: how many connections a user holds.
pub(crate) async fn is_online(hub: &Hub, user: String) -> Result<Value, ApiError> {
    valid(hub, "user", &user)?;
    match ask::presence(hub, PresenceQuery::IsOnline { user }, |_| true).await {
        PresenceResponse::IsOnline { user, connections } => Ok(json!({
            "user": user,
            "online": connections > 0,
            "connections": connections,
        })),
        other => Err(unexpected(&other)),
    }
}

/// `online_users`, `channel_members` and `channels`: one page each.
pub(crate) async fn page(hub: &Hub, method: &str, p: PageParams) -> Result<Value, ApiError> {
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    let query = match (method, p.channel) {
        ("channel_members", Some(channel)) => {
            valid(hub, "channel", &channel)?;
            PresenceQuery::ChannelMembers {
                channel,
                after: p.after,
                limit,
            }
        }
        ("channel_members", None) => return Err(ApiError::bad_request("`channel` is needed")),
        (_, Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "`{method}` takes no `channel`"
            )));
        }
        ("online_users", None) => PresenceQuery::OnlineUsers {
            after: p.after,
            limit,
        },
        (_, None) => PresenceQuery::Channels {
            after: p.after,
            limit,
        },
    };
    Ok(match ask::presence(hub, query, |_| true).await {
        PresenceResponse::Users { users, next } => json!({ "users": users, "next": next }),
        PresenceResponse::Members {
            channel,
            users,
            next,
        } => json!({ "channel": channel, "users": users, "next": next }),
        PresenceResponse::Channels { channels, next } => {
            let channels: Vec<Value> = channels
                .into_iter()
                .map(|(channel, members)| json!({ "channel": channel, "members": members }))
                .collect();
            json!({ "channels": channels, "next": next })
        }
        other => return Err(unexpected(&other)),
    })
}

fn unexpected(answer: &PresenceResponse) -> ApiError {
    ApiError::internal(format!("unexpected presence answer {answer:?}"))
}

/// `history`: a page of a channel, a user's inbox or the broadcasts,
/// answered by the shard from its ring or the store.
pub(crate) async fn history(
    hub: &Hub,
    sender: Arc<str>,
    p: HistoryParams,
) -> Result<Value, ApiError> {
    let conversation = json::ConversationParams {
        channel: p.channel,
        user: p.user,
        broadcast: p.broadcast,
    }
    .conversation()?;
    check_conversation(hub, &conversation)?;
    // The shard gives an inbox's history to its owner only: the slot is
    // that user's for an inbox, the caller's otherwise.
    let (shard, owner) = match &conversation {
        Conversation::Channel(name) => (hub.shard_of(name), sender),
        Conversation::User(user) => (hub.shard_of(user), Arc::from(user.as_str())),
        Conversation::Broadcast => (Hub::BROADCAST_SHARD, sender),
    };
    let slot = ReplySlot::new(hub, owner);
    let req = HistoryRequest {
        conversation,
        before: p.before,
        after: p.after,
        limit: p.limit.unwrap_or(DEFAULT_PAGE),
    };
    let cmd = Command::History {
        conn: slot.conn.clone(),
        request_id: 1,
        req,
    };
    hub.submit(shard, cmd).await;
    match slot.answer(hub).await?.message {
        Message::HistoryResponse(page) => Ok(json::history(&page, hub.epoch())),
        Message::Error(e) if e.code == ErrorCode::Internal => Err(ApiError::unavailable(
            "store_failing",
            format!("the history could not be read: {}", e.message),
        )),
        Message::Error(e) => Err(ApiError::internal(format!(
            "refused by the shard: {} ({})",
            e.message, e.code
        ))),
        other => Err(ApiError::internal(format!(
            "the shard answered {:?} to a history request",
            other.message_type()
        ))),
    }
}

/// `unread`: how far a user has read some conversations.
pub(crate) async fn unread(hub: &Hub, p: UnreadParams) -> Result<Value, ApiError> {
    valid(hub, "user", &p.user)?;
    let conversations = p
        .conversations
        .into_iter()
        .map(|c| {
            let c = c.conversation()?;
            check_conversation(hub, &c)?;
            Ok(c)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let user: Arc<str> = Arc::from(p.user.as_str());
    let answer = ask::unread(hub, &user, conversations).await;
    let counts: Vec<Value> = answer
        .counts
        .iter()
        .map(|u| {
            json!({
                "conversation": json::conversation(&u.conversation),
                "last": u.last,
                "acked": u.acked,
                "unread": u.count(),
            })
        })
        .collect();
    Ok(json!({ "user": p.user, "epoch": hub.epoch(), "counts": counts }))
}

/// `info`: the server's version, epoch, uptime, connections and shards;
/// in cluster mode also the cluster's nodes as their presence leases show
/// them.
pub(crate) async fn info(hub: &Hub) -> Result<Value, ApiError> {
    let mut info = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "epoch": hub.epoch(),
        "uptime_secs": hub.started.elapsed().as_secs(),
        "connections": hub.metrics.connections_open.load(Ordering::Relaxed),
        "shards": hub.shards.len(),
        "store": if hub.store.is_durable() { "disk" } else { "memory" },
    });
    let Some(cluster) = &hub.cluster else {
        return Ok(info);
    };
    let mut conn = cluster
        .conn()
        .ok_or_else(|| ApiError::internal("the cluster link has not started"))?;
    let nodes = crate::cluster::presence::query::nodes(&mut conn)
        .await
        .map_err(|e| ApiError::internal(format!("the cluster's Redis: {e}")))?;
    let now = crate::clock::now_ms();
    info["store"] = json!("redis");
    info["cluster"] = json!({
        "node": cluster.presence.node(),
        "redis_instances": cluster.instances(),
        "connections": nodes.iter().map(|n| n.connections).sum::<u64>(),
        "nodes": nodes.iter().map(|n| json!({
            "node": n.node,
            "connections": n.connections,
            "lease_until_ms": n.lease_until_ms,
            "lapsed": n.lease_until_ms < now,
        })).collect::<Vec<_>>(),
    });
    Ok(info)
}
