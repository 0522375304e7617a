//! What a user's connections share: the user's total, a bucket for each
//! of the few conversations it sent to last, and the ids of its last
//! messages (a retry of one of them is not counted again).

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use super::Rate;
use super::limiter::Limiter;

/// Conversations a user has its own bucket in at once. A user who sends
/// to more evicts the least recently used, whose count starts afresh: it
/// gains a burst there, which its total bounds anyway; in return a user's
/// state stays under a kilobyte however many channels it writes to.
const CONVERSATIONS: usize = 8;

/// Message ids remembered per user for retries.
const RECENT: usize = 8;

/// Which limit refused a message, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// How long until the message would be let through.
    pub(crate) wait: Duration,
    /// The limit, as a phrase: "per connection", "per user into this
    /// channel", ...
    pub(crate) what: &'static str,
    pub(crate) rate: Rate,
}

impl Refusal {
    /// The wait in whole milliseconds, rounded up and at least 1, as the
    /// error's text gives it.
    pub(crate) fn retry_after_ms(&self) -> u128 {
        self.wait.as_nanos().div_ceil(1_000_000).max(1)
    }
}

/// The `Error` text, ending in `retry after N ms` (PROTOCOL.md §6).
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limit {} ({}): retry after {} ms",
            self.what,
            self.rate,
            self.retry_after_ms()
        )
    }
}

/// One user's shared limits. Made on the user's first message, kept while
/// a connection of the user holds it (and, unheld, until the registry
/// prunes).
#[derive(Debug)]
pub(crate) struct UserRates {
    /// Every message of the user, over all its connections.
    total: Option<Limiter>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// At most [`CONVERSATIONS`], made as they are first used.
    slots: Vec<Slot>,
    /// Counts uses, to find the least recently used slot.
    clock: u64,
    /// Ids of the last messages let through (0: none); a ring.
    recent: [u64; RECENT],
    next_recent: usize,
}

#[derive(Debug)]
struct Slot {
    /// The conversation's hash.
    key: u64,
    used: u64,
    limiter: Limiter,
}

/// A conversation a message is counted in, beyond its sender's total.
pub(crate) struct Scope {
    /// The conversation's hash (channels and inboxes apart).
    pub(crate) key: u64,
    /// Its limit; `None` counts nothing.
    pub(crate) rate: Option<Rate>,
    pub(crate) what: &'static str,
}

impl UserRates {
    pub(crate) fn new(total: Option<Rate>) -> UserRates {
        UserRates {
            total: total.map(Limiter::new),
            inner: Mutex::default(),
        }
    }

    /// Counts a message with `msg_id` sent into `scope`, then against the
    /// user's total, then `connection`; the first limit that refuses it
    /// says why. A message whose non-zero id is that of one of the user's
    /// last [`RECENT`] let through is a retry: the store answers it from
    /// its de-duplication window, and it is let through uncounted, once.
    pub(crate) fn admit(
        &self,
        scope: Option<Scope>,
        connection: Option<&Limiter>,
        msg_id: u64,
    ) -> Result<(), Refusal> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if msg_id != 0
            && let Some(i) = inner.recent.iter().position(|&id| id == msg_id)
        {
            inner.recent[i] = 0;
            return Ok(());
        }
        if let Some(scope) = scope
            && let Some(rate) = scope.rate
        {
            let slot = inner.slot(scope.key, rate);
            check(&slot.limiter, scope.what)?;
        }
        if let Some(total) = &self.total {
            check(total, "per user")?;
        }
        if let Some(connection) = connection {
            check(connection, "per connection")?;
        }
        if msg_id != 0 {
            let i = inner.next_recent;
            inner.recent[i] = msg_id;
            inner.next_recent = (i + 1) % RECENT;
        }
        Ok(())
    }
}

fn check(limiter: &Limiter, what: &'static str) -> Result<(), Refusal> {
    limiter.take().map_err(|wait| Refusal {
        wait,
        what,
        rate: limiter.rate(),
    })
}

impl Inner {
    /// The conversation's slot, made (or taken from the least recently
    /// used conversation) if it has none.
    fn slot(&mut self, key: u64, rate: Rate) -> &mut Slot {
        self.clock += 1;
        let used = self.clock;
        let index = match self.slots.iter().position(|s| s.key == key) {
            Some(i) => i,
            None if self.slots.len() < CONVERSATIONS => {
                self.slots.push(Slot {
                    key,
                    used,
                    limiter: Limiter::new(rate),
                });
                self.slots.len() - 1
            }
            None => {
                let (i, _) = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.used)
                    .expect("slots are full");
                self.slots[i] = Slot {
                    key,
                    used,
                    limiter: Limiter::new(rate),
                };
                i
            }
        };
        let slot = &mut self.slots[index];
        slot.used = used;
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::super::limiter::slowest;
    use super::*;

    fn channel(key: u64) -> Option<Scope> {
        Some(Scope {
            key,
            rate: Some(slowest()),
            what: "per user into this channel",
        })
    }

    #[test]
    fn each_conversation_has_its_own_count() {
        let user = UserRates::new(None);
        assert_eq!(user.admit(channel(1), None, 0), Ok(()));
        let refused = user.admit(channel(1), None, 0).unwrap_err();
        assert_eq!(refused.what, "per user into this channel");
        assert!(refused.to_string().ends_with(" ms"), "{refused}");
        assert!(
            refused
                .to_string()
                .starts_with("rate limit per user into this channel (1/s, burst 1): retry after "),
            "{refused}"
        );
        assert_eq!(user.admit(channel(2), None, 0), Ok(()));
    }

    #[test]
    fn state_stays_bounded_and_evicts_the_least_recent() {
        let user = UserRates::new(None);
        for key in 0..100 {
            let _ = user.admit(channel(key), None, 0);
        }
        let inner = user.inner.lock().unwrap();
        assert_eq!(inner.slots.len(), CONVERSATIONS);
        let keys: Vec<u64> = inner.slots.iter().map(|s| s.key).collect();
        assert!(
            keys.iter().all(|k| *k >= 100 - CONVERSATIONS as u64),
            "{keys:?}"
        );
    }

    #[test]
    fn totals_and_connections_refuse_in_order() {
        let user = UserRates::new(Some(slowest()));
        let conn = Limiter::new(slowest());
        assert_eq!(user.admit(None, Some(&conn), 0), Ok(()));
        assert_eq!(
            user.admit(None, Some(&conn), 0).unwrap_err().what,
            "per user"
        );
        let other = UserRates::new(None);
        assert_eq!(
            other.admit(None, Some(&conn), 0).unwrap_err().what,
            "per connection"
        );
    }

    #[test]
    fn a_retry_of_a_recent_message_is_not_counted_once() {
        let user = UserRates::new(Some(slowest()));
        assert_eq!(user.admit(channel(1), None, 77), Ok(()));
        // Same id: a re-sent copy, let through without counting.
        assert_eq!(user.admit(channel(1), None, 77), Ok(()));
        // Only once, and a new id is counted.
        assert!(user.admit(channel(1), None, 77).is_err());
        assert!(user.admit(channel(2), None, 78).is_err());
        // A refused message is not remembered: its retry is counted.
        assert!(user.admit(channel(3), None, 78).is_err());
    }

    #[test]
    fn the_wait_is_rounded_up_to_a_millisecond() {
        let r = Refusal {
            wait: Duration::from_micros(1),
            what: "per user",
            rate: slowest(),
        };
        assert_eq!(r.retry_after_ms(), 1);
        let r = Refusal {
            wait: Duration::from_micros(87_001),
            ..r
        };
        assert_eq!(r.retry_after_ms(), 88);
        assert!(r.to_string().ends_with("retry after 88 ms"));
    }
}
