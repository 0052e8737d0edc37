//! Errors: [`Error`] for starting the server, [`ApiError`] for one request's answer.

use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why the studio could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be listened on (taken, or not this machine's).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The system would not give random bytes for the session token.
    #[error("no random source for the studio token: {0}")]
    Random(getrandom::Error),
    /// The operating system refused an operation on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
}

/// A failed request: status, a one-line message and a hint, sent as
/// `{"error": ..., "hint": ...}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// One line saying what went wrong.
    pub error: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl ApiError {
    /// An error with this status, message and hint.
    pub fn new(status: StatusCode, error: impl Into<String>, hint: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            hint: Some(hint.into()),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, hint)
    }

    /// 404: `what` does not exist.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            what,
            "reload the page; it may have been removed",
        )
    }

    /// 409: the request conflicts with what is running.
    pub fn conflict(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, error, hint)
    }

    /// 500: something failed on our side.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: error.to_string(),
            hint: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "hint": self.hint });
        (self.status, Json(body)).into_response()
    }
}
