//! The node's sequencing link: messages its shards took from clients go
//! to Redis in batches, one script call per batch, and come back
//! with their seqs to the shard that owns their conversation, which
//! delivers them in order with those that other nodes sequenced.

use std::sync::Arc;

use apm_core::message::Receipt;
use apm_core::{ErrorCode, Frame, Message};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Origin, Remote, Submission, keys, script, wire};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::shard::Command;

/// Messages in one script call at most.
const BATCH: usize = 256;

/// Takes submissions for the cluster's `instance` (whose epoch this node
/// started with is `epoch`) until `finish` fires and none is left,
/// sequencing them there; cancels `stop` (the node's) when the instance
/// lost its epoch.
pub(super) async fn run(
    hub: Arc<Hub>,
    instance: usize,
    mut conn: ConnectionManager,
    epoch: u64,
    mut rx: mpsc::UnboundedReceiver<Submission>,
    stop: CancellationToken,
    finish: CancellationToken,
) {
    let script = redis::Script::new(script::SEQUENCE);
    let epoch = epoch.to_string();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // What was taken before the node began to stop still goes.
        let first = tokio::select! {
            biased;
            s = rx.recv() => s,
            _ = finish.cancelled() => rx.try_recv().ok(),
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        if let Some(cluster) = &hub.cluster {
            cluster.taken(batch.len(), batch.iter().map(|s| s.body.len()).sum());
        }
        // Readers waiting for room (`Cluster::has_room`) may go on.
        for ingress in hub.shards.iter() {
            ingress.space.notify_waiters();
        }
        let mut answer = call(&mut conn, &script, &epoch, &hub, &batch).await;
        if answer
            .as_ref()
            .is_err_and(|e| e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
        {
            // Redis restarted: no script ran; load it and send again.
            let loaded = script.prepare_invoke().load_async(&mut conn).await;
            if let Err(e) = loaded {
                warn!(error = %e, "cannot load the sequencing script");
            }
            answer = call(&mut conn, &script, &epoch, &hub, &batch).await;
        }
        if let Ok(redis::Value::Array(answers)) = &answer
            && let Some(found) = epoch_lost(answers)
        {
            for s in batch.drain(..) {
                refuse(
                    &s.origin,
                    "the cluster's state was lost: this node is restarting",
                );
            }
            hub.cluster_epoch_lost(instance, found, &stop);
            continue;
        }
        match answer {
            Ok(redis::Value::Array(answers)) if answers.len() == batch.len() => {
                for (s, answer) in batch.drain(..).zip(answers) {
                    answered(&hub, s, answer);
                }
            }
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(v) => format!("unexpected answer {v:?}"),
                };
                warn!(error = %why, messages = batch.len(), "cluster sequencing failed");
                for s in batch.drain(..) {
                    refuse(
                        &s.origin,
                        &format!(
                            "the cluster's Redis failed ({why}): the message may have been \
                             sequenced; send it again with the same msg_id"
                        ),
                    );
                }
            }
        }
    }
}

/// The script's `{-1, EPOCH}`: Redis holds another epoch, or none.
/// `Some(found)` then.
fn epoch_lost(answers: &[redis::Value]) -> Option<Option<u64>> {
    match answers {
        [redis::Value::Int(-1), found] => Some(
            redis::from_redis_value_ref::<String>(found)
                .ok()
                .and_then(|e| e.parse().ok()),
        ),
        _ => None,
    }
}

/// One script call for the whole batch, its messages in order.
async fn call(
    conn: &mut ConnectionManager,
    script: &redis::Script,
    epoch: &str,
    hub: &Hub,
    batch: &[Submission],
) -> redis::RedisResult<redis::Value> {
    let keep_secs = hub.config.dedup_keep_secs.max(1);
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(1 + batch.len())
        .arg(keys::EPOCH);
    for s in batch {
        cmd.arg(keys::log(&s.conversation));
    }
    cmd.arg(epoch).arg(keep_secs).arg(keys::MESSAGES);
    for s in batch {
        let retry = match &s.retry {
            Some((sender, msg_id)) => keys::retry_field(&s.conversation, sender, *msg_id),
            None => String::new(),
        };
        cmd.arg(&s.body[..])
            .arg(s.keep)
            .arg(retry)
            .arg(s.ts_ms)
            .arg(format!(" {} ", s.body.len()));
    }
    cmd.query_async(conn).await
}

/// What the script said about one message: its seq, or the first copy's.
fn answered(hub: &Arc<Hub>, s: Submission, answer: redis::Value) {
    match answer {
        redis::Value::Int(seq) if seq > 0 => {
            let Some(record) = wire::record(seq as u64, &s.body) else {
                refuse(&s.origin, "unexpected seq from Redis");
                return;
            };
            let shard = hub.shard_of_conversation(&record.conversation);
            let remote = Remote {
                record,
                origin: Some(s.origin),
            };
            hub.submit_now(shard, Command::Remote(Box::new(remote)));
        }
        first => {
            let Ok(first) = redis::from_redis_value_ref::<String>(&first) else {
                refuse(
                    &s.origin,
                    &format!("unexpected answer from Redis: {first:?}"),
                );
                return;
            };
            Metrics::add(&hub.metrics.duplicates, 1);
            let mut first = first.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
            let (seq, ts_ms) = (first.next().unwrap_or(0), first.next().unwrap_or(0));
            if s.origin.receipt {
                let receipt = Receipt {
                    conversation: s.conversation.to_protocol(),
                    seq,
                    ts_ms,
                };
                if let Ok(frame) = Frame::new(s.origin.request_id, Message::Receipt(receipt))
                    .to_bytes_limited(u32::MAX)
                {
                    s.origin.conn.push_reply(frame);
                }
            }
        }
    }
}

/// Tells the sender its message was not taken.
fn refuse(origin: &Origin, why: &str) {
    let frame = Frame::new(origin.request_id, Message::error(ErrorCode::Internal, why));
    if let Ok(bytes) = frame.to_bytes_limited(u32::MAX) {
        origin.conn.push_reply(bytes);
    }
}
