//! The node's sequencing link: messages its shards took from clients go
//! to Redis in pipelined batches, one script call each, and come back
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

/// Script calls in one pipeline at most.
const BATCH: usize = 256;

/// Takes submissions until `finish` fires and none is left, sequencing
/// them in Redis; cancels `stop` (the node's) when Redis lost its epoch.
pub(super) async fn run(
    hub: Arc<Hub>,
    mut conn: ConnectionManager,
    mut rx: mpsc::Receiver<Submission>,
    stop: CancellationToken,
    finish: CancellationToken,
) {
    let script = redis::Script::new(script::SEQUENCE);
    let epoch = hub.epoch().to_string();
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
            cluster.taken(batch.iter().map(|s| s.body.len()).sum());
        }
        let mut answers = call(&mut conn, &script, &epoch, &hub, &batch).await;
        if answers
            .as_ref()
            .is_err_and(|e| e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
        {
            // Redis restarted: no script ran; load it and send again.
            let loaded = script.prepare_invoke().load_async(&mut conn).await;
            if let Err(e) = loaded {
                warn!(error = %e, "cannot load the sequencing script");
            }
            answers = call(&mut conn, &script, &epoch, &hub, &batch).await;
        }
        match answers {
            Ok(answers) => {
                for (s, answer) in batch.drain(..).zip(answers) {
                    answered(&hub, s, answer, &stop);
                }
            }
            Err(e) => {
                warn!(error = %e, messages = batch.len(), "cluster sequencing failed");
                for s in batch.drain(..) {
                    refuse(
                        &s.origin,
                        &format!(
                            "the cluster's Redis failed ({e}): the message may have been \
                             sequenced; send it again with the same msg_id"
                        ),
                    );
                }
            }
        }
    }
}

/// One pipeline of script calls, one per submission, in order.
async fn call(
    conn: &mut ConnectionManager,
    script: &redis::Script,
    epoch: &str,
    hub: &Hub,
    batch: &[Submission],
) -> redis::RedisResult<Vec<redis::Value>> {
    let keep_secs = hub.config.dedup_keep_secs.max(1);
    let mut pipe = redis::pipe();
    for s in batch {
        let retry_key = match &s.retry {
            Some((sender, msg_id)) => keys::retry(&s.conversation, sender, *msg_id),
            None => keys::seq(&s.conversation),
        };
        pipe.cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(4)
            .arg(keys::EPOCH)
            .arg(keys::seq(&s.conversation))
            .arg(keys::log(&s.conversation))
            .arg(retry_key)
            .arg(epoch)
            .arg(&s.body[..])
            .arg(s.keep)
            .arg(keep_secs)
            .arg(keys::MESSAGES)
            .arg(if s.retry.is_some() { "1" } else { "0" })
            .arg(s.ts_ms);
    }
    pipe.query_async(conn).await
}

/// What the script said about one message.
fn answered(hub: &Arc<Hub>, s: Submission, answer: redis::Value, stop: &CancellationToken) {
    let parts: Vec<redis::Value> = match answer {
        redis::Value::Array(parts) => parts,
        other => {
            refuse(
                &s.origin,
                &format!("unexpected answer from Redis: {other:?}"),
            );
            return;
        }
    };
    let code: i64 = parts
        .first()
        .and_then(|v| redis::from_redis_value_ref(v).ok())
        .unwrap_or(-2);
    let second = parts.get(1);
    let detail: String = second
        .and_then(|v| redis::from_redis_value_ref(v).ok())
        .unwrap_or_default();
    match code {
        1 => {
            let seq: Option<u64> = second.and_then(|v| redis::from_redis_value_ref(v).ok());
            let Some(record) = seq.and_then(|seq| wire::record(seq, &s.body)) else {
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
        0 => {
            Metrics::add(&hub.metrics.duplicates, 1);
            let mut first = detail.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
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
        -1 => {
            refuse(
                &s.origin,
                "the cluster's state was lost: this node is restarting",
            );
            hub.cluster_epoch_lost(detail.parse().ok(), stop);
        }
        _ => refuse(
            &s.origin,
            &format!("unexpected answer from Redis: {detail}"),
        ),
    }
}

/// Tells the sender its message was not taken.
fn refuse(origin: &Origin, why: &str) {
    let frame = Frame::new(origin.request_id, Message::error(ErrorCode::Internal, why));
    if let Ok(bytes) = frame.to_bytes_limited(u32::MAX) {
        origin.conn.push_reply(bytes);
    }
}
