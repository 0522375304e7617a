//! One bucket: governor's GCRA over an atomic, on quanta's clock (the
//! CPU's time-stamp counter where it is reliable, calibrated against the
//! monotonic clock): a message is checked against up to three buckets,
//! and each check reads the clock.

use std::time::Duration;

use governor::clock::{Clock, QuantaClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::Rate;

/// A bucket for one [`Rate`]: about 40 bytes, no allocation.
#[derive(Debug)]
pub(super) struct Limiter {
    bucket: RateLimiter<NotKeyed, InMemoryState, QuantaClock>,
    rate: Rate,
}

/// One calibrated clock for every bucket: making a `QuantaClock`
/// calibrates it, which takes time, and clones share the calibration.
fn clock() -> QuantaClock {
    static CLOCK: std::sync::OnceLock<QuantaClock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(QuantaClock::default).clone()
}

impl Limiter {
    pub(super) fn new(rate: Rate) -> Limiter {
        let quota = Quota::per_second(rate.per_sec).allow_burst(rate.burst);
        Limiter {
            bucket: RateLimiter::direct_with_clock(quota, clock()),
            rate,
        }
    }

    /// Counts one message, or says how long until one would be let
    /// through (and counts nothing).
    pub(super) fn take(&self) -> Result<(), Duration> {
        self.bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.bucket.clock().now()))
    }

    pub(super) fn rate(&self) -> Rate {
        self.rate
    }
}

/// One message a second with no burst: the smallest rate, for tests.
#[cfg(test)]
pub(super) fn slowest() -> Rate {
    Rate {
        per_sec: std::num::NonZeroU32::MIN,
        burst: std::num::NonZeroU32::MIN,
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    #[test]
    fn a_burst_then_a_wait() {
        let rate = Rate {
            per_sec: NonZeroU32::new(10).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
        };
        let l = Limiter::new(rate);
        for _ in 0..3 {
            assert_eq!(l.take(), Ok(()));
        }
        let wait = l.take().unwrap_err();
        // One cell comes back every 100 ms.
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        let one = Limiter::new(slowest());
        assert_eq!(one.take(), Ok(()));
        assert!(one.take().unwrap_err() > Duration::from_millis(900));
    }
}
