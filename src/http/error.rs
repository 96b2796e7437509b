//! One error type for every handler, mapped to a status and a JSON body in one place. Internal
//! causes are logged with the request's context and never sent to the client.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::engine::EngineError;
use crate::handoff::accounts::CredentialError;
use crate::handoff::HandoffError;
use crate::knowledge::ingest::IngestError;
use crate::knowledge::loaders::LoadError;
use crate::nlp::intent_model::IntentModelError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("message is {actual} characters; the limit is {limit}")]
    TooLong { actual: usize, limit: usize },
    #[error("{0}")]
    BodyTooLarge(String),
    #[error("missing bearer token")]
    MissingToken,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (already assigned, agent full, ...).
    #[error("{0}")]
    Conflict(String),
    /// Input that is well-formed but cannot be used (a document that does not parse).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    /// Too many requests or messages; the client may retry after `retry_after`.
    #[error("too many {what}; retry in {} s", retry_after_secs(*.retry_after))]
    RateLimited {
        retry_after: std::time::Duration,
        what: &'static str,
    },
    /// Anything the client cannot fix; the cause is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::TooLong { .. } | AppError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::MissingToken => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::TooLong { .. } => "message_too_long",
            AppError::BodyTooLarge(_) => "body_too_large",
            AppError::MissingToken => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::Unprocessable(_) => "unprocessable",
            AppError::Unavailable(_) => "unavailable",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::Internal(_) => "internal",
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: bad_request, message_too_long, body_too_large, unauthorized,
    /// forbidden, not_found, conflict, unprocessable, unavailable, rate_limited, internal.
    pub code: &'static str,
    /// For people; never an internal cause.
    pub message: String,
}

/// Whole seconds for `Retry-After`, rounded up (never 0: "retry now" would be refused again).
impl From<crate::limits::LimitError> for AppError {
    fn from(refused: crate::limits::LimitError) -> Self {
        match refused {
            crate::limits::LimitError::RateLimited { retry_after, what } => {
                AppError::RateLimited { retry_after, what }
            }
            crate::limits::LimitError::SocketsFull { .. } => {
                AppError::Unavailable(refused.to_string())
            }
        }
    }
}

pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let AppError::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        } else if let AppError::Unavailable(cause) = &self {
            tracing::warn!(%cause, "request could not be served");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let AppError::RateLimited { retry_after, .. } = &self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_secs(*retry_after)),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<EngineError> for AppError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::ConversationNotFound(id) => {
                AppError::NotFound(format!("conversation {id} not found"))
            }
            EngineError::Encoder(e) => {
                AppError::Unavailable(format!("the language model is unavailable: {e}"))
            }
            EngineError::Store(e) => AppError::Internal(format!("store: {e}")),
            EngineError::Index(e) => AppError::Internal(format!("vector index: {e}")),
            EngineError::Classifier(e) => AppError::Internal(format!("intent classifier: {e}")),
            EngineError::Answer(e) => AppError::Internal(format!("answer writer: {e}")),
            EngineError::CorruptResult(id, e) => {
                AppError::Internal(format!("stored result of message {id}: {e}"))
            }
        }
    }
}

impl From<HandoffError> for AppError {
    fn from(err: HandoffError) -> Self {
        match err {
            HandoffError::ConversationNotFound(_) | HandoffError::AgentNotFound(_) => {
                AppError::NotFound(err.to_string())
            }
            HandoffError::NotHeld(_) => AppError::Forbidden(err.to_string()),
            HandoffError::NotQueued(_)
            | HandoffError::NotOffered(_)
            | HandoffError::AgentFull(_) => AppError::Conflict(err.to_string()),
            HandoffError::Invalid(message) => AppError::BadRequest(message),
            HandoffError::Store(e) => AppError::Internal(format!("store: {e}")),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::AgentExists(_) => AppError::Conflict(err.to_string()),
            StoreError::AgentNotFound(_)
            | StoreError::ConversationNotFound(_)
            | StoreError::MessageNotFound(_) => AppError::NotFound(err.to_string()),
            StoreError::UnsupportedUrl(_)
            | StoreError::CreateDirectory { .. }
            | StoreError::Connect(_)
            | StoreError::Migrate(_)
            | StoreError::TurnAlreadyCompleted(_)
            | StoreError::Corrupt(_)
            | StoreError::Database { .. } => AppError::Internal(format!("store: {err}")),
        }
    }
}

impl From<CredentialError> for AppError {
    fn from(err: CredentialError) -> Self {
        match err {
            CredentialError::TooShort(_) | CredentialError::Invalid(_) => {
                AppError::BadRequest(err.to_string())
            }
            CredentialError::Hash(_) => AppError::Internal(err.to_string()),
        }
    }
}

impl From<IngestError> for AppError {
    fn from(err: IngestError) -> Self {
        match err {
            IngestError::Load(load) => match load {
                LoadError::Unsupported { .. }
                | LoadError::Parse { .. }
                | LoadError::Empty { .. }
                | LoadError::TooLarge { .. } => AppError::Unprocessable(load.to_string()),
                LoadError::Io { .. } => AppError::Internal(load.to_string()),
            },
            IngestError::Encoder(e) => {
                AppError::Unavailable(format!("the language model is unavailable: {e}"))
            }
            IngestError::Index(e) => AppError::Internal(format!("vector index: {e}")),
            IngestError::Store(e) => AppError::Internal(format!("store: {e}")),
        }
    }
}

impl From<IntentModelError> for AppError {
    fn from(err: IntentModelError) -> Self {
        match err {
            IntentModelError::Intents(e) => AppError::Unprocessable(e.to_string()),
            IntentModelError::Training(e) => {
                AppError::Unprocessable(format!("training failed: {e}"))
            }
            IntentModelError::Encoder(e) => {
                AppError::Unavailable(format!("the language model is unavailable: {e}"))
            }
            IntentModelError::Cache { .. } => AppError::Internal(err.to_string()),
        }
    }
}

/// `axum::Json`, with malformed bodies answered as our JSON 400 naming the problem.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> AppError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            AppError::BadRequest(format!("invalid request body: {}", e.body_text()))
        }
        JsonRejection::JsonSyntaxError(e) => {
            AppError::BadRequest(format!("malformed JSON: {}", e.body_text()))
        }
        JsonRejection::MissingJsonContentType(_) => {
            AppError::BadRequest("expected a JSON body with Content-Type: application/json".into())
        }
        JsonRejection::BytesRejection(e) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::BodyTooLarge(format!("request body too large: {}", e.body_text()))
            } else {
                AppError::BadRequest(format!(
                    "could not read the request body: {}",
                    e.body_text()
                ))
            }
        }
        // JsonRejection is non-exhaustive: a future variant is still a client error.
        other => AppError::BadRequest(other.body_text()),
    }
}
