//! What other nodes sequenced, in: the node listens to every published
//! message and hands each to the shard that owns its conversation, which
//! delivers in seq order. A gap (a message lost on the way, or published
//! while this node's subscription was down) is filled from the
//! conversation's stream before anything after it goes out.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Remote, keys, store, wire};
use crate::conversation::ConversationId;
use crate::hub::Hub;
use crate::shard::Command;

/// Listens until the node stops, subscribing again after a lost link.
pub(super) async fn run(hub: Arc<Hub>, client: redis::Client, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        match listen(&hub, &client, &stop, first).await {
            Ok(()) => return,
            Err(e) => {
                hub.cluster_link_up(false);
                warn!(error = %e, "the cluster's message feed is down; subscribing again");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
        first = false;
    }
}

/// One subscription's life: `Ok` when the node stops.
async fn listen(
    hub: &Arc<Hub>,
    client: &redis::Client,
    stop: &CancellationToken,
    first: bool,
) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(keys::MESSAGES).await?;
    hub.cluster_link_up(true);
    info!("cluster message feed subscribed");
    if !first {
        // The link broke: Redis may have restarted without its data, and
        // a node that only receives would never learn it from a script.
        let mut conn = client.get_multiplexed_async_connection().await?;
        let epoch: Option<u64> = redis::cmd("GET")
            .arg(keys::EPOCH)
            .query_async(&mut conn)
            .await?;
        if epoch != Some(hub.epoch()) {
            hub.cluster_epoch_lost(epoch, stop);
            return Ok(());
        }
        // What was published while the feed was down never comes: each
        // shard reads what its conversations missed from their streams.
        for shard in 0..hub.shards.len() {
            hub.submit_now(shard, Command::CatchUp);
        }
    }
    let mut messages = pubsub.into_on_message();
    loop {
        let msg = tokio::select! {
            m = messages.next() => m,
            _ = stop.cancelled() => return Ok(()),
        };
        let Some(msg) = msg else {
            return Err(redis::RedisError::from(std::io::Error::other(
                "the subscription ended",
            )));
        };
        match wire::published(msg.get_payload_bytes()) {
            Some(record) => {
                let shard = hub.shard_of_conversation(&record.conversation);
                let remote = Remote {
                    record,
                    origin: None,
                };
                hub.submit_now(shard, Command::Remote(Box::new(remote)));
            }
            None => warn!("a published message does not read back; skipped"),
        }
    }
}

/// Reads `conversation`'s messages from `from` on from its stream, for a
/// shard whose feed was down: they arrive as if published.
pub(crate) fn catch_up(
    hub: &Arc<Hub>,
    conn: &ConnectionManager,
    conversation: ConversationId,
    from: u64,
) {
    let (hub, mut conn) = (hub.clone(), conn.clone());
    tokio::spawn(async move {
        read(&hub, &mut conn, &conversation, from, "+".to_owned()).await;
    });
}

/// Reads `conversation`'s messages `from..=to` from its stream for the
/// shard that found them missing, then tells it the gap is done (what the
/// stream no longer holds is lost to this node's members).
pub(crate) fn fill(
    hub: &Arc<Hub>,
    conn: &ConnectionManager,
    conversation: ConversationId,
    from: u64,
    to: u64,
) {
    let (hub, mut conn) = (hub.clone(), conn.clone());
    tokio::spawn(async move {
        let read = read(&hub, &mut conn, &conversation, from, format!("0-{to}")).await;
        // A read that failed skips nothing: the gap is asked for again.
        let to = if read { to } else { 0 };
        let shard = hub.shard_of_conversation(&conversation);
        hub.submit_now(shard, Command::GapRead { conversation, to });
    });
}

/// Hands the owning shard `conversation`'s messages from seq `from` up to
/// the stream id `to`, as if they were published. Tries again while Redis
/// is away (its connection comes back by itself), for about 10 s; says
/// whether the read was made.
async fn read(
    hub: &Arc<Hub>,
    conn: &mut ConnectionManager,
    conversation: &ConversationId,
    from: u64,
    to: String,
) -> bool {
    let shard = hub.shard_of_conversation(conversation);
    let mut backoff = Duration::from_millis(20);
    for _ in 0..READ_ATTEMPTS {
        let read: redis::RedisResult<redis::streams::StreamRangeReply> = redis::cmd("XRANGE")
            .arg(keys::log(conversation))
            .arg(format!("0-{from}"))
            .arg(&to)
            .query_async(conn)
            .await;
        match read {
            Ok(entries) => {
                for record in store::records(entries) {
                    let remote = Remote {
                        record,
                        origin: None,
                    };
                    hub.submit_now(shard, Command::Remote(Box::new(remote)));
                }
                return true;
            }
            Err(e) => {
                warn!(error = %e, "a conversation's stream could not be read; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
    false
}

/// How many times a stream read is tried (about 10 s with the back-off).
const READ_ATTEMPTS: usize = 25;
