//! One error type for every handler, mapped to a status and a JSON body in one place. Internal
//! causes are logged with the request's context and never sent to the client.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::bot::EngineError;
use crate::handoff::accounts::CredentialError;
use crate::handoff::HandoffError;
use crate::knowledge::ingest::IngestError;
use crate::knowledge::loaders::LoadError;
use crate::nlp::intent_model::IntentModelError;
use crate::state::KnowledgeChangeError;
use crate::store::StoreError;

/// Every error code a client can be sent, over HTTP and over the WebSockets alike: one
/// vocabulary, with the HTTP status that carries each (a WebSocket `error` frame carries the code
/// alone). docs/api.md and docs/protocol.md list them; a test checks the lists agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A field or value the server cannot accept (malformed JSON, empty text, a bad id).
    BadRequest,
    /// A WebSocket frame that is not a baton.v1 command (not JSON text, unknown type).
    BadFrame,
    MessageTooLong,
    BodyTooLarge,
    /// No bearer token.
    Unauthorized,
    /// A token that does not open this resource.
    Forbidden,
    /// An agent acting on a conversation another agent (or nobody) holds.
    NotYours,
    NotFound,
    /// The conversation is not in the state the action needs (not queued, not offered).
    Conflict,
    /// The agent is at capacity.
    AgentFull,
    /// Well-formed input that cannot be used (a document or intents file that does not parse).
    Unprocessable,
    RateLimited,
    /// Not processed now (the model is not answering, the request timed out): send it again.
    Unavailable,
    /// The socket could not be caught up; reconnect and resume.
    ResumeFailed,
    SyncFailed,
    /// Anything the client cannot fix; the cause is logged, never sent.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::BadRequest,
        ErrorCode::BadFrame,
        ErrorCode::MessageTooLong,
        ErrorCode::BodyTooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotYours,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::AgentFull,
        ErrorCode::Unprocessable,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::ResumeFailed,
        ErrorCode::SyncFailed,
        ErrorCode::Internal,
    ];

    /// The code as clients see it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::MessageTooLong => "message_too_long",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotYours => "not_yours",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::AgentFull => "agent_full",
            ErrorCode::Unprocessable => "unprocessable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::SyncFailed => "sync_failed",
            ErrorCode::Internal => "internal",
        }
    }

    /// The status of an HTTP response with this code. `bad_frame`, `resume_failed` and
    /// `sync_failed` only travel in WebSocket frames; their statuses are what they would mean.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest | ErrorCode::BadFrame => StatusCode::BAD_REQUEST,
            ErrorCode::MessageTooLong | ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::NotYours => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict | ErrorCode::AgentFull => StatusCode::CONFLICT,
            ErrorCode::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ResumeFailed | ErrorCode::SyncFailed | ErrorCode::Internal => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// The error of every handler and of every WebSocket command: a code from [`ErrorCode`] and a
/// message for people. Internal causes are logged where the error is answered, never sent.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    BadFrame(String),
    #[error("message is {actual} characters; the limit is {limit}")]
    TooLong { actual: usize, limit: usize },
    #[error("{0}")]
    BodyTooLarge(String),
    #[error("missing bearer token")]
    MissingToken,
    #[error("{0}")]
    Forbidden(String),
    /// An agent acting on a conversation it does not hold.
    #[error("{0}")]
    NotYours(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (already assigned, not offered, ...).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    AgentFull(String),
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
    /// A socket that could not be caught up (`ResumeFailed` or `SyncFailed`).
    #[error("{message}")]
    Resync {
        code: ErrorCode,
        message: &'static str,
    },
    /// Anything the client cannot fix; the cause is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::BadRequest(_) => ErrorCode::BadRequest,
            AppError::BadFrame(_) => ErrorCode::BadFrame,
            AppError::TooLong { .. } => ErrorCode::MessageTooLong,
            AppError::BodyTooLarge(_) => ErrorCode::BodyTooLarge,
            AppError::MissingToken => ErrorCode::Unauthorized,
            AppError::Forbidden(_) => ErrorCode::Forbidden,
            AppError::NotYours(_) => ErrorCode::NotYours,
            AppError::NotFound(_) => ErrorCode::NotFound,
            AppError::Conflict(_) => ErrorCode::Conflict,
            AppError::AgentFull(_) => ErrorCode::AgentFull,
            AppError::Unprocessable(_) => ErrorCode::Unprocessable,
            AppError::Unavailable(_) => ErrorCode::Unavailable,
            AppError::RateLimited { .. } => ErrorCode::RateLimited,
            AppError::Resync { code, .. } => *code,
            AppError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn status(&self) -> StatusCode {
        self.code().status()
    }

    /// Log what the client will not be told (an internal cause) or should be noticed (a service
    /// that could not answer), once, where the error is answered.
    pub fn log(&self) {
        match self {
            AppError::Internal(cause) => tracing::error!(%cause, "request failed"),
            AppError::Unavailable(cause) => tracing::warn!(%cause, "request could not be served"),
            _ => {}
        }
    }

    /// What the client is told: the message, except for internal errors.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Internal(_) => "something went wrong; try again".to_string(),
            other => other.to_string(),
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
    /// Machine-readable, one of [`ErrorCode`]: bad_request, message_too_long, body_too_large,
    /// unauthorized, forbidden, not_yours, not_found, conflict, agent_full, unprocessable,
    /// unavailable, rate_limited, internal.
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
        self.log();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().as_str(),
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
            HandoffError::NotHeld(_) => AppError::NotYours(err.to_string()),
            HandoffError::NotQueued(_) | HandoffError::NotOffered(_) => {
                AppError::Conflict(err.to_string())
            }
            HandoffError::AgentFull(_) => AppError::AgentFull(err.to_string()),
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

impl From<KnowledgeChangeError> for AppError {
    fn from(err: KnowledgeChangeError) -> Self {
        match err {
            KnowledgeChangeError::Ingest(e) => e.into(),
            KnowledgeChangeError::Index(e) => AppError::Internal(format!("vector index: {e}")),
            KnowledgeChangeError::Vocabulary(e) => e.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The one table, as the documents show it: every code a client can get is documented, the
    /// HTTP ones in docs/api.md's table with the status they travel with, the socket-only ones
    /// in docs/protocol.md.
    #[test]
    fn every_code_is_documented_with_its_status() {
        let api = doc("api.md");
        let protocol = doc("protocol.md");
        let socket_only = [
            ErrorCode::BadFrame,
            ErrorCode::ResumeFailed,
            ErrorCode::SyncFailed,
        ];
        let mut names = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(names.insert(code.as_str()), "{code:?} repeats a name");
            let quoted = format!("`{}`", code.as_str());
            if socket_only.contains(&code) {
                assert!(
                    protocol.contains(&quoted),
                    "{quoted} missing from docs/protocol.md"
                );
                continue;
            }
            let row = api
                .lines()
                .find(|line| line.starts_with('|') && line.contains(&quoted))
                .unwrap_or_else(|| panic!("{quoted} missing from docs/api.md's table"));
            assert!(
                row.starts_with(&format!("| {} |", code.status().as_u16())),
                "docs/api.md gives {quoted} another status than {}: {row}",
                code.status()
            );
        }
    }

    #[test]
    fn handoff_refusals_keep_their_own_codes_over_http_and_websockets() {
        let code = |err: HandoffError| AppError::from(err).code();
        assert_eq!(code(HandoffError::NotHeld("c".into())), ErrorCode::NotYours);
        assert_eq!(
            code(HandoffError::AgentFull("a".into())),
            ErrorCode::AgentFull
        );
        assert_eq!(
            code(HandoffError::NotQueued("c".into())),
            ErrorCode::Conflict
        );
        assert_eq!(ErrorCode::NotYours.status(), StatusCode::FORBIDDEN);
        assert_eq!(ErrorCode::AgentFull.status(), StatusCode::CONFLICT);
        // An internal cause is never what the client reads.
        let internal = AppError::Internal("pool timed out on 10.0.0.5".into());
        assert!(!internal.public_message().contains("10.0.0.5"));
        assert!(!internal.to_string().contains("10.0.0.5"));
    }
}
