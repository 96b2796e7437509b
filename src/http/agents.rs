//! Agents and integrations over HTTP: login, the agent WebSocket, the customer WebSocket, the
//! queue, and the same actions agents have in the console (claim, assign, transfer, resolve, hand
//! back, write) for systems that do not keep a socket open.

use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::bot::{AgentAssist, EngineError};
use crate::handoff::accounts::{
    hash_password, new_agent, new_token, token_hash, verify_password_off_runtime,
};
use crate::handoff::protocol::{AgentView, ConversationContext, QueueItem};
use crate::handoff::{agent_view, Actor, TransferTarget};
use crate::http::auth::{bearer_token, Admin};
use crate::http::error::{ApiJson, AppError, ErrorBody};
use crate::http::limits::SocketKind;
use crate::state::AppState;
use crate::store::{AgentRecord, HandoffRecord, Millis};

/// Largest WebSocket frame accepted from a client.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Bytes read from a socket at a time. tungstenite allocates this per connection up front (128 KiB
/// by default), which dominated the memory of idle customer sockets; frames are small JSON, and a
/// larger one is still read whole, in several reads.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Frame and buffer sizes shared by both sockets.
fn sized(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
}

/// The agent a bearer token belongs to.
async fn agent_from_token(state: &AppState, token: &str) -> Result<AgentRecord, AppError> {
    let now = state.handoff.clock().now();
    state
        .handoff
        .handoff_store()
        .agent_by_token(&token_hash(token), now)
        .await?
        .ok_or_else(|| AppError::Forbidden("unknown or expired agent token".into()))
}

/// The caller: the admin key, or an agent token.
async fn actor(state: &AppState, headers: &HeaderMap) -> Result<Actor, AppError> {
    let token = bearer_token(headers).ok_or(AppError::MissingToken)?;
    if let Some(admin) = state.settings.admin_key.as_deref() {
        if crate::assets::constant_time_eq(admin.as_bytes(), token.as_bytes()) {
            return Ok(Actor::Admin);
        }
    }
    Ok(Actor::Agent(agent_from_token(state, token).await?))
}

async fn agent_only(state: &AppState, headers: &HeaderMap) -> Result<AgentRecord, AppError> {
    match actor(state, headers).await? {
        Actor::Agent(agent) => Ok(agent),
        Actor::Admin => Err(AppError::Forbidden(
            "this action needs an agent token".into(),
        )),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub name: String,
    pub password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub expires_at: Millis,
    pub agent: AgentView,
}

#[utoipa::path(
    post,
    path = "/v1/agents/login",
    tag = "agents",
    request_body = LoginRequest,
    responses((status = 200, description = "a token for the agent", body = LoginResponse), (status = 400, description = "malformed body or bad field", body = ErrorBody), (status = 403, description = "wrong name or password", body = ErrorBody))
)]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, AppError> {
    let store = state.handoff.handoff_store();
    let agent = store.find_agent_by_name(body.name.trim()).await?;
    // Verify against a real hash even for unknown names, so timing does not reveal which exist.
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let valid = match agent.as_ref().and_then(|a| a.password_hash.as_deref()) {
        Some(hash) => verify_password_off_runtime(body.password, hash.to_string()).await,
        None => {
            let dummy =
                DUMMY.get_or_init(|| hash_password("not a real password").unwrap_or_default());
            let _ = verify_password_off_runtime(body.password, dummy.clone()).await;
            false
        }
    };
    let agent = match (agent, valid) {
        (Some(agent), true) => agent,
        _ => return Err(AppError::Forbidden("wrong name or password".into())),
    };
    let (token, hash) = new_token();
    let now = state.handoff.clock().now();
    let expires_at = now + state.settings.handoff.token_ttl_hours as i64 * 3_600_000;
    store
        .insert_agent_token(&agent.id, &hash, now, expires_at)
        .await?;
    Ok(Json(LoginResponse {
        token,
        expires_at,
        agent: agent_view(&agent),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/agents/logout",
    tag = "agents",
    responses((status = 204, description = "the token is revoked"), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody)),
    security(("agent_token" = []))
)]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let token = bearer_token(&headers).ok_or(AppError::MissingToken)?;
    agent_from_token(&state, token).await?;
    state
        .handoff
        .handoff_store()
        .revoke_agent_token(&token_hash(token))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/agents/me",
    tag = "agents",
    responses((status = 200, description = "the agent, presence and load", body = AgentView), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody)),
    security(("agent_token" = []))
)]
pub async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<AgentView>, AppError> {
    let agent = agent_only(&state, &headers).await?;
    Ok(Json(agent_view(&agent)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Browsers cannot set headers on a WebSocket: the token may come as `?token=`.
    pub token: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/agents/ws",
    tag = "agents",
    params(TokenQuery),
    responses((status = 101, description = "the agent WebSocket (docs/protocol.md)"), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 503, description = "too many sockets open", body = ErrorBody)),
    security(("agent_token" = []))
)]
pub async fn agent_socket(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, AppError> {
    let token = bearer_token(&headers)
        .map(str::to_string)
        .or(query.token)
        .ok_or(AppError::MissingToken)?;
    let agent = agent_from_token(&state, &token).await?;
    let permit = state.limits.open_socket(SocketKind::Agent)?;
    Ok(sized(upgrade).on_upgrade(move |socket| async move {
        crate::http::ws::AgentSession::new(state, agent, socket)
            .run()
            .await;
        drop(permit);
    }))
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/ws",
    tag = "customer",
    params(("id" = String, Path, description = "conversation id"), TokenQuery),
    responses((status = 101, description = "the customer WebSocket (docs/protocol.md)"), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 404, description = "unknown conversation", body = ErrorBody), (status = 503, description = "too many sockets open", body = ErrorBody)),
    security(("conversation_token" = []))
)]
pub async fn customer_socket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, AppError> {
    let token = bearer_token(&headers)
        .map(str::to_string)
        .or(query.token)
        .ok_or(AppError::MissingToken)?;
    match state.engine.authorize(&id, &token).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(AppError::Forbidden(
                "this token does not belong to this conversation".into(),
            ))
        }
        Err(EngineError::ConversationNotFound(_)) => {
            return Err(AppError::NotFound(format!("conversation {id} not found")))
        }
        Err(other) => return Err(other.into()),
    }
    let permit = state.limits.open_socket(SocketKind::Customer)?;
    Ok(sized(upgrade).on_upgrade(move |socket| async move {
        crate::http::ws::CustomerSession::new(state, id, socket)
            .run()
            .await;
        drop(permit);
    }))
}

#[utoipa::path(
    get,
    path = "/v1/queue",
    tag = "agents",
    responses((status = 200, description = "waiting conversations in queue order", body = Vec<QueueItem>), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody)),
    security(("agent_token" = []))
)]
pub async fn queue(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<QueueItem>>, AppError> {
    actor(&state, &headers).await?;
    Ok(Json(state.handoff.queue_view().await?))
}

/// The handoff record of a conversation; 404 when it never reached the human side.
async fn handed_off(state: &AppState, id: &str) -> Result<HandoffRecord, AppError> {
    state
        .handoff
        .handoff_store()
        .get_handoff(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("conversation {id} was never handed off")))
}

/// The full context of a conversation on the human side (its agent, or an admin).
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/context",
    tag = "agents",
    params(("id" = String, Path, description = "conversation id")),
    responses((status = 200, description = "everything needed to take over", body = ConversationContext), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 404, description = "unknown conversation", body = ErrorBody)),
    security(("agent_token" = []))
)]
pub async fn context(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ConversationContext>, AppError> {
    let actor = actor(&state, &headers).await?;
    let handoff = handed_off(&state, &id).await?;
    if let Actor::Agent(agent) = &actor {
        let queued = handoff.state == crate::store::ConversationState::Queued;
        if !queued && handoff.agent_id.as_deref() != Some(agent.id.as_str()) {
            return Err(AppError::NotYours("not your conversation".into()));
        }
    }
    Ok(Json(state.handoff.context(&handoff).await?))
}

/// The assistant for the agent holding a conversation: a summary and a drafted reply grounded
/// in the knowledge base, written by the LLM (`answer.writer = "llm"`). Never sent by itself.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/assist",
    tag = "agents",
    params(("id" = String, Path, description = "conversation id")),
    responses((status = 200, description = "a summary and a draft, or why there are none", body = AgentAssist), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "not your conversation", body = ErrorBody), (status = 404, description = "unknown conversation", body = ErrorBody)),
    security(("agent_token" = []))
)]
pub async fn assist(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AgentAssist>, AppError> {
    let actor = actor(&state, &headers).await?;
    let handoff = handed_off(&state, &id).await?;
    if let Actor::Agent(agent) = &actor {
        if handoff.agent_id.as_deref() != Some(agent.id.as_str()) {
            return Err(AppError::NotYours("not your conversation".into()));
        }
    }
    Ok(Json(state.engine.assist_agent(&id).await?))
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/claim",
    tag = "agents",
    params(("id" = String, Path, description = "conversation id")),
    responses((status = 204, description = "the conversation is yours"), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 404, description = "unknown conversation", body = ErrorBody), (status = 409, description = "taken, not queued, or the agent is full", body = ErrorBody)),
    security(("agent_token" = []))
)]
pub async fn claim(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let agent = agent_only(&state, &headers).await?;
    state.handoff.claim(&agent, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    pub agent_id: String,
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/assign",
    tag = "agents",
    request_body = AssignRequest,
    params(("id" = String, Path, description = "conversation id")),
    responses((status = 204, description = "assigned"), (status = 400, description = "malformed body or bad field", body = ErrorBody), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 404, description = "unknown conversation", body = ErrorBody), (status = 409, description = "taken, not queued, or the agent is full", body = ErrorBody)),
    security(("admin_key" = []))
)]
pub async fn assign(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AssignRequest>,
) -> Result<StatusCode, AppError> {
    state.handoff.assign_to(&id, &body.agent_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    #[serde(default)]
    pub to_agent: Option<String>,
    #[serde(default)]
    pub to_skill: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/transfer",
    tag = "agents",
    request_body = TransferRequest,
    params(("id" = String, Path, description = "conversation id")),
    responses((status = 204, description = "transferred"), (status = 400, description = "malformed body or bad field", body = ErrorBody), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 404, description = "unknown conversation", body = ErrorBody), (status = 409, description = "taken, not queued, or the agent is full", body = ErrorBody)),
    security(("agent_token" = []))
)]
pub async fn transfer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TransferRequest>,
) -> Result<StatusCode, AppError> {
    let actor = actor(&state, &headers).await?;
    let target = match (body.to_agent, body.to_skill) {
        (Some(agent), None) => TransferTarget::Agent(agent),
        (None, Some(skill)) => TransferTarget::Skill(skill),
        _ => {
            return Err(AppError::BadRequest(
                "give exactly one of to_agent and to_skill".into(),
            ))
        }
    };
    state
        .handoff
        .transfer(&actor, &id, target, body.note.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/resolve",
    tag = "agents",
    params(("id" = String, Path, description = "conversation id")),
    responses((status = 204, description = "resolved"), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 404, description = "unknown conversation", body = ErrorBody)),
    security(("agent_token" = []))
)]
pub async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let actor = actor(&state, &headers).await?;
    state.handoff.resolve(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/hand-back",
    tag = "agents",
    params(("id" = String, Path, description = "conversation id")),
    responses((status = 204, description = "the bot answers again"), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 404, description = "unknown conversation", body = ErrorBody)),
    security(("agent_token" = []))
)]
pub async fn hand_back(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let actor = actor(&state, &headers).await?;
    state.handoff.hand_back(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentMessageRequest {
    pub text: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentMessageResponse {
    pub message_id: i64,
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/agent-messages",
    tag = "agents",
    request_body = AgentMessageRequest,
    params(("id" = String, Path, description = "conversation id")),
    responses((status = 201, description = "stored and sent", body = AgentMessageResponse), (status = 400, description = "malformed body or bad field", body = ErrorBody), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 404, description = "unknown conversation", body = ErrorBody), (status = 413, description = "text or body too long", body = ErrorBody)),
    security(("agent_token" = []))
)]
pub async fn agent_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AgentMessageRequest>,
) -> Result<(StatusCode, Json<AgentMessageResponse>), AppError> {
    let agent = agent_only(&state, &headers).await?;
    let message = state.handoff.agent_message(&agent, &id, &body.text).await?;
    Ok((
        StatusCode::CREATED,
        Json(AgentMessageResponse {
            message_id: message.id,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/admin/agents",
    tag = "admin",
    responses((status = 200, description = "every agent", body = Vec<AgentView>), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody)),
    security(("admin_key" = []))
)]
pub async fn list_agents(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<AgentView>>, AppError> {
    let agents = state.handoff.handoff_store().list_agents().await?;
    Ok(Json(agents.iter().map(agent_view).collect()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentRequest {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub password: String,
    #[serde(default)]
    pub skills: Vec<String>,
    #[serde(default)]
    pub capacity: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/v1/admin/agents",
    tag = "admin",
    request_body = CreateAgentRequest,
    responses((status = 201, description = "the new agent", body = AgentView), (status = 400, description = "malformed body or bad field", body = ErrorBody), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 409, description = "the name is taken", body = ErrorBody)),
    security(("admin_key" = []))
)]
pub async fn create_agent(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateAgentRequest>,
) -> Result<(StatusCode, Json<AgentView>), AppError> {
    let agent = new_agent(
        &body.name,
        body.display_name.as_deref(),
        Some(&body.password),
        &body.skills,
        body.capacity
            .unwrap_or(state.settings.handoff.default_capacity),
    )
    .await?;
    let created = state.handoff.handoff_store().create_agent(&agent).await?;
    Ok((StatusCode::CREATED, Json(agent_view(&created))))
}
