//! Server-side subscriptions: channels a backend subscribes a user to.
//! They belong to the user, not to a connection: kept in the store, read
//! by each of the user's connections at its handshake and again whenever
//! they change, so every device holds them now and after it reconnects.
//!
//! A change is written to the store first, then the user's shard tells
//! the user's connections, each of which reads the store again and joins
//! or leaves channels to match (`connection/server_subs.rs`). Reading
//! after being told, rather than being handed the change, keeps two
//! changes that race from landing in different orders in the store and in
//! a connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::hub::Hub;
use crate::shard::Command;
use crate::store::{StoreError, SubscriptionChange};

impl Hub {
    /// Adds (`on`) or removes `user`'s server-side subscription to
    /// `channel` and tells the user's connections. Answers what changed
    /// and how many connections were told.
    pub(crate) async fn set_subscription(
        self: &Arc<Self>,
        user: &str,
        channel: &str,
        on: bool,
    ) -> Result<(SubscriptionChange, u32), StoreError> {
        let store = self.store.clone();
        let (owned_user, owned_channel) = (user.to_owned(), channel.to_owned());
        let max = self.config.max_subscriptions;
        let change = tokio::task::spawn_blocking(move || {
            store.set_subscription(&owned_user, &owned_channel, on, max)
        })
        .await
        .map_err(|e| StoreError::Db(e.to_string()))??;
        if change == SubscriptionChange::Added {
            // Before the shard hears of it: a connection registered after
            // the shard passed this point reads the store at its start.
            self.subscriptions_used.store(true, Ordering::SeqCst);
        }
        if matches!(
            change,
            SubscriptionChange::Unchanged | SubscriptionChange::Full
        ) {
            return Ok((change, 0));
        }
        let (reply, told) = tokio::sync::oneshot::channel();
        self.submit_now(
            self.shard_of(user),
            Command::SubscriptionsChanged {
                user: user.into(),
                reply,
            },
        );
        Ok((change, told.await.unwrap_or(0)))
    }

    /// `user`'s server-side subscriptions, in name order.
    pub(crate) async fn subscriptions(
        self: &Arc<Self>,
        user: &str,
    ) -> Result<Vec<String>, StoreError> {
        let store = self.store.clone();
        let user = user.to_owned();
        tokio::task::spawn_blocking(move || store.subscriptions(&user))
            .await
            .map_err(|e| StoreError::Db(e.to_string()))?
    }

    /// Whether a connection needs to look for server-side subscriptions:
    /// false until the first one is made (or found at start).
    pub(crate) fn subscriptions_used(&self) -> bool {
        self.subscriptions_used.load(Ordering::SeqCst)
    }
}
