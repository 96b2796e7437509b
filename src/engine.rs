//! One customer turn, end to end: store the message, understand it (one encoder pass feeding
//! intent classification and retrieval), decide, write the reply, and record everything in one
//! transaction. The HTTP layer and the evaluations both drive this; nothing here knows about HTTP.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::answer::{Answer, AnswerError, AnswerRequest, AnswerWriter};
use crate::assets::{constant_time_eq, sha256_hex};
use crate::config::{HumanOwnedReading, IntentSettings};
use crate::index::IndexError;
use crate::knowledge::retrieval::{KnowledgeHit, Retriever};
use crate::metrics::Metrics;
use crate::nlp::classifier::ClassifierError;
use crate::nlp::encoder::{Embedding, SentimentScores};
use crate::nlp::encoder::{EncoderError, EncoderPool};
use crate::nlp::frustration::{Frustration, FrustrationModel, HistoryTurn};
use crate::nlp::intent_model::{IntentRecognizer, IntentScore};
use crate::nlp::intents::Priority;
use crate::nlp::keywords::KeywordEncoder;
use crate::policy::{
    ClarifyKind, ConversationView, Decision, DecisionKind, HandoffRoute, IntentView, Policy,
    PolicyInput, Reason,
};
use crate::privacy::Masker;
use crate::store::{
    ConversationRecord, ConversationState, CustomerInsert, MessageRecord, NewMessage, QueueRequest,
    Role, Store, StoreError, TurnCompletion,
};
use crate::templates::{render, Templates};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("conversation {0} not found")]
    ConversationNotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
    #[error(transparent)]
    Answer(#[from] AnswerError),
    #[error("stored result of message {0} is unreadable: {1}")]
    CorruptResult(i64, String),
}

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
    pub encoder_ms: f64,
    pub intent_ms: f64,
    pub retrieval_ms: f64,
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
enum Turn {
    New(TurnResult),
    Replayed(TurnResult),
}

/// What the engine tells after every customer turn: the port the human side (handoff)
/// implements, so the engine never depends on it.
#[async_trait::async_trait]
pub trait TurnListener: Send + Sync {
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

/// Serialises turns within a conversation (so "twice in a row" and idempotent retries are well
/// defined) while different conversations proceed in parallel.
#[derive(Default)]
struct TurnLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl TurnLocks {
    fn lock_for(&self, conversation_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .entry(conversation_id.to_string())
            .or_default()
            .clone()
    }

    /// Forget the lock once nobody holds or waits for it.
    fn release(&self, conversation_id: &str) {
        let mut locks = self.locks.lock();
        if let Some(lock) = locks.get(conversation_id) {
            if Arc::strong_count(lock) == 1 {
                locks.remove(conversation_id);
            }
        }
    }
}

pub struct Engine {
    encoder: EncoderPool,
    intents: RwLock<Arc<IntentRecognizer>>,
    intent_settings: IntentSettings,
    retriever: Retriever,
    policy: Policy,
    store: Arc<dyn Store>,
    answerer: Arc<dyn AnswerWriter>,
    /// Answers when `answerer` is unavailable (an LLM down or slow): the extractive writer.
    fallback: Option<Arc<dyn AnswerWriter>>,
    templates: Templates,
    metrics: Metrics,
    turn_locks: TurnLocks,
    frustration: FrustrationModel,
    keywords: KeywordEncoder,
    /// The human side, told about every finished turn (new messages, handoffs).
    listener: RwLock<Option<Arc<dyn TurnListener>>>,
    human_owned_reading: HumanOwnedReading,
    masker: Masker,
}

/// Characters of the handoff message shown in the queue.
const PREVIEW_CHARS: usize = 160;

/// Messages of history given to the policy and the answer writer.
const HISTORY_MESSAGES: i64 = 20;

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        encoder: EncoderPool,
        intents: IntentRecognizer,
        intent_settings: IntentSettings,
        retriever: Retriever,
        policy: Policy,
        store: Arc<dyn Store>,
        answerer: Arc<dyn AnswerWriter>,
        templates: Templates,
        metrics: Metrics,
    ) -> Self {
        Self {
            encoder,
            intents: RwLock::new(Arc::new(intents)),
            intent_settings,
            retriever,
            policy,
            store,
            answerer,
            fallback: None,
            templates,
            metrics,
            turn_locks: TurnLocks::default(),
            frustration: FrustrationModel::default(),
            keywords: KeywordEncoder::default(),
            listener: RwLock::new(None),
            human_owned_reading: HumanOwnedReading::default(),
            masker: Masker::default(),
        }
    }

    /// What is masked in customer messages before anything else sees them (default: every
    /// kind).
    pub fn with_masker(mut self, masker: Masker) -> Self {
        self.masker = masker;
        self
    }

    /// The text with personal and payment data masked, counted in the metrics.
    fn masked(&self, text: &str) -> String {
        self.metrics.masked(&self.masker, text)
    }

    /// Who answers when the answer writer is unavailable (recorded as `llm_unavailable`).
    pub fn with_fallback_answerer(mut self, fallback: Arc<dyn AnswerWriter>) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// What to read of messages in conversations a person owns (default: the agent panel's
    /// needs only).
    pub fn with_human_owned_reading(mut self, reading: HumanOwnedReading) -> Self {
        self.human_owned_reading = reading;
        self
    }

    /// Who to tell after each turn (the handoff service).
    pub fn set_listener(&self, listener: Arc<dyn TurnListener>) {
        *self.listener.write() = Some(listener);
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn encoder(&self) -> &EncoderPool {
        &self.encoder
    }

    pub fn intents(&self) -> Arc<IntentRecognizer> {
        self.intents.read().clone()
    }

    /// Swap in a retrained recogniser; turns already running finish with the old one.
    pub fn replace_intents(&self, recognizer: IntentRecognizer) {
        *self.intents.write() = Arc::new(recognizer);
    }

    pub fn retriever(&self) -> &Retriever {
        &self.retriever
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub async fn create_conversation(&self) -> Result<NewConversation, EngineError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let token = hex::encode(secret);
        self.store
            .create_conversation(&id, &sha256_hex(token.as_bytes()))
            .await?;
        self.store
            .append_event(Some(&id), "conversation_started", &serde_json::json!({}))
            .await?;
        Ok(NewConversation { id, token })
    }

    /// The conversation, if `token` is its customer token. `Ok(None)`: it exists but the token is
    /// wrong. Unknown conversation: an error.
    pub async fn authorize(
        &self,
        conversation_id: &str,
        token: &str,
    ) -> Result<Option<ConversationRecord>, EngineError> {
        let conversation = self
            .store
            .get_conversation(conversation_id)
            .await?
            .ok_or_else(|| EngineError::ConversationNotFound(conversation_id.to_string()))?;
        let presented = sha256_hex(token.as_bytes());
        Ok(
            constant_time_eq(presented.as_bytes(), conversation.token_hash.as_bytes())
                .then_some(conversation),
        )
    }

    /// Understand a message without any conversation: one encoder pass, then intent
    /// classification and retrieval side by side.
    pub async fn understand(&self, text: &str) -> Result<UnderstandingDetail, EngineError> {
        let text = &self.masker.mask_text(text);
        self.understand_masked(text).await
    }

    async fn understand_masked(&self, text: &str) -> Result<UnderstandingDetail, EngineError> {
        let started = Instant::now();
        let analysis = self.encoder.analyze(text).await?;
        let embedding = analysis.embedding;
        let encoder_ms = ms(started);
        self.metrics.observe_stage("encoder", encoder_ms / 1000.0);

        let recognizer = self.intents();
        let settings = self.intent_settings.clone();
        let classify_embedding = embedding.clone();
        let classify = async move {
            let started = Instant::now();
            // The neighbour search over every example is CPU work that grows with the intents
            // file; it runs on the blocking pool rather than stalling the runtime.
            let result = tokio::task::spawn_blocking(move || {
                recognizer.classify(
                    &classify_embedding,
                    settings.alternatives,
                    settings.oos_threshold,
                )
            })
            .await
            .map_err(|e| {
                ClassifierError::InvalidOption(format!("classification task failed: {e}"))
            })?;
            Ok::<_, ClassifierError>((result?, ms(started)))
        };
        let retrieve = async {
            let started = Instant::now();
            let hits = self.retriever.search(text, &embedding).await?;
            Ok::<_, IndexError>((hits, ms(started)))
        };
        let (classified, retrieved) = tokio::join!(classify, retrieve);
        let (intent, intent_ms) = classified?;
        let (hits, retrieval_ms) = retrieved?;
        self.metrics.observe_stage("intent", intent_ms / 1000.0);
        self.metrics
            .observe_stage("retrieval", retrieval_ms / 1000.0);
        let total_ms = ms(started);
        self.metrics
            .observe_stage("understanding", total_ms / 1000.0);

        let understanding = Understanding {
            intent: Some(intent.intent.into()),
            alternatives: intent.alternatives.into_iter().map(Into::into).collect(),
            out_of_scope: intent.out_of_scope,
            in_scope_score: intent.in_scope_score,
            knowledge: hits.iter().map(knowledge_ref).collect(),
            knowledge_steered: false,
            sentiment: analysis.sentiment.map(|scores| SentimentView {
                label: scores.label().to_string(),
                scores,
            }),
            // Without a conversation, frustration reads the message alone.
            frustration: Some(self.frustration.assess(
                &self.keywords,
                text,
                analysis.sentiment.as_ref(),
                &[],
            )),
            rewritten_query: None,
            reading: Reading::Full,
            timings: Timings {
                encoder_ms,
                intent_ms,
                retrieval_ms,
                total_ms,
            },
        };
        Ok(UnderstandingDetail {
            understanding,
            hits,
            embedding,
        })
    }

    /// What the agent panel needs of a message in a conversation a person owns: its sentiment
    /// (one pass of the small sentiment model, when installed). Frustration is added by the
    /// caller, which has the history.
    async fn read_for_agent_panel(&self, text: &str) -> Result<Understanding, EngineError> {
        let started = Instant::now();
        let sentiment = self.encoder.sentiment(text).await?;
        let total_ms = ms(started);
        self.metrics.observe_stage("agent_panel", total_ms / 1000.0);
        Ok(Understanding {
            intent: None,
            alternatives: Vec::new(),
            out_of_scope: false,
            in_scope_score: 0.0,
            knowledge: Vec::new(),
            knowledge_steered: false,
            sentiment: sentiment.map(|scores| SentimentView {
                label: scores.label().to_string(),
                scores,
            }),
            frustration: None,
            rewritten_query: None,
            reading: Reading::AgentPanel,
            timings: Timings {
                encoder_ms: total_ms,
                total_ms,
                ..Timings::default()
            },
        })
    }

    /// The conversation's frustration with this message: the message, its sentiment and the
    /// turns before it.
    fn assess_frustration(
        &self,
        text: &str,
        understanding: &Understanding,
        history: &[MessageRecord],
    ) -> Frustration {
        self.frustration.assess(
            &self.keywords,
            text,
            understanding.sentiment.as_ref().map(|s| &s.scores),
            &frustration_history(history),
        )
    }

    /// When the intent is clear (in scope, sure, answered from knowledge) but the message's own
    /// words find little ("the power base wasn't in the box"), search again with the message
    /// pulled towards what messages of that intent look like (its examples' centroid), and keep
    /// the result if it matches better. Scores stay cosine similarities, of the steered query.
    async fn steer_retrieval(
        &self,
        text: &str,
        detail: &mut UnderstandingDetail,
        recognizer: &IntentRecognizer,
        spec: &crate::nlp::intents::IntentSpec,
    ) -> Result<(), EngineError> {
        let settings = self.policy.settings();
        let Some(intent) = detail.understanding.intent.as_ref() else {
            return Ok(());
        };
        let best = detail.hits.first().map(|h| h.score).unwrap_or(0.0);
        let sure = !detail.understanding.out_of_scope
            && intent.confidence >= settings.confident_intent
            && spec.handoff == crate::nlp::intents::HandoffMode::Auto
            && spec.reply.is_none();
        if !sure || best >= settings.answer_min_score {
            return Ok(());
        }
        let Some(centroid) = recognizer.centroid(&intent.name) else {
            return Ok(());
        };
        let mut steered: Vec<f32> = detail
            .embedding
            .iter()
            .zip(centroid)
            .map(|(m, c)| m + c)
            .collect();
        crate::nlp::encoder::normalise(&mut steered);
        let hits = self.retriever.search(text, &steered).await?;
        if hits.first().is_some_and(|h| h.score > best) {
            detail.understanding.knowledge = hits.iter().map(knowledge_ref).collect();
            detail.understanding.knowledge_steered = true;
            detail.hits = hits;
        }
        Ok(())
    }

    /// A short message that leans on the previous turn ("and if I paid with PayPal?", "can I use
    /// rechargeable ones?") says too little alone: read its intent and knowledge from the previous
    /// question and the message together. Only after a turn the bot answered from knowledge, and
    /// never when the message's own reading is sure ("stop my membership then" is a cancellation
    /// whatever came before), an explicit request for a person, or small talk with a fixed reply
    /// ("thanks, that worked"). The chunks already given as answers are left out of the
    /// follow-up's knowledge: the customer asks for more than that answer said.
    async fn read_as_follow_up(
        &self,
        text: &str,
        history: &[MessageRecord],
        detail: &mut UnderstandingDetail,
    ) -> Result<(), EngineError> {
        let Some(context) = follow_up_context(history) else {
            return Ok(());
        };
        if !looks_like_follow_up(text) {
            return Ok(());
        }
        let recognizer = self.intents();
        let own_reading_stands = detail
            .understanding
            .intent
            .as_ref()
            .filter(|_| !detail.understanding.out_of_scope)
            .is_some_and(|intent| {
                intent.confidence >= self.policy.settings().confident_intent
                    || intent.name == self.policy.human_request_intent()
                    || recognizer
                        .spec(&intent.name)
                        .is_some_and(|spec| spec.reply.is_some())
            });
        if own_reading_stands {
            return Ok(());
        }
        // The answer writer rewrites it when it can (an LLM); otherwise the two are joined,
        // which the encoder reads well enough.
        let merged = match self.answerer.rewrite_follow_up(&context, text).await {
            Some(rewritten) => rewritten,
            None => format!("{context} {text}"),
        };
        let mut merged_detail = self.understand_masked(&merged).await?;
        let own = &detail.understanding;
        merged_detail.understanding.sentiment = own.sentiment.clone();
        merged_detail.understanding.frustration = own.frustration.clone();
        merged_detail.understanding.timings.encoder_ms += own.timings.encoder_ms;
        merged_detail.understanding.timings.total_ms += own.timings.total_ms;
        merged_detail.understanding.rewritten_query = Some(merged);
        *detail = merged_detail;
        Ok(())
    }

    /// Handle one customer message. Stored durably before anything else; a retry with the same
    /// `client_message_id` returns the first result instead of a second message.
    pub async fn handle_customer_message(
        &self,
        conversation_id: &str,
        text: &str,
        client_message_id: Option<&str>,
    ) -> Result<TurnResult, EngineError> {
        self.handle_customer_message_streaming(conversation_id, text, client_message_id, None)
            .await
    }

    /// As [`Self::handle_customer_message`], sending an answer's text to `deltas` while it is
    /// written (LLM answers). The returned result, and the stored reply, are what counts.
    pub async fn handle_customer_message_streaming(
        &self,
        conversation_id: &str,
        text: &str,
        client_message_id: Option<&str>,
        deltas: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<TurnResult, EngineError> {
        // Masked before it is stored, logged or read: nothing downstream sees the raw text.
        let text = self.masked(text);
        let lock = self.turn_locks.lock_for(conversation_id);
        let result = {
            let _turn = lock.lock().await;
            self.run_turn(conversation_id, &text, client_message_id, deltas)
                .await
        };
        drop(lock);
        self.turn_locks.release(conversation_id);
        match result? {
            Turn::New(result) => {
                let listener = self.listener.read().clone();
                if let Some(listener) = listener {
                    listener.after_turn(conversation_id, &result).await;
                }
                Ok(result)
            }
            // A retried request: everyone was told the first time.
            Turn::Replayed(result) => Ok(result),
        }
    }

    async fn run_turn(
        &self,
        conversation_id: &str,
        text: &str,
        client_message_id: Option<&str>,
        deltas: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Turn, EngineError> {
        let message = match self
            .store
            .insert_customer_message(conversation_id, text, client_message_id)
            .await
        {
            Ok(CustomerInsert::New(message)) => message,
            Ok(CustomerInsert::Existing(message)) => match &message.result {
                Some(result) => {
                    return serde_json::from_value(result.clone())
                        .map(Turn::Replayed)
                        .map_err(|e| EngineError::CorruptResult(message.id, e.to_string()));
                }
                // The first attempt stored the message but never finished: finish it now, with
                // the text as first stored.
                None => message,
            },
            Err(StoreError::ConversationNotFound(id)) => {
                return Err(EngineError::ConversationNotFound(id))
            }
            Err(other) => return Err(other.into()),
        };
        let conversation = self
            .store
            .get_conversation(conversation_id)
            .await?
            .ok_or_else(|| EngineError::ConversationNotFound(conversation_id.to_string()))?;
        let history = self.recent_history(conversation_id, message.id).await?;
        if conversation.state.human_owned() {
            // A person owns the conversation: record the message and say nothing. Only the
            // agent panel reads what was understood, so by default only what it shows is read.
            let mut understanding = match self.human_owned_reading {
                HumanOwnedReading::Panel => self.read_for_agent_panel(&message.text).await?,
                HumanOwnedReading::Full => {
                    self.understand_masked(&message.text).await?.understanding
                }
            };
            understanding.frustration =
                Some(self.assess_frustration(&message.text, &understanding, &history));
            return self
                .finish(
                    message.id,
                    &message.text,
                    conversation_id,
                    silent_decision(),
                    None,
                    None,
                    understanding,
                    conversation.state,
                )
                .await;
        }
        let mut detail = self.understand_masked(&message.text).await?;
        self.read_as_follow_up(&message.text, &history, &mut detail)
            .await?;
        detail.understanding.frustration =
            Some(self.assess_frustration(&message.text, &detail.understanding, &history));

        let recognizer = self.intents();
        let spec = detail
            .understanding
            .intent
            .as_ref()
            .and_then(|intent| recognizer.spec(&intent.name));
        if let Some(spec) = spec {
            // A follow-up searches with the text it was read from.
            let query = detail
                .understanding
                .rewritten_query
                .clone()
                .unwrap_or_else(|| message.text.clone());
            self.steer_retrieval(&query, &mut detail, &recognizer, spec)
                .await?;
        }
        if detail.understanding.rewritten_query.is_some() {
            // A follow-up asks for more than the answer it follows: not that answer again.
            detail
                .hits
                .retain(|hit| !answered_with(&history, &hit.chunk.id));
            detail.understanding.knowledge = detail.hits.iter().map(knowledge_ref).collect();
        }
        let policy_input = PolicyInput {
            intent: detail
                .understanding
                .intent
                .as_ref()
                .zip(spec)
                .map(|(intent, spec)| IntentView {
                    name: intent.name.clone(),
                    confidence: intent.confidence,
                    handoff: spec.handoff,
                    has_fixed_reply: spec.reply.is_some(),
                }),
            runner_up_confidence: detail
                .understanding
                .alternatives
                .first()
                .map(|a| a.confidence),
            out_of_scope: detail.understanding.out_of_scope,
            best_knowledge_score: detail.hits.first().map(|hit| hit.score),
            frustration: detail.understanding.frustration.as_ref().map(|f| f.score),
        };
        let view = ConversationView {
            consecutive_failures: consecutive_failures(&history),
            answer_already_given: detail
                .hits
                .first()
                .is_some_and(|best| answered_with(&history, &best.chunk.id)),
        };
        let decision = self.policy.decide(&policy_input, view);
        let (decision, answer) = self
            .write_answer(decision, &message.text, &detail, &history, deltas)
            .await?;

        let route = (decision.kind == DecisionKind::Handoff).then(|| {
            let in_scope_spec = spec.filter(|_| !detail.understanding.out_of_scope);
            HandoffRoute {
                skill: in_scope_spec
                    .map(|s| s.skill.clone())
                    .unwrap_or_else(|| "general".into()),
                priority: in_scope_spec
                    .map(|s| s.priority)
                    .unwrap_or(Priority::Normal),
            }
        });
        let reply = match answer {
            Some(answer) => Some(answer),
            None => self.compose_reply(
                &decision,
                route.as_ref(),
                spec.and_then(|s| s.reply.as_deref()),
                &detail,
            ),
        };
        let new_state = if decision.kind == DecisionKind::Handoff {
            ConversationState::Queued
        } else {
            ConversationState::Bot
        };
        self.finish(
            message.id,
            &message.text,
            conversation_id,
            decision,
            reply,
            route,
            detail.understanding,
            new_state,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        message_id: i64,
        customer_text: &str,
        conversation_id: &str,
        decision: Decision,
        reply: Option<Reply>,
        route: Option<HandoffRoute>,
        understanding: Understanding,
        new_state: ConversationState,
    ) -> Result<Turn, EngineError> {
        let mut result = TurnResult {
            message_id,
            decision: decision.kind,
            reply,
            reply_message_id: None,
            reasons: decision.reasons.clone(),
            understanding,
            handoff: route.clone(),
            conversation_state: new_state,
        };
        let mut events = vec![(
            "decision".to_string(),
            serde_json::json!({
                "message_id": message_id,
                "decision": decision.kind,
                "reasons": decision.reasons,
            }),
        )];
        if let Some(route) = &route {
            if !decision.reasons.contains(&Reason::AwaitingHuman) {
                events.push((
                    "handoff".to_string(),
                    serde_json::json!({
                        "message_id": message_id,
                        "reasons": decision.reasons,
                        "skill": route.skill,
                        "priority": route.priority,
                        "intent": result.understanding.intent,
                        "frustration": result.understanding.frustration,
                    }),
                ));
            }
        }
        // The store writes the reply's id into the stored result (`reply_message_id`), so a
        // retried POST gets exactly what this one returns.
        let completion = TurnCompletion {
            customer_message_id: message_id,
            understanding: serde_json::to_value(&result.understanding)
                .map_err(|e| EngineError::CorruptResult(message_id, e.to_string()))?,
            result: serde_json::to_value(&result)
                .map_err(|e| EngineError::CorruptResult(message_id, e.to_string()))?,
            reply: result.reply.as_ref().map(|reply| NewMessage {
                role: Role::Bot,
                text: reply.text.clone(),
                meta: Some(serde_json::json!({
                    "decision": decision.kind,
                    "sources": reply.sources,
                    "options": reply.options,
                    // Which chunk answered, so the bot notices when it would repeat itself.
                    "chunk_id": (decision.kind == DecisionKind::Answer)
                        .then(|| result.understanding.knowledge.first().map(|k| k.chunk_id.clone()))
                        .flatten(),
                })),
                ..NewMessage::default()
            }),
            new_state,
            enqueue: route
                .as_ref()
                .filter(|_| new_state == ConversationState::Queued)
                .map(|route| QueueRequest {
                    skill: route.skill.clone(),
                    priority: route.priority,
                    reasons: decision
                        .reasons
                        .iter()
                        .map(|r| r.as_str().to_string())
                        .collect(),
                    frustration: result
                        .understanding
                        .frustration
                        .as_ref()
                        .map(|f| f.score)
                        .unwrap_or(0.0),
                    intent: result.understanding.intent.as_ref().map(|i| i.name.clone()),
                    preview: customer_text.chars().take(PREVIEW_CHARS).collect(),
                }),
            events,
        };
        let stored_reply = match self.store.complete_turn(completion).await {
            Ok(stored_reply) => stored_reply,
            // Another process finished this turn first (turns are serialised within a process):
            // its result is the one the customer must see.
            Err(StoreError::TurnAlreadyCompleted(_)) => {
                return self
                    .stored_result(conversation_id, message_id)
                    .await
                    .map(Turn::Replayed)
            }
            Err(other) => return Err(other.into()),
        };
        result.reply_message_id = stored_reply.map(|reply| reply.id);

        self.metrics
            .decisions
            .with_label_values(&[decision.kind.as_str()])
            .inc();
        for reason in &decision.reasons {
            self.metrics
                .decision_reasons
                .with_label_values(&[decision.kind.as_str(), reason.as_str()])
                .inc();
        }
        Ok(Turn::New(result))
    }

    /// For a decision to answer from knowledge: the written answer, with the knowledge it cites
    /// as sources. A writer that declines turns the decision into a handoff (`llm_declined`); one
    /// that is unavailable is replaced by the fallback (`llm_unavailable`). Other decisions pass
    /// through untouched.
    async fn write_answer(
        &self,
        mut decision: Decision,
        question: &str,
        detail: &UnderstandingDetail,
        history: &[MessageRecord],
        deltas: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<(Decision, Option<Reply>), EngineError> {
        if decision.kind != DecisionKind::Answer || decision.reasons.contains(&Reason::SmallTalk) {
            return Ok((decision, None));
        }
        let history: Vec<(String, String)> = history
            .iter()
            .map(|m| (m.role.as_str().to_string(), m.text.clone()))
            .collect();
        let request = |deltas| AnswerRequest {
            question,
            hits: &detail.hits,
            history: &history,
            deltas,
        };
        let answer = match (self.answerer.write(request(deltas)).await, &self.fallback) {
            (Ok(answer), _) => answer,
            (Err(AnswerError::Unavailable { cause, detail }), Some(fallback)) => {
                tracing::warn!(
                    writer = self.answerer.name(),
                    cause,
                    error = %detail,
                    "answer writer unavailable; answering with {}",
                    fallback.name()
                );
                decision.reasons.push(Reason::LlmUnavailable);
                fallback.write(request(None)).await?
            }
            (Err(other), _) => return Err(other.into()),
        };
        match answer {
            Answer::Written { text, cited } => {
                let sources = cited
                    .iter()
                    .filter_map(|&index| detail.hits.get(index))
                    .map(source_of)
                    .collect();
                let reply = Reply {
                    text,
                    sources,
                    options: None,
                };
                Ok((decision, Some(reply)))
            }
            Answer::Declined { why } => {
                tracing::info!(
                    writer = self.answerer.name(),
                    why,
                    "the answer writer declined; handing off"
                );
                let handoff = Decision {
                    kind: DecisionKind::Handoff,
                    reasons: vec![Reason::LlmDeclined],
                    clarify: None,
                };
                Ok((handoff, None))
            }
        }
    }

    /// The reply for every decision but an answer from knowledge (see `write_answer`).
    fn compose_reply(
        &self,
        decision: &Decision,
        route: Option<&HandoffRoute>,
        fixed_reply: Option<&str>,
        detail: &UnderstandingDetail,
    ) -> Option<Reply> {
        let templates = &self.templates;
        let reply = match decision.kind {
            DecisionKind::Answer if decision.reasons.contains(&Reason::SmallTalk) => Reply {
                text: fixed_reply.unwrap_or_default().to_string(),
                sources: Vec::new(),
                options: None,
            },
            DecisionKind::Answer => {
                // An answer from knowledge was written by `write_answer`; nothing to add.
                return None;
            }
            DecisionKind::Clarify => match decision.clarify {
                Some(ClarifyKind::Articles) => {
                    let options = top_articles(&detail.hits, 3);
                    Reply {
                        text: render(
                            &templates.clarify_articles,
                            &[(
                                "topic",
                                options
                                    .first()
                                    .map(|o| o.label.as_str())
                                    .unwrap_or_default(),
                            )],
                        ),
                        sources: Vec::new(),
                        options: Some(options),
                    }
                }
                Some(ClarifyKind::Intents) => {
                    let recognizer = self.intents();
                    let names: Vec<&IntentScoreView> = detail
                        .understanding
                        .intent
                        .iter()
                        .chain(detail.understanding.alternatives.iter())
                        .take(2)
                        .collect();
                    let describe = |name: &str| {
                        recognizer
                            .spec(name)
                            .and_then(|s| s.description.clone())
                            .unwrap_or_else(|| name.replace('_', " "))
                    };
                    let descriptions: Vec<String> =
                        names.iter().map(|n| describe(&n.name)).collect();
                    Reply {
                        text: render(
                            &templates.clarify_intents,
                            &[
                                (
                                    "first",
                                    descriptions.first().map(String::as_str).unwrap_or_default(),
                                ),
                                (
                                    "second",
                                    descriptions.get(1).map(String::as_str).unwrap_or_default(),
                                ),
                            ],
                        ),
                        sources: Vec::new(),
                        options: Some(
                            names
                                .iter()
                                .zip(&descriptions)
                                .map(|(name, description)| ReplyOption {
                                    label: description.clone(),
                                    kind: "intent".into(),
                                    value: name.name.clone(),
                                    url: None,
                                })
                                .collect(),
                        ),
                    }
                }
                Some(ClarifyKind::Rephrase) | None => Reply {
                    text: templates.clarify_rephrase.clone(),
                    sources: Vec::new(),
                    options: None,
                },
            },
            DecisionKind::Handoff => {
                if decision.reasons.contains(&Reason::AwaitingHuman) {
                    return None;
                }
                let team = route.map(|r| r.skill.as_str()).unwrap_or("support");
                let template = match decision.reasons.first() {
                    Some(Reason::ExplicitRequest) => &templates.handoff_explicit_request,
                    Some(Reason::IntentRequiresHuman) => &templates.handoff_intent_requires_human,
                    Some(Reason::OutOfScope) => &templates.handoff_out_of_scope,
                    Some(Reason::RepeatedFailure) => &templates.handoff_repeated_failure,
                    Some(Reason::Frustration) => &templates.handoff_frustration,
                    _ => &templates.handoff_default,
                };
                Reply {
                    text: render(template, &[("team", team)]),
                    sources: Vec::new(),
                    options: None,
                }
            }
        };
        Some(reply)
    }

    async fn stored_result(
        &self,
        conversation_id: &str,
        message_id: i64,
    ) -> Result<TurnResult, EngineError> {
        let stored = self
            .store
            .list_messages(conversation_id, Some(message_id - 1), 1)
            .await?;
        let result = stored
            .into_iter()
            .find(|m| m.id == message_id)
            .and_then(|m| m.result)
            .ok_or_else(|| {
                EngineError::CorruptResult(message_id, "completed turn has no stored result".into())
            })?;
        serde_json::from_value(result)
            .map_err(|e| EngineError::CorruptResult(message_id, e.to_string()))
    }

    /// The latest messages before `before_id`, oldest first.
    async fn recent_history(
        &self,
        conversation_id: &str,
        before_id: i64,
    ) -> Result<Vec<MessageRecord>, EngineError> {
        let messages = self
            .store
            .recent_messages(conversation_id, before_id, HISTORY_MESSAGES)
            .await?;
        Ok(messages)
    }

    /// A summary and a drafted reply for the agent holding `conversation_id`, grounded in the
    /// knowledge found for the latest customer message.
    pub async fn assist_agent(&self, conversation_id: &str) -> Result<AgentAssist, EngineError> {
        let messages = self
            .store
            .recent_messages(conversation_id, i64::MAX, HISTORY_MESSAGES)
            .await?;
        let transcript: Vec<(String, String)> = messages
            .iter()
            .map(|m| (m.role.as_str().to_string(), m.text.clone()))
            .collect();
        let hits = match messages.iter().rev().find(|m| m.role == Role::Customer) {
            Some(latest) => self.understand_masked(&latest.text).await?.hits,
            None => Vec::new(),
        };
        let nothing = |why: String| AgentAssist {
            unavailable: Some(why),
            summary: None,
            draft: None,
            sources: Vec::new(),
        };
        Ok(match self.answerer.assist(&hits, &transcript).await {
            None => nothing(format!(
                "the {} answer writer does not assist agents (set answer.writer = \"llm\")",
                self.answerer.name()
            )),
            Some(Err(err)) => {
                tracing::warn!(conversation_id, error = %err, "agent assist failed");
                nothing("the LLM is unavailable; try again shortly".into())
            }
            Some(Ok(assist)) => {
                let (draft, cited) = assist.draft.unzip();
                AgentAssist {
                    unavailable: None,
                    summary: assist.summary,
                    draft,
                    sources: cited
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|&index| hits.get(index))
                        .map(source_of)
                        .collect(),
                }
            }
        })
    }

    /// A conversation's messages after `after` (all when None), oldest first.
    pub async fn transcript(
        &self,
        conversation_id: &str,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<MessageRecord>, EngineError> {
        Ok(self
            .store
            .list_messages(conversation_id, after, limit)
            .await?)
    }
}

fn silent_decision() -> Decision {
    Decision {
        kind: DecisionKind::Handoff,
        reasons: vec![Reason::AwaitingHuman],
        clarify: None,
    }
}

/// Longest context carried into a follow-up, in characters: the question it follows, not the
/// whole conversation.
const FOLLOW_UP_CONTEXT_CHARS: usize = 300;

/// The question a follow-up would lean on: the latest customer message, when the bot answered
/// it from knowledge (its rewritten form when it was itself a follow-up).
fn follow_up_context(history: &[MessageRecord]) -> Option<String> {
    let last = history.iter().rev().find(|m| m.role == Role::Customer)?;
    let result = last.result.as_ref()?;
    let answered_from_knowledge = result.get("decision").and_then(|d| d.as_str()) == Some("answer")
        && result
            .get("reasons")
            .and_then(|r| r.as_array())
            .is_some_and(|reasons| reasons.iter().any(|r| r == "knowledge_match"));
    if !answered_from_knowledge {
        return None;
    }
    let question = last
        .understanding
        .as_ref()
        .and_then(|u| u.get("rewritten_query"))
        .and_then(|q| q.as_str())
        .unwrap_or(&last.text);
    // Keep the end: in a chain of follow-ups the latest words matter most.
    let chars: Vec<char> = question.chars().collect();
    let start = chars.len().saturating_sub(FOLLOW_UP_CONTEXT_CHARS);
    Some(chars[start..].iter().collect())
}

/// Words that point back at something said before.
const REFERRING_WORDS: &[&str] = &[
    "it", "that", "this", "those", "these", "they", "them", "ones", "one",
];
/// Openings that continue the previous question.
const CONTINUING_OPENINGS: &[&str] = &[
    "and",
    "also",
    "but",
    "so",
    "then",
    "what about",
    "how about",
];
/// Longer messages carry their own context.
const FOLLOW_UP_MAX_WORDS: usize = 12;

/// A short message that refers back ("can I use rechargeable ones?") or continues ("and if I
/// paid with PayPal?").
fn looks_like_follow_up(text: &str) -> bool {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() || words.len() > FOLLOW_UP_MAX_WORDS {
        return false;
    }
    let opening = words.join(" ");
    CONTINUING_OPENINGS
        .iter()
        .any(|start| opening == *start || opening.starts_with(&format!("{start} ")))
        || words.iter().any(|word| REFERRING_WORDS.contains(word))
}

/// Consecutive failed bot turns at the end of the history: turns whose decision was clarify.
fn consecutive_failures(history: &[MessageRecord]) -> u32 {
    let mut failures = 0;
    for message in history.iter().rev().filter(|m| m.role == Role::Customer) {
        let decision = message
            .result
            .as_ref()
            .and_then(|r| r.get("decision"))
            .and_then(|d| d.as_str());
        match decision {
            Some("clarify") => failures += 1,
            _ => break,
        }
    }
    failures
}

/// Whether a bot reply in the history answered with this chunk.
fn answered_with(history: &[MessageRecord], chunk_id: &str) -> bool {
    history.iter().any(|m| {
        m.role == Role::Bot
            && m.meta
                .as_ref()
                .and_then(|meta| meta.get("chunk_id"))
                .and_then(|c| c.as_str())
                == Some(chunk_id)
    })
}

/// Earlier turns as the frustration model sees them: customer messages with their stored
/// sentiment, bot replies marked failed when the bot had to clarify.
fn frustration_history(history: &[MessageRecord]) -> Vec<HistoryTurn> {
    history
        .iter()
        .filter(|m| matches!(m.role, Role::Customer | Role::Bot | Role::Agent))
        .map(|m| HistoryTurn {
            from_customer: m.role == Role::Customer,
            text: m.text.clone(),
            negative: m
                .understanding
                .as_ref()
                .and_then(|u| u.pointer("/sentiment/scores/negative"))
                .and_then(|v| v.as_f64())
                .map(|v| v as f32),
            failed: m.role == Role::Bot
                && m.meta
                    .as_ref()
                    .and_then(|meta| meta.get("decision"))
                    .and_then(|d| d.as_str())
                    == Some("clarify"),
        })
        .collect()
}

fn knowledge_ref(hit: &KnowledgeHit) -> KnowledgeRef {
    KnowledgeRef {
        chunk_id: hit.chunk.id.clone(),
        document_id: hit.chunk.document_id.clone(),
        title: hit.chunk.title.clone(),
        heading_path: hit.chunk.heading_path.clone(),
        score: hit.score,
        keyword_score: hit.keyword_score,
        url: hit.chunk.url.clone(),
        source: hit.chunk.source.clone(),
    }
}

fn source_of(hit: &KnowledgeHit) -> Source {
    let chunk = &hit.chunk;
    Source {
        title: chunk.display_title(),
        url: chunk.url.clone(),
        path: chunk.url.is_none().then(|| chunk.source.clone()),
        score: hit.score,
    }
}

/// Up to `limit` options, one per document, best first.
fn top_articles(hits: &[KnowledgeHit], limit: usize) -> Vec<ReplyOption> {
    let mut seen = std::collections::HashSet::new();
    hits.iter()
        .filter(|hit| seen.insert(hit.chunk.document_id.clone()))
        .take(limit)
        .map(|hit| {
            let source = source_of(hit);
            ReplyOption {
                label: source.title,
                kind: "article".into(),
                value: hit.chunk.id.clone(),
                url: hit.chunk.url.clone(),
            }
        })
        .collect()
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_ups_refer_back_or_continue_and_stay_short() {
        for text in [
            "can I use rechargeable ones?",
            "and if i paid with paypal?",
            "will that also stop my plus payments?",
            "what about the hub",
            "And how long does it take?",
        ] {
            assert!(looks_like_follow_up(text), "{text}");
        }
        for text in [
            "how do I reset my password?",
            "ok great thanks",
            "is there a fee for returns",
            "",
            "and this is a long message that explains everything about my thermostat in detail",
        ] {
            assert!(!looks_like_follow_up(text), "{text}");
        }
    }

    fn customer(text: &str, result: serde_json::Value, rewritten: Option<&str>) -> MessageRecord {
        MessageRecord {
            id: 1,
            conversation_id: "c".into(),
            role: Role::Customer,
            text: text.into(),
            author_id: None,
            kind: None,
            meta: None,
            client_message_id: None,
            understanding: rewritten.map(|q| serde_json::json!({ "rewritten_query": q })),
            result: Some(result),
            created_at: 0,
        }
    }

    #[test]
    fn a_follow_up_leans_only_on_a_question_answered_from_knowledge() {
        let answered = serde_json::json!({ "decision": "answer", "reasons": ["knowledge_match"] });
        let history = vec![customer(
            "what battery does the sensor take",
            answered.clone(),
            None,
        )];
        assert_eq!(
            follow_up_context(&history).as_deref(),
            Some("what battery does the sensor take")
        );
        let chained = vec![customer(
            "can I use rechargeable ones?",
            answered,
            Some("what battery does the sensor take can I use rechargeable ones?"),
        )];
        assert_eq!(
            follow_up_context(&chained).as_deref(),
            Some("what battery does the sensor take can I use rechargeable ones?")
        );
        let small_talk = serde_json::json!({ "decision": "answer", "reasons": ["small_talk"] });
        assert_eq!(follow_up_context(&[customer("hi", small_talk, None)]), None);
        let clarified = serde_json::json!({ "decision": "clarify", "reasons": ["weak_knowledge"] });
        assert_eq!(
            follow_up_context(&[customer("my thermostat", clarified, None)]),
            None
        );
        assert_eq!(follow_up_context(&[]), None);
        let long = "x".repeat(FOLLOW_UP_CONTEXT_CHARS + 50);
        let kept = follow_up_context(&[customer(
            &long,
            serde_json::json!({ "decision": "answer", "reasons": ["knowledge_match"] }),
            None,
        )])
        .unwrap();
        assert_eq!(kept.chars().count(), FOLLOW_UP_CONTEXT_CHARS);
    }
}
