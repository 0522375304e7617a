//! The questions a [`Client`] asks: presence, history pages, read
//! positions and unread counts.

use apm_core::message::{
    Conversation, HistoryRequest, HistoryResponse, PresenceQuery, PresenceResponse, Unread,
    UnreadRequest,
};
use apm_core::{Flags, Message};

use super::{Client, Page, unexpected};
use crate::error::Error;

impl Client {
    async fn presence(&self, query: PresenceQuery) -> Result<PresenceResponse, Error> {
        match self
            .request(Message::PresenceQuery(query), Flags::empty())
            .await?
            .message
        {
            Message::PresenceResponse(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// How many connections `user` holds (0: offline).
    pub async fn is_online(&self, user: &str) -> Result<u32, Error> {
        match self
            .presence(PresenceQuery::IsOnline {
                user: user.to_owned(),
            })
            .await?
        {
            PresenceResponse::IsOnline { connections, .. } => Ok(connections),
            _ => Err(Error::Protocol("mismatched presence response".into())),
        }
    }

    /// A page of online users, sorted, after `after`.
    pub async fn online_users(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<String>, Error> {
        match self
            .presence(PresenceQuery::OnlineUsers {
                after: after.map(str::to_owned),
                limit,
            })
            .await?
        {
            PresenceResponse::Users { users, next } => Ok(Page { items: users, next }),
            _ => Err(Error::Protocol("mismatched presence response".into())),
        }
    }

    /// A page of the users in `channel`, sorted, after `after`.
    pub async fn channel_members(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<String>, Error> {
        match self
            .presence(PresenceQuery::ChannelMembers {
                channel: channel.to_owned(),
                after: after.map(str::to_owned),
                limit,
            })
            .await?
        {
            PresenceResponse::Members { users, next, .. } => Ok(Page { items: users, next }),
            _ => Err(Error::Protocol("mismatched presence response".into())),
        }
    }

    /// A page of channels with their member counts, sorted, after `after`.
    pub async fn channels(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<(String, u32)>, Error> {
        match self
            .presence(PresenceQuery::Channels {
                after: after.map(str::to_owned),
                limit,
            })
            .await?
        {
            PresenceResponse::Channels { channels, next } => Ok(Page {
                items: channels,
                next,
            }),
            _ => Err(Error::Protocol("mismatched presence response".into())),
        }
    }

    /// The channels this connection holds, as the server sees them.
    pub async fn my_channels(&self) -> Result<Vec<String>, Error> {
        match self.presence(PresenceQuery::MyChannels).await? {
            PresenceResponse::MyChannels { channels } => Ok(channels),
            _ => Err(Error::Protocol("mismatched presence response".into())),
        }
    }

    /// A page of a conversation's history, oldest first: at most `limit`
    /// messages with `after < seq < before`. With `after` the page starts
    /// just after it (paging forward); without, it ends at the newest
    /// message below `before` (the latest messages, or paging back). Your
    /// own inbox is `Conversation::User(your id)`; other users' inboxes are
    /// refused with `Forbidden`.
    pub async fn history(
        &self,
        conversation: Conversation,
        before: Option<u64>,
        after: Option<u64>,
        limit: u32,
    ) -> Result<HistoryResponse, Error> {
        let message = Message::HistoryRequest(HistoryRequest {
            conversation,
            before,
            after,
            limit,
        });
        match self.request(message, Flags::empty()).await?.message {
            Message::HistoryResponse(h) => Ok(h),
            other => Err(unexpected(&other)),
        }
    }

    /// Tells the server this user has its private messages up to `seq`:
    /// they are not delivered again on the next connect. Resolves once
    /// queued for sending.
    pub async fn ack_inbox(&self, seq: u64) -> Result<(), Error> {
        self.ack(Conversation::User(self.user()), seq).await
    }

    /// Records that this user has read `conversation` up to `seq` (a
    /// channel, `Broadcast`, or your own inbox). The position belongs to
    /// the user, shared by all of its devices; it only moves forward.
    /// Resolves once queued for sending. A received message's conversation
    /// goes in as it is: `client.ack(msg.conversation, msg.seq)`.
    pub async fn ack(&self, conversation: impl Into<Conversation>, seq: u64) -> Result<(), Error> {
        let message = Message::Ack(apm_core::message::Ack {
            conversation: conversation.into(),
            seq,
        });
        self.fire(message, Flags::empty()).await
    }

    /// Unread counts for `conversations`, in the order given: each
    /// conversation's last seq and this user's acknowledged position
    /// ([`Unread::count`] is the difference). The server answers at most
    /// its `unread_page_max` conversations.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(client: apm_client::Client) -> Result<(), apm_client::Error> {
    /// use apm_client::Conversation;
    ///
    /// let counts = client.unread(vec![Conversation::Channel("room".into())]).await?;
    /// println!("{} unread in #room", counts[0].count());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn unread(&self, conversations: Vec<Conversation>) -> Result<Vec<Unread>, Error> {
        let message = Message::UnreadRequest(UnreadRequest { conversations });
        match self.request(message, Flags::empty()).await?.message {
            Message::UnreadResponse(r) => Ok(r.counts),
            other => Err(unexpected(&other)),
        }
    }
}
