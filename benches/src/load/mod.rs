//! The `apm-load` load tester: the same scenarios against apm and its
//! peers (NATS, Redis pub/sub, Mosquitto), measured in one run, and durable
//! publishing against Redis Streams.

pub mod connections;
pub mod durable;
pub mod floor;
pub mod nats_cluster;
pub mod procfs;
pub mod report;
pub mod scenario;
pub mod server;
pub mod tally;
pub mod target;
