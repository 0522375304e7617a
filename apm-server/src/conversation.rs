//! How the server names a conversation (a channel, a user's inbox, the
//! broadcasts) and the key the store files it under.

use std::sync::Arc;

use apm_core::message::{Conversation, ConversationRef};

/// A conversation as the store and the loops name it, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConversationId {
    /// A channel.
    Channel(Arc<str>),
    /// A user's private inbox.
    User(Arc<str>),
    /// Server-wide broadcasts.
    Broadcast,
}

impl ConversationId {
    /// The borrowed protocol form.
    pub fn as_ref(&self) -> ConversationRef<'_> {
        match self {
            ConversationId::Channel(c) => ConversationRef::Channel(c),
            ConversationId::User(u) => ConversationRef::User(u),
            ConversationId::Broadcast => ConversationRef::Broadcast,
        }
    }

    /// The owned protocol form.
    pub fn to_protocol(&self) -> Conversation {
        match self {
            ConversationId::Channel(c) => Conversation::Channel(c.to_string()),
            ConversationId::User(u) => Conversation::User(u.to_string()),
            ConversationId::Broadcast => Conversation::Broadcast,
        }
    }

    /// The key the store files it under: a one-character kind, then the
    /// name. Names cannot hold whitespace or control characters, and the
    /// kind comes first, so keys of different kinds never collide.
    pub fn key(&self) -> String {
        match self {
            ConversationId::Channel(c) => format!("#{c}"),
            ConversationId::User(u) => format!("@{u}"),
            ConversationId::Broadcast => "*".to_owned(),
        }
    }

    /// Reads a key made by [`ConversationId::key`].
    pub fn from_key(key: &str) -> Option<ConversationId> {
        match key.split_at_checked(1)? {
            ("#", name) if !name.is_empty() => Some(ConversationId::Channel(Arc::from(name))),
            ("@", name) if !name.is_empty() => Some(ConversationId::User(Arc::from(name))),
            ("*", "") => Some(ConversationId::Broadcast),
            _ => None,
        }
    }
}

impl From<&Conversation> for ConversationId {
    fn from(c: &Conversation) -> ConversationId {
        match c {
            Conversation::Channel(c) => ConversationId::Channel(Arc::from(c.as_str())),
            Conversation::User(u) => ConversationId::User(Arc::from(u.as_str())),
            Conversation::Broadcast => ConversationId::Broadcast,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for id in [
            ConversationId::Channel(Arc::from("room")),
            ConversationId::Channel(Arc::from("@x")),
            ConversationId::User(Arc::from("alice")),
            ConversationId::Broadcast,
        ] {
            assert_eq!(ConversationId::from_key(&id.key()), Some(id));
        }
        for bad in ["", "#", "@", "*x", "?a"] {
            assert_eq!(ConversationId::from_key(bad), None, "{bad:?}");
        }
    }
}
