//! Counting what was published and delivered, flow control between them,
//! and latency histograms.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::sync::Notify;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since this process's epoch.
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// A payload of `size` bytes (at least 8) starting with the send time.
pub fn payload(size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(8));
    b.put_u64(now_ns());
    b.resize(size.max(8), b'x');
    b.freeze()
}

/// Microseconds since the send time stamped in `payload`.
pub fn latency_us(payload: &[u8]) -> Option<u64> {
    let sent = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    Some(now_ns().saturating_sub(sent) / 1000)
}

/// A latency histogram in microseconds, up to one minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// The counters of one group: publishers and the subscribers that receive
/// what they publish.
#[derive(Debug)]
pub struct Tally {
    /// Messages published.
    pub published: AtomicU64,
    /// Messages received, summed over subscribers.
    pub delivered: AtomicU64,
    /// Receivers of each message.
    pub fanout: u64,
    /// Messages a publisher may have outstanding per receiver.
    pub window: u64,
    /// Whether deliveries now fall in the measured interval (latencies are
    /// recorded only then).
    pub measuring: AtomicBool,
    progress: Notify,
}

/// Subscribers report in batches of this many, to keep counters cheap.
pub const REPORT_EVERY: u64 = 16;

impl Tally {
    /// A group whose messages reach `fanout` receivers.
    pub fn new(fanout: u64, window: u64) -> Tally {
        Tally {
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            fanout,
            window: window.max(REPORT_EVERY * 2),
            measuring: AtomicBool::new(false),
            progress: Notify::new(),
        }
    }

    /// Deliveries still expected.
    pub fn outstanding(&self) -> u64 {
        let expected = self.published.load(Ordering::Relaxed) * self.fanout;
        expected.saturating_sub(self.delivered.load(Ordering::Relaxed))
    }

    /// Adds received messages and wakes a waiting publisher.
    pub fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
        self.progress.notify_one();
    }

    /// Waits until the publisher may send `batch` more, or `deadline`.
    pub async fn room_for(&self, batch: u64, deadline: Instant) -> bool {
        while self.outstanding() + batch * self.fanout > self.window * self.fanout {
            if Instant::now() >= deadline {
                return false;
            }
            // The timer is a backstop for a wake-up that went to another
            // publisher of the same group.
            let _ = tokio::time::timeout(Duration::from_millis(5), self.progress.notified()).await;
        }
        true
    }
}
