//! Presence events as the scripts publish them (see `script.rs`), read
//! back.

use apm_core::message::PresenceEvent;

/// One published event, with the joining connection for a join made on
/// this node (which its own connection does not hear).
#[derive(Debug, PartialEq)]
pub(crate) struct Event {
    pub(crate) event: PresenceEvent,
    /// The node and connection of a join.
    pub(crate) joiner: Option<(String, u64)>,
}

/// Reads a run of events; `None` when it does not read back whole.
pub(crate) fn parse(mut bytes: &[u8]) -> Option<Vec<Event>> {
    let mut events = Vec::new();
    while let Some((&kind, rest)) = bytes.split_first() {
        bytes = rest;
        let mut field = || -> Option<String> {
            let colon = bytes.iter().position(|&b| b == b':')?;
            let len: usize = std::str::from_utf8(&bytes[..colon]).ok()?.parse().ok()?;
            let text = bytes.get(colon + 1..colon + 1 + len)?;
            let text = String::from_utf8(text.to_vec()).ok()?;
            bytes = &bytes[colon + 1 + len..];
            Some(text)
        };
        let event = match kind {
            b'O' => Event {
                event: PresenceEvent::Online { user: field()? },
                joiner: None,
            },
            b'F' => Event {
                event: PresenceEvent::Offline { user: field()? },
                joiner: None,
            },
            b'J' => {
                let (channel, user, node) = (field()?, field()?, field()?);
                let conn: u64 = field()?.parse().ok()?;
                Event {
                    event: PresenceEvent::Join { channel, user },
                    joiner: (!node.is_empty()).then_some((node, conn)),
                }
            }
            b'L' => {
                let (channel, user) = (field()?, field()?);
                Event {
                    event: PresenceEvent::Leave { channel, user },
                    joiner: None,
                }
            }
            _ => return None,
        };
        events.push(event);
    }
    Some(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_scripts_write() {
        let published = "O5:aliceJ3:r:x3:bob6:node-12:17L3:r:x3:bobF5:alice";
        let events = parse(published.as_bytes()).expect("reads");
        assert_eq!(
            events,
            vec![
                Event {
                    event: PresenceEvent::Online {
                        user: "alice".into()
                    },
                    joiner: None
                },
                Event {
                    event: PresenceEvent::Join {
                        channel: "r:x".into(),
                        user: "bob".into()
                    },
                    joiner: Some(("node-1".into(), 17))
                },
                Event {
                    event: PresenceEvent::Leave {
                        channel: "r:x".into(),
                        user: "bob".into()
                    },
                    joiner: None
                },
                Event {
                    event: PresenceEvent::Offline {
                        user: "alice".into()
                    },
                    joiner: None
                },
            ]
        );
    }

    #[test]
    fn refuses_what_is_cut_short() {
        assert_eq!(parse(b"O5:ali"), None);
        assert_eq!(parse(b"X1:a"), None);
        assert_eq!(parse(b"J1:a1:b"), None);
    }
}
