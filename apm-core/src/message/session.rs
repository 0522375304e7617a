//! The handshake and connection control: `Hello`, `Welcome`, `Error`,
//! `Close`, and the session [`Role`] they carry.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// The session's privileges, carried in tokens and `Welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Role {
    /// An ordinary user.
    #[default]
    User,
    /// May `Broadcast`.
    Admin,
}

/// Client to server, the first frame of every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The user id to act as. With token auth it may be empty; if not, it
    /// must equal the token's user.
    pub user: String,
    /// A signed token; empty when the server runs in dev mode.
    pub token: String,
    /// Free-form client name and version, for logs.
    pub client: String,
}

/// Server to client: the handshake succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The server-assigned id of this connection.
    pub session_id: u64,
    /// The authenticated user id; the sender of everything this connection
    /// publishes.
    pub user: String,
    /// The session's role.
    pub role: Role,
    /// Server clock, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
    /// How often the client should send something (a `Ping` if idle).
    pub heartbeat_ms: u32,
    /// After this long with nothing received the server closes.
    pub idle_timeout_ms: u32,
    /// The server's frame limit.
    pub max_frame_len: u32,
    /// Identifies the server's conversation state. Seqs from a session
    /// with another epoch mean nothing here (the server started afresh):
    /// a client resets what it remembers of seqs when this changes.
    pub epoch: u64,
}

/// A request failed, or (for fatal codes) the connection is closing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub code: ErrorCode,
    /// A human-readable detail.
    pub message: String,
}

/// An orderly close with a reason, sent by either side before it closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseBody {
    /// Why.
    pub code: ErrorCode,
    /// A human-readable detail.
    pub reason: String,
}

/// Client to server: a fresh token for the open session, so that the
/// session outlives the token it started with. Sent only to a server that
/// granted [`Capabilities::TOKEN_REFRESH`](crate::Capabilities).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refresh {
    /// The new token: same user and role as the session's.
    pub token: String,
}

/// Server to client: the refreshed token is in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshOk {
    /// When the new token expires, seconds since the Unix epoch: the
    /// server closes the connection with `TokenExpired` then unless
    /// another `Refresh` came first.
    pub exp: u64,
}

/// Client to server: a subscription token, signed by the app's backend,
/// that lets this session use one members-only channel. Sent only to a
/// server that granted [`Capabilities::SUB_TOKEN`](crate::Capabilities).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The subscription token: for this session's user and one channel.
    pub token: String,
}

/// Server to client: the session may now subscribe to, read and (as the
/// channel's rules allow) publish in `channel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantOk {
    /// The channel the token names.
    pub channel: String,
    /// When the subscription token expires, seconds since the Unix epoch:
    /// a session that holds the grant keeps it; a new session needs a
    /// token that has not expired.
    pub exp: u64,
}
