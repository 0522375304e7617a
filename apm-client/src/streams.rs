//! The streams a client hands out: a subscription's messages, the inbox of
//! private messages and broadcasts, and connection events.
//!
//! Messages reach the message streams through bounded channels that the
//! streams empty in batches (see `batch.rs`).

use std::pin::Pin;
use std::task::{Context, Poll};

use apm_core::message::{Deliver, PresenceEvent};
use futures::Stream;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use crate::client::Client;
use crate::error::Error;

mod batch;

pub(crate) use batch::BatchReceiver;

/// Something that happened to the client rather than a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Someone came online or went offline (on `$presence`), or joined or
    /// left a channel this client holds.
    Presence(PresenceEvent),
    /// The connection was lost; the client is reconnecting (unless its
    /// policy says not to, in which case [`Event::Closed`] follows).
    Disconnected {
        /// Why.
        reason: String,
    },
    /// The connection is back: re-authenticated, and every subscription
    /// confirmed again by the server.
    Reconnected,
    /// A stream was full and dropped messages.
    Lagged {
        /// The channel, `"inbox"` or `"events"`.
        stream: String,
        /// How many that stream has dropped so far, in all.
        dropped: u64,
    },
    /// After a reconnect the server refused to restore a subscription; its
    /// stream has ended.
    SubscriptionLost {
        /// The channel.
        channel: String,
        /// The server's reason.
        reason: String,
    },
    /// The server holds `channel` for this user (a server-side
    /// subscription, made by a backend): its messages arrive on
    /// [`Client::server_subscriptions`] (or on a [`Subscription`] the app
    /// already had for it). Said once per channel; after a reconnect the
    /// server joins it again without a new event, resuming where the
    /// stream was.
    ServerSubscribed {
        /// The channel.
        channel: String,
    },
    /// A server-side subscription ended; nothing more of the channel
    /// arrives.
    ServerUnsubscribed {
        /// The channel.
        channel: String,
    },
    /// The client is closed for good.
    Closed,
}

/// The messages of one channel, in seq order: a [`Stream`] of [`Deliver`].
///
/// A message arrives without a copy: its channel name, sender and payload
/// share the memory of the frame it came in (see [`Deliver`]). What the
/// connection has received is taken from it in batches, so a busy stream
/// costs no task wake-up per message.
///
/// Ends when the client closes. Dropping it stops delivery (the client
/// unsubscribes when the next message for it arrives); [`unsubscribe`]
/// does so at once.
///
/// [`unsubscribe`]: Subscription::unsubscribe
#[derive(Debug)]
pub struct Subscription {
    pub(crate) channel: String,
    pub(crate) last_seq_at_start: u64,
    pub(crate) rx: BatchReceiver<Deliver>,
    pub(crate) client: Client,
}

impl Subscription {
    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The channel's last seq when the subscription went live.
    pub fn start_seq(&self) -> u64 {
        self.last_seq_at_start
    }

    /// The next message, or `None` once the client is closed.
    pub async fn next_message(&mut self) -> Option<Deliver> {
        self.rx.recv().await
    }

    /// Leaves the channel and waits for the server to confirm.
    pub async fn unsubscribe(self) -> Result<(), Error> {
        self.client.unsubscribe(&self.channel).await
    }
}

impl Stream for Subscription {
    type Item = Deliver;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Deliver>> {
        self.rx.poll_next(cx)
    }
}

/// Private messages to this user (from any of its devices' peers) and
/// broadcasts: a [`Stream`] of [`Deliver`], taken from the connection in
/// batches like a [`Subscription`]'s. Taken once with
/// [`Client::messages`]. Like a [`Subscription`], it keeps the connection
/// open while it lives.
#[derive(Debug)]
pub struct Inbox {
    pub(crate) rx: BatchReceiver<Deliver>,
    pub(crate) _client: Client,
}

impl Inbox {
    /// The next message, or `None` once the client is closed.
    pub async fn next_message(&mut self) -> Option<Deliver> {
        self.rx.recv().await
    }
}

impl Stream for Inbox {
    type Item = Deliver;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Deliver>> {
        self.rx.poll_next(cx)
    }
}

/// The messages of every channel the server subscribed this user to
/// (server-side subscriptions, see [`Event::ServerSubscribed`]), each
/// channel in seq order: a [`Stream`] of [`Deliver`], taken from the
/// connection in batches like a [`Subscription`]'s. Taken once with
/// [`Client::server_subscriptions`]; keeps the connection open while it
/// lives.
#[derive(Debug)]
pub struct ServerSubscriptions {
    pub(crate) rx: BatchReceiver<Deliver>,
    pub(crate) _client: Client,
}

impl ServerSubscriptions {
    /// The next message, or `None` once the client is closed.
    pub async fn next_message(&mut self) -> Option<Deliver> {
        self.rx.recv().await
    }
}

impl Stream for ServerSubscriptions {
    type Item = Deliver;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Deliver>> {
        self.rx.poll_next(cx)
    }
}

/// The client's [`Event`]s from the moment [`Client::events`] was called.
/// Each call gets its own stream; a stream that falls more than 1024 events
/// behind gets [`Event::Lagged`] in place of what it missed.
pub struct Events {
    inner: BoxStream<'static, Event>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Events {
        let inner = futures::stream::unfold((rx, 0u64), |(mut rx, dropped)| async move {
            match rx.recv().await {
                Ok(e) => Some((e, (rx, dropped))),
                Err(broadcast::error::RecvError::Lagged(n)) => Some((
                    Event::Lagged {
                        stream: "events".into(),
                        dropped: dropped + n,
                    },
                    (rx, dropped + n),
                )),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Events {
            inner: Box::pin(inner),
        }
    }

    /// The next event, or `None` once the client is closed.
    pub async fn next_event(&mut self) -> Option<Event> {
        futures::StreamExt::next(&mut self.inner).await
    }
}

impl Stream for Events {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.inner.as_mut().poll_next(cx)
    }
}
