//! The hash map for tables keyed by names clients choose (channels, users,
//! inboxes, client message ids): foldhash with a per-process random seed.
//! SipHash was 6% of the server's CPU in the pairs scenario.

/// A `HashMap` hashed with foldhash, randomly seeded per process.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// An `IndexMap` hashed the same way, for tables walked by position.
pub(crate) type IndexMap<K, V> = indexmap::IndexMap<K, V, foldhash::fast::RandomState>;
