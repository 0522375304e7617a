//! Revoked users: whose tokens the server refuses until when. Read at
//! every handshake and token refresh, written when an operator revokes;
//! kept in the store so a restart does not lift a revocation.

use std::collections::HashMap;
use std::sync::RwLock;

/// Each revoked user and the time (milliseconds since the Unix epoch)
/// until which their tokens are refused.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    until: RwLock<HashMap<Box<str>, u64>>,
}

impl Revocations {
    /// Revocations as the store read them back.
    pub(crate) fn new(entries: impl IntoIterator<Item = (String, u64)>) -> Revocations {
        Revocations {
            until: RwLock::new(
                entries
                    .into_iter()
                    .map(|(user, until)| (user.into_boxed_str(), until))
                    .collect(),
            ),
        }
    }

    /// Until when `user` is refused, if that is still after `now_ms`.
    pub(crate) fn until(&self, user: &str, now_ms: u64) -> Option<u64> {
        let map = self.until.read().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return None;
        }
        map.get(user).copied().filter(|&until| until > now_ms)
    }

    /// Refuses `user` until `until_ms`; a time in the past lifts the
    /// revocation. Revocations that ran out are forgotten here too, so the
    /// map holds only running ones.
    pub(crate) fn set(&self, user: &str, until_ms: u64, now_ms: u64) {
        let mut map = self.until.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, &mut until| until > now_ms);
        if until_ms > now_ms {
            map.insert(user.into(), until_ms);
        } else {
            map.remove(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_runs_until_its_time_and_can_be_lifted() {
        let r = Revocations::new([("mallory".to_owned(), 2_000)]);
        assert_eq!(r.until("mallory", 1_000), Some(2_000));
        assert_eq!(r.until("mallory", 2_000), None);
        assert_eq!(r.until("alice", 1_000), None);
        r.set("alice", 5_000, 1_000);
        assert_eq!(r.until("alice", 4_999), Some(5_000));
        r.set("alice", 0, 1_000);
        assert_eq!(r.until("alice", 1_000), None);
    }
}
