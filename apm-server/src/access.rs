//! Who may use which channel: rules by channel pattern, checked against
//! the channel claims of the session's token.
//!
//! A channel is `public` (the default: anyone may subscribe, read its
//! history, count its unread messages and list its members) or `members`
//! (all of that, and publishing, needs a claim to the channel in the
//! token). Who may publish can be narrowed further: `anyone`, `members`,
//! `subscribers` (the publishing connection holds a subscription to the
//! channel) or `admins`. Admin sessions pass every rule.

use crate::retention::pattern_matches;

/// Who may read a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// Sessions whose token claims the channel.
    Members,
}

/// Who may publish to a channel (beyond what its [`Access`] demands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publishers {
    /// Whoever may read it.
    Anyone,
    /// Sessions whose token claims the channel.
    Members,
    /// Connections that hold a subscription to it.
    Subscribers,
    /// Admin sessions only.
    Admins,
}

/// What one channel allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelRule {
    /// Who may read it.
    pub access: Access,
    /// Who may publish to it.
    pub publish: Publishers,
}

impl ChannelRule {
    /// A channel no rule names: anyone reads and publishes.
    pub const PUBLIC: ChannelRule = ChannelRule {
        access: Access::Public,
        publish: Publishers::Anyone,
    };

    /// Reads `ACCESS[:PUBLISHERS]`: `public` or `members`, then `anyone`,
    /// `members`, `subscribers` or `admins` (by default `anyone` for a
    /// public channel and `members` for a members-only one).
    pub fn parse(text: &str) -> Result<ChannelRule, String> {
        let (access, publish) = match text.split_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let access = match access {
            "public" => Access::Public,
            "members" => Access::Members,
            other => return Err(format!("{other:?} is not public or members")),
        };
        let publish = match publish {
            None if access == Access::Members => Publishers::Members,
            None | Some("anyone") => Publishers::Anyone,
            Some("members") => Publishers::Members,
            Some("subscribers") => Publishers::Subscribers,
            Some("admins") => Publishers::Admins,
            Some(other) => {
                return Err(format!(
                    "{other:?} is not anyone, members, subscribers or admins"
                ));
            }
        };
        Ok(ChannelRule { access, publish })
    }
}

/// Every channel rule, the first matching pattern winning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelRules {
    rules: Vec<(String, ChannelRule)>,
}

/// What a session brings to a channel check: its role and its token's
/// channel claims (names, or prefixes ending in `*`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grants<'a> {
    pub(crate) admin: bool,
    pub(crate) channels: &'a [Box<str>],
}

impl Grants<'_> {
    fn claims(&self, channel: &str) -> bool {
        self.channels.iter().any(|p| pattern_matches(p, channel))
    }
}

impl ChannelRules {
    /// Reads rules written `PATTERN=ACCESS[:PUBLISHERS]`
    /// (`private.*=members`, `news=public:admins`), PATTERN as in
    /// `history_rules`.
    pub fn parse(rules: &[String]) -> Result<ChannelRules, String> {
        let rules = rules
            .iter()
            .map(|rule| {
                let (pattern, kind) = rule
                    .split_once('=')
                    .filter(|(p, _)| !p.is_empty())
                    .ok_or_else(|| format!("channel rule {rule:?} is not PATTERN=ACCESS"))?;
                let kind =
                    ChannelRule::parse(kind).map_err(|e| format!("channel rule {rule:?}: {e}"))?;
                Ok((pattern.to_owned(), kind))
            })
            .collect::<Result<_, String>>()?;
        Ok(ChannelRules { rules })
    }

    /// Whether no channel has a rule: nothing to check.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What channel `name` allows.
    pub fn for_channel(&self, name: &str) -> ChannelRule {
        self.rules
            .iter()
            .find(|(pattern, _)| pattern_matches(pattern, name))
            .map_or(ChannelRule::PUBLIC, |(_, rule)| *rule)
    }

    /// Whether a session may subscribe to, read the history of, count the
    /// unread messages of, acknowledge and list the members of `channel`;
    /// if not, why.
    pub(crate) fn may_read(&self, channel: &str, who: Grants<'_>) -> Result<(), &'static str> {
        if self.is_empty() || who.admin {
            return Ok(());
        }
        match self.for_channel(channel).access {
            Access::Members if !who.claims(channel) => {
                Err("this channel is for its members: the token does not claim it")
            }
            _ => Ok(()),
        }
    }

    /// Whether a session may publish to `channel` (`subscribed`: the
    /// connection holds a subscription to it); if not, why.
    pub(crate) fn may_publish(
        &self,
        channel: &str,
        who: Grants<'_>,
        subscribed: bool,
    ) -> Result<(), &'static str> {
        if self.is_empty() || who.admin {
            return Ok(());
        }
        self.may_read(channel, who)?;
        match self.for_channel(channel).publish {
            Publishers::Anyone => Ok(()),
            Publishers::Members if who.claims(channel) => Ok(()),
            Publishers::Members => Err("only its members may publish to this channel"),
            Publishers::Subscribers if subscribed => Ok(()),
            Publishers::Subscribers => Err("publishing to this channel needs a subscription to it"),
            Publishers::Admins => Err("only admins may publish to this channel"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ChannelRules {
        ChannelRules::parse(&[
            "private.*=members".into(),
            "news=public:admins".into(),
            "chat.*=public:subscribers".into(),
            "staff=members:admins".into(),
        ])
        .unwrap()
    }

    #[test]
    fn rules_parse() {
        let r = rules();
        assert_eq!(
            r.for_channel("private.team"),
            ChannelRule {
                access: Access::Members,
                publish: Publishers::Members
            }
        );
        assert_eq!(r.for_channel("news").publish, Publishers::Admins);
        assert_eq!(r.for_channel("chat.1").publish, Publishers::Subscribers);
        assert_eq!(r.for_channel("lobby"), ChannelRule::PUBLIC);
        for bad in [
            "private.*",
            "=members",
            "x=secret",
            "x=members:everyone",
            "x=public:",
        ] {
            assert!(ChannelRules::parse(&[bad.into()]).is_err(), "{bad:?}");
        }
        assert!(ChannelRules::parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn members_need_a_claim_and_admins_pass() {
        let r = rules();
        let none = Grants {
            admin: false,
            channels: &[],
        };
        let claims: [Box<str>; 2] = ["private.team".into(), "staff".into()];
        let member = Grants {
            admin: false,
            channels: &claims,
        };
        let wildcard: [Box<str>; 1] = ["private.*".into()];
        let all_private = Grants {
            admin: false,
            channels: &wildcard,
        };
        let admin = Grants {
            admin: true,
            channels: &[],
        };
        assert!(r.may_read("private.team", none).is_err());
        assert!(r.may_publish("private.team", none, true).is_err());
        assert!(r.may_read("private.team", member).is_ok());
        assert!(r.may_publish("private.team", member, false).is_ok());
        assert!(r.may_read("private.other", member).is_err());
        assert!(r.may_read("private.other", all_private).is_ok());
        assert!(r.may_read("private.team", admin).is_ok());
        // A members-only channel only admins write to.
        assert!(r.may_read("staff", member).is_ok());
        assert!(r.may_publish("staff", member, true).is_err());
        assert!(r.may_publish("staff", admin, false).is_ok());
        // Public channels with narrower publishers.
        assert!(r.may_read("news", none).is_ok());
        assert!(r.may_publish("news", member, true).is_err());
        assert!(r.may_publish("news", admin, false).is_ok());
        assert!(r.may_publish("chat.1", none, false).is_err());
        assert!(r.may_publish("chat.1", none, true).is_ok());
        assert!(r.may_publish("lobby", none, false).is_ok());
    }
}
