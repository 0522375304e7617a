//! Probes: `/healthz` says the process serves, `/readyz` that it can take
//! clients and messages (store working, client listener accepting).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::hub::Hub;

use super::Api;

/// `GET /healthz`: answered whenever the process serves at all.
pub(super) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Why the server is not ready, if it is not.
pub(crate) fn not_ready(hub: &Hub) -> Vec<&'static str> {
    let mut why = Vec::new();
    if !hub.accepting.load(Ordering::Acquire) {
        why.push("the client listener is not accepting");
    }
    if hub.commit.as_ref().is_some_and(|c| c.is_failing()) {
        why.push("the message store is failing");
    }
    if hub.cluster.as_ref().is_some_and(|c| !c.is_up()) {
        why.push("the cluster's message feed from Redis is down");
    }
    why
}

/// `GET /readyz`: 200 when ready, 503 with the reasons otherwise.
pub(super) async fn readyz(State(api): State<Api>) -> Response {
    let why = not_ready(&api.hub);
    if why.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        let body = json!({ "status": "not_ready", "reasons": why });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
