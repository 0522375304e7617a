//! What other nodes sequenced, in: the node listens to every published
//! message and hands each to the shard that owns its conversation, which
//! delivers in seq order. A gap (a message lost on the way, or published
//! while this node's subscription was down) is filled from the
//! conversation's stream before anything after it goes out.
//!
//! A subscription can stay open and hear nothing (a failover that left
//! it on a Redis nobody publishes to any more). When the feed has been
//! quiet for [`PROBE_EVERY`], the node publishes a probe to a channel of
//! its own on the same subscription's Redis; one not back within
//! [`PROBE_WAIT`] means the feed is deaf: readiness fails, the node
//! subscribes again and catches up from the streams.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use apm_core::message::PresenceEvent;
use apm_core::names::PRESENCE_CHANNEL;
use apm_core::{Frame, Message};

use super::{Remote, keys, store, wire};
use crate::conversation::ConversationId;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::shard::Command;

/// Listens until `finish` fires (the node no longer has clients),
/// subscribing again after a lost link; cancels `stop` (the node's) when
/// Redis lost its epoch.
pub(super) async fn run(
    hub: Arc<Hub>,
    instance: usize,
    client: redis::Client,
    stop: CancellationToken,
    finish: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        match listen(&hub, instance, &client, &stop, &finish, first).await {
            Ok(()) => return,
            Err(e) => {
                hub.cluster_link_up(instance, false);
                warn!(error = %e, "the cluster's message feed is down; subscribing again");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = finish.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
        first = false;
    }
}

/// How long the feed may be quiet before a probe is sent.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long a probe may take to come back before the feed counts as deaf.
const PROBE_WAIT: Duration = Duration::from_secs(3);

/// How long subscribing may take.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(3);

/// One subscription's life: `Ok` when the node stops.
async fn listen(
    hub: &Arc<Hub>,
    instance: usize,
    client: &redis::Client,
    stop: &CancellationToken,
    finish: &CancellationToken,
    first: bool,
) -> redis::RedisResult<()> {
    let probe_channel = keys::probe();
    let subscribed = tokio::time::timeout(SUBSCRIBE_WAIT, async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub
            .subscribe(&[keys::MESSAGES, keys::ACKS, &probe_channel])
            .await?;
        if instance == 0 {
            // Presence lives on the first instance.
            pubsub.subscribe(super::presence::EVENTS).await?;
        }
        redis::RedisResult::Ok(pubsub)
    })
    .await;
    let pubsub = match subscribed {
        Ok(pubsub) => pubsub?,
        Err(_) => return Err(feed_error("subscribing took too long")),
    };
    hub.cluster_link_up(instance, true);
    info!("cluster message feed subscribed");
    if !first {
        // The link broke: Redis may have restarted without its data, and
        // a node that only receives would never learn it from a script.
        let mut conn = client.get_multiplexed_async_connection().await?;
        let epoch: Option<u64> = redis::cmd("GET")
            .arg(keys::EPOCH)
            .query_async(&mut conn)
            .await?;
        let started_with = hub.cluster.as_ref().map(|c| c.epochs[instance]);
        if epoch != started_with {
            hub.cluster_epoch_lost(instance, epoch, stop);
            return Ok(());
        }
        // What was published while the feed was down never comes: each
        // shard reads what its conversations missed from their streams.
        for shard in 0..hub.shards.len() {
            hub.submit_now(shard, Command::CatchUp);
        }
    }
    let mut messages = pubsub.into_on_message();
    let mut heard = Instant::now();
    let mut probe_sent: Option<Instant> = None;
    let mut ticks = tokio::time::interval(PROBE_EVERY / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            m = messages.next() => m,
            _ = ticks.tick() => {
                match probe_sent {
                    Some(at) if at.elapsed() >= PROBE_WAIT => {
                        Metrics::add(&hub.metrics.cluster_feed_deaf, 1);
                        return Err(feed_error("a probe did not come back: the feed is deaf"));
                    }
                    None if heard.elapsed() >= PROBE_EVERY => {
                        probe_sent = Some(Instant::now());
                        send_probe(hub, instance, &probe_channel);
                    }
                    _ => {}
                }
                continue;
            }
            _ = finish.cancelled() => return Ok(()),
        };
        let Some(msg) = msg else {
            return Err(feed_error("the subscription ended"));
        };
        // Anything heard proves the subscription hears, as a probe would.
        heard = Instant::now();
        probe_sent = None;
        let channel = msg.get_channel_name();
        if channel == probe_channel {
            continue;
        }
        if channel == super::presence::EVENTS {
            presence_events(hub, msg.get_payload_bytes());
            continue;
        }
        if channel == keys::ACKS {
            match wire::ack(msg.get_payload_bytes()) {
                Some((user, conversation, seq)) => {
                    let shard = hub.shard_of_conversation(&conversation);
                    let cmd = Command::RemoteAck {
                        user,
                        conversation,
                        seq,
                    };
                    hub.submit_now(shard, cmd);
                }
                None => warn!("a published read position does not read back; skipped"),
            }
            continue;
        }
        // The shard that owns each message's conversation decides whether
        // it concerns this node before anything is decoded.
        let payload = bytes::Bytes::copy_from_slice(msg.get_payload_bytes());
        for message in wire::published(&payload) {
            let routed = message.and_then(|(seq, body)| {
                let shard = wire::head(&body).and_then(|(key, _)| hub.shard_of_key(key))?;
                Some((shard, seq, body))
            });
            match routed {
                Some((shard, seq, body)) => {
                    let cmd = Command::Published {
                        seq,
                        body,
                        sender_copy: false,
                    };
                    hub.submit_now(shard, cmd);
                }
                // Shows as a gap, filled from the stream.
                None => warn!("a published message does not read back; skipped"),
            }
        }
    }
}

/// Hands the cluster's presence events to this node's members: online and
/// offline to `$presence`, a join or leave to the channel's members (the
/// joining connection left out).
fn presence_events(hub: &Arc<Hub>, payload: &[u8]) {
    let Some(events) = super::presence::parse(payload) else {
        warn!("published presence events do not read back; skipped");
        return;
    };
    let node = hub.cluster_presence().map(|p| p.node());
    for super::presence::Event { event, joiner } in events {
        match event {
            PresenceEvent::Join { ref channel, .. } | PresenceEvent::Leave { ref channel, .. } => {
                let except = match joiner {
                    Some((n, conn)) if Some(n.as_str()) == node => conn,
                    _ => crate::shard::NOBODY,
                };
                let shard = hub.shard_of(channel);
                let channel = channel.clone();
                hub.submit_now(
                    shard,
                    Command::ChannelEvent {
                        channel,
                        event,
                        except,
                    },
                );
            }
            PresenceEvent::Online { .. } | PresenceEvent::Offline { .. } => {
                let frame = Frame::new(0, Message::PresenceEvent(event));
                let Ok(frame) = frame.to_bytes_limited(u32::MAX) else {
                    continue;
                };
                let shard = hub.shard_of(PRESENCE_CHANNEL);
                let to = crate::shard::Audience::PresenceChannel;
                let except = crate::shard::NOBODY;
                hub.submit_now(shard, Command::Forward { to, frame, except });
            }
        }
    }
}

/// Publishes a probe to the node's own channel, off the feed's loop: an
/// answer that never comes is what the feed waits for. The node's command
/// connection is made before the feed starts.
fn send_probe(hub: &Arc<Hub>, instance: usize, channel: &str) {
    let Some(mut conn) = hub.cluster.as_ref().and_then(|c| c.instance_conn(instance)) else {
        return;
    };
    let channel = channel.to_owned();
    tokio::spawn(async move {
        let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg("probe")
            .query_async(&mut conn)
            .await;
        if let Err(e) = published {
            warn!(error = %e, "a probe of the cluster's feed could not be sent");
        }
    });
}

fn feed_error(why: &'static str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::other(why))
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
/// the stream id `to`, as if they were published, [`CHUNK`] at a time.
/// Tries again while Redis is away (its connection comes back by itself),
/// for about 10 s; says whether the read was made.
async fn read(
    hub: &Arc<Hub>,
    conn: &mut ConnectionManager,
    conversation: &ConversationId,
    mut from: u64,
    to: String,
) -> bool {
    let shard = hub.shard_of_conversation(conversation);
    let mut backoff = Duration::from_millis(20);
    let mut attempts = 0;
    while attempts < READ_ATTEMPTS {
        let read: redis::RedisResult<redis::streams::StreamRangeReply> = redis::cmd("XRANGE")
            .arg(keys::log(conversation))
            .arg(format!("0-{from}"))
            .arg(&to)
            .arg("COUNT")
            .arg(CHUNK)
            .query_async(conn)
            .await;
        match read {
            Ok(entries) => {
                let full = entries.ids.len() == CHUNK;
                let mut last = None;
                for record in store::records(entries) {
                    last = Some(record.seq);
                    let remote = Remote {
                        record,
                        origin: None,
                    };
                    hub.submit_now(shard, Command::Remote(Box::new(remote)));
                }
                match last {
                    Some(last) if full => from = last + 1,
                    _ => return true,
                }
            }
            Err(e) => {
                attempts += 1;
                warn!(error = %e, "a conversation's stream could not be read; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
    false
}

/// Stream entries read at once.
const CHUNK: usize = 512;

/// How many times a stream read is tried (about 10 s with the back-off).
const READ_ATTEMPTS: usize = 25;
