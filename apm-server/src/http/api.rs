//! The API's methods, each `POST /api/{method}` with a JSON body, and
//! `batch`, which runs a list of them in order.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::metrics::Metrics;
use crate::shard::Target;

use super::Api;
use super::auth::Caller;
use super::error::ApiError;
use super::json::{self, BatchParams, MessageParams, NoParams};
use super::{reads, send, subscriptions};

/// Calls in one batch at most: each waits for its shard in turn, and all
/// of them must fit in the request's timeout.
const MAX_BATCH: usize = 1000;

/// `POST /api/{method}`.
pub(super) async fn call(
    State(api): State<Api>,
    axum::Extension(Caller(caller)): axum::Extension<Caller>,
    Path(method): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let body = body.map_err(ApiError::from_body)?;
        let params: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(&body).map_err(ApiError::from_json)?
        };
        if method == "batch" {
            batch(&api, &caller, parse(params)?).await
        } else {
            one(&api, &caller, &method, params).await
        }
    };
    match answer.await {
        Ok(value) => Json(value).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Runs each call in order; a failed call is answered with its error and
/// the next one runs.
async fn batch(api: &Api, caller: &Arc<str>, p: BatchParams) -> Result<Value, ApiError> {
    if p.requests.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "a batch holds at most {MAX_BATCH} calls"
        )));
    }
    let mut replies = Vec::with_capacity(p.requests.len());
    for item in p.requests {
        let reply = if item.method == "batch" {
            Err(ApiError::bad_request("a batch cannot hold a batch"))
        } else {
            one(api, caller, &item.method, item.params).await
        };
        replies.push(match reply {
            Ok(result) => json!({ "result": result }),
            Err(e) => e.to_json(),
        });
    }
    Ok(json!({ "replies": replies }))
}

/// Parses a method's parameters (`null` counts as none given).
fn parse<T: DeserializeOwned>(params: Value) -> Result<T, ApiError> {
    let params = if params.is_null() { json!({}) } else { params };
    serde_json::from_value(params).map_err(ApiError::from_json)
}

/// Runs one method.
async fn one(api: &Api, caller: &Arc<str>, method: &str, params: Value) -> Result<Value, ApiError> {
    let hub = &*api.hub;
    Metrics::add(&hub.metrics.api_requests, 1);
    match method {
        "publish" | "send" | "broadcast" => message(api, caller, method, parse(params)?).await,
        "is_online" => {
            let p: json::UserParams = parse(params)?;
            reads::is_online(hub, p.user).await
        }
        "online_users" | "channel_members" | "channels" => {
            reads::page(hub, method, parse(params)?).await
        }
        "history" => {
            let sender = send::sender(caller)?;
            reads::history(hub, sender, parse(params)?).await
        }
        "unread" => reads::unread(hub, parse(params)?).await,
        "disconnect" => disconnect(api, parse(params)?).await,
        "subscribe" => subscriptions::set(api, parse(params)?, true).await,
        "unsubscribe" => subscriptions::set(api, parse(params)?, false).await,
        "subscriptions" => subscriptions::list(api, parse(params)?).await,
        "info" => {
            let _: NoParams = parse(params)?;
            reads::info(hub).await
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_method",
            format!("no method {method:?}; see API.md"),
        )),
    }
}

/// `disconnect`: closes every connection of the user, telling its SDK not
/// to reconnect (`Kicked`), or revokes its tokens until a time first
/// (`Revoked`, kept in the store).
async fn disconnect(api: &Api, p: json::DisconnectParams) -> Result<Value, ApiError> {
    if apm_core::names::validate_name(&p.user, &api.hub.limits).is_err() {
        return Err(ApiError::bad_request(format!(
            "{:?} is not a valid user id",
            p.user
        )));
    }
    let closed = api
        .hub
        .disconnect_user(&p.user, p.revoke_until_ms)
        .await
        .map_err(|e| ApiError::unavailable("store_failing", e.to_string()))?;
    let revoked_until_ms = api.hub.revoked_until(&p.user);
    Ok(serde_json::json!({
        "user": p.user,
        "connections_closed": closed,
        "revoked_until_ms": revoked_until_ms,
    }))
}

/// `publish`, `send` and `broadcast`.
async fn message(
    api: &Api,
    caller: &Arc<str>,
    method: &str,
    mut p: MessageParams,
) -> Result<Value, ApiError> {
    let to = match (method, p.channel.take(), p.user.take()) {
        ("publish", Some(channel), None) => Target::Channel(channel),
        ("send", None, Some(user)) => Target::User(user),
        ("broadcast", None, None) => Target::Everyone,
        ("publish", ..) => return Err(ApiError::bad_request("`publish` takes `channel` only")),
        ("send", ..) => return Err(ApiError::bad_request("`send` takes `user` only")),
        _ => {
            return Err(ApiError::bad_request(
                "`broadcast` takes neither `channel` nor `user`",
            ));
        }
    };
    let sender = send::sender(p.sender.as_deref().unwrap_or(caller))?;
    let (payload, kind) = p.payload()?;
    let hub = &*api.hub;
    let receipt = send::send(hub, sender.clone(), to, kind, p.msg_id, payload).await?;
    Ok(json::receipt(&receipt, hub.epoch(), &sender))
}
