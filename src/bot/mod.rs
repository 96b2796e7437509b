//! The bot: one customer turn, end to end. Store the message, understand it (one encoder pass
//! feeding intent classification and retrieval), decide, write the reply, and record everything
//! in one transaction. The HTTP layer and the evaluations both drive this; nothing here knows
//! about HTTP or about the human side, which listens through [`TurnListener`].
//!
//! Rooms: `types` (what a turn produces), `understand` (reading a message), `history` (what the
//! conversation so far tells), `policy` (the decision and its reasons), `reply` and `answer` (the
//! words: extractive or LLM answers, clarifying questions, handoff messages); this file runs the
//! turn itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use rand::RngCore;

use crate::assets::{constant_time_eq, sha256_hex};
use crate::bot::answer::{Answer, AnswerError, AnswerRequest, AnswerWriter};
use crate::bot::policy::{
    ClarifyKind, ConversationView, Decision, DecisionKind, HandoffRoute, IntentView, Policy,
    PolicyInput, Reason,
};
use crate::config::{HumanOwnedReading, IntentSettings};
use crate::index::IndexError;
use crate::knowledge::retrieval::{refers_to_a_person, KnowledgeHit, Retriever};
use crate::metrics::Metrics;
use crate::nlp::classifier::ClassifierError;
use crate::nlp::encoder::{EncoderError, EncoderPool};
use crate::nlp::frustration::{Frustration, FrustrationModel, HistoryTurn};
use crate::nlp::intent_model::IntentRecognizer;
use crate::nlp::intents::Priority;
use crate::nlp::keywords::KeywordEncoder;
use crate::nlp::spelling::{count_words, Vocabulary};
use crate::privacy::Masker;
use crate::store::{
    ConversationRecord, ConversationState, CustomerInsert, MessageRecord, NewMessage, QueueRequest,
    Role, Store, StoreError, TurnCompletion,
};
use crate::templates::{render, Templates};

pub mod answer;
mod history;
pub mod policy;
mod reply;
mod types;
mod understand;

pub use types::*;

use history::{
    answered_with, consecutive_failures, follow_up_context, frustration_history,
    last_resort_sections_last, looks_like_follow_up,
};
use reply::{knowledge_ref, silent_decision, source_of};

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
    /// The business's words (intents and knowledge base), for typos and unfamiliar terms.
    vocabulary: RwLock<Arc<Vocabulary>>,
    /// The knowledge base's share of those words, kept to rebuild the vocabulary when only the
    /// intents change.
    knowledge_words: RwLock<HashMap<String, u32>>,
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
        let vocabulary = vocabulary_of(&encoder, &intents, &HashMap::new());
        Self {
            vocabulary: RwLock::new(Arc::new(vocabulary)),
            knowledge_words: RwLock::new(HashMap::new()),
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
        let vocabulary = vocabulary_of(&self.encoder, &recognizer, &self.knowledge_words.read());
        *self.vocabulary.write() = Arc::new(vocabulary);
        *self.intents.write() = Arc::new(recognizer);
    }

    /// Read the knowledge base's words again from the store (after documents were added,
    /// changed or removed). Returns how many distinct business words the bot now knows.
    pub async fn refresh_vocabulary(&self) -> Result<usize, EngineError> {
        let mut words = HashMap::new();
        for summary in self.store.list_documents().await? {
            let Some(document) = self.store.get_document(&summary.id).await? else {
                continue;
            };
            for chunk in &document.chunks {
                count_words(
                    std::iter::once(chunk.title.as_str())
                        .chain(chunk.heading_path.iter().map(String::as_str))
                        .chain(chunk.question.as_deref())
                        .chain(std::iter::once(chunk.text.as_str())),
                    &mut words,
                );
            }
        }
        let vocabulary = vocabulary_of(&self.encoder, &self.intents(), &words);
        let known = vocabulary.business_words();
        *self.knowledge_words.write() = words;
        *self.vocabulary.write() = Arc::new(vocabulary);
        Ok(known)
    }

    pub(super) fn vocabulary(&self) -> Arc<Vocabulary> {
        self.vocabulary.read().clone()
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
        let (message, conversation) = match self
            .store
            .insert_customer_message_with_state(conversation_id, text, client_message_id)
            .await
        {
            Ok((CustomerInsert::New(message), conversation)) => (message, conversation),
            Ok((CustomerInsert::Existing(message), conversation)) => match &message.result {
                Some(result) => {
                    return serde_json::from_value(result.clone())
                        .map(Turn::Replayed)
                        .map_err(|e| EngineError::CorruptResult(message.id, e.to_string()));
                }
                // The first attempt stored the message but never finished: finish it now, with
                // the text as first stored.
                None => (message, conversation),
            },
            Err(StoreError::ConversationNotFound(id)) => {
                return Err(EngineError::ConversationNotFound(id))
            }
            Err(other) => return Err(other.into()),
        };
        let state = conversation.state;
        let history = self.recent_history(conversation_id, message.id).await?;
        if state.human_owned() {
            // A person owns the conversation: record the message and say nothing. Only the
            // agent panel reads what was understood, so by default only what it shows is read.
            // The person sees the message as soon as it is stored, not after that reading.
            let listener = self.listener.read().clone();
            if let Some(listener) = listener {
                listener
                    .customer_message_stored(conversation_id, conversation.agent_id.as_deref())
                    .await;
            }
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
                    state,
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
        if last_resort_sections_last(&mut detail.hits, &history) {
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
            uncovered: !detail.understanding.uncovered_terms.is_empty(),
            best_knowledge_refers_to_a_person: detail
                .hits
                .first()
                .is_some_and(|best| refers_to_a_person(&best.chunk.text)),
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
        // The knowledge an answer was given from, recorded with the reply.
        let answered_from = (decision.kind == DecisionKind::Answer)
            .then(|| result.understanding.knowledge.first())
            .flatten();
        // The store writes the reply's id into the stored result (`reply_message_id`), so a
        // retried POST gets exactly what this one returns.
        let completion = TurnCompletion {
            conversation_id: conversation_id.to_string(),
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
                    "chunk_id": answered_from.map(|k| k.chunk_id.clone()),
                    // And from which document, so a "contact our team" section waits its turn.
                    "document_id": answered_from.map(|k| k.document_id.clone()),
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

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// The vocabulary of the intents (examples and descriptions, not the out-of-scope examples: those
/// are what the business does not handle) and the knowledge base's words.
fn vocabulary_of(
    encoder: &EncoderPool,
    intents: &IntentRecognizer,
    knowledge_words: &HashMap<String, u32>,
) -> Vocabulary {
    let mut words = knowledge_words.clone();
    for intent in &intents.intents().intents {
        count_words(
            intent
                .examples
                .iter()
                .map(String::as_str)
                .chain(intent.description.as_deref()),
            &mut words,
        );
    }
    Vocabulary::new(encoder.whole_words().clone(), words)
}
