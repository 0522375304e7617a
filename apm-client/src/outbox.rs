//! The outbox: messages sent with a receipt and not yet answered, bounded
//! by count and bytes. They wait across reconnects and go out again in
//! the order first sent; past the bounds a send fails at once with
//! [`Error::OutboxFull`] instead of queueing without end.

use std::sync::Mutex;

use crate::error::Error;

/// What the outbox holds now, and its bounds.
#[derive(Debug)]
pub(crate) struct Outbox {
    max_messages: usize,
    max_bytes: usize,
    held: Mutex<(usize, usize)>,
}

/// One message's place in the outbox, given back when dropped (answered,
/// failed or given up on).
#[derive(Debug)]
pub(crate) struct Place<'a> {
    outbox: &'a Outbox,
    bytes: usize,
}

impl Outbox {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Outbox {
        Outbox {
            max_messages,
            max_bytes,
            held: Mutex::new((0, 0)),
        }
    }

    /// A place for a message of `bytes`, if the outbox has room. One
    /// message always fits in an empty outbox, whatever its size.
    pub(crate) fn reserve(&self, bytes: usize) -> Result<Place<'_>, Error> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let (messages, used) = *held;
        if messages > 0 && (messages >= self.max_messages || used + bytes > self.max_bytes) {
            return Err(Error::OutboxFull {
                messages,
                bytes: used,
            });
        }
        *held = (messages + 1, used + bytes);
        Ok(Place {
            outbox: self,
            bytes,
        })
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut held = self.outbox.held.lock().unwrap_or_else(|e| e.into_inner());
        held.0 -= 1;
        held.1 -= self.bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_bytes_and_freed_on_drop() {
        let outbox = Outbox::new(2, 100);
        let a = outbox.reserve(60).unwrap();
        assert!(matches!(
            outbox.reserve(50),
            Err(Error::OutboxFull {
                messages: 1,
                bytes: 60
            })
        ));
        let b = outbox.reserve(40).unwrap();
        assert!(outbox.reserve(0).is_err(), "two messages at most");
        drop(a);
        drop(b);
        // Alone, even an oversized message fits.
        let _big = outbox.reserve(1_000).unwrap();
    }
}
