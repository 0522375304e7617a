//! The JSON the API takes and gives: method parameters, conversations,
//! payloads, and the answers built from the protocol's replies.

use apm_core::message::{Conversation, HistoryItem, HistoryResponse, Receipt, content_kind};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;

/// Parameters of `publish`, `send` and `broadcast`: the target that fits
/// the method, the payload as `text` or `base64`, and the optional rest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageParams {
    /// The channel (`publish`).
    pub(crate) channel: Option<String>,
    /// The user (`send`).
    pub(crate) user: Option<String>,
    /// The payload as UTF-8 text.
    pub(crate) text: Option<String>,
    /// The payload as standard base64.
    pub(crate) base64: Option<String>,
    /// What the payload holds; `text` (1) for a text payload, `binary`
    /// (0) for a base64 one unless given.
    pub(crate) kind: Option<u16>,
    /// The caller's id for retries: a repeat with the same sender and
    /// `msg_id` gets the first one's seq and is not delivered again.
    #[serde(default)]
    pub(crate) msg_id: u64,
    /// The name after `$api/` the message is sent as; the key's name
    /// unless given.
    pub(crate) sender: Option<String>,
}

impl MessageParams {
    /// The payload and its kind.
    pub(crate) fn payload(&mut self) -> Result<(Bytes, u16), ApiError> {
        match (self.text.take(), self.base64.take()) {
            (Some(text), None) => Ok((Bytes::from(text), self.kind.unwrap_or(content_kind::TEXT))),
            (None, Some(b64)) => {
                let bytes = STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| ApiError::bad_request(format!("`base64` is not base64: {e}")))?;
                Ok((
                    Bytes::from(bytes),
                    self.kind.unwrap_or(content_kind::BINARY),
                ))
            }
            _ => Err(ApiError::bad_request(
                "give the payload as exactly one of `text` and `base64`",
            )),
        }
    }
}

/// A conversation as the API names it: exactly one of
/// `{"channel": NAME}`, `{"user": ID}` (that user's inbox) and
/// `{"broadcast": true}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConversationParams {
    pub(crate) channel: Option<String>,
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) broadcast: bool,
}

impl ConversationParams {
    pub(crate) fn conversation(self) -> Result<Conversation, ApiError> {
        match (self.channel, self.user, self.broadcast) {
            (Some(c), None, false) => Ok(Conversation::Channel(c)),
            (None, Some(u), false) => Ok(Conversation::User(u)),
            (None, None, true) => Ok(Conversation::Broadcast),
            _ => Err(ApiError::bad_request(
                "name the conversation with exactly one of `channel`, `user` and `broadcast: true`",
            )),
        }
    }
}

/// A conversation as the API shows it.
pub(crate) fn conversation(c: &Conversation) -> Value {
    match c {
        Conversation::Channel(name) => json!({ "channel": name }),
        Conversation::User(user) => json!({ "user": user }),
        Conversation::Broadcast => json!({ "broadcast": true }),
    }
}

/// A payload as the API shows it: `text` when it is UTF-8 (the bytes
/// exactly), `base64` otherwise.
fn payload_fields(payload: &Bytes, into: &mut serde_json::Map<String, Value>) {
    match std::str::from_utf8(payload) {
        Ok(text) => into.insert("text".into(), text.into()),
        Err(_) => into.insert("base64".into(), STANDARD.encode(payload).into()),
    };
}

/// The answer to a message sent: where it went, its seq and time, like a
/// client's receipt, with the epoch the seq belongs to.
pub(crate) fn receipt(r: &Receipt, epoch: u64, sender: &str) -> Value {
    json!({
        "conversation": conversation(&r.conversation),
        "seq": r.seq,
        "epoch": epoch,
        "ts_ms": r.ts_ms,
        "sender": sender,
    })
}

/// A history page.
pub(crate) fn history(page: &HistoryResponse, epoch: u64) -> Value {
    let messages: Vec<Value> = page.messages.iter().map(history_item).collect();
    json!({
        "conversation": conversation(&page.conversation),
        "epoch": epoch,
        "oldest": page.oldest,
        "last": page.last,
        "messages": messages,
    })
}

fn history_item(m: &HistoryItem) -> Value {
    let mut item = serde_json::Map::new();
    item.insert("seq".into(), m.seq.into());
    item.insert("ts_ms".into(), m.ts_ms.into());
    item.insert("sender".into(), m.sender.clone().into());
    item.insert("kind".into(), m.kind.into());
    item.insert("msg_id".into(), m.msg_id.into());
    payload_fields(&m.payload, &mut item);
    Value::Object(item)
}

/// Parameters of the paged presence methods.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageParams {
    /// The channel (`channel_members` only).
    pub(crate) channel: Option<String>,
    /// Start after this name (the `next` of the page before).
    pub(crate) after: Option<String>,
    /// Page size; the server caps it (`presence_page_max`).
    pub(crate) limit: Option<u32>,
}

/// Page size when a request gives none.
pub(crate) const DEFAULT_PAGE: u32 = 100;

/// Parameters of `is_online` and `subscriptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserParams {
    pub(crate) user: String,
}

/// Parameters of `subscribe` and `unsubscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscriptionParams {
    pub(crate) user: String,
    pub(crate) channel: String,
}

/// Parameters of `disconnect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisconnectParams {
    pub(crate) user: String,
    /// Refuse the user's tokens until this time (milliseconds since the
    /// Unix epoch); a time in the past lifts an earlier revocation.
    pub(crate) revoke_until_ms: Option<u64>,
}

/// Parameters of `history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryParams {
    pub(crate) channel: Option<String>,
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) broadcast: bool,
    /// Only messages with a seq below this.
    pub(crate) before: Option<u64>,
    /// Only messages with a seq above this.
    pub(crate) after: Option<u64>,
    /// At most this many; the server caps it (`history_page_max`).
    pub(crate) limit: Option<u32>,
}

/// Parameters of `unread`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnreadParams {
    /// Whose read positions.
    pub(crate) user: String,
    /// The conversations, answered in this order.
    pub(crate) conversations: Vec<ConversationParams>,
}

/// Parameters of methods that take none.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoParams {}

/// Parameters of `batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchParams {
    pub(crate) requests: Vec<BatchItem>,
}

/// One call in a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchItem {
    pub(crate) method: String,
    #[serde(default)]
    pub(crate) params: Value,
}
