//! Counters the server keeps about itself.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Server-wide counters. Cheap to bump from any task.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
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
