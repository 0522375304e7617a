//! Users' shared limits by name, and each connection's gate.
//!
//! A user's limits must be shared by all its connections (else a user
//! with 64 connections would get 64 times its rate), so they live in a
//! map keyed by user, in 16 locked parts so that handshakes seldom meet.
//! The map is read only when a connection sends its first message: the
//! connection then holds the user's entry (an `Arc`), and every later
//! message touches only that entry. Entries no connection holds stay, so
//! reconnecting does not refill a user's buckets, until a part grows to
//! twice what it held after its last pruning (at least 64 entries): then
//! the unheld ones go. So the map holds at most about twice the users
//! connected (or 1,024 entries), under a kilobyte each.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use apm_core::message::Role;

use super::limiter::Limiter;
use super::user::{Scope, UserRates};
use super::{RatePolicy, Refusal};
use crate::shard::Target;

/// Parts of the map, each behind its own lock.
const PARTS: usize = 16;

/// Entries a part may hold before it is first pruned.
const MIN_PRUNE_AT: usize = 64;

/// Every user's limits and the policy they follow.
#[derive(Debug)]
pub(crate) struct Registry {
    policy: RatePolicy,
    parts: Box<[Mutex<Part>]>,
    /// Seeded once: picks a user's part and keys a conversation's bucket.
    hasher: foldhash::fast::RandomState,
}

#[derive(Debug, Default)]
struct Part {
    /// By user and whether the session is an admin's: a user id may come
    /// with both kinds of token, and the two have different limits.
    users: HashMap<(Arc<str>, bool), Arc<UserRates>>,
    prune_at: usize,
}

/// What one connection checks its messages against: its own bucket and
/// its user's shared limits.
#[derive(Debug)]
pub(crate) struct Gate {
    connection: Option<Limiter>,
    user: Arc<UserRates>,
    admin: bool,
}

impl Registry {
    pub(crate) fn new(policy: RatePolicy) -> Registry {
        Registry {
            policy,
            parts: (0..PARTS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
        }
    }

    /// Whether messages of a session with this role are never limited.
    pub(crate) fn is_off(&self, role: Role) -> bool {
        self.policy.is_off(role == Role::Admin)
    }

    /// The gate for a connection of `user`; admin sessions are held to
    /// the admin rate alone.
    pub(crate) fn gate(&self, user: &Arc<str>, role: Role) -> Gate {
        let admin = role == Role::Admin;
        let total = if admin {
            self.policy.admin
        } else {
            self.policy.user
        };
        let key = (user.clone(), admin);
        let part = &self.parts[(self.hasher.hash_one(&key) % PARTS as u64) as usize];
        let mut part = part.lock().unwrap_or_else(|e| e.into_inner());
        let shared = match part.users.get(&key) {
            Some(shared) => shared.clone(),
            None => {
                if part.users.len() >= part.prune_at.max(MIN_PRUNE_AT) {
                    part.users.retain(|_, u| Arc::strong_count(u) > 1);
                    part.prune_at = part.users.len() * 2;
                }
                let shared = Arc::new(UserRates::new(total));
                part.users.insert(key, shared.clone());
                shared
            }
        };
        Gate {
            connection: if admin {
                None
            } else {
                self.policy.connection.map(Limiter::new)
            },
            user: shared,
            admin,
        }
    }

    /// Counts a message to `to` with `msg_id` sent through `gate`, or says
    /// which limit refuses it.
    pub(crate) fn admit(&self, gate: &Gate, to: &Target, msg_id: u64) -> Result<(), Refusal> {
        let scope = match to {
            _ if gate.admin => None,
            Target::Channel(name) => Some(Scope {
                key: self.hasher.hash_one((0u8, name.as_str())),
                rate: self.policy.for_channel(name),
                what: "per user into this channel",
            }),
            Target::User(name) => Some(Scope {
                key: self.hasher.hash_one((1u8, name.as_str())),
                rate: self.policy.direct,
                what: "per user to this recipient",
            }),
            Target::Everyone => None,
        };
        gate.user.admit(scope, gate.connection.as_ref(), msg_id)
    }

    /// Users with an entry now, all parts together.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.lock().unwrap().users.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::limiter::slowest;
    use super::*;

    fn policy() -> RatePolicy {
        RatePolicy {
            user: Some(slowest()),
            admin: Some(slowest()),
            ..RatePolicy::off()
        }
    }

    #[test]
    fn a_users_connections_share_its_limit() {
        let rates = Registry::new(policy());
        let alice: Arc<str> = Arc::from("alice");
        let phone = rates.gate(&alice, Role::User);
        let laptop = rates.gate(&alice, Role::User);
        let to = Target::Channel("room".into());
        assert_eq!(rates.admit(&phone, &to, 0), Ok(()));
        assert_eq!(rates.admit(&laptop, &to, 0).unwrap_err().what, "per user");
        // Another user, and the same user as an admin, count apart.
        let bob = rates.gate(&Arc::from("bob"), Role::User);
        assert_eq!(rates.admit(&bob, &to, 0), Ok(()));
        let admin = rates.gate(&alice, Role::Admin);
        assert_eq!(rates.admit(&admin, &Target::Everyone, 0), Ok(()));
        // Reconnecting does not refill the bucket.
        drop((phone, laptop));
        let again = rates.gate(&alice, Role::User);
        assert!(rates.admit(&again, &to, 0).is_err());
    }

    #[test]
    fn users_no_connection_holds_are_pruned() {
        let rates = Registry::new(policy());
        let held: Vec<Gate> = (0..100)
            .map(|i| rates.gate(&Arc::from(format!("held{i}").as_str()), Role::User))
            .collect();
        for i in 0..10_000 {
            drop(rates.gate(&Arc::from(format!("gone{i}").as_str()), Role::User));
        }
        let n = rates.len();
        assert!(n >= held.len(), "{n}");
        assert!(n <= PARTS * (MIN_PRUNE_AT + 1) + 2 * held.len(), "{n}");
    }
}
