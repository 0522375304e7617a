//! Async client SDK for the apm push server.
//!
//! A [`Client`] holds one connection, driven by a single background task
//! that batches what the handles send and routes what the server pushes:
//! channel messages to their [`Subscription`] streams, private messages
//! and broadcasts to the [`Inbox`], presence and connection news to
//! [`Events`]. It answers heartbeats, and after a lost connection it
//! reconnects with jittered exponential back-off, re-authenticates and
//! re-subscribes each channel from the last seq it saw, dropping any
//! message it has already delivered.
//!
//! Receiving is lean: a [`Deliver`] is decoded without a copy (its
//! conversation name and sender are [`ByteString`]s sharing the frame's
//! memory, read as `&str`), the connection task routes everything one read
//! brought before it waits again, and the streams take what is queued in
//! batches.
//!
//! # Examples
//!
//! ```no_run
//! # async fn example() -> Result<(), apm_client::Error> {
//! use apm_client::Client;
//!
//! let alice = Client::builder("127.0.0.1:7600").credentials("alice", "").connect().await?;
//! let receipt = alice.send_to("bob", "hi bob").await?;
//! println!("bob's inbox #{}", receipt.seq);
//! # Ok(())
//! # }
//! ```
//!
//! # Runtime
//!
//! The client runs on the app's tokio runtime: its connection task is
//! spawned on whichever runtime calls [`ClientBuilder::connect`]. An app
//! needs tokio with a runtime (`rt` or `rt-multi-thread`, and `macros`
//! for `#[tokio::main]`); the SDK itself asks only for `net`, `io-util`,
//! `time`, `sync`, `rt` and `macros`.
//!
//! # Presence
//!
//! Subscribe to [`PRESENCE_CHANNEL`] to see users come online and go
//! offline ([`Event::Presence`] on [`Client::events`]); joins and leaves
//! of a channel come to its members the same way.
#![warn(missing_docs, unreachable_pub)]

mod builder;
mod client;
mod connector;
mod error;
mod outbox;
mod state;
mod streams;
mod task;
mod tls;
mod token;

pub use apm_core::message::{
    Conversation, Deliver, HistoryItem, HistoryResponse, PresenceEvent, Receipt, Role, Unread,
    content_kind,
};
/// The server's channel of online and offline events (`$presence`).
pub use apm_core::names::PRESENCE_CHANNEL;
pub use apm_core::{ByteString, ErrorCode};
pub use builder::{Backpressure, ClientBuilder, ReconnectPolicy};
pub use client::{Client, Page, SendOptions};
pub use error::Error;
pub use streams::{Event, Events, Inbox, ServerSubscriptions, Subscription};
pub use token::TokenResult;

/// The workspace README, whose Rust example is compiled as a doctest so it
/// cannot drift from the SDK.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
