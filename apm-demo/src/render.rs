//! How everything the chat prints looks: one event per line, in a stable
//! shape that scripts and tests can match on.
//!
//! - `[12:03:04] #room alice: hello` a channel message
//! - `[12:03:05] (private) alice -> bob: hi` a private message
//! - `[12:03:06] (broadcast) admin: maintenance at noon` a broadcast
//! - `* bob joined #room`, `* bob left #room`, `* carol is online`,
//!   `* carol is offline`, and other news
//! - `! send failed: ...` and other errors
//!
//! Payloads are shown as text with control characters escaped, so a message
//! can never break the one-line-per-event rule.

use std::io::Write as _;

use apm_client::{Conversation, Deliver, Event, PresenceEvent, Unread, content_kind};

/// Writes one line to stdout. A closed stdout is ignored: the chat carries
/// on until its input ends, as `cat` would not, but nothing is lost by it.
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `[HH:MM:SS]` in UTC for a server timestamp (ms since the Unix epoch).
///
/// Done by hand rather than with a date crate: the time of day is the
/// timestamp modulo one day, and UTC keeps the output the same on every
/// machine, which the tests rely on.
pub(crate) fn clock(ts_ms: u64) -> String {
    let secs = (ts_ms / 1000) % 86_400;
    format!(
        "[{:02}:{:02}:{:02}]",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A payload as one line of text: UTF-8 shown with control characters
/// escaped, anything else summarised.
pub(crate) fn payload(kind: u16, bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut out = String::with_capacity(text.len());
            for c in text.chars() {
                if c.is_control() {
                    out.extend(c.escape_default());
                } else {
                    out.push(c);
                }
            }
            out
        }
        Err(_) if kind == content_kind::TEXT => {
            format!("<{} bytes of invalid UTF-8>", bytes.len())
        }
        Err(_) => format!("<{} bytes, kind {kind}>", bytes.len()),
    }
}

/// A message in a channel.
pub(crate) fn channel_message(
    ts_ms: u64,
    channel: &str,
    sender: &str,
    kind: u16,
    body: &[u8],
) -> String {
    format!(
        "{} #{channel} {sender}: {}",
        clock(ts_ms),
        payload(kind, body)
    )
}

/// A private message from `sender` to `recipient`.
pub(crate) fn private_message(
    ts_ms: u64,
    sender: &str,
    recipient: &str,
    kind: u16,
    body: &[u8],
) -> String {
    format!(
        "{} (private) {sender} -> {recipient}: {}",
        clock(ts_ms),
        payload(kind, body)
    )
}

/// Any delivered message, whatever its conversation.
pub(crate) fn deliver(d: &Deliver) -> String {
    match &d.conversation {
        Conversation::Channel(channel) => {
            channel_message(d.ts_ms, channel, &d.sender, d.kind, &d.payload)
        }
        Conversation::User(recipient) => {
            private_message(d.ts_ms, &d.sender, recipient, d.kind, &d.payload)
        }
        Conversation::Broadcast => format!(
            "{} (broadcast) {}: {}",
            clock(d.ts_ms),
            d.sender,
            payload(d.kind, &d.payload)
        ),
    }
}

/// Unread counts: `#room 2, (private) 0`; channels first, as asked.
pub(crate) fn unread(counts: &[Unread]) -> String {
    counts
        .iter()
        .map(|u| match &u.conversation {
            Conversation::Channel(c) => format!("#{c} {}", u.count()),
            Conversation::User(_) => format!("(private) {}", u.count()),
            Conversation::Broadcast => format!("(broadcast) {}", u.count()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A presence event.
pub(crate) fn presence(e: &PresenceEvent) -> String {
    match e {
        PresenceEvent::Online { user } => format!("* {user} is online"),
        PresenceEvent::Offline { user } => format!("* {user} is offline"),
        PresenceEvent::Join { channel, user } => format!("* {user} joined #{channel}"),
        PresenceEvent::Leave { channel, user } => format!("* {user} left #{channel}"),
    }
}

/// A connection event; `None` for the final `Closed`, which the caller
/// reports in its own words.
pub(crate) fn event(e: &Event) -> Option<String> {
    match e {
        Event::Presence(p) => Some(presence(p)),
        Event::Disconnected { reason } => {
            Some(format!("* disconnected: {reason}, reconnecting..."))
        }
        Event::Reconnected => Some("* reconnected".to_owned()),
        Event::Lagged { stream, dropped } => {
            Some(format!("! too slow: {dropped} dropped on {stream} so far"))
        }
        Event::SubscriptionLost { channel, reason } => {
            Some(format!("! lost #{channel} after reconnecting: {reason}"))
        }
        Event::ServerSubscribed { channel } => {
            Some(format!("* the server subscribed you to #{channel}"))
        }
        Event::ServerUnsubscribed { channel } => Some(format!(
            "* the server ended your subscription to #{channel}"
        )),
        Event::Closed => None,
    }
}

/// A list of names, or `(none)`.
pub(crate) fn names(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver_in(conversation: Conversation, text: &str) -> Deliver {
        Deliver {
            conversation: conversation.into(),
            seq: 1,
            // 1970-01-02 12:03:04.567 UTC
            ts_ms: ((24 + 12) * 3600 + 3 * 60 + 4) * 1000 + 567,
            sender: "alice".into(),
            kind: content_kind::TEXT,
            msg_id: 0,
            payload: text.as_bytes().to_vec().into(),
        }
    }

    #[test]
    fn clock_is_utc_time_of_day() {
        assert_eq!(clock(0), "[00:00:00]");
        assert_eq!(clock(86_399_999), "[23:59:59]");
        assert_eq!(clock(86_400_000), "[00:00:00]");
        assert_eq!(clock(1_700_000_000_000), "[22:13:20]");
    }

    #[test]
    fn message_lines() {
        assert_eq!(
            deliver(&deliver_in(Conversation::Channel("room".into()), "hello")),
            "[12:03:04] #room alice: hello"
        );
        assert_eq!(
            deliver(&deliver_in(Conversation::User("bob".into()), "hi")),
            "[12:03:04] (private) alice -> bob: hi"
        );
        assert_eq!(
            deliver(&deliver_in(Conversation::Broadcast, "all")),
            "[12:03:04] (broadcast) alice: all"
        );
    }

    #[test]
    fn payloads_stay_on_one_line() {
        assert_eq!(payload(content_kind::TEXT, b"a\nb\tc"), "a\\nb\\tc");
        assert_eq!(
            payload(content_kind::TEXT, &[0xff]),
            "<1 bytes of invalid UTF-8>"
        );
        assert_eq!(
            payload(content_kind::BINARY, &[0xff, 0]),
            "<2 bytes, kind 0>"
        );
        assert_eq!(payload(content_kind::BINARY, b"plain"), "plain");
    }

    #[test]
    fn unread_lines() {
        let u = |conversation, last, acked| Unread {
            conversation,
            last,
            acked,
        };
        let counts = [
            u(Conversation::Channel("room".into()), 5, 3),
            u(Conversation::User("bob".into()), 2, 2),
        ];
        assert_eq!(unread(&counts), "#room 2, (private) 0");
    }

    #[test]
    fn news_lines() {
        let join = PresenceEvent::Join {
            channel: "room".into(),
            user: "bob".into(),
        };
        assert_eq!(presence(&join), "* bob joined #room");
        assert_eq!(
            presence(&PresenceEvent::Offline {
                user: "carol".into()
            }),
            "* carol is offline"
        );
        assert_eq!(
            event(&Event::Disconnected {
                reason: "closed by the server".into()
            })
            .as_deref(),
            Some("* disconnected: closed by the server, reconnecting...")
        );
        assert_eq!(event(&Event::Closed), None);
        assert_eq!(names(&[]), "(none)");
        assert_eq!(names(&["a".into(), "b".into()]), "a, b");
    }
}
