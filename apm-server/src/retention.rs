//! How much history each conversation keeps (count and age, per channel
//! pattern), and the channel-name patterns settings are written in.

use crate::conversation::ConversationId;

/// Whether channel `name` matches `pattern`: the same name, or a prefix
/// ending in `*` (`*` alone matches every channel).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// How much history to keep per conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most messages kept; 0 keeps none.
    pub max_messages: usize,
    /// Oldest message kept, in milliseconds; 0 means no age limit.
    pub max_age_ms: u64,
    /// Most bytes of messages kept in memory; 0 means no byte limit. The
    /// disk store keeps by count and age only: what is past this in
    /// memory is read from disk.
    pub max_bytes: usize,
}

/// How much history each conversation keeps: rules for channels by name,
/// and a default for the rest (other channels, inboxes, broadcasts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Where no rule applies.
    pub default: Retention,
    /// (pattern, retention), the first matching pattern wins. A pattern is
    /// a channel name, or a prefix ending in `*` (`*` alone is every
    /// channel).
    pub rules: Vec<(String, Retention)>,
}

impl RetentionPolicy {
    /// The same retention everywhere.
    pub fn uniform(keep: Retention) -> RetentionPolicy {
        RetentionPolicy {
            default: keep,
            rules: Vec::new(),
        }
    }

    /// What channel `name` keeps.
    pub fn for_channel(&self, name: &str) -> Retention {
        self.rules
            .iter()
            .find(|(pattern, _)| pattern_matches(pattern, name))
            .map_or(self.default, |(_, keep)| *keep)
    }

    /// What a conversation keeps.
    pub fn for_conversation(&self, conversation: &ConversationId) -> Retention {
        match conversation {
            ConversationId::Channel(name) => self.for_channel(name),
            ConversationId::User(_) | ConversationId::Broadcast => self.default,
        }
    }

    /// Reads a rule written `PATTERN=MESSAGES:SECONDS` (`room.*=100:3600`:
    /// channels starting with `room.` keep their last 100 messages, none
    /// older than an hour; 0 seconds is no age limit).
    pub fn parse_rule(rule: &str) -> Result<(String, Retention), String> {
        let bad = || format!("history rule {rule:?}: expected PATTERN=MESSAGES:SECONDS");
        let (pattern, limits) = rule.rsplit_once('=').ok_or_else(bad)?;
        let (messages, seconds) = limits.split_once(':').ok_or_else(bad)?;
        if pattern.is_empty() {
            return Err(bad());
        }
        let max_messages = messages.trim().parse().map_err(|_| bad())?;
        let seconds: u64 = seconds.trim().parse().map_err(|_| bad())?;
        Ok((
            pattern.to_owned(),
            Retention {
                max_messages,
                max_age_ms: seconds.saturating_mul(1000),
                max_bytes: 0,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Retention = Retention {
        max_messages: 5,
        max_age_ms: 0,
        max_bytes: 0,
    };

    #[test]
    fn rules_pick_by_channel_name() {
        let short = Retention {
            max_messages: 2,
            max_age_ms: 60_000,
            max_bytes: 0,
        };
        let policy = RetentionPolicy {
            default: FIVE,
            rules: vec![
                RetentionPolicy::parse_rule("room.*=2:60").unwrap(),
                RetentionPolicy::parse_rule("news=0:0").unwrap(),
            ],
        };
        assert_eq!(policy.for_channel("room.1"), short);
        assert_eq!(policy.for_channel("news").max_messages, 0);
        assert_eq!(policy.for_channel("other"), FIVE);
        let user = ConversationId::User(std::sync::Arc::from("room.1"));
        assert_eq!(policy.for_conversation(&user), FIVE);
        for bad in ["room", "=1:2", "a=1", "a=x:2", "a=1:y"] {
            assert!(RetentionPolicy::parse_rule(bad).is_err(), "{bad}");
        }
        // Names may hold `=`: the last one splits.
        assert_eq!(RetentionPolicy::parse_rule("a=b=3:0").unwrap().0, "a=b");
    }
}
