//! Rules for channel names and user ids.

use crate::error::DecodeError;
use crate::limits::Limits;

/// Prefix of channels the server owns (`$presence`, ...). Clients may
/// subscribe to them but never publish to them.
pub const SYSTEM_PREFIX: char = '$';

/// The channel that carries `Online` / `Offline` presence events.
pub const PRESENCE_CHANNEL: &str = "$presence";

/// Checks a channel name or user id: 1 to `max_name_len` bytes of UTF-8 with
/// no whitespace and no control characters.
pub fn validate_name(name: &str, limits: &Limits) -> Result<(), DecodeError> {
    let bad = |why: &'static str| DecodeError::InvalidName {
        name: name.chars().take(64).collect(),
        why,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > limits.max_name_len {
        return Err(bad("too long"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("whitespace or control character"));
    }
    Ok(())
}

/// Whether a channel is reserved for the server.
pub fn is_system_channel(name: &str) -> bool {
    name.starts_with(SYSTEM_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let l = Limits::default();
        assert!(validate_name("room.1", &l).is_ok());
        assert!(validate_name("чат", &l).is_ok());
        assert!(validate_name("", &l).is_err());
        assert!(validate_name("a b", &l).is_err());
        assert!(validate_name("a\u{0}", &l).is_err());
        assert!(validate_name(&"x".repeat(129), &l).is_err());
        assert!(validate_name(&"x".repeat(128), &l).is_ok());
    }
}
