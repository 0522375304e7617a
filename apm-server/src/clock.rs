//! The server clock: milliseconds since the Unix epoch, as stamped on
//! every message (`ts_ms`) and sent in `Welcome` (`server_time_ms`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in milliseconds since the Unix epoch (0 if the clock is
/// set before 1970).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
