//! Persistence for the human side: agent accounts and their login tokens, the queue, offers and
//! assignments, and webhook delivery cursors. Separate from [`super::Store`] so each trait stays
//! small; [`super::SqlStore`] implements both.
//!
//! Every state change of a conversation is written together with its event in one transaction
//! (the `event` argument), so what is broadcast afterwards is always already durable. Capacity is
//! enforced in the same transaction as the assignment (the agent's `active` count), so concurrent
//! claims can never give a conversation two agents or an agent more than its capacity.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{ConversationState, Millis, StoreError};
use crate::nlp::intents::Priority;

/// The presence an agent chose. Whether the agent is *connected* is known only in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Takes new conversations.
    Online,
    /// Keeps their conversations but takes no new ones.
    Away,
    /// Signed off.
    Offline,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Online => "online",
            AgentStatus::Away => "away",
            AgentStatus::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(AgentStatus::Online),
            "away" => Some(AgentStatus::Away),
            "offline" => Some(AgentStatus::Offline),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    /// Login name, unique.
    pub name: String,
    /// What customers see ("Maya from billing").
    pub display_name: String,
    /// argon2 PHC string; None for token-only agents. Never serialised to clients.
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
    pub skills: Vec<String>,
    /// Most conversations held at once (offered + assigned).
    pub capacity: i64,
    pub status: AgentStatus,
    /// Conversations held now (offered + assigned); never above `capacity`.
    pub active: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAgent {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub skills: Vec<String>,
    pub capacity: i64,
}

/// Fields to change on an agent; None leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentUpdate {
    pub display_name: Option<String>,
    pub password_hash: Option<String>,
    pub skills: Option<Vec<String>>,
    pub capacity: Option<i64>,
    pub status: Option<AgentStatus>,
}

/// Where a handed-off conversation queues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueRequest {
    pub skill: String,
    pub priority: Priority,
    /// The handoff reasons (`explicit_request`, ...).
    pub reasons: Vec<String>,
    /// Conversation frustration in [0, 1] at the handoff (0 without a sentiment model); orders
    /// the queue within a priority.
    pub frustration: f32,
    /// The intent the bot read, shown in the queue.
    #[serde(default)]
    pub intent: Option<String>,
    /// The customer message that caused the handoff (trimmed), shown in the queue.
    #[serde(default)]
    pub preview: String,
}

/// An event to append in the same transaction as a state change.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub kind: String,
    pub payload: serde_json::Value,
}

impl EventDraft {
    pub fn new(kind: &str, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.to_string(),
            payload,
        }
    }
}

/// The human-side state of a conversation that has been handed off at least once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoffRecord {
    pub conversation_id: String,
    pub state: ConversationState,
    pub skill: String,
    pub priority: Priority,
    pub reasons: Vec<String>,
    pub frustration: f32,
    /// When it entered the queue (the latest time); waiting time counts from here.
    pub queued_at: Millis,
    /// Requeued after a lost agent: it goes before everything else of its priority.
    pub at_head: bool,
    /// The agent holding it (offered or assigned).
    pub agent_id: Option<String>,
    pub offer_expires_at: Option<Millis>,
    pub assigned_at: Option<Millis>,
    /// The first agent reply since the handoff.
    pub first_response_at: Option<Millis>,
    /// Since when the customer has been waiting for an agent reply (None: the agent spoke last).
    pub waiting_since: Option<Millis>,
    /// Times it went back to the queue because an agent did not answer or disappeared.
    pub reassignments: i64,
    /// Left by the customer when nobody was available.
    pub contact_email: Option<String>,
    pub contact_note: Option<String>,
    /// What the queue shows: the intent the bot read and the message that caused the handoff.
    pub intent: Option<String>,
    pub preview: String,
}

/// How an agent lets go of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Release {
    /// Back to the queue: at its head (reassignment after silence or disconnect; counts as a
    /// reassignment) or by the usual order (declined offer, transfer), optionally to another skill.
    Requeue {
        at_head: bool,
        skill: Option<String>,
    },
    /// Closed.
    Resolve,
    /// Back to the bot.
    HandBack,
}

#[async_trait]
pub trait HandoffStore: Send + Sync {
    // Agents and their tokens.
    /// Fails with `AgentExists` when the name is taken.
    async fn create_agent(&self, agent: &NewAgent) -> Result<AgentRecord, StoreError>;
    async fn get_agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError>;
    async fn find_agent_by_name(&self, name: &str) -> Result<Option<AgentRecord>, StoreError>;
    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// Fails with `AgentNotFound`. A capacity below the agent's current `active` is allowed (the
    /// agent simply gets nothing new until below it).
    async fn update_agent(&self, id: &str, update: &AgentUpdate)
        -> Result<AgentRecord, StoreError>;
    /// Store a login token (its sha256) issued at `now` and valid until `expires_at`. The agent's
    /// tokens that expired by `now` are deleted in the same write, so logins don't pile up rows.
    async fn insert_agent_token(
        &self,
        agent_id: &str,
        token_hash: &str,
        now: Millis,
        expires_at: Millis,
    ) -> Result<(), StoreError>;
    /// The agent a token belongs to, if the token exists and has not expired at `now`.
    async fn agent_by_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> Result<Option<AgentRecord>, StoreError>;
    async fn revoke_agent_token(&self, token_hash: &str) -> Result<(), StoreError>;

    // The queue and assignments.
    /// None for a conversation that was never handed off.
    async fn get_handoff(&self, conversation_id: &str)
        -> Result<Option<HandoffRecord>, StoreError>;
    /// Handoffs in the given states. Queued ones come in queue order: `at_head` first, then
    /// priority (urgent first), then frustration (highest first), then `queued_at` (oldest first).
    async fn list_handoffs(
        &self,
        states: &[ConversationState],
    ) -> Result<Vec<HandoffRecord>, StoreError>;
    /// Conversations an agent holds (offered or assigned), oldest assignment first.
    async fn agent_handoffs(&self, agent_id: &str) -> Result<Vec<HandoffRecord>, StoreError>;
    /// Queue a conversation that is not in the queue (e.g. the customer left a message after the
    /// bot was handed the conversation back). False when it is already queued, offered or assigned.
    async fn enqueue(
        &self,
        conversation_id: &str,
        request: &QueueRequest,
        now: Millis,
        event: &EventDraft,
    ) -> Result<bool, StoreError>;
    /// Queued -> Offered (with `offer_expires_at`) or Assigned (without), atomically with the
    /// agent's capacity. False (and nothing written) when the conversation is no longer queued or
    /// the agent is full.
    async fn assign(
        &self,
        conversation_id: &str,
        agent_id: &str,
        offer_expires_at: Option<Millis>,
        now: Millis,
        event: &EventDraft,
    ) -> Result<bool, StoreError>;
    /// Offered to `agent_id` -> Assigned. False when it is not offered to that agent.
    async fn accept_offer(
        &self,
        conversation_id: &str,
        agent_id: &str,
        now: Millis,
        event: &EventDraft,
    ) -> Result<bool, StoreError>;
    /// Held by `from_agent` -> assigned to `to_agent`, moving one unit of capacity. False when
    /// `from_agent` does not hold it or `to_agent` is full.
    async fn transfer_to_agent(
        &self,
        conversation_id: &str,
        from_agent: &str,
        to_agent: &str,
        now: Millis,
        event: &EventDraft,
    ) -> Result<bool, StoreError>;
    /// `agent_id` lets go of the conversation (see [`Release`]), freeing capacity. False when that
    /// agent does not hold it.
    async fn release(
        &self,
        conversation_id: &str,
        agent_id: &str,
        to: &Release,
        now: Millis,
        event: &EventDraft,
    ) -> Result<bool, StoreError>;
    /// A queued conversation (no agent) closed or handed back by an admin or integration. False
    /// when it is not queued.
    async fn close_queued(
        &self,
        conversation_id: &str,
        to: &Release,
        now: Millis,
        event: &EventDraft,
    ) -> Result<bool, StoreError>;
    /// The agent wrote to the customer: sets `first_response_at` once and clears `waiting_since`.
    async fn record_agent_reply(
        &self,
        conversation_id: &str,
        now: Millis,
    ) -> Result<(), StoreError>;
    /// Store an agent's message and record the reply (as `record_agent_reply`) in one
    /// transaction, if `agent_id` holds the conversation assigned when it commits; `None`, with
    /// nothing stored, when it does not (transferred, released or handed back meanwhile). So the
    /// writer is the holder every later reader sees with the message, and telling the holder
    /// needs no second read. Fails with `ConversationNotFound`.
    async fn insert_agent_reply(
        &self,
        conversation_id: &str,
        agent_id: &str,
        message: &super::NewMessage,
        now: Millis,
    ) -> Result<Option<super::MessageRecord>, StoreError>;
    /// The customer wrote while a human owns the conversation: sets `waiting_since` if unset.
    async fn record_customer_waiting(
        &self,
        conversation_id: &str,
        now: Millis,
    ) -> Result<(), StoreError>;
    /// Contact details left while nobody was available.
    async fn set_contact(
        &self,
        conversation_id: &str,
        email: &str,
        note: &str,
        event: &EventDraft,
    ) -> Result<(), StoreError>;

    // Outgoing webhooks read the event log; each target remembers how far it got.
    async fn webhook_cursor(&self, target: &str) -> Result<i64, StoreError>;
    async fn set_webhook_cursor(&self, target: &str, event_id: i64) -> Result<(), StoreError>;
}
