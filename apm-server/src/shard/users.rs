//! The users with connections registered on a shard. Every private
//! message looks its recipient up here, so the lookup is hashed; paged
//! presence queries list the users in name order, from a sorted set of the
//! same names (shared, not copied).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::fast_map::HashMap;
use crate::outbox::Conn;

/// User -> its connections registered on the shard.
#[derive(Debug, Default)]
pub(crate) struct Users {
    conns: HashMap<Arc<str>, Vec<Arc<Conn>>>,
    /// The same users, sorted.
    names: BTreeSet<Arc<str>>,
}

impl Users {
    /// `user`'s connections here.
    pub(super) fn get(&self, user: &str) -> Option<&Vec<Arc<Conn>>> {
        self.conns.get(user)
    }

    /// `user`'s connections here, to change (an emptied list must be
    /// [`Users::remove`]d).
    pub(super) fn get_mut(&mut self, user: &str) -> Option<&mut Vec<Arc<Conn>>> {
        self.conns.get_mut(user)
    }

    /// Whether `user` has a connection here.
    pub(super) fn contains_key(&self, user: &str) -> bool {
        self.conns.contains_key(user)
    }

    /// Adds `conn` to `user`'s connections; their list, after.
    pub(super) fn add(&mut self, user: &Arc<str>, conn: Arc<Conn>) -> &mut Vec<Arc<Conn>> {
        let conns = self.conns.entry(user.clone()).or_insert_with(|| {
            self.names.insert(user.clone());
            Vec::new()
        });
        conns.push(conn);
        conns
    }

    /// Takes `user` off.
    pub(super) fn remove(&mut self, user: &str) {
        if self.conns.remove(user).is_some() {
            self.names.remove(user);
        }
    }

    /// The users, in name order.
    pub(super) fn names(&self) -> &BTreeSet<Arc<str>> {
        &self.names
    }

    /// Every user's connections, in no order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Vec<Arc<Conn>>> {
        self.conns.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SlowConsumerPolicy;
    use apm_core::message::Role;

    fn conn(id: u64, user: &Arc<str>) -> Arc<Conn> {
        Arc::new(Conn::new(
            id,
            user.clone(),
            Role::User,
            1 << 20,
            1 << 20,
            SlowConsumerPolicy::Drop,
        ))
    }

    #[test]
    fn lookups_and_the_sorted_names_agree() {
        let mut users = Users::default();
        let (b, a): (Arc<str>, Arc<str>) = (Arc::from("bob"), Arc::from("alice"));
        users.add(&b, conn(1, &b));
        users.add(&a, conn(2, &a));
        assert_eq!(users.add(&b, conn(3, &b)).len(), 2);
        let names: Vec<&str> = users.names().iter().map(|n| &**n).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(users.get("bob").map(Vec::len), Some(2));
        users.remove("bob");
        assert!(!users.contains_key("bob"));
        assert_eq!(users.names().len(), 1);
        assert_eq!(users.values().count(), 1);
    }
}
