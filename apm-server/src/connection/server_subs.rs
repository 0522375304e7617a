//! The connection's part of its user's server-side subscriptions (see
//! `server_subs.rs` at the crate root): read them at the start and
//! whenever the user's shard says they changed, then join what is new and
//! leave what is gone, each answered to the client as `ServerSub` or
//! `ServerUnsub`. Only a session granted `SERVER_SUBS` takes part: an
//! older client would not know what to do with a channel it never asked
//! for.

use std::collections::BTreeSet;
use std::sync::Arc;

use tracing::warn;

use crate::shard::{Asker, Command};

use super::Session;

impl Session {
    /// Joins and leaves channels until the session holds exactly its
    /// user's server-side subscriptions.
    pub(super) async fn sync_server_subs(&mut self) {
        // A point read, as the shards do for a conversation coming back:
        // a handful of keys, no disk write.
        let wanted = match self.hub.store.subscriptions(&self.conn.user) {
            Ok(channels) => channels,
            Err(e) => {
                warn!(error = %e, "cannot read the user's server-side subscriptions");
                return;
            }
        };
        let wanted: BTreeSet<Arc<str>> = wanted.into_iter().map(Arc::from).collect();
        let gone: Vec<Arc<str>> = self.server_subs.difference(&wanted).cloned().collect();
        let new: Vec<Arc<str>> = wanted.difference(&self.server_subs).cloned().collect();
        for channel in gone {
            self.server_subs.remove(&channel);
            self.subs.take(&channel);
            let shard = self.hub.shard_of(&channel);
            let cmd = Command::Unsub {
                conn: self.conn.clone(),
                channel,
                asker: Asker::Server,
            };
            self.submit(shard, cmd).await;
        }
        for channel in new {
            self.server_subs.insert(channel.clone());
            // A channel the client holds too is answered `ServerSub` as
            // well: from now on it is the server's to end.
            self.subs.insert(channel.clone());
            let cmd = Command::Sub {
                conn: self.conn.clone(),
                channel: channel.to_string(),
                since: None,
                asker: Asker::Server,
            };
            self.submit(self.hub.shard_of(&channel), cmd).await;
        }
    }

    /// Queues a command of the session's own, charged to the
    /// connection's ingress allowance like a request's (the shard gives it
    /// back).
    async fn submit(&mut self, shard: usize, cmd: Command) {
        self.allowance.charge(cmd.ingress_cost(&self.hub.config));
        self.hub.submit(shard, cmd).await;
    }
}
