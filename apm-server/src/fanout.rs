//! Fan-out: one encoded frame queued to many connections.

use std::sync::Arc;

use bytes::Bytes;
use indexmap::IndexMap;
use rayon::prelude::*;

use crate::metrics::Metrics;
use crate::outbox::{Conn, Pushed};

/// A channel's members: connection id -> connection. An `IndexMap` keeps
/// them in one contiguous array for the fan-out and removes in O(1).
pub type Members = IndexMap<u64, Arc<Conn>>;

/// Queues `frame` to `conn` unless it is `except`; counts what went wrong.
/// Returns 1 if queued.
pub fn deliver(metrics: &Metrics, conn: &Conn, frame: &Bytes, except: u64) -> u64 {
    if conn.id == except {
        return 0;
    }
    match conn.push(frame.clone()) {
        Pushed::Queued => 1,
        Pushed::Dropped => {
            Metrics::add(&metrics.messages_dropped, 1);
            0
        }
        Pushed::SlowConsumer => {
            Metrics::add(&metrics.slow_consumers, 1);
            0
        }
        Pushed::Closed => 0,
    }
}

/// Queues the same `frame` (a shared `Bytes`, never re-encoded) to every
/// member but `except`; with `parallel`, across rayon's threads. Returns
/// how many were queued.
pub fn fan_out(
    metrics: &Metrics,
    members: &Members,
    frame: &Bytes,
    except: u64,
    parallel: bool,
) -> u64 {
    let n = if parallel {
        members
            .par_values()
            .map(|c| deliver(metrics, c, frame, except))
            .sum()
    } else {
        members
            .values()
            .map(|c| deliver(metrics, c, frame, except))
            .sum()
    };
    Metrics::add(&metrics.messages_out, n);
    n
}
