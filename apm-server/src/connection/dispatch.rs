//! Request dispatch: what each frame a client sends asks of the server.
//! Checks that need only the session (subscription limit, system channels,
//! roles, channel rules, rate limits) are made here; the rest becomes a
//! command for the shard that owns the channel, user or conversation
//! named.

use std::sync::Arc;

use apm_core::message::{Conversation, GrantOk, PresenceQuery, RefreshOk, Role, UnsubOk};
use apm_core::names::is_system_channel;
use apm_core::{ErrorCode, Flags, Frame, Message};
use bytes::Bytes;
use tracing::info;

use crate::access::Grants;
use crate::config::DirectMessages;
use crate::conversation::ConversationId;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::rate::Refusal;
use crate::shard::{Asker, Command, Outgoing, Target};

use super::Session;
use super::queries::Query;

/// What a frame asks of the session beyond what `handle` did itself.
pub(super) enum Action {
    Done,
    /// A command for shard `.0`.
    Submit(usize, Command),
    /// A question for one or several shards, answered with request id `.0`.
    Ask(u32, Query),
}

impl Session {
    /// Queues an answer for the client (outside the slow-consumer bound:
    /// answers count against the reply budget instead).
    pub(super) fn reply(&self, frame: Frame) {
        if let Ok(bytes) = frame.to_bytes_limited(u32::MAX) {
            self.conn.push_reply(bytes);
        }
    }

    fn error(&self, request_id: u32, code: ErrorCode, message: &str) {
        self.reply(Frame::new(request_id, Message::error(code, message)));
    }

    /// Reports a violation and closes once the report is written. Logged
    /// at `info`, as it happens at most once per connection: the close line
    /// that follows carries only the code.
    pub(super) fn fatal(&mut self, request_id: u32, code: ErrorCode, message: &str) {
        info!(%code, reason = message, "protocol violation");
        Metrics::add(&self.hub.metrics.protocol_errors, 1);
        self.error(request_id, code, message);
        self.reading = false;
        self.conn.close(code);
    }

    /// Handles one frame. What must go to a shard or wait for shards is
    /// returned, so the common path has no await and the task stays small.
    pub(super) fn handle(&mut self, frame: Frame) -> Action {
        let Frame {
            request_id,
            flags,
            message,
        } = frame;
        match message {
            Message::Ping => self.reply(Frame::new(request_id, Message::Pong)),
            Message::Pong | Message::Error(_) => {}
            Message::Refresh(refresh) => self.refresh(request_id, &refresh.token),
            Message::Grant(grant) => self.grant(request_id, &grant.token),
            Message::Close(_) => {
                self.reading = false;
                self.conn.close(ErrorCode::Normal);
            }
            Message::Sub(sub) => {
                if !self.may_read(request_id, &sub.channel) {
                    return Action::Done;
                }
                if !self.subs.contains(sub.channel.as_str()) {
                    let limit = self.hub.config.max_subscriptions;
                    if self.subs.len() >= limit {
                        self.fatal(
                            request_id,
                            ErrorCode::TooManySubscriptions,
                            &format!("at most {limit} subscriptions per connection"),
                        );
                        return Action::Done;
                    }
                    self.subs.insert(Arc::from(sub.channel.as_str()));
                }
                let shard = self.hub.shard_of(&sub.channel);
                let cmd = Command::Sub {
                    conn: self.conn.clone(),
                    channel: sub.channel,
                    since: sub.since,
                    asker: Asker::Client(request_id),
                };
                return Action::Submit(shard, cmd);
            }
            Message::Unsub(unsub) if self.server_subs.contains(unsub.channel.as_str()) => {
                self.error(
                    request_id,
                    ErrorCode::Forbidden,
                    "a server-side subscription: the server ends it, not the client",
                );
            }
            Message::Unsub(unsub) => match self.subs.take(unsub.channel.as_str()) {
                Some(channel) => {
                    let shard = self.hub.shard_of(&channel);
                    let cmd = Command::Unsub {
                        conn: self.conn.clone(),
                        channel,
                        asker: Asker::Client(request_id),
                    };
                    return Action::Submit(shard, cmd);
                }
                None => {
                    let ok = UnsubOk {
                        channel: unsub.channel,
                    };
                    self.reply(Frame::new(request_id, Message::UnsubOk(ok)));
                }
            },
            Message::Publish(msg) => {
                if is_system_channel(&msg.channel) {
                    self.error(
                        request_id,
                        ErrorCode::Forbidden,
                        "channels starting with $ belong to the server",
                    );
                    return Action::Done;
                }
                if !self.hub.access.is_empty() {
                    let subscribed = self.subs.contains(msg.channel.as_str());
                    // A server-side subscription makes the user a member,
                    // as a claim in its token would.
                    let server_claim: [Box<str>; 1];
                    let grants = if self.server_subs.contains(msg.channel.as_str()) {
                        server_claim = [Box::from(msg.channel.as_str())];
                        Grants {
                            admin: self.conn.role == Role::Admin,
                            channels: &server_claim,
                        }
                    } else {
                        self.grants()
                    };
                    if let Err(why) = self
                        .hub
                        .access
                        .may_publish(&msg.channel, grants, subscribed)
                    {
                        self.error(request_id, ErrorCode::Forbidden, why);
                        return Action::Done;
                    }
                }
                let to = Target::Channel(msg.channel);
                return self.send(request_id, flags, to, msg.kind, msg.msg_id, msg.payload);
            }
            Message::Direct(msg) => {
                let refused = match self.hub.config.direct_messages {
                    DirectMessages::Anyone => None,
                    DirectMessages::Admins if self.conn.role == Role::Admin => None,
                    DirectMessages::Admins => Some("private messages need the admin role here"),
                    DirectMessages::Off => Some("private messages are off on this server"),
                };
                if let Some(why) = refused {
                    self.error(request_id, ErrorCode::Forbidden, why);
                    return Action::Done;
                }
                let to = Target::User(msg.user);
                return self.send(request_id, flags, to, msg.kind, msg.msg_id, msg.payload);
            }
            Message::Broadcast(msg) => {
                if self.conn.role != Role::Admin {
                    self.error(
                        request_id,
                        ErrorCode::Forbidden,
                        "broadcast needs the admin role",
                    );
                    return Action::Done;
                }
                let to = Target::Everyone;
                return self.send(request_id, flags, to, msg.kind, msg.msg_id, msg.payload);
            }
            Message::Ack(ack) => {
                if let Conversation::User(u) = &ack.conversation
                    && **u != *self.conn.user
                {
                    self.error(
                        request_id,
                        ErrorCode::Forbidden,
                        "you can acknowledge your own inbox only",
                    );
                    return Action::Done;
                }
                if let Conversation::Channel(name) = &ack.conversation
                    && !self.may_read(request_id, name)
                {
                    return Action::Done;
                }
                let conversation = ConversationId::from(&ack.conversation);
                let shard = self.hub.shard_of_conversation(&conversation);
                let cmd = Command::Ack {
                    conn: self.conn.clone(),
                    seq: ack.seq,
                    conversation,
                };
                return Action::Submit(shard, cmd);
            }
            Message::UnreadRequest(req) => {
                let refused = req.conversations.iter().any(|c| match c {
                    Conversation::Channel(name) => !self.may_read(request_id, name),
                    _ => false,
                });
                if !refused {
                    return Action::Ask(request_id, Query::Unread(req));
                }
            }
            Message::HistoryRequest(req) => {
                if let Conversation::Channel(name) = &req.conversation
                    && !self.may_read(request_id, name)
                {
                    return Action::Done;
                }
                let shard = match &req.conversation {
                    Conversation::Channel(name) | Conversation::User(name) => {
                        self.hub.shard_of(name)
                    }
                    Conversation::Broadcast => Hub::BROADCAST_SHARD,
                };
                let cmd = Command::History {
                    conn: self.conn.clone(),
                    request_id,
                    req,
                };
                return Action::Submit(shard, cmd);
            }
            Message::PresenceQuery(query) => {
                if let PresenceQuery::ChannelMembers { channel, .. } = &query
                    && !self.may_read(request_id, channel)
                {
                    return Action::Done;
                }
                return Action::Ask(request_id, Query::Presence(query));
            }
            other => {
                let kind = other.message_type();
                self.fatal(
                    request_id,
                    ErrorCode::UnexpectedMessage,
                    &format!("{kind:?} is not valid here"),
                );
            }
        }
        Action::Done
    }

    /// Takes a new token for the session: same user and role, not
    /// expired, not revoked. Its expiry and channel claims replace the
    /// old token's (subscriptions already held stay).
    fn refresh(&mut self, request_id: u32, token: &str) {
        let secret = &self.hub.config.secret;
        if secret.is_empty() {
            self.error(
                request_id,
                ErrorCode::Unsupported,
                "dev mode has no tokens to refresh",
            );
            return;
        }
        let claims = match crate::auth::verify(secret.as_bytes(), token) {
            Ok(claims) => claims,
            Err(ErrorCode::TokenExpired) => {
                // The Close that follows says why.
                self.reading = false;
                self.conn.close(ErrorCode::TokenExpired);
                return;
            }
            Err(code) => {
                self.fatal(request_id, code, "the new token does not verify");
                return;
            }
        };
        if *claims.user != *self.conn.user || claims.role != self.conn.role {
            self.fatal(
                request_id,
                ErrorCode::AuthFailed,
                "the new token is for another user or role",
            );
            return;
        }
        if let Some(until) = self.hub.revoked_until(&self.conn.user) {
            self.fatal(
                request_id,
                ErrorCode::Revoked,
                &super::handshake::revoked_text(until),
            );
            return;
        }
        self.token_exp = Some(claims.exp);
        self.token_moved = true;
        self.channel_claims = claims.channels.into_iter().map(Box::from).collect();
        self.reply(Frame::new(
            request_id,
            Message::RefreshOk(RefreshOk { exp: claims.exp }),
        ));
    }

    /// Adds the channel a subscription token opens to the session's
    /// claims. A token that does not verify, has expired or is for another
    /// user is refused `Forbidden`; the connection stays open.
    fn grant(&mut self, request_id: u32, token: &str) {
        let secret = &self.hub.config.secret;
        if secret.is_empty() {
            self.error(
                request_id,
                ErrorCode::Unsupported,
                "dev mode has no tokens: members-only channels are for admins",
            );
            return;
        }
        let claims = match crate::auth::verify_subscription(secret.as_bytes(), token) {
            Ok(c) if *c.user == *self.conn.user => c,
            Ok(_) => {
                self.error(
                    request_id,
                    ErrorCode::Forbidden,
                    "the subscription token is for another user",
                );
                return;
            }
            Err(ErrorCode::TokenExpired) => {
                self.error(
                    request_id,
                    ErrorCode::Forbidden,
                    "the subscription token has expired",
                );
                return;
            }
            Err(_) => {
                self.error(
                    request_id,
                    ErrorCode::Forbidden,
                    "the subscription token does not verify",
                );
                return;
            }
        };
        if apm_core::names::validate_name(&claims.channel, &self.hub.limits).is_err() {
            self.error(
                request_id,
                ErrorCode::Forbidden,
                "the subscription token names no valid channel",
            );
            return;
        }
        if !self.channel_claims.iter().any(|c| **c == *claims.channel) {
            let mut claims_now = std::mem::take(&mut self.channel_claims).into_vec();
            claims_now.push(claims.channel.clone().into_boxed_str());
            self.channel_claims = claims_now.into_boxed_slice();
        }
        self.reply(Frame::new(
            request_id,
            Message::GrantOk(GrantOk {
                channel: claims.channel,
                exp: claims.exp,
            }),
        ));
    }

    /// The session's role and channel claims, for the channel rules.
    pub(super) fn grants(&self) -> Grants<'_> {
        Grants {
            admin: self.conn.role == Role::Admin,
            channels: &self.channel_claims,
        }
    }

    /// Whether the channel rules let this session read `channel`; if not,
    /// the request is answered `Forbidden` (the connection stays open).
    fn may_read(&self, request_id: u32, channel: &str) -> bool {
        if self.server_subs.contains(channel) {
            // The backend subscribed the user: that is its permission.
            return true;
        }
        match self.hub.access.may_read(channel, self.grants()) {
            Ok(()) => true,
            Err(why) => {
                self.error(request_id, ErrorCode::Forbidden, why);
                false
            }
        }
    }

    /// A new message for the shard that owns its target, unless the store
    /// is failing or a rate limit refuses it.
    fn send(
        &mut self,
        request_id: u32,
        flags: Flags,
        to: Target,
        kind: u16,
        msg_id: u64,
        payload: Bytes,
    ) -> Action {
        let hub = &*self.hub;
        if hub.commit.as_ref().is_some_and(|c| c.is_failing()) {
            // Taken now, it would wait behind a write that keeps failing;
            // refused, the client knows to try again later.
            self.error(
                request_id,
                ErrorCode::Internal,
                "the message store is failing: message not taken, try again later",
            );
            return Action::Done;
        }
        if let Err(refusal) = self.count_rate(&to, msg_id) {
            Metrics::add(&self.hub.metrics.rate_limited, 1);
            self.error(request_id, ErrorCode::RateLimited, &refusal.to_string());
            return Action::Done;
        }
        let hub = &*self.hub;
        let shard = match &to {
            Target::Channel(name) | Target::User(name) => hub.shard_of(name),
            Target::Everyone => Hub::BROADCAST_SHARD,
        };
        let msg = Outgoing {
            conn: self.conn.clone(),
            request_id,
            flags,
            to,
            kind,
            msg_id,
            payload,
        };
        Action::Submit(shard, Command::Send(msg))
    }

    /// Counts a message against the connection's and its user's rate
    /// limits. Here, in the connection's task, a flood is refused before
    /// it costs a forwarding loop anything.
    fn count_rate(&mut self, to: &Target, msg_id: u64) -> Result<(), Refusal> {
        let rates = &self.hub.rates;
        if rates.is_off(self.conn.role) {
            return Ok(());
        }
        let gate = self
            .rate_gate
            .get_or_insert_with(|| Box::new(rates.gate(&self.conn.user, self.conn.role)));
        rates.admit(gate, to, msg_id)
    }
}
