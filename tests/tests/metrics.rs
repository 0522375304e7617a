//! `/metrics` against a real server: the scrape parses as the Prometheus
//! text format and its numbers move with traffic.

use std::collections::BTreeMap;

use apm_core::Flags;
use apm_server::StoreKind;
use apm_tests::http::HttpClient;
use apm_tests::{PATIENCE, TestServer};
use hyper::StatusCode;

/// One scrape: each sample's name with its labels (`name{a="b"}`), and its
/// value.
type Samples = BTreeMap<String, f64>;

/// Parses the text format, failing on any line that is neither a comment
/// nor `NAME[{LABELS}] VALUE`, and on a scrape without its end marker.
fn parse(text: &str) -> Samples {
    let mut samples = Samples::new();
    let mut ended = false;
    for line in text.lines() {
        assert!(!ended, "a line after # EOF: {line:?}");
        if line == "# EOF" {
            ended = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap_or("");
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "{line:?}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("NAME VALUE");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.starts_with("apm_")
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line:?}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "twice: {line:?}"
        );
    }
    assert!(ended, "no # EOF");
    samples
}

async fn scrape(http: &HttpClient) -> Samples {
    let answer = http.get("/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        answer.content_type
    );
    parse(&answer.text())
}

/// Scrapes until `done` holds. Shard loops add their counts to the shared
/// counters at the end of a pass, which may come just after the reply a
/// test waited for.
async fn scrape_until(http: &HttpClient, done: impl Fn(&Samples) -> bool) -> Samples {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let samples = scrape(http).await;
        if done(&samples) {
            return samples;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not in time: {samples:#?}"
        );
        tokio::task::yield_now().await;
    }
}

fn get(samples: &Samples, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from {samples:#?}"))
}

#[tokio::test]
async fn a_scrape_parses_needs_no_key_and_moves_with_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    let server = TestServer::start_http(move |c| {
        c.store = StoreKind::Disk;
        c.data_dir = path;
        c.shards = 2;
    })
    .await;
    let http = server.http();
    let before = scrape(&http).await;
    for series in [
        "apm_connections",
        "apm_connections_accepted_total",
        "apm_messages_in_total",
        "apm_messages_out_total",
        "apm_received_bytes_total",
        "apm_sent_bytes_total",
        "apm_slow_consumers_total",
        "apm_duplicates_total",
        "apm_store_backlog",
        "apm_store_commit_seconds_count",
        "apm_store_commit_seconds_bucket{le=\"+Inf\"}",
        "apm_store_batch_messages_sum",
        "apm_ingress_queue_depth{shard=\"0\"}",
        "apm_ingress_queue_depth{shard=\"1\"}",
        "apm_ready",
        "apm_build_info{version=\"0.1.0\"}",
    ] {
        get(&before, series);
    }
    assert_eq!(get(&before, "apm_ready"), 1.0);
    assert_eq!(get(&before, "apm_messages_in_total"), 0.0);

    let mut bob = server.client("bob").await;
    bob.sub("room").await;
    let mut alice = server.client("alice").await;
    for text in ["one", "two", "three"] {
        alice.publish("room", text, Flags::empty()).await;
        bob.deliver().await;
    }
    let after = scrape_until(&http, |s| {
        get(s, "apm_messages_in_total") >= 3.0 && get(s, "apm_store_commit_seconds_count") >= 1.0
    })
    .await;
    assert_eq!(get(&after, "apm_messages_in_total"), 3.0);
    assert_eq!(get(&after, "apm_messages_out_total"), 3.0);
    assert_eq!(get(&after, "apm_connections"), 2.0);
    assert_eq!(get(&after, "apm_connections_accepted_total"), 2.0);
    assert_eq!(get(&after, "apm_store_messages_total"), 3.0);
    assert!(get(&after, "apm_received_bytes_total") > get(&before, "apm_received_bytes_total"));
    assert!(get(&after, "apm_sent_bytes_total") > get(&before, "apm_sent_bytes_total"));
    // Every message is in some batch, and the buckets add up to the count.
    assert_eq!(get(&after, "apm_store_batch_messages_sum"), 3.0);
    assert_eq!(
        get(&after, "apm_store_commit_seconds_bucket{le=\"+Inf\"}"),
        get(&after, "apm_store_commit_seconds_count")
    );
}

#[tokio::test]
async fn probes_need_no_key() {
    let server = TestServer::start_http(|_| {}).await;
    let http = server.http();
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(http.get(path).await.status, StatusCode::OK, "{path}");
    }
}

/// Every metric the Grafana dashboard queries is one the server exports.
#[tokio::test]
async fn the_dashboard_queries_only_exported_metrics() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let server = TestServer::start_http(|_| {}).await;
    let exported: std::collections::BTreeSet<String> = scrape(&server.http())
        .await
        .into_keys()
        .map(|series| series.split('{').next().unwrap_or_default().to_owned())
        .collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (at, _) in expr.match_indices("apm_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exported.contains(&name),
                    "{name} in {expr:?} is not exported"
                );
                queried += 1;
            }
        }
    }
    assert!(queried > 20, "only {queried} metrics queried");
}
