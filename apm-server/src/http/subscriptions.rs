//! `subscribe`, `unsubscribe` and `subscriptions`: a user's server-side
//! subscriptions (see `server_subs.rs` at the crate root).

use apm_core::names::{is_system_channel, validate_name};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::store::SubscriptionChange;

use super::Api;
use super::error::ApiError;
use super::json::{SubscriptionParams, UserParams};

/// The user id, checked as a handshake would: a valid name, not one of
/// the server's own (`$...`).
fn check_user(api: &Api, user: &str) -> Result<(), ApiError> {
    validate_name(user, &api.hub.limits)
        .map_err(|e| ApiError::bad_request(format!("user: {e}")))?;
    if user.starts_with('$') {
        return Err(ApiError::bad_request(
            "user: ids starting with `$` belong to the server",
        ));
    }
    Ok(())
}

/// `subscribe` (`on`) and `unsubscribe`.
pub(super) async fn set(api: &Api, p: SubscriptionParams, on: bool) -> Result<Value, ApiError> {
    check_user(api, &p.user)?;
    validate_name(&p.channel, &api.hub.limits)
        .map_err(|e| ApiError::bad_request(format!("channel: {e}")))?;
    if is_system_channel(&p.channel) {
        return Err(ApiError::bad_request(
            "channel: channels starting with $ belong to the server",
        ));
    }
    let (change, told) = api
        .hub
        .set_subscription(&p.user, &p.channel, on)
        .await
        .map_err(|e| ApiError::unavailable("store_failing", e.to_string()))?;
    if change == SubscriptionChange::Full {
        let max = api.hub.config.max_subscriptions;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_subscriptions",
            format!(
                "the user holds {max} server-side subscriptions, the most allowed (max_subscriptions)"
            ),
        ));
    }
    Ok(json!({
        "user": p.user,
        "channel": p.channel,
        "subscribed": on,
        "changed": change != SubscriptionChange::Unchanged,
        "connections_told": told,
    }))
}

/// `subscriptions`: the user's server-side subscriptions.
pub(super) async fn list(api: &Api, p: UserParams) -> Result<Value, ApiError> {
    check_user(api, &p.user)?;
    let channels = api
        .hub
        .subscriptions(&p.user)
        .await
        .map_err(|e| ApiError::unavailable("store_failing", e.to_string()))?;
    Ok(json!({ "user": p.user, "channels": channels }))
}
