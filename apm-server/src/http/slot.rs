//! A connection handle that exists only to take a shard's answer to one
//! API request. The shards answer a message with its receipt and a
//! history request with its page by queueing a frame to the asking
//! connection; an API request hands them one of these, so it goes down
//! exactly the path a client's request takes, and the frame queued to it
//! is decoded here.

use std::sync::Arc;

use apm_core::codec::decode_frame_bytes;
use apm_core::message::Role;
use apm_core::{Frame, LENGTH_LEN};

use crate::config::SlowConsumerPolicy;
use crate::hub::Hub;
use crate::outbox::Conn;

use super::error::ApiError;

/// A connection no socket is behind, registered with no shard: only
/// answers are queued to it.
pub(crate) struct ReplySlot {
    pub(crate) conn: Arc<Conn>,
}

impl ReplySlot {
    /// A slot whose connection belongs to `user` (the sender of a message,
    /// or the owner of the inbox a history page is read from).
    pub(crate) fn new(hub: &Hub, user: Arc<str>) -> ReplySlot {
        // Nothing but answers is queued to an unregistered connection;
        // the drop policy makes sure a stray push could never close it.
        let conn = Conn::new(
            hub.next_conn_id(),
            user,
            Role::User,
            16,
            hub.config.outbound_bytes,
            SlowConsumerPolicy::Drop,
        );
        ReplySlot {
            conn: Arc::new(conn),
        }
    }

    /// Waits for the shard's answer. A shard that never answers (the
    /// server stopping) leaves this to the request's timeout.
    pub(crate) async fn answer(&self, hub: &Hub) -> Result<Frame, ApiError> {
        loop {
            // A wake-up that comes between the look and the wait is kept
            // by the notifier, so none is missed.
            if let Some(bytes) = self.conn.pop() {
                if bytes.len() < LENGTH_LEN {
                    return Err(ApiError::internal("the shard's answer is cut short"));
                }
                return decode_frame_bytes(bytes.slice(LENGTH_LEN..), &hub.limits)
                    .map_err(|e| ApiError::internal(format!("the shard's answer: {e}")));
            }
            self.conn.notified().await;
        }
    }
}
