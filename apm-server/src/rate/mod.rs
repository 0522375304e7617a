//! Message rate limits: how many publishes, private messages and
//! broadcasts a connection and a user may send, checked by the
//! connection's task before a message goes to a shard, so that a flood
//! costs the flooder's own task and never a forwarding loop.
//!
//! - [`limiter`]: one bucket (governor's GCRA) and the wait it reports.
//! - [`user`]: what a user's connections share: the user's total, a few
//!   buckets for the conversations it sent to last, its last message ids.
//! - [`registry`]: that shared state by user name, bounded, and each
//!   connection's gate.
//!
//! A message is checked against the narrowest limit first (the
//! conversation), then the user's, then the connection's: a message one
//! of them refuses does not count against the limits after it.

use std::fmt;
use std::num::NonZeroU32;

use crate::retention::pattern_matches;

mod limiter;
mod registry;
mod user;

pub(crate) use registry::{Gate, Registry};
pub(crate) use user::Refusal;

/// A rate: `per_sec` messages a second on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Messages a second, sustained.
    pub(crate) per_sec: NonZeroU32,
    /// Messages that may come at once after a quiet spell.
    pub(crate) burst: NonZeroU32,
}

impl Rate {
    /// Reads `RATE:BURST` (`40:40`), or `RATE` alone (the burst is the
    /// rate); `off` or `0` is no limit (`None`).
    pub(crate) fn parse(text: &str) -> Result<Option<Rate>, String> {
        let text = text.trim();
        if text == "off" || text == "0" {
            return Ok(None);
        }
        let (rate, burst) = text.split_once(':').unwrap_or((text, text));
        let number = |s: &str, what: &str| {
            s.parse::<u32>()
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| format!("{what} in {text:?} must be a whole number from 1 up"))
        };
        Ok(Some(Rate {
            per_sec: number(rate, "the rate")?,
            burst: number(burst, "the burst")?,
        }))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s, burst {}", self.per_sec, self.burst)
    }
}

/// Every rate limit the server applies, as configured. `None` is no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RatePolicy {
    /// Each connection's messages.
    pub(crate) connection: Option<Rate>,
    /// All of a user's messages, over all its connections.
    pub(crate) user: Option<Rate>,
    /// A user's messages into one channel no rule names.
    pub(crate) channel: Option<Rate>,
    /// (pattern, rate) for channels by name; the first match wins.
    pub(crate) channel_rules: Vec<(String, Option<Rate>)>,
    /// A user's private messages to one recipient.
    pub(crate) direct: Option<Rate>,
    /// All of an admin user's messages: for admin sessions, instead of
    /// every limit above.
    pub(crate) admin: Option<Rate>,
}

impl RatePolicy {
    /// A policy with no limit at all.
    pub(crate) fn off() -> RatePolicy {
        RatePolicy {
            connection: None,
            user: None,
            channel: None,
            channel_rules: Vec::new(),
            direct: None,
            admin: None,
        }
    }

    /// Reads a rule written `PATTERN=RATE:BURST` (`room.*=5:10`,
    /// `announce=off`), PATTERN as in `history_rules`.
    pub(crate) fn parse_rule(rule: &str) -> Result<(String, Option<Rate>), String> {
        let (pattern, rate) = rule
            .split_once('=')
            .ok_or_else(|| format!("rate rule {rule:?} is not PATTERN=RATE:BURST"))?;
        if pattern.is_empty() {
            return Err(format!("rate rule {rule:?} has no pattern"));
        }
        Ok((pattern.to_owned(), Rate::parse(rate)?))
    }

    /// A user's limit into channel `name`.
    pub(crate) fn for_channel(&self, name: &str) -> Option<Rate> {
        self.channel_rules
            .iter()
            .find(|(pattern, _)| pattern_matches(pattern, name))
            .map_or(self.channel, |(_, rate)| *rate)
    }

    /// Whether sessions of this kind are never limited: nothing to check.
    pub(crate) fn is_off(&self, admin: bool) -> bool {
        if admin {
            return self.admin.is_none();
        }
        self.connection.is_none()
            && self.user.is_none()
            && self.channel.is_none()
            && self.direct.is_none()
            && self.channel_rules.iter().all(|(_, r)| r.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_sec: u32, burst: u32) -> Option<Rate> {
        Some(Rate {
            per_sec: NonZeroU32::new(per_sec).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        })
    }

    #[test]
    fn rates_parse() {
        assert_eq!(Rate::parse("40:40"), Ok(rate(40, 40)));
        assert_eq!(Rate::parse("10:25"), Ok(rate(10, 25)));
        assert_eq!(Rate::parse("7"), Ok(rate(7, 7)));
        assert_eq!(Rate::parse("off"), Ok(None));
        assert_eq!(Rate::parse("0"), Ok(None));
        for bad in [
            "", "x", "10:", ":10", "10:0", "0:10", "-1:5", "1.5:2", "10:10:10",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(rate(10, 20).unwrap().to_string(), "10/s, burst 20");
    }

    #[test]
    fn rules_parse_and_the_first_match_wins() {
        assert_eq!(
            RatePolicy::parse_rule("room.*=5:10"),
            Ok(("room.*".to_owned(), rate(5, 10)))
        );
        assert_eq!(
            RatePolicy::parse_rule("announce=off"),
            Ok(("announce".to_owned(), None))
        );
        for bad in ["room.*", "=5:10", "room=fast", "room=5:0"] {
            assert!(RatePolicy::parse_rule(bad).is_err(), "{bad:?}");
        }
        let policy = RatePolicy {
            channel: rate(10, 10),
            channel_rules: vec![
                ("room.vip".into(), rate(50, 50)),
                ("room.*".into(), rate(2, 4)),
                ("firehose".into(), None),
            ],
            ..RatePolicy::off()
        };
        assert_eq!(policy.for_channel("room.vip"), rate(50, 50));
        assert_eq!(policy.for_channel("room.1"), rate(2, 4));
        assert_eq!(policy.for_channel("firehose"), None);
        assert_eq!(policy.for_channel("news"), rate(10, 10));
        assert!(!policy.is_off(false));
        assert!(policy.is_off(true));
        assert!(RatePolicy::off().is_off(false));
    }
}
