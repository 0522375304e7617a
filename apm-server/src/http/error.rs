//! The HTTP API's errors: a code a program can match, a message a person
//! can read, and the status that fits, always as JSON
//! `{ "error": { "code": ..., "message": ... } }`.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A request the API refused or could not carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Seconds after which a retry may succeed, sent as `Retry-After`.
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 with code `bad_request`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 503 with a retry hint: the server cannot take the request now.
    pub(crate) fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 500: an answer the server should not have given.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The body of the error, also used for one failed call in a batch.
    pub(crate) fn to_json(&self) -> Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }

    /// A request body that could not be read: too large (413), or broken.
    pub(crate) fn from_body(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is larger than the server takes (http_max_body)",
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {rejection}"))
        }
    }

    /// A body or parameters that are not the JSON the method takes.
    pub(crate) fn from_json(e: serde_json::Error) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the request is not what the method takes: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.to_json())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
