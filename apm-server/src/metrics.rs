//! Counters the server keeps about itself, and the histograms of the
//! store's group commit.

use std::sync::atomic::{AtomicU64, Ordering};

use apm_core::ErrorCode;

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Server-wide counters. Cheap to bump from any task.
        #[derive(Debug)]
        pub struct Metrics {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            /// Seconds each store batch took to write and fsync.
            pub store_commit_seconds: Histogram,
            /// Messages in each store batch.
            pub store_batch_messages: Histogram,
            /// Handshakes refused, by reason.
            pub handshake_refusals: Refusals,
        }

        impl Default for Metrics {
            fn default() -> Self {
                Metrics {
                    $($name: AtomicU64::new(0),)*
                    store_commit_seconds: Histogram::new(COMMIT_SECONDS),
                    handshake_refusals: Refusals::default(),
                    store_batch_messages: Histogram::new(BATCH_MESSAGES),
                }
            }
        }

        impl Metrics {
            /// Every counter with its name, for export.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }

            /// Logs every counter at `info` as one event, each counter a
            /// field of its own (so a JSON log has them as numbers).
            pub fn log_summary(&self, message: &str) {
                tracing::info!($($name = self.$name.load(Ordering::Relaxed),)* "{message}");
            }
        }
    };
}

counters! {
    /// Connections accepted (handshake or not).
    connections_accepted,
    /// Connections open now.
    connections_open,
    /// Connections refused at the connection limit.
    connections_refused,
    /// Accept calls that failed (EMFILE and the like).
    accept_errors,
    /// Handshakes that failed (bad token, timeout, bad first frame).
    auth_failures,
    /// Frames received.
    frames_in,
    /// Bytes received.
    bytes_in,
    /// Bytes written to sockets.
    bytes_out,
    /// Messages sequenced (publish, direct, broadcast).
    messages_in,
    /// Retries dropped: a message the conversation already had (same
    /// sender, same client message id).
    duplicates,
    /// Message copies queued to connections.
    messages_out,
    /// Cluster mode: messages that arrived a second time (the feed
    /// brings a node's own messages back) and were dropped.
    cluster_copies,
    /// Cluster mode: gaps in a conversation read from its stream.
    cluster_gaps,
    /// Cluster mode: messages a gap read did not find (trimmed from the
    /// stream), skipped.
    cluster_gaps_lost,
    /// Cluster mode: messages behind a gap let go for lack of room, read
    /// from the stream once the gap is filled.
    cluster_held_let_go,
    /// Cluster mode: times the feed stayed subscribed but a probe did not
    /// come back (it is subscribed again, and catches up).
    cluster_feed_deaf,
    /// Cluster mode: read positions not written to Redis (it failed, or
    /// too many waited); they hold on the node that took them.
    cluster_acks_failed,
    /// Cluster mode: nodes whose presence lease lapsed, taken off the
    /// cluster's presence by this node (or found taken off).
    cluster_nodes_lapsed,
    /// Cluster mode: new messages refused because too many bytes waited
    /// for Redis (the sender is told).
    cluster_refused,
    /// Message copies dropped for full queues under the drop policy.
    messages_dropped,
    /// Connections closed as slow consumers.
    slow_consumers,
    /// Messages refused for going over a rate limit.
    rate_limited,
    /// Connections closed for protocol violations.
    protocol_errors,
    /// Connections closed for idleness.
    idle_timeouts,
    /// Batches the store made durable (one fsync each).
    store_batches,
    /// Messages the store made durable.
    store_messages,
    /// Store writes that failed and were retried.
    store_errors,
    /// HTTP API calls answered (a batch counts once per call in it).
    api_requests,
    /// HTTP API requests refused for a missing or wrong API key.
    api_auth_failures,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The reasons a handshake is refused, each counted on its own; anything
/// else counts as the last, `other`.
pub const REFUSAL_REASONS: &[ErrorCode] = &[
    ErrorCode::AuthFailed,
    ErrorCode::TokenExpired,
    ErrorCode::Revoked,
    ErrorCode::AuthRequired,
    ErrorCode::HandshakeTimeout,
    ErrorCode::TooManyUserConnections,
    ErrorCode::InvalidName,
    ErrorCode::Malformed,
];

/// Handshake refusals by reason ([`REFUSAL_REASONS`], then `other`).
#[derive(Debug, Default)]
pub struct Refusals([AtomicU64; REFUSAL_REASONS.len() + 1]);

impl Refusals {
    /// Counts one refusal with `code`.
    pub fn count(&self, code: ErrorCode) {
        let i = REFUSAL_REASONS
            .iter()
            .position(|c| *c == code)
            .unwrap_or(REFUSAL_REASONS.len());
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Each reason's name (`other` last) and count.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        REFUSAL_REASONS
            .iter()
            .map(|c| c.as_str())
            .chain(["other"])
            .zip(self.0.iter().map(|n| n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Upper bounds of the commit-latency buckets, in seconds: an fsync takes
/// from tens of microseconds (a disk cache that lies) to tens of
/// milliseconds (a spinning disk), and seconds when the disk stalls.
const COMMIT_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds of the batch-size buckets, in messages (a batch holds at
/// most 8192).
const BATCH_MESSAGES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// A histogram with fixed buckets, made of atomics so that recording takes
/// no lock. Meant for events counted once per batch, not once per message.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, then one for what is above the last.
    counts: Box<[AtomicU64]>,
    /// The sum of the values observed, as `f64` bits.
    sum: AtomicU64,
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// The sum of the values observed.
    pub sum: f64,
    /// How many values were observed.
    pub count: u64,
    /// Each bucket's upper bound (`f64::MAX` for the last, unbounded one)
    /// with the values that fell in it (not cumulative).
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records one value.
    pub fn observe(&self, value: f64) {
        let bucket = self.bounds.partition_point(|&b| b < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        // Two writers at once are rare (one commit thread): a retry is cheap.
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    /// The histogram as it is now. Read without a lock, so a value being
    /// recorded may show in its bucket and not yet in the sum.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_first_bucket_whose_bound_holds_them() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 3.0, 10.0, 11.0, 500.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(1.0, 2), (10.0, 2), (f64::MAX, 2)]);
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 525.5);
    }
}
