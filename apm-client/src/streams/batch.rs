//! The receiving end of a stream's channel, taking everything queued in
//! one go.
//!
//! The connection task routes a whole read's worth of messages before it
//! waits again, so by the time the app's task runs there are usually many
//! waiting. Taking them together costs one wake-up and one release of
//! channel capacity (a lock in tokio's bounded channel) per batch instead
//! of per message.

use std::task::{Context, Poll};

use tokio::sync::mpsc;

/// Most messages taken from the channel at once. A batch waits outside the
/// channel's capacity, so a stream holds at most its capacity plus this.
const MAX_BATCH: usize = 256;

/// An [`mpsc::Receiver`] that takes what is queued in batches and hands it
/// out one at a time.
#[derive(Debug)]
pub(crate) struct BatchReceiver<T> {
    rx: mpsc::Receiver<T>,
    /// Taken from the channel and not handed out yet, newest first, so the
    /// next one is popped off the end.
    taken: Vec<T>,
}

impl<T> BatchReceiver<T> {
    pub(crate) fn new(rx: mpsc::Receiver<T>) -> BatchReceiver<T> {
        BatchReceiver {
            rx,
            taken: Vec::new(),
        }
    }

    /// The next item; `None` once the sender is gone and all is handed out.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(item) = self.taken.pop() {
            return Poll::Ready(Some(item));
        }
        match self.rx.poll_recv_many(cx, &mut self.taken, MAX_BATCH) {
            Poll::Ready(0) => Poll::Ready(None),
            Poll::Ready(_) => {
                self.taken.reverse();
                Poll::Ready(self.taken.pop())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next item, waiting for one.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hands_out_in_order_across_batches_then_ends() {
        let (tx, rx) = mpsc::channel(2 * MAX_BATCH);
        let mut batched = BatchReceiver::new(rx);
        let total = MAX_BATCH + MAX_BATCH / 2;
        for i in 0..total {
            tx.try_send(i).expect("room");
        }
        // One batch is taken; the rest stays in the channel while more
        // arrive behind it.
        assert_eq!(batched.recv().await, Some(0));
        tx.try_send(total).expect("room");
        drop(tx);
        for want in 1..=total {
            assert_eq!(batched.recv().await, Some(want));
        }
        assert_eq!(batched.recv().await, None);
    }
}
