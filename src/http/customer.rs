//! Customer endpoints: start a conversation, send a message, read the conversation.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::bot::{NewConversation, TurnResult};
use crate::http::auth::customer_conversation;
use crate::http::error::{ApiJson, AppError, ErrorBody};
use crate::http::validate;
use crate::state::AppState;
use crate::store::{ConversationState, MessageRecord, Millis, Role};

#[utoipa::path(
    post,
    path = "/v1/conversations",
    tag = "customer",
    responses((status = 201, description = "the conversation and its bearer token", body = NewConversation), (status = 429, description = "rate limited; see Retry-After", body = ErrorBody))
)]
pub async fn create_conversation(
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<NewConversation>), AppError> {
    let conversation = state.engine.create_conversation().await?;
    Ok((StatusCode::CREATED, Json(conversation)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    pub text: String,
    #[serde(default)]
    pub client_message_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/messages",
    tag = "customer",
    request_body = PostMessage,
    params(("id" = String, Path, description = "conversation id")),
    responses((status = 200, description = "the decision, the reply and what was understood", body = TurnResult), (status = 400, description = "malformed body or bad field", body = ErrorBody), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 404, description = "unknown conversation", body = ErrorBody), (status = 413, description = "text or body too long", body = ErrorBody), (status = 429, description = "rate limited; see Retry-After", body = ErrorBody), (status = 503, description = "the model is unavailable or the request timed out", body = ErrorBody)),
    security(("conversation_token" = []))
)]
pub async fn post_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PostMessage>,
) -> Result<Json<TurnResult>, AppError> {
    customer_conversation(&state, &id, &headers).await?;
    let text = validate::message_text(&body.text, state.settings.server.max_message_chars)?;
    validate::client_message_id(body.client_message_id.as_deref())?;
    state.limits.check_message(&id)?;
    let result = state
        .engine
        .handle_customer_message(&id, text, body.client_message_id.as_deref())
        .await?;
    Ok(Json(result))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TranscriptQuery {
    /// Only messages with an id greater than this.
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TranscriptMessage {
    pub id: i64,
    pub role: Role,
    pub text: String,
    pub created_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
    /// For customer messages: the decision taken on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<serde_json::Value>,
    /// System messages: what happened (`agent_joined`, `offline`, `resolved`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Bot replies: sources and options; agent messages: the author; system messages: details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

impl From<MessageRecord> for TranscriptMessage {
    fn from(message: MessageRecord) -> Self {
        let field = |name: &str| message.result.as_ref().and_then(|r| r.get(name)).cloned();
        Self {
            decision: field("decision"),
            reasons: field("reasons"),
            kind: message.kind.clone(),
            meta: message.meta.clone(),
            id: message.id,
            role: message.role,
            text: message.text,
            created_at: message.created_at,
            client_message_id: message.client_message_id,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    pub id: String,
    pub state: ConversationState,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub messages: Vec<TranscriptMessage>,
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}",
    tag = "customer",
    params(("id" = String, Path, description = "conversation id"), TranscriptQuery),
    responses((status = 200, description = "the transcript", body = ConversationView), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 404, description = "unknown conversation", body = ErrorBody)),
    security(("conversation_token" = []))
)]
pub async fn get_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<TranscriptQuery>,
    headers: HeaderMap,
) -> Result<Json<ConversationView>, AppError> {
    let conversation = customer_conversation(&state, &id, &headers).await?;
    let limit = query.limit.unwrap_or(500).clamp(1, 1000);
    let messages = state.engine.transcript(&id, query.after, limit).await?;
    Ok(Json(ConversationView {
        id: conversation.id,
        state: conversation.state,
        created_at: conversation.created_at,
        updated_at: conversation.updated_at,
        messages: messages.into_iter().map(Into::into).collect(),
    }))
}
