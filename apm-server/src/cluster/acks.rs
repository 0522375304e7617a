//! Read positions in cluster mode: a shard that moves a user's read
//! position hands it here; it goes to Redis (never backwards, by script)
//! and is published to every node, whose shard holding the conversation
//! takes it, so unread counts and what an inbox replays agree on every
//! node. A node that does not hold the conversation reads it from Redis
//! when it does.

use std::collections::HashMap;
use std::sync::Arc;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{keys, script, wire};
use crate::conversation::ConversationId;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// Read positions written in one pipeline at most.
const BATCH: usize = 256;

/// A read position on its way to Redis.
#[derive(Debug)]
pub(crate) struct Ack {
    pub(crate) user: Arc<str>,
    pub(crate) conversation: ConversationId,
    pub(crate) seq: u64,
}

/// Writes read positions until `finish` fires and none is left.
pub(super) async fn run(
    hub: Arc<Hub>,
    mut conns: Vec<ConnectionManager>,
    mut rx: mpsc::Receiver<Ack>,
    finish: CancellationToken,
) {
    let script = redis::Script::new(script::ACK);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let taken = tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, BATCH) => n,
            _ = finish.cancelled() => {
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(a) => batch.push(a),
                        Err(_) => break,
                    }
                }
                batch.len()
            }
        };
        if taken == 0 {
            return;
        }
        // A user reading fast moves one position many times: only the
        // furthest goes.
        let mut furthest: HashMap<(Arc<str>, ConversationId), u64> = HashMap::new();
        for a in batch.drain(..) {
            let seq = furthest.entry((a.user, a.conversation)).or_default();
            *seq = (*seq).max(a.seq);
        }
        let mut pipes = vec![redis::pipe(); conns.len()];
        for ((user, conversation), seq) in &furthest {
            let instance = hub
                .cluster
                .as_ref()
                .map_or(0, |c| c.instance_of(conversation));
            pipes[instance]
                .cmd("EVALSHA")
                .arg(script.get_hash())
                .arg(1)
                .arg(keys::acks(conversation))
                .arg(&**user)
                .arg(*seq)
                .arg(keys::ACKS)
                .arg(wire::encode_ack(user, conversation, *seq))
                .ignore();
        }
        for (pipe, conn) in pipes.iter().zip(conns.iter_mut()) {
            if pipe.is_empty() {
                continue;
            }
            let mut written: redis::RedisResult<()> = pipe.query_async(conn).await;
            if written.as_ref().is_err_and(|e| {
                e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
            }) {
                if let Err(e) = script.prepare_invoke().load_async(conn).await {
                    warn!(error = %e, "cannot load the read position script");
                }
                written = pipe.query_async(conn).await;
            }
            if let Err(e) = written {
                let n = pipe.len() as u64;
                Metrics::add(&hub.metrics.cluster_acks_failed, n);
                warn!(error = %e, positions = n, "read positions not written to Redis");
            }
        }
    }
}
