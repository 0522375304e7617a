//! Messages from the API: checked as a client's would be, then handed to
//! the shard that owns the target as the same `Send` command, so they are
//! sequenced, stored, de-duplicated and delivered exactly like a client's.
//! The request waits for the receipt (after the fsync with the disk store).

use std::sync::Arc;

use apm_core::message::{Broadcast, Direct, Publish, Receipt};
use apm_core::names::{is_system_channel, validate_name};
use apm_core::{Flags, Frame, Message};
use axum::http::StatusCode;
use bytes::Bytes;

use crate::config::{API_SENDER_PREFIX, check_api_name};
use crate::hub::Hub;
use crate::shard::{Command, Outgoing, Target};

use super::error::ApiError;
use super::slot::ReplySlot;

/// The sender an API caller's message carries: `$api/NAME`.
pub(crate) fn sender(name: &str) -> Result<Arc<str>, ApiError> {
    check_api_name(name).map_err(|e| ApiError::bad_request(format!("sender: {e}")))?;
    Ok(Arc::from(format!("{API_SENDER_PREFIX}{name}")))
}

/// A new message from `sender` to `to`; its receipt once sequenced (and
/// stored, with the disk store).
pub(crate) async fn send(
    hub: &Hub,
    sender: Arc<str>,
    to: Target,
    kind: u16,
    msg_id: u64,
    payload: Bytes,
) -> Result<Receipt, ApiError> {
    check_target(hub, &to)?;
    check_size(hub, &to, kind, msg_id, &payload)?;
    if hub.commit.as_ref().is_some_and(|c| c.is_failing()) {
        return Err(ApiError::unavailable(
            "store_failing",
            "the message store is failing: message not taken, try again later",
        ));
    }
    let shard = match &to {
        Target::Channel(name) | Target::User(name) => hub.shard_of(name),
        Target::Everyone => Hub::BROADCAST_SHARD,
    };
    let slot = ReplySlot::new(hub, sender);
    let cmd = Command::Send(Outgoing {
        conn: slot.conn.clone(),
        request_id: 1,
        flags: Flags::RECEIPT,
        to,
        kind,
        msg_id,
        payload,
    });
    // A backend is told to come back rather than held: its own retry
    // (with the same msg_id) is safe and keeps its request slots free.
    if hub.try_submit(shard, cmd).is_err() {
        return Err(ApiError::unavailable(
            "backlogged",
            "the server is behind (ingress queue or store backlog full): message not taken, \
             try again later",
        ));
    }
    match slot.answer(hub).await?.message {
        Message::Receipt(r) => Ok(r),
        Message::Error(e) => Err(ApiError::internal(format!(
            "refused by the shard: {} ({})",
            e.message, e.code
        ))),
        other => Err(ApiError::internal(format!(
            "the shard answered {:?} to a message",
            other.message_type()
        ))),
    }
}

/// The target's name must be one a client could use: a valid name, and
/// no `$` channel (those belong to the server).
fn check_target(hub: &Hub, to: &Target) -> Result<(), ApiError> {
    match to {
        Target::Channel(name) => {
            validate_name(name, &hub.limits)
                .map_err(|e| ApiError::bad_request(format!("channel: {e}")))?;
            if is_system_channel(name) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "channels starting with $ belong to the server",
                ));
            }
        }
        Target::User(user) => {
            validate_name(user, &hub.limits)
                .map_err(|e| ApiError::bad_request(format!("user: {e}")))?;
        }
        Target::Everyone => {}
    }
    Ok(())
}

/// The message must fit in the frame a client would have sent it in, so
/// an API message is never one a client could not have sent (nor one it
/// could not receive).
fn check_size(
    hub: &Hub,
    to: &Target,
    kind: u16,
    msg_id: u64,
    payload: &Bytes,
) -> Result<(), ApiError> {
    let payload = payload.clone();
    let message = match to {
        Target::Channel(channel) => Message::Publish(Publish {
            channel: channel.clone(),
            kind,
            msg_id,
            payload,
        }),
        Target::User(user) => Message::Direct(Direct {
            user: user.clone(),
            kind,
            msg_id,
            payload,
        }),
        Target::Everyone => Message::Broadcast(Broadcast {
            kind,
            msg_id,
            payload,
        }),
    };
    let max = hub.config.max_frame_len;
    match Frame::new(1, message).to_bytes_limited(max) {
        Ok(_) => Ok(()),
        Err(_) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the message does not fit in a frame of max_frame_len ({max} bytes)"),
        )),
    }
}
