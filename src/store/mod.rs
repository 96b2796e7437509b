//! Durable state: conversations, messages, the knowledge base's documents and chunks, and an
//! append-only event log. One trait, [`Store`]; one implementation over sqlx that speaks both
//! SQLite (the embedded default) and PostgreSQL (scale-out), chosen by the database URL. The shared
//! contract tests in `tests/store_contract.rs` run against both.

pub mod handoff;
pub mod sql;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::Document;

pub use handoff::{
    AgentRecord, AgentStatus, AgentUpdate, EventDraft, HandoffRecord, HandoffStore, NewAgent,
    QueueRequest, Release,
};
pub use sql::SqlStore;

pub use crate::model::conversation::{
    ConversationRecord, ConversationState, MessageRecord, Millis, Role,
};

/// Outcome of storing a customer message.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerInsert {
    /// Stored for the first time.
    New(MessageRecord),
    /// A message with the same client_message_id already exists in this conversation; here it is
    /// (its `result` may still be `None` if the first attempt did not finish).
    Existing(MessageRecord),
}

/// The conversation as a customer message's insert found it, read in the statement that locks
/// the conversation: what it was when the message committed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationAtInsert {
    pub state: ConversationState,
    /// The agent it is offered to or assigned to, if any: the one to show the message to.
    pub agent_id: Option<String>,
}

/// A message the system adds (bot reply, system notice).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewMessage {
    pub role: Role,
    pub text: String,
    pub author_id: Option<String>,
    pub kind: Option<String>,
    pub meta: Option<serde_json::Value>,
}

impl NewMessage {
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            text: text.into(),
            ..Self::default()
        }
    }
}

/// Everything a finished customer turn writes, applied in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnCompletion {
    /// The conversation of the customer message (the caller knows it: no read to find it).
    pub conversation_id: String,
    pub customer_message_id: i64,
    pub understanding: serde_json::Value,
    /// When `reply` is stored, its message id is added to this object as `reply_message_id`.
    pub result: serde_json::Value,
    /// The bot's reply, if it said anything.
    pub reply: Option<NewMessage>,
    /// The conversation's state after this turn.
    pub new_state: ConversationState,
    /// When the turn hands off (`new_state` is `Queued`): where and how urgently it queues.
    pub enqueue: Option<QueueRequest>,
    /// Events to append (kind, payload).
    pub events: Vec<(String, serde_json::Value)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: i64,
    pub conversation_id: Option<String>,
    pub kind: String,
    pub payload: serde_json::Value,
    pub created_at: Millis,
}

/// A document as listed by `baton kb ls` (without its chunks' text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DocumentSummary {
    pub id: String,
    pub source: String,
    pub title: String,
    pub url: Option<String>,
    pub kind: String,
    pub content_hash: String,
    pub chunk_count: i64,
    pub updated_at: Millis,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL {0:?} is not supported (use sqlite://PATH or postgres://...)")]
    UnsupportedUrl(String),
    #[error("could not create the database directory {path}: {source}")]
    CreateDirectory {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("conversation {0} not found")]
    ConversationNotFound(String),
    #[error("message {0} not found")]
    MessageNotFound(i64),
    /// `complete_turn` ran twice for one customer message (two attempts raced); the first one's
    /// result stands and nothing of the second was written.
    #[error("the turn of message {0} was already completed")]
    TurnAlreadyCompleted(i64),
    #[error("an agent named {0:?} already exists")]
    AgentExists(String),
    #[error("agent {0} not found")]
    AgentNotFound(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error while {context}: {source}")]
    Database {
        /// What the store was doing, e.g. "inserting a customer message".
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// How busy a store's single writer is (SQLite: every write of the process takes turns on one
/// connection). Counters since the store opened, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Write transactions that ended (committed or rolled back).
    pub writes: u64,
    /// Time writers spent waiting for their turn, summed.
    pub waited_micros: u64,
    /// Time the writer was held, from BEGIN to the end of COMMIT or ROLLBACK, summed: when it
    /// nears one second per second, writes queue.
    pub held_micros: u64,
    /// Transactions that completed customer turns or stored agent replies: those written while
    /// the writer is busy commit together (group commit).
    pub batch_commits: u64,
    /// Turns and agent replies those transactions wrote; `batched_writes / batch_commits` is the
    /// batch size.
    pub batched_writes: u64,
}

/// Persistence for everything Baton must not lose. Implementations are shared (`Arc<dyn Store>`) and
/// safe to call concurrently.
#[async_trait]
pub trait Store: Send + Sync {
    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The single writer's counters, for a store that has one (SQLite; PostgreSQL's writers
    /// take row locks instead, so it has none).
    fn writer_stats(&self) -> Option<WriterStats> {
        None
    }

    async fn create_conversation(
        &self,
        id: &str,
        token_hash: &str,
    ) -> Result<ConversationRecord, StoreError>;
    async fn get_conversation(&self, id: &str) -> Result<Option<ConversationRecord>, StoreError>;
    /// Fails with `ConversationNotFound` for an unknown id.
    async fn set_conversation_state(
        &self,
        id: &str,
        state: ConversationState,
    ) -> Result<(), StoreError>;

    /// Store a customer message durably. With a `client_message_id` already used in this
    /// conversation, stores nothing and returns the existing message (also when two inserts race).
    /// Fails with `ConversationNotFound` for an unknown conversation.
    async fn insert_customer_message(
        &self,
        conversation_id: &str,
        text: &str,
        client_message_id: Option<&str>,
    ) -> Result<CustomerInsert, StoreError> {
        Ok(self
            .insert_customer_message_with_state(conversation_id, text, client_message_id)
            .await?
            .0)
    }
    /// As [`Store::insert_customer_message`], with the conversation's state and holder as the
    /// insert found them (read in the same statement that locks the conversation, so neither the
    /// turn nor telling the agent needs a separate read of the conversation).
    async fn insert_customer_message_with_state(
        &self,
        conversation_id: &str,
        text: &str,
        client_message_id: Option<&str>,
    ) -> Result<(CustomerInsert, ConversationAtInsert), StoreError>;
    /// Record a finished turn (understanding, result, bot reply, state, events) atomically. The
    /// state (and queue columns) change only if humans do not own the conversation at commit
    /// time: an agent who claimed or accepted it while the bot was thinking keeps it.
    /// Returns the stored bot reply, if any. Fails with `MessageNotFound` when the id is not a
    /// customer message of `turn.conversation_id`, with `ConversationNotFound` when there is no
    /// such conversation, and with `TurnAlreadyCompleted` when its turn was completed before, so
    /// a raced retry cannot add a second reply. A failure writes nothing.
    async fn complete_turn(
        &self,
        turn: TurnCompletion,
    ) -> Result<Option<MessageRecord>, StoreError>;
    /// Add a message outside a customer turn (e.g. a system notice). Returns it with its id.
    async fn insert_message(
        &self,
        conversation_id: &str,
        message: NewMessage,
    ) -> Result<MessageRecord, StoreError>;
    /// Messages of a conversation with id > `after` (all when None), oldest first, at most `limit`.
    async fn list_messages(
        &self,
        conversation_id: &str,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<MessageRecord>, StoreError>;

    /// The latest `limit` messages of a conversation with id < `before`, oldest first (the history
    /// a turn is decided with).
    async fn recent_messages(
        &self,
        conversation_id: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<MessageRecord>, StoreError>;

    async fn append_event(
        &self,
        conversation_id: Option<&str>,
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<EventRecord, StoreError>;
    /// Events with id > `after`, oldest first, for a reader that keeps a cursor (webhooks): only
    /// events no still-running transaction can precede, so the cursor never passes an event that
    /// commits after a later id. May lag the newest events by as long as the oldest running
    /// transaction on the database server.
    async fn settled_events(&self, after: i64, limit: i64) -> Result<Vec<EventRecord>, StoreError>;
    /// Events of one conversation (or all when None) with id > `after`, oldest first.
    async fn list_events(
        &self,
        conversation_id: Option<&str>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Insert or replace a document and all its chunks (old chunks are removed) atomically. The
    /// chunks are stored under `document.id`; their title, source and url are the document's.
    async fn upsert_document(&self, document: &Document) -> Result<(), StoreError>;
    async fn get_document(&self, id: &str) -> Result<Option<Document>, StoreError>;
    async fn find_document_by_source(
        &self,
        source: &str,
    ) -> Result<Option<DocumentSummary>, StoreError>;
    async fn list_documents(&self) -> Result<Vec<DocumentSummary>, StoreError>;
    /// Remove a document and its chunks; false when it did not exist.
    async fn delete_document(&self, id: &str) -> Result<bool, StoreError>;

    /// The digest of the encoder model that embedded the vector index, as last recorded (None
    /// before the first record).
    async fn index_encoder(&self) -> Result<Option<String>, StoreError>;
    /// Record the digest of the encoder model that embedded the vector index.
    async fn set_index_encoder(&self, digest: &str) -> Result<(), StoreError>;
}
