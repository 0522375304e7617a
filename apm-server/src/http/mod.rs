//! The HTTP listener: the API for backends under `/api/` (an API key
//! needed), and `/metrics`, `/healthz` and `/readyz` for operators (no
//! key: they say nothing a key protects, and probes carry none).
//!
//! - [`auth`]: API keys and the check each API request passes.
//! - `api`: the methods and `batch`.
//! - `send`: messages, down the shards' path like a client's.
//! - `reads`: presence, history, unread counts, server info.
//! - `subscriptions`: users' server-side subscriptions.
//! - `slot`: the connection handle a shard answers an API request on.
//! - `json`: the JSON shapes; `error`: the JSON errors.
//! - `metrics`, `health`: scrape and probes.
//! - `https`: serving over TLS (`http_tls`), each handshake in its
//!   connection's task.
//!
//! Requests to the API are bounded in body size, number at once and time;
//! the probes and `/metrics` are outside those bounds so that they answer
//! while the API is saturated. API requests are not rate-limited.

mod api;
pub mod auth;
mod error;
mod health;
mod https;
mod json;
mod metrics;
mod reads;
mod send;
mod slot;
mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tracing::{info, warn};

use crate::hub::Hub;

use auth::ApiKeys;
use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
struct Api {
    hub: Arc<Hub>,
    keys: Arc<ApiKeys>,
    registry: Arc<Registry>,
}

/// The HTTP listener as the server was given it.
pub(crate) struct Listener {
    /// The bound socket.
    pub(crate) tcp: TcpListener,
    /// The API keys in force.
    pub(crate) keys: ApiKeys,
    /// TLS (`http_tls`): the client listener's certificate, offering
    /// HTTP/2 and HTTP/1.1.
    pub(crate) tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("tcp", &self.tcp)
            .field("keys", &self.keys)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Serves HTTP (or HTTPS) on `listener` until `shutdown` fires, then
/// finishes the requests under way. The task ends when the last one is
/// answered.
pub(crate) fn start(
    listener: Listener,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let Listener { tcp, keys, tls } = listener;
    let local = tcp.local_addr().ok();
    let addr = local.map(|a| a.to_string()).unwrap_or_default();
    let scheme = if tls.is_some() { "https" } else { "http" };
    if keys.is_open() {
        warn!(
            %addr,
            scheme,
            "INSECURE HTTP API without an API key (dev mode, loopback): set --api-key to require one"
        );
    } else {
        info!(
            %addr,
            scheme,
            "HTTP API (API key needed), /metrics, /healthz, /readyz"
        );
        if tls.is_none() && local.is_some_and(|a| !a.ip().is_loopback()) {
            warn!(
                %addr,
                "INSECURE HTTP API without TLS on a non-loopback address: API keys and \
                 messages cross the network in clear text; set --http-tls true (with \
                 --tls-cert and --tls-key) or put a TLS proxy in front"
            );
        }
    }
    let handshake_timeout = hub.config.handshake_timeout();
    let api = Api {
        registry: Arc::new(metrics::registry(hub.clone())),
        hub,
        keys: Arc::new(keys),
    };
    let app = router(api);
    tokio::spawn(async move {
        let Some(acceptor) = tls else {
            let served = axum::serve(tcp, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(e) = served {
                warn!(error = %e, "HTTP listener failed");
            }
            return;
        };
        https::serve(tcp, acceptor, app, handshake_timeout, shutdown).await;
    })
}

fn router(api: Api) -> Router {
    let config = &api.hub.config;
    let bounds = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            config.http_concurrency,
        ))
        .timeout(Duration::from_millis(config.http_timeout_ms));
    let calls = Router::new()
        .route("/api/{method}", post(api::call))
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            auth::require_key,
        ))
        .layer(DefaultBodyLimit::max(config.http_max_body))
        .layer(bounds);
    Router::new()
        .route("/metrics", get(metrics::scrape))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(calls)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

/// What the bounds refused: too many requests at once, or one too slow.
async fn overloaded(e: tower::BoxError) -> Response {
    if e.is::<tower::timeout::error::Elapsed>() {
        ApiError::unavailable(
            "timeout",
            "the request took longer than http_timeout_ms; a message may still be sequenced: \
             retry with the same msg_id to learn its seq",
        )
    } else if e.is::<tower::load_shed::error::Overloaded>() {
        ApiError::unavailable(
            "overloaded",
            "too many API requests at once (http_concurrency)",
        )
    } else {
        ApiError::internal(e.to_string())
    }
    .into_response()
}

async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path: the API is POST /api/{method}; see API.md",
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "API methods are called with POST; /metrics, /healthz and /readyz with GET",
    )
    .into_response()
}
