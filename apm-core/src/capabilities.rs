//! Capabilities: what a client and a server understand beyond version 1's
//! baseline, exchanged in the flags of `Hello` and `Welcome`.
//!
//! A `Hello`'s flags say what the client understands; the `Welcome`'s say
//! which of those the server grants. A peer uses a later addition (a new
//! message type, a new field) only once both sides have it. A server that
//! predates capabilities ignores the bits (reserved flags are ignored on
//! receipt) and answers with none; a client that predates them sends none
//! and is sent only version 1's frames.

use crate::frame::Flags;

/// A set of capabilities: the high byte of the header flags of `Hello`
/// and `Welcome`. The low byte stays for per-frame flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Capabilities(u16);

impl Capabilities {
    /// `Refresh` and `RefreshOk`: a session takes a new token before its
    /// token expires.
    pub const TOKEN_REFRESH: Capabilities = Capabilities(0x0100);

    /// `Grant` and `GrantOk`: a subscription token lets the session use
    /// one members-only channel.
    pub const SUB_TOKEN: Capabilities = Capabilities(0x0200);

    /// `ServerSub` and `ServerUnsub`: the server joins the session to the
    /// channels its user was subscribed to server-side, and says so.
    pub const SERVER_SUBS: Capabilities = Capabilities(0x0400);

    /// Every capability this crate knows.
    pub const ALL: Capabilities = Capabilities(0x0100 | 0x0200 | 0x0400);

    /// None: version 1's baseline.
    pub const fn none() -> Capabilities {
        Capabilities(0)
    }

    /// The capabilities carried in a `Hello`'s or `Welcome`'s flags
    /// (bits this crate does not know are dropped).
    pub const fn from_flags(flags: Flags) -> Capabilities {
        Capabilities(flags.bits() & Capabilities::ALL.0)
    }

    /// The flags that carry these capabilities.
    pub const fn to_flags(self) -> Flags {
        Flags::from_bits(self.0)
    }

    /// Whether every capability of `other` is here.
    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The capabilities in both sets.
    pub const fn intersection(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_ride_in_the_high_byte_and_leave_per_frame_flags_alone() {
        let flags = Capabilities::TOKEN_REFRESH.to_flags();
        assert!(!flags.contains(Flags::RECEIPT) && !flags.contains(Flags::ECHO));
        let from_old_peer = Flags::RECEIPT | Flags::from_bits(0x8000);
        assert_eq!(
            Capabilities::from_flags(from_old_peer),
            Capabilities::none()
        );
        assert!(Capabilities::from_flags(flags).contains(Capabilities::TOKEN_REFRESH));
        assert_eq!(
            Capabilities::ALL.intersection(Capabilities::none()),
            Capabilities::none()
        );
    }
}
