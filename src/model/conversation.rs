//! Conversations and their messages as every layer speaks of them: who owns the next reply,
//! who wrote a message, and the records the store keeps. The store persists these; the bot, the
//! handoff side and the HTTP layer read them.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch; every timestamp in the store uses it.
pub type Millis = i64;

/// Who owns the next reply in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    /// The bot answers.
    Bot,
    /// Handed off and waiting in the queue of its skill. The bot stays silent.
    Queued,
    /// Offered to one agent, who has until the offer expires to accept.
    Offered,
    /// An agent owns it.
    Assigned,
    /// Closed.
    Resolved,
}

impl ConversationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationState::Bot => "bot",
            ConversationState::Queued => "queued",
            ConversationState::Offered => "offered",
            ConversationState::Assigned => "assigned",
            ConversationState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bot" => Some(ConversationState::Bot),
            "queued" => Some(ConversationState::Queued),
            "offered" => Some(ConversationState::Offered),
            "assigned" => Some(ConversationState::Assigned),
            "resolved" => Some(ConversationState::Resolved),
            _ => None,
        }
    }

    /// Humans own the conversation (waiting for one, or talking to one): the bot says nothing.
    pub fn human_owned(self) -> bool {
        matches!(
            self,
            ConversationState::Queued | ConversationState::Offered | ConversationState::Assigned
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    pub id: String,
    /// sha256 (hex) of the customer's bearer token; the token itself is never stored.
    pub token_hash: String,
    pub state: ConversationState,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Customer,
    Bot,
    Agent,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Bot => "bot",
            Role::Agent => "agent",
            Role::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Role::Customer),
            "bot" => Some(Role::Bot),
            "agent" => Some(Role::Agent),
            "system" => Some(Role::System),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Monotonic across the whole store: a client resumes "after message id N".
    pub id: i64,
    pub conversation_id: String,
    pub role: Role,
    pub text: String,
    /// For agent messages: the agent's id.
    pub author_id: Option<String>,
    /// For system messages: what happened (`agent_joined`, `agent_left`, `resolved`, ...).
    pub kind: Option<String>,
    /// Details a client shows with the message (sources and options of a bot reply, the agent's
    /// display name, ...).
    pub meta: Option<serde_json::Value>,
    pub client_message_id: Option<String>,
    /// For customer messages: the understanding (intent, knowledge hits, ...) as JSON, once computed.
    pub understanding: Option<serde_json::Value>,
    /// For customer messages: the full turn result returned to the client, once computed. A repeated
    /// POST with the same client_message_id returns exactly this.
    pub result: Option<serde_json::Value>,
    pub created_at: Millis,
}
