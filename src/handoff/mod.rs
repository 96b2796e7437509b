//! The human side: a queue per skill, agents with capacity and presence, and the moves between
//! them (assign or offer, accept, claim, transfer, resolve, hand back, reassign). The store holds
//! the truth and enforces capacity atomically; this service decides what to do next, writes each
//! change (with its event) first, and only then tells the connected customers and agents through
//! the [`hub::Hub`].
//!
//! Time comes from a [`clock::Clock`]; timeouts are checked by [`HandoffService::sweep`], which
//! the server runs on an interval and tests call after moving a manual clock.
//!
//! The service is one type whose steps are split by concern: `customers.rs`, `agents.rs`,
//! `transfer.rs` (claim, offers, transfer, resolve, hand back), `dispatch.rs` (+ the sweep),
//! `queue.rs` and `context.rs`; the helpers they share are below.

pub mod accounts;
mod agents;
pub mod clock;
mod context;
mod customers;
mod dispatch;
pub mod hours;
pub mod hub;
pub mod presence;
pub mod protocol;
mod queue;
mod transfer;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::json;

use crate::bot::policy::Reason;
use crate::bot::{TurnListener, TurnResult};
use crate::config::{AssignmentMode, HandoffSettings};
use crate::metrics::Metrics;
use crate::nlp::intents::Priority;
use crate::privacy::Masker;
use crate::store::{
    AgentRecord, AgentStatus, AgentUpdate, ConversationState, EventDraft, HandoffRecord,
    HandoffStore, MessageRecord, Millis, NewMessage, QueueRequest, Release, Role, Store,
    StoreError,
};
use crate::templates::{render, Templates};
use clock::Clock;
use hours::BusinessHours;
use hub::Hub;
use presence::{LocalPresence, PresenceDirectory, PresenceSnapshot};
use protocol::{
    AgentFrame, AgentView, ConversationContext, CustomerFrame, IntentView, MessageView, NoteView,
    QueueItem, Typist,
};

/// An unchanged queue is published again after this long, so waiting times stay current.
const QUEUE_REFRESH_MILLIS: Millis = 10_000;

/// Transcript messages included in an agent's context (older ones are a `sync` away).
const CONTEXT_MESSAGES: i64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("conversation {0} not found")]
    ConversationNotFound(String),
    #[error("agent {0} not found")]
    AgentNotFound(String),
    #[error("you do not hold conversation {0}")]
    NotHeld(String),
    #[error("conversation {0} is not waiting in the queue")]
    NotQueued(String),
    #[error("conversation {0} is not offered to you")]
    NotOffered(String),
    #[error("{0} has no free capacity")]
    AgentFull(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who asked for an action: an agent acting on their own conversations, or an admin/integration.
#[derive(Debug, Clone, PartialEq)]
pub enum Actor {
    Agent(AgentRecord),
    Admin,
}

/// Where to transfer a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum TransferTarget {
    Agent(String),
    Skill(String),
}

pub struct HandoffService {
    store: Arc<dyn Store>,
    handoffs: Arc<dyn HandoffStore>,
    hub: Arc<Hub>,
    /// Which agents are connected: this instance's hub, or the database with several instances.
    presence: Arc<dyn PresenceDirectory>,
    clock: Arc<dyn Clock>,
    settings: HandoffSettings,
    hours: Option<BusinessHours>,
    templates: Templates,
    metrics: Metrics,
    /// One dispatch at a time: the store would keep concurrent ones correct, but they would only
    /// fight over the same rows.
    dispatching: tokio::sync::Mutex<()>,
    /// After a reassignment, the agent it left is not picked again for it straight away.
    avoid: Mutex<HashMap<String, String>>,
    /// Observed handling time (exponential average, seconds), for wait estimates.
    average_handle_secs: Mutex<f64>,
    /// The queue as last published (conversation and skill, in order) and when.
    last_queue: Mutex<(Vec<(String, String)>, Millis)>,
    /// Skills that have had a queue, so their length gauge can go back to 0.
    queued_skills: Mutex<std::collections::HashSet<String>>,
    /// Masks personal and payment data in what agents and customers write here.
    masker: Masker,
}

impl HandoffService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        handoffs: Arc<dyn HandoffStore>,
        hub: Arc<Hub>,
        clock: Arc<dyn Clock>,
        settings: HandoffSettings,
        hours: Option<BusinessHours>,
        templates: Templates,
        metrics: Metrics,
    ) -> Self {
        let average = settings.average_handle_secs as f64;
        Self {
            store,
            handoffs,
            presence: Arc::new(LocalPresence::new(hub.clone())),
            hub,
            clock,
            settings,
            hours,
            templates,
            metrics,
            dispatching: tokio::sync::Mutex::new(()),
            avoid: Mutex::new(HashMap::new()),
            average_handle_secs: Mutex::new(average.max(1.0)),
            queued_skills: Mutex::new(std::collections::HashSet::new()),
            last_queue: Mutex::new((Vec::new(), Millis::MIN / 2)),
            masker: Masker::default(),
        }
    }

    /// What is masked in agent messages, notes, left messages and rating comments (default:
    /// every kind).
    pub fn with_masker(mut self, masker: Masker) -> Self {
        self.masker = masker;
        self
    }

    /// Where presence is read and recorded (several instances share it through the database).
    pub fn with_presence(mut self, presence: Arc<dyn PresenceDirectory>) -> Self {
        self.presence = presence;
        self
    }

    async fn presence(&self) -> Result<PresenceSnapshot, HandoffError> {
        Ok(self.presence.snapshot(self.clock.now()).await?)
    }

    /// Tell the presence directory how many sockets of `agent_id` this instance holds now.
    async fn record_presence(&self, agent_id: &str) -> Result<(), HandoffError> {
        Ok(self.presence.record(agent_id, self.clock.now()).await?)
    }

    /// The text with personal and payment data masked, counted in the metrics.
    fn masked(&self, text: &str) -> String {
        self.metrics.masked(&self.masker, text)
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn handoff_store(&self) -> &Arc<dyn HandoffStore> {
        &self.handoffs
    }

    pub fn settings(&self) -> &HandoffSettings {
        &self.settings
    }

    /// After a restart: agents holding conversations count as disconnected from now, so they get
    /// the grace period to come back before their conversations are reassigned.
    pub async fn recover(&self) -> Result<(), HandoffError> {
        let now = self.clock.now();
        for handoff in self
            .handoffs
            .list_handoffs(&[ConversationState::Offered, ConversationState::Assigned])
            .await?
        {
            if let Some(agent) = &handoff.agent_id {
                self.hub.note_unseen_agent(agent, now);
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Helpers the parts share. The service's steps live by concern in the child modules:
    // customers, agents, transfer (claims and moves), dispatch (+ sweep), queue, context.

    async fn after_assignment(
        &self,
        conversation_id: &str,
        agent: &AgentRecord,
        queued: &HandoffRecord,
        now: Millis,
    ) -> Result<(), HandoffError> {
        self.metrics
            .time_to_assignment
            .observe((now - queued.queued_at).max(0) as f64 / 1000.0);
        // The customer asked for a person and now waits for their first reply: the agent's reply
        // deadline starts here.
        self.handoffs
            .record_customer_waiting(conversation_id, now)
            .await?;
        self.system_message(
            conversation_id,
            "agent_joined",
            render(
                &self.templates.agent_joined,
                &[("agent", &agent.display_name)],
            ),
            json!({ "author": agent.display_name, "agent_id": agent.id }),
        )
        .await?;
        let fresh = self
            .handoffs
            .get_handoff(conversation_id)
            .await?
            .ok_or_else(|| HandoffError::ConversationNotFound(conversation_id.to_string()))?;
        let conversation = self.context(&fresh).await?;
        self.hub
            .send_agent(&agent.id, AgentFrame::Assigned { conversation });
        self.hub.send_customer(
            conversation_id,
            CustomerFrame::State {
                state: ConversationState::Assigned,
            },
        );
        if let Some(fresh_agent) = self.handoffs.get_agent(&agent.id).await? {
            self.hub.send_agent(
                &agent.id,
                AgentFrame::Presence {
                    status: fresh_agent.status,
                    active: fresh_agent.active,
                    capacity: fresh_agent.capacity,
                },
            );
        }
        Ok(())
    }

    fn unassigned(&self, agent_id: &str, conversation_id: &str, reason: &str) {
        self.hub.send_agent(
            agent_id,
            AgentFrame::Unassigned {
                conversation_id: conversation_id.to_string(),
                reason: reason.to_string(),
            },
        );
    }

    /// A system message in the transcript (durable), then wake the readers.
    async fn system_message(
        &self,
        conversation_id: &str,
        kind: &str,
        text: String,
        meta: serde_json::Value,
    ) -> Result<MessageRecord, HandoffError> {
        let message = self
            .store
            .insert_message(
                conversation_id,
                NewMessage {
                    role: Role::System,
                    text,
                    author_id: None,
                    kind: Some(kind.to_string()),
                    meta: Some(meta),
                },
            )
            .await?;
        self.announce_messages(conversation_id).await?;
        Ok(message)
    }

    /// The conversation, if `agent_id` holds it (offered or assigned).
    async fn held_by(
        &self,
        agent_id: &str,
        conversation_id: &str,
    ) -> Result<HandoffRecord, HandoffError> {
        self.handoffs
            .get_handoff(conversation_id)
            .await?
            .filter(|h| h.state.human_owned() && h.agent_id.as_deref() == Some(agent_id))
            .ok_or_else(|| HandoffError::NotHeld(conversation_id.to_string()))
    }

    /// The conversation, if the actor may act on it: the holding agent, or an admin for any
    /// conversation on the human side.
    async fn actionable(
        &self,
        actor: &Actor,
        conversation_id: &str,
    ) -> Result<HandoffRecord, HandoffError> {
        match actor {
            Actor::Agent(agent) => self.held_by(&agent.id, conversation_id).await,
            Actor::Admin => self
                .handoffs
                .get_handoff(conversation_id)
                .await?
                .filter(|h| h.state.human_owned())
                .ok_or_else(|| HandoffError::NotQueued(conversation_id.to_string())),
        }
    }

    async fn eligible_agents(&self, skill: &str) -> Result<Vec<AgentRecord>, HandoffError> {
        let presence = self.presence().await?;
        Ok(self
            .handoffs
            .list_agents()
            .await?
            .into_iter()
            .filter(|a| {
                a.status == AgentStatus::Online
                    && presence.is_connected(&a.id)
                    && has_skill(a, skill)
            })
            .collect())
    }
}

#[async_trait]
impl TurnListener for HandoffService {
    async fn customer_message_stored(&self, conversation_id: &str, agent_id: Option<&str>) {
        // The holder was read in the insert's own transaction, so there is nothing to look up:
        // should the conversation change hands after that commit, the new holder's context is
        // read after it and includes the message.
        self.hub.wake_customer(conversation_id);
        if let Some(agent_id) = agent_id {
            self.hub.wake_agent(agent_id, conversation_id);
        }
    }

    async fn after_turn(&self, conversation_id: &str, result: &TurnResult) {
        if let Err(err) = self.on_turn(conversation_id, result).await {
            // The turn itself is stored; a missed notification is repaired by the next sweep or
            // the client's resume.
            tracing::warn!(conversation_id, error = %err, "could not notify the human side of a turn");
        }
    }
}

fn has_skill(agent: &AgentRecord, skill: &str) -> bool {
    agent.skills.iter().any(|s| s == skill || s == "*")
}

pub fn agent_view(agent: &AgentRecord) -> AgentView {
    AgentView {
        id: agent.id.clone(),
        name: agent.name.clone(),
        display_name: agent.display_name.clone(),
        skills: agent.skills.clone(),
        capacity: agent.capacity,
        status: agent.status,
        active: agent.active,
    }
}

/// The last agent who wrote in a conversation (for routing a rating).
async fn last_agent_of(
    store: &Arc<dyn Store>,
    conversation_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(store
        .recent_messages(conversation_id, i64::MAX, 200)
        .await?
        .into_iter()
        .rev()
        .find_map(|m| m.author_id.filter(|_| m.role == Role::Agent)))
}

/// A few lines an agent reads before the transcript: what the customer wants, why the bot handed
/// off, and how the conversation went.
fn summarise(
    messages: &[MessageRecord],
    intent: Option<&IntentView>,
    reasons: &[String],
) -> String {
    let customer: Vec<&MessageRecord> = messages
        .iter()
        .filter(|m| m.role == Role::Customer)
        .collect();
    let quote = |m: &MessageRecord| {
        let text: String = m.text.chars().take(160).collect();
        if m.text.chars().count() > 160 {
            format!("\"{text}…\"")
        } else {
            format!("\"{text}\"")
        }
    };
    let mut lines = Vec::new();
    if let Some(intent) = intent {
        lines.push(format!(
            "Likely about: {} ({:.0}% sure).",
            intent.name.replace('_', " "),
            intent.confidence * 100.0
        ));
    }
    if !reasons.is_empty() {
        lines.push(format!(
            "Handed off: {}.",
            reasons.join(", ").replace('_', " ")
        ));
    }
    match customer.as_slice() {
        [] => {}
        [only] => lines.push(format!("Customer wrote: {}", quote(only))),
        [first, .., last] => {
            lines.push(format!("First message: {}", quote(first)));
            lines.push(format!("Latest: {}", quote(last)));
        }
    }
    let bot_answers = messages.iter().filter(|m| m.role == Role::Bot).count();
    lines.push(format!(
        "{} customer messages, {} bot replies.",
        customer.len(),
        bot_answers
    ));
    lines.join(" ")
}

fn looks_like_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 254
        && !email.chars().any(char::is_whitespace)
}

/// Priority rank for sorting (urgent first).
pub fn priority_rank(priority: Priority) -> i64 {
    match priority {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Urgent => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: Role, text: &str) -> MessageRecord {
        MessageRecord {
            id: 1,
            conversation_id: "c".into(),
            role,
            text: text.into(),
            author_id: None,
            kind: None,
            meta: None,
            client_message_id: None,
            understanding: None,
            result: None,
            created_at: 0,
        }
    }

    #[test]
    fn summary_names_intent_reasons_and_first_and_last_messages() {
        let messages = vec![
            message(Role::Customer, "my thermostat is offline"),
            message(Role::Bot, "Try restarting it."),
            message(Role::Customer, "still offline, I want a person"),
        ];
        let intent = IntentView {
            name: "device_offline".into(),
            confidence: 0.93,
        };
        let summary = summarise(&messages, Some(&intent), &["explicit_request".into()]);
        assert!(summary.contains("device offline (93% sure)"), "{summary}");
        assert!(
            summary.contains("Handed off: explicit request."),
            "{summary}"
        );
        assert!(summary.contains("First message: \"my thermostat is offline\""));
        assert!(summary.contains("Latest: \"still offline, I want a person\""));
        assert!(summary.contains("2 customer messages, 1 bot replies."));
    }

    #[test]
    fn emails_are_checked_loosely_but_not_blindly() {
        assert!(looks_like_email("ana@example.com"));
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a na@example.com",
            "ana@.com",
        ] {
            assert!(!looks_like_email(bad), "{bad:?}");
        }
    }
}
