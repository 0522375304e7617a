//! What a [`Client`] sends: messages with a receipt (which wait in the
//! outbox across reconnects, up to the give-up time) and without.

use apm_core::message::{Broadcast, Direct, Publish, Receipt};
use apm_core::{Flags, Message};
use bytes::Bytes;
use tokio::sync::oneshot;

use super::{Client, SendOptions, unexpected};
use crate::error::Error;
use crate::task::Command;

impl Client {
    /// Sends a message with a receipt. It gets a random client message id
    /// if it has none, so that after a lost connection it can be sent again
    /// safely: the server answers a copy it already has with the first
    /// copy's receipt. It holds a place in the outbox until answered. A
    /// message the server refuses for its rate limits is sent again after
    /// the wait the refusal names, as long as that ends within the give-up
    /// time from the first try, as does the wait for the receipt itself.
    async fn receipt(&self, mut message: Message, flags: Flags) -> Result<Receipt, Error> {
        if let Message::Publish(Publish { msg_id, .. })
        | Message::Direct(Direct { msg_id, .. })
        | Message::Broadcast(Broadcast { msg_id, .. }) = &mut message
            && *msg_id == 0
        {
            *msg_id = rand::random::<u64>().max(1);
        }
        let _place = self.inner.outbox.reserve(payload_len(&message))?;
        let started = tokio::time::Instant::now();
        let give_up = self.inner.give_up_after;
        loop {
            let (tx, rx) = oneshot::channel();
            // A clone shares the payload; the retry below needs the message.
            self.queue(Command::Request {
                message: message.clone(),
                flags: flags | Flags::RECEIPT,
                reply: Some(tx),
            })
            .await?;
            let answer =
                match tokio::time::timeout_at(started + give_up, self.wait_resendable(rx)).await {
                    Ok(answer) => answer,
                    Err(_) => return Err(Error::GaveUp(give_up)),
                };
            match answer {
                Ok(frame) => match frame.message {
                    Message::Receipt(r) => return Ok(r),
                    other => return Err(unexpected(&other)),
                },
                Err(e) => match e.retry_after() {
                    Some(wait) if started.elapsed() + wait <= give_up => {
                        tokio::time::sleep(wait).await;
                    }
                    _ => return Err(e),
                },
            }
        }
    }

    /// Waits for the answer to a message that is sent again after a
    /// reconnect: the request timeout counts only time spent on one
    /// connection, so a message sent while the server is away goes out once
    /// it is back. A client that stops reconnecting fails it.
    async fn wait_resendable<T>(
        &self,
        mut rx: oneshot::Receiver<Result<T, Error>>,
    ) -> Result<T, Error> {
        let connection = |c: &Client| {
            let s = c.session();
            (s.connected, s.reconnects)
        };
        loop {
            let before = connection(self);
            match tokio::time::timeout(self.inner.request_timeout, &mut rx).await {
                Ok(Err(_)) => return Err(Error::Closed),
                Ok(Ok(result)) => return result,
                // Connected the whole time, on the same connection.
                Err(_) if before.0 && connection(self) == before => return Err(Error::Timeout),
                Err(_) => continue,
            }
        }
    }

    /// Publishes to `channel`; resolves to the receipt with the seq the
    /// server assigned.
    pub async fn publish(
        &self,
        channel: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Receipt, Error> {
        self.publish_with(channel, payload, SendOptions::default())
            .await
    }

    /// [`publish`](Client::publish) with options.
    pub async fn publish_with(
        &self,
        channel: &str,
        payload: impl Into<Bytes>,
        opts: SendOptions,
    ) -> Result<Receipt, Error> {
        let (message, flags) = publish_frame(channel, payload.into(), opts);
        self.receipt(message, flags).await
    }

    /// Publishes without asking for a receipt: resolves once the message is
    /// queued for sending.
    pub async fn publish_nowait(
        &self,
        channel: &str,
        payload: impl Into<Bytes>,
        opts: SendOptions,
    ) -> Result<(), Error> {
        let (message, flags) = publish_frame(channel, payload.into(), opts);
        self.fire(message, flags).await
    }

    /// Sends to every connection of `user` (and this user's other
    /// devices); resolves to the receipt.
    pub async fn send_to(&self, user: &str, payload: impl Into<Bytes>) -> Result<Receipt, Error> {
        self.send_to_with(user, payload, SendOptions::default())
            .await
    }

    /// [`send_to`](Client::send_to) with options.
    pub async fn send_to_with(
        &self,
        user: &str,
        payload: impl Into<Bytes>,
        opts: SendOptions,
    ) -> Result<Receipt, Error> {
        self.receipt(direct_frame(user, payload.into(), opts), Flags::empty())
            .await
    }

    /// Sends to `user` without asking for a receipt: resolves once the
    /// message is queued for sending.
    pub async fn send_to_nowait(
        &self,
        user: &str,
        payload: impl Into<Bytes>,
        opts: SendOptions,
    ) -> Result<(), Error> {
        self.fire(direct_frame(user, payload.into(), opts), Flags::empty())
            .await
    }

    /// Sends to every connection on the server; needs the admin role.
    pub async fn broadcast(
        &self,
        payload: impl Into<Bytes>,
        opts: SendOptions,
    ) -> Result<Receipt, Error> {
        let message = Message::Broadcast(Broadcast {
            kind: opts.kind,
            msg_id: opts.msg_id,
            payload: payload.into(),
        });
        self.receipt(message, Flags::empty()).await
    }
}

fn publish_frame(channel: &str, payload: Bytes, opts: SendOptions) -> (Message, Flags) {
    let flags = if opts.echo {
        Flags::ECHO
    } else {
        Flags::empty()
    };
    (
        Message::Publish(Publish {
            channel: channel.to_owned(),
            kind: opts.kind,
            msg_id: opts.msg_id,
            payload,
        }),
        flags,
    )
}

fn direct_frame(user: &str, payload: Bytes, opts: SendOptions) -> Message {
    Message::Direct(Direct {
        user: user.to_owned(),
        kind: opts.kind,
        msg_id: opts.msg_id,
        payload,
    })
}

/// The payload bytes a message holds, for the outbox's byte bound.
fn payload_len(message: &Message) -> usize {
    match message {
        Message::Publish(m) => m.payload.len(),
        Message::Direct(m) => m.payload.len(),
        Message::Broadcast(m) => m.payload.len(),
        _ => 0,
    }
}
