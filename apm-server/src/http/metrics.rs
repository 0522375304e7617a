//! `GET /metrics`: the server's counters in the Prometheus text format,
//! read at scrape time from what the server already keeps (the
//! [`Metrics`] atomics, the ingress queues' lengths, the store's backlog),
//! so serving them adds nothing to the message path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::hub::Hub;
use crate::metrics::{HistogramSnapshot, Metrics};

use super::Api;

/// The content type of the OpenMetrics text `prometheus-client` writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Each counter: its name without the `apm_` prefix and `_total` suffix,
/// its help, and where it is kept.
type CounterRow = (&'static str, &'static str, fn(&Metrics) -> &AtomicU64);

const COUNTERS: &[CounterRow] = &[
    (
        "connections_accepted",
        "Client connections accepted.",
        |m| &m.connections_accepted,
    ),
    (
        "connections_refused",
        "Client connections refused at the connection limit.",
        |m| &m.connections_refused,
    ),
    ("accept_errors", "Accept calls that failed.", |m| {
        &m.accept_errors
    }),
    (
        "auth_failures",
        "Handshakes that failed (bad token, timeout, bad first frame).",
        |m| &m.auth_failures,
    ),
    ("frames_received", "Frames received from clients.", |m| {
        &m.frames_in
    }),
    ("received_bytes", "Bytes received from clients.", |m| {
        &m.bytes_in
    }),
    ("sent_bytes", "Bytes written to client sockets.", |m| {
        &m.bytes_out
    }),
    (
        "messages_in",
        "Messages sequenced (publish, private, broadcast; clients and API).",
        |m| &m.messages_in,
    ),
    (
        "messages_out",
        "Message copies queued to connections (deliveries).",
        |m| &m.messages_out,
    ),
    (
        "duplicates",
        "Retries dropped as duplicates (same sender and msg_id).",
        |m| &m.duplicates,
    ),
    (
        "cluster_copies",
        "Cluster mode: messages that arrived again (the feed brings a node's own back); dropped.",
        |m| &m.cluster_copies,
    ),
    (
        "cluster_gaps",
        "Cluster mode: gaps in a conversation read from its stream.",
        |m| &m.cluster_gaps,
    ),
    (
        "cluster_gaps_lost",
        "Cluster mode: messages a gap read did not find (trimmed from the stream); skipped.",
        |m| &m.cluster_gaps_lost,
    ),
    (
        "cluster_held_let_go",
        "Cluster mode: messages behind a gap let go for lack of room, read again from the stream.",
        |m| &m.cluster_held_let_go,
    ),
    (
        "cluster_feed_deaf",
        "Cluster mode: times the feed heard nothing, not even its probe, and subscribed again.",
        |m| &m.cluster_feed_deaf,
    ),
    (
        "cluster_nodes_lapsed",
        "Cluster mode: nodes whose presence lease lapsed, taken off the cluster's presence.",
        |m| &m.cluster_nodes_lapsed,
    ),
    (
        "cluster_refused",
        "Cluster mode: new messages refused because too many bytes waited for Redis.",
        |m| &m.cluster_refused,
    ),
    (
        "cluster_acks_failed",
        "Cluster mode: read positions not written to Redis; they hold on the node that took them.",
        |m| &m.cluster_acks_failed,
    ),
    (
        "messages_dropped",
        "Message copies dropped for full queues (drop policy).",
        |m| &m.messages_dropped,
    ),
    (
        "slow_consumers",
        "Connections closed as slow consumers.",
        |m| &m.slow_consumers,
    ),
    (
        "rate_limited",
        "Messages refused for going over a rate limit.",
        |m| &m.rate_limited,
    ),
    (
        "protocol_errors",
        "Connections closed for protocol violations.",
        |m| &m.protocol_errors,
    ),
    ("idle_timeouts", "Connections closed for idleness.", |m| {
        &m.idle_timeouts
    }),
    (
        "store_batches",
        "Batches the store made durable (one fsync each).",
        |m| &m.store_batches,
    ),
    ("store_messages", "Messages the store made durable.", |m| {
        &m.store_messages
    }),
    (
        "store_errors",
        "Store writes that failed and were retried.",
        |m| &m.store_errors,
    ),
    ("api_requests", "HTTP API calls answered.", |m| {
        &m.api_requests
    }),
    (
        "api_auth_failures",
        "HTTP API requests refused for a missing or wrong key.",
        |m| &m.api_auth_failures,
    ),
];

/// Reads the server's state at each scrape.
#[derive(Debug)]
struct Exporter {
    hub: Arc<Hub>,
}

impl Exporter {
    fn gauge(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: i64,
    ) -> Result<(), std::fmt::Error> {
        let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(value).encode(metric)
    }

    fn histogram(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        h: &HistogramSnapshot,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum, h.count, &h.buckets, None,
        )
    }
}

impl Collector for Exporter {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let hub = &*self.hub;
        let m = &*hub.metrics;
        for (name, help, counter) in COUNTERS {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(counter(m).load(Ordering::Relaxed)).encode(metric)?;
        }
        let open = m.connections_open.load(Ordering::Relaxed);
        Self::gauge(
            &mut encoder,
            "connections",
            "Client connections open.",
            gauge(open),
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "ingress_queue_depth",
                "Commands waiting in each shard's ingress queue.",
                None,
                MetricType::Gauge,
            )?;
            for (i, ingress) in hub.shards.iter().enumerate() {
                let labels = [("shard", i.to_string())];
                let metric = family.encode_family(&labels)?;
                ConstGauge::new(gauge(ingress.len() as u64)).encode(metric)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "loop_busy_seconds",
                "Seconds each shard's forwarding loop spent handling commands.",
                None,
                MetricType::Counter,
            )?;
            for (i, ingress) in hub.shards.iter().enumerate() {
                let labels = [("shard", i.to_string())];
                let metric = family.encode_family(&labels)?;
                let ns = ingress.busy_ns.load(Ordering::Relaxed);
                ConstCounter::new(ns as f64 / 1e9).encode(metric)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "handshake_refusals",
                "Handshakes refused, by reason.",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in m.handshake_refusals.snapshot() {
                let labels = [("reason", reason.to_owned())];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(n).encode(metric)?;
            }
        }
        let (backlog, failing) = match &hub.commit {
            Some(c) => (c.backlog() as u64, c.is_failing()),
            None => (0, false),
        };
        Self::gauge(
            &mut encoder,
            "store_backlog",
            "Messages and replies waiting for the disk.",
            gauge(backlog),
        )?;
        Self::gauge(
            &mut encoder,
            "store_failing",
            "1 while store writes fail (new messages are refused).",
            i64::from(failing),
        )?;
        Self::gauge(
            &mut encoder,
            "ready",
            "1 when the server takes clients and messages (as /readyz).",
            i64::from(super::health::not_ready(hub).is_empty()),
        )?;
        Self::gauge(
            &mut encoder,
            "shards",
            "Forwarding loops.",
            hub.shards.len() as i64,
        )?;
        Self::gauge(
            &mut encoder,
            "uptime_seconds",
            "Seconds since the server started.",
            gauge(hub.started.elapsed().as_secs()),
        )?;
        Self::histogram(
            &mut encoder,
            "store_commit_seconds",
            "Seconds each store batch took to write and fsync.",
            &m.store_commit_seconds.snapshot(),
        )?;
        Self::histogram(
            &mut encoder,
            "store_batch_messages",
            "Messages in each store batch.",
            &m.store_batch_messages.snapshot(),
        )?;
        let info =
            encoder.encode_descriptor("build", "The server's version.", None, MetricType::Info)?;
        prometheus_client::metrics::info::Info::new([("version", env!("CARGO_PKG_VERSION"))])
            .encode(info)
    }
}

/// A count as a gauge's value (which is signed).
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The registry `/metrics` encodes: everything under the `apm_` prefix.
pub(super) fn registry(hub: Arc<Hub>) -> Registry {
    let mut registry = Registry::with_prefix("apm");
    registry.register_collector(Box::new(Exporter { hub }));
    registry
}

/// `GET /metrics`.
pub(super) async fn scrape(State(api): State<Api>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &api.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded",
        )
            .into_response(),
    }
}
