//! What one turn produces and reports: the understanding, the reply, the turn's result, and the
//! port (`TurnListener`) through which the human side hears about every finished turn.

use serde::{Deserialize, Serialize};

use crate::bot::policy::{DecisionKind, HandoffRoute, Reason};
use crate::knowledge::retrieval::KnowledgeHit;
use crate::nlp::encoder::{Embedding, SentimentScores};
use crate::nlp::frustration::Frustration;
use crate::nlp::intent_model::IntentScore;
use crate::store::ConversationState;

/// A knowledge chunk as the understanding reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KnowledgeRef {
    pub chunk_id: String,
    pub document_id: String,
    pub title: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub heading_path: Vec<String>,
    /// Cosine similarity to the message.
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub keyword_score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
    pub source: String,
}

/// Milliseconds spent per stage of understanding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timings {
    /// Until the embedding and the sentiment are back from the encoder workers.
    pub encoder_ms: f64,
    /// The intent classification itself. It runs beside the retrieval (on the encoder thread
    /// for a small intents file, on the blocking pool for a large one), so the two overlap.
    pub intent_ms: f64,
    /// The knowledge search, from the embedding to the ranked chunks.
    pub retrieval_ms: f64,
    /// The whole reading.
    pub total_ms: f64,
}

/// What Baton made of one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Understanding {
    /// The most probable intent (reported even when out of scope: agents find the guess useful).
    pub intent: Option<IntentScoreView>,
    pub alternatives: Vec<IntentScoreView>,
    pub out_of_scope: bool,
    /// Higher means more like the business's intents; compared with the out-of-scope threshold.
    pub in_scope_score: f32,
    pub knowledge: Vec<KnowledgeRef>,
    /// True when `knowledge` was found with the message steered towards its (sure) intent,
    /// because the message's own words found too little.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub knowledge_steered: bool,
    /// The message's sentiment (when the sentiment model is installed).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sentiment: Option<SentimentView>,
    /// The conversation's frustration with this message, and the signals that fired.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub frustration: Option<Frustration>,
    /// For a follow-up that only makes sense with the previous turn ("can I use rechargeable
    /// ones?"): the text intent and knowledge were read from, the earlier question and this
    /// message together. Sentiment and frustration still read the message alone.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rewritten_query: Option<String>,
    /// The message with its typos corrected to the business's words ("chnage my pasword" ->
    /// "change my password"): what the encoder and retrieval read.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub corrected_query: Option<String>,
    /// Words the business never uses (not in its intents nor its knowledge base) on which the
    /// question turns: leaving them out changes its meaning. The help centre cannot answer it,
    /// whatever article comes closest (`not_covered`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub uncovered_terms: Vec<String>,
    /// For a message of several sentences whose intent, read whole, was not one that needs a
    /// person: the sentence that surely is a request for a person ("... can someone from your
    /// team look at it?") or an intent that always goes to one ("... stop my membership then").
    /// The intent is then that sentence's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_requested_in: Option<String>,
    /// How much of the pipeline read the message.
    #[serde(skip_serializing_if = "Reading::is_full", default)]
    pub reading: Reading,
    pub timings: Timings,
}

/// How much of the pipeline read a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reading {
    /// Encoder, intent, retrieval, sentiment and frustration.
    #[default]
    Full,
    /// Sentiment and frustration only, for a conversation a person owns
    /// ([`HumanOwnedReading::Panel`]): no intent, no knowledge.
    AgentPanel,
}

impl Reading {
    fn is_full(&self) -> bool {
        *self == Reading::Full
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SentimentView {
    pub label: String,
    pub scores: SentimentScores,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntentScoreView {
    pub name: String,
    pub confidence: f32,
}

impl From<IntentScore> for IntentScoreView {
    fn from(score: IntentScore) -> Self {
        Self {
            name: score.name,
            confidence: score.confidence,
        }
    }
}

/// Understanding plus what the answer writer needs (not serialised).
pub struct UnderstandingDetail {
    pub understanding: Understanding,
    pub hits: Vec<KnowledgeHit>,
    /// The message's embedding.
    pub embedding: Embedding,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Source {
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    pub score: f32,
}

/// A choice offered by a clarify reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplyOption {
    /// What to show on the button.
    pub label: String,
    /// `article` (value: chunk id) or `intent` (value: intent name).
    pub kind: String,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reply {
    pub text: String,
    pub sources: Vec<Source>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub options: Option<Vec<ReplyOption>>,
}

/// The outcome of a customer message, as returned by the API (and stored, so a retried POST gets
/// exactly the same answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TurnResult {
    pub message_id: i64,
    pub decision: DecisionKind,
    pub reply: Option<Reply>,
    /// The id of the stored bot reply message.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reply_message_id: Option<i64>,
    pub reasons: Vec<Reason>,
    pub understanding: Understanding,
    /// Where the conversation goes in the human queue, for handoffs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub handoff: Option<HandoffRoute>,
    pub conversation_state: ConversationState,
}

/// A turn's result, and whether it was computed now or read back for a retried request.
pub(super) enum Turn {
    New(TurnResult),
    Replayed(TurnResult),
}

/// What the engine tells after every customer turn: the port the human side (handoff)
/// implements, so the engine never depends on it.
#[async_trait::async_trait]
pub trait TurnListener: Send + Sync {
    /// A customer's message in a conversation a person owns is stored (committed). The person
    /// can be shown it now: the bot only reads it silently (the agent panel's sentiment), and
    /// that reading must not delay the message on its way to them. `agent_id` is who held the
    /// conversation when the message committed (none while it waits in the queue).
    async fn customer_message_stored(&self, _conversation_id: &str, _agent_id: Option<&str>) {}

    async fn after_turn(&self, conversation_id: &str, result: &TurnResult);
}

/// What the assistant offers the agent who holds a conversation (with an LLM answer writer):
/// a summary and a drafted reply to edit, never sent by itself.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AgentAssist {
    /// Why there is nothing to offer, when there is nothing (no LLM configured, LLM down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    pub summary: Option<String>,
    pub draft: Option<String>,
    /// The knowledge the draft cites.
    pub sources: Vec<Source>,
}

/// A new conversation and the bearer token that authorises its customer calls.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NewConversation {
    pub id: String,
    pub token: String,
}
