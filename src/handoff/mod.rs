//! The human side: a queue per skill, agents with capacity and presence, and the moves between
//! them (assign or offer, accept, claim, transfer, resolve, hand back, reassign). The store holds
//! the truth and enforces capacity atomically; this service decides what to do next, writes each
//! change (with its event) first, and only then tells the connected customers and agents through
//! the [`hub::Hub`].
//!
//! Time comes from a [`clock::Clock`]; timeouts are checked by [`HandoffService::sweep`], which
//! the server runs on an interval and tests call after moving a manual clock.

pub mod accounts;
pub mod clock;
pub mod hours;
pub mod hub;
pub mod presence;
pub mod protocol;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::json;

use crate::config::{AssignmentMode, HandoffSettings};
use crate::engine::{TurnListener, TurnResult};
use crate::metrics::Metrics;
use crate::nlp::intents::Priority;
use crate::policy::Reason;
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
    // Customers

    /// A new message (customer, bot or system) in a conversation: wake everyone who shows it.
    pub async fn announce_messages(&self, conversation_id: &str) -> Result<(), HandoffError> {
        self.hub.wake_customer(conversation_id);
        if let Some(handoff) = self.handoffs.get_handoff(conversation_id).await? {
            if let (Some(agent), true) = (&handoff.agent_id, handoff.state.human_owned()) {
                self.hub.wake_agent(agent, conversation_id);
            }
        }
        Ok(())
    }

    async fn on_turn(
        &self,
        conversation_id: &str,
        result: &TurnResult,
    ) -> Result<(), HandoffError> {
        // A silent turn (humans own the conversation) already recorded that the customer is
        // waiting, in the same transaction as their message.
        let silent = result.reasons.contains(&Reason::AwaitingHuman);
        self.announce_messages(conversation_id).await?;
        if !silent && result.conversation_state == ConversationState::Queued {
            self.on_enqueued(conversation_id).await?;
        }
        Ok(())
    }

    /// A conversation just joined the queue: tell the customer where they stand (or that nobody
    /// is available), then try to assign it.
    async fn on_enqueued(&self, conversation_id: &str) -> Result<(), HandoffError> {
        let Some(handoff) = self.handoffs.get_handoff(conversation_id).await? else {
            return Ok(());
        };
        let now = self.clock.now();
        let open = self.hours.as_ref().is_none_or(|hours| hours.is_open(now));
        let available = self.eligible_agents(&handoff.skill).await?.len();
        if !open || available == 0 {
            let template = if open {
                &self.templates.offline
            } else {
                &self.templates.outside_hours
            };
            self.system_message(
                conversation_id,
                "offline",
                render(template, &[("team", &handoff.skill)]),
                json!({ "offline_form": true, "outside_hours": !open }),
            )
            .await?;
        }
        self.dispatch().await?;
        Ok(())
    }

    /// The customer left contact details while nobody was available.
    pub async fn leave_message(
        &self,
        conversation_id: &str,
        email: &str,
        text: &str,
    ) -> Result<(), HandoffError> {
        let email = email.trim();
        if !looks_like_email(email) {
            return Err(HandoffError::Invalid(format!(
                "{email:?} is not an email address"
            )));
        }
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 4000 {
            return Err(HandoffError::Invalid(
                "the message must be 1 to 4000 characters".into(),
            ));
        }
        // The contact address is kept on purpose (it is how the team writes back); the
        // message's free text is masked like every other.
        let text = &self.masked(text);
        let handoff = self
            .handoffs
            .get_handoff(conversation_id)
            .await?
            .filter(|h| h.state.human_owned())
            .ok_or_else(|| HandoffError::NotQueued(conversation_id.to_string()))?;
        self.handoffs
            .set_contact(
                conversation_id,
                email,
                text,
                &EventDraft::new("contact_left", json!({ "email": email })),
            )
            .await?;
        // The message itself is part of the transcript, so the agent reads it in context.
        self.store
            .insert_message(conversation_id, NewMessage::new(Role::Customer, text))
            .await?;
        self.system_message(
            conversation_id,
            "message_left",
            render(&self.templates.message_left, &[("email", email)]),
            json!({ "email": email }),
        )
        .await?;
        if let Some(agent) = &handoff.agent_id {
            self.hub.wake_agent(agent, conversation_id);
        }
        Ok(())
    }

    pub fn customer_typing(&self, agent_id: Option<&str>, conversation_id: &str, on: bool) {
        if let Some(agent) = agent_id {
            self.hub.send_agent(
                agent,
                AgentFrame::Typing {
                    conversation_id: conversation_id.to_string(),
                    on,
                },
            );
        }
    }

    /// Satisfaction at the end of a conversation.
    pub async fn rate(
        &self,
        conversation_id: &str,
        score: u8,
        comment: Option<&str>,
    ) -> Result<(), HandoffError> {
        if !(1..=5).contains(&score) {
            return Err(HandoffError::Invalid("score must be 1 to 5".into()));
        }
        let comment = comment.map(str::trim).filter(|c| !c.is_empty());
        if comment.is_some_and(|c| c.chars().count() > 2000) {
            return Err(HandoffError::Invalid(
                "the comment must be at most 2000 characters".into(),
            ));
        }
        let comment = comment.map(|c| self.masked(c));
        let event = self
            .store
            .append_event(
                Some(conversation_id),
                "rated",
                &json!({ "score": score, "comment": comment }),
            )
            .await?;
        // The last agent who handled it sees the rating.
        if let Some(agent) = last_agent_of(&self.store, conversation_id).await? {
            self.hub.send_agent(
                &agent,
                AgentFrame::Rated {
                    conversation_id: conversation_id.to_string(),
                    score,
                },
            );
        }
        tracing::info!(
            conversation_id,
            score,
            event = event.id,
            "conversation rated"
        );
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Agents

    pub async fn agent_view(&self, agent_id: &str) -> Result<AgentView, HandoffError> {
        let agent = self
            .handoffs
            .get_agent(agent_id)
            .await?
            .ok_or_else(|| HandoffError::AgentNotFound(agent_id.to_string()))?;
        Ok(agent_view(&agent))
    }

    /// An agent connected: what they hold, the queue, and a chance to take work.
    pub async fn agent_connected(&self, agent: &AgentRecord) -> Result<AgentFrame, HandoffError> {
        self.record_presence(&agent.id).await?;
        let agent = if agent.status == AgentStatus::Offline {
            self.handoffs
                .update_agent(
                    &agent.id,
                    &AgentUpdate {
                        status: Some(AgentStatus::Online),
                        ..AgentUpdate::default()
                    },
                )
                .await?
        } else {
            agent.clone()
        };
        let mut conversations = Vec::new();
        for handoff in self.handoffs.agent_handoffs(&agent.id).await? {
            conversations.push(self.context(&handoff).await?);
        }
        let hello = AgentFrame::Hello {
            protocol: protocol::PROTOCOL.into(),
            agent: agent_view(&agent),
            conversations,
            queue: self.queue_view().await?,
        };
        self.metrics
            .connected_agents
            .set(self.hub.connected_agent_count() as i64);
        Ok(hello)
    }

    pub async fn agent_disconnected(&self, agent_id: &str, connection: u64) {
        let last = self
            .hub
            .disconnect_agent(agent_id, connection, self.clock.now());
        if let Err(err) = self.record_presence(agent_id).await {
            // The instance's heartbeat stops counting this connection when the instance goes;
            // until then the agent may look connected elsewhere.
            tracing::warn!(agent_id, error = %err, "could not record an agent's disconnection");
        }
        self.metrics
            .connected_agents
            .set(self.hub.connected_agent_count() as i64);
        if last {
            tracing::info!(
                agent_id,
                "agent disconnected; their conversations wait the grace period"
            );
        }
    }

    /// After notifications from other instances may have been lost: the frames that bring a
    /// connection showing `shown` up to date with what the agent holds now (conversations let go
    /// of, new ones with their context, the queue). The caller then syncs every held
    /// conversation's messages.
    pub async fn agent_resync(
        &self,
        agent_id: &str,
        shown: &std::collections::HashSet<String>,
    ) -> Result<Vec<AgentFrame>, HandoffError> {
        let held = self.handoffs.agent_handoffs(agent_id).await?;
        let mut frames: Vec<AgentFrame> = shown
            .iter()
            .filter(|id| !held.iter().any(|h| &h.conversation_id == *id))
            .map(|id| AgentFrame::Unassigned {
                conversation_id: id.clone(),
                reason: "released".into(),
            })
            .collect();
        for handoff in held {
            if shown.contains(&handoff.conversation_id) {
                continue;
            }
            let conversation = self.context(&handoff).await?;
            frames.push(match (handoff.state, handoff.offer_expires_at) {
                (ConversationState::Offered, Some(expires_at)) => AgentFrame::Offer {
                    conversation,
                    expires_at,
                },
                _ => AgentFrame::Assigned { conversation },
            });
        }
        frames.push(AgentFrame::Queue {
            queue: self.queue_view().await?,
        });
        Ok(frames)
    }

    pub async fn set_presence(
        &self,
        agent_id: &str,
        status: AgentStatus,
    ) -> Result<(), HandoffError> {
        let agent = self
            .handoffs
            .update_agent(
                agent_id,
                &AgentUpdate {
                    status: Some(status),
                    ..AgentUpdate::default()
                },
            )
            .await?;
        self.store
            .append_event(
                None,
                "presence",
                &json!({ "agent_id": agent_id, "status": status }),
            )
            .await?;
        self.hub.send_agent(
            agent_id,
            AgentFrame::Presence {
                status,
                active: agent.active,
                capacity: agent.capacity,
            },
        );
        if status == AgentStatus::Online {
            self.dispatch().await?;
        }
        Ok(())
    }

    /// The agent writes to the customer.
    pub async fn agent_message(
        &self,
        agent: &AgentRecord,
        conversation_id: &str,
        text: &str,
    ) -> Result<MessageRecord, HandoffError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 4000 {
            return Err(HandoffError::Invalid(
                "a message must be 1 to 4000 characters".into(),
            ));
        }
        let text = &self.masked(text);
        let handoff = self.held_by(&agent.id, conversation_id).await?;
        if handoff.state != ConversationState::Assigned {
            return Err(HandoffError::Invalid(
                "accept the conversation before writing".into(),
            ));
        }
        let now = self.clock.now();
        let message = self
            .handoffs
            .insert_agent_reply(
                conversation_id,
                &NewMessage {
                    role: Role::Agent,
                    text: text.to_string(),
                    author_id: Some(agent.id.clone()),
                    kind: None,
                    meta: Some(json!({ "author": agent.display_name })),
                },
                now,
            )
            .await?;
        if handoff.first_response_at.is_none() {
            if let Some(assigned_at) = handoff.assigned_at {
                self.metrics
                    .first_response
                    .observe((now - assigned_at).max(0) as f64 / 1000.0);
            }
        }
        self.customer_typing_off(conversation_id, agent);
        self.announce_messages(conversation_id).await?;
        Ok(message)
    }

    fn customer_typing_off(&self, conversation_id: &str, agent: &AgentRecord) {
        self.hub.send_customer(
            conversation_id,
            CustomerFrame::Typing {
                who: Typist::Agent,
                name: Some(agent.display_name.clone()),
                on: false,
            },
        );
    }

    pub async fn agent_typing(
        &self,
        agent: &AgentRecord,
        conversation_id: &str,
        on: bool,
    ) -> Result<(), HandoffError> {
        self.held_by(&agent.id, conversation_id).await?;
        self.hub.send_customer(
            conversation_id,
            CustomerFrame::Typing {
                who: Typist::Agent,
                name: Some(agent.display_name.clone()),
                on,
            },
        );
        Ok(())
    }

    /// An internal note: stored as an event, shown to agents, never to the customer.
    pub async fn note(
        &self,
        agent: &AgentRecord,
        conversation_id: &str,
        text: &str,
    ) -> Result<NoteView, HandoffError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 4000 {
            return Err(HandoffError::Invalid(
                "a note must be 1 to 4000 characters".into(),
            ));
        }
        let text = &self.masked(text);
        self.held_by(&agent.id, conversation_id).await?;
        let event = self
            .store
            .append_event(
                Some(conversation_id),
                "note",
                &json!({ "agent_id": agent.id, "author": agent.display_name, "text": text }),
            )
            .await?;
        let note = NoteView {
            author: agent.display_name.clone(),
            text: text.to_string(),
            created_at: event.created_at,
        };
        self.hub.send_agent(
            &agent.id,
            AgentFrame::Note {
                conversation_id: conversation_id.to_string(),
                note: note.clone(),
            },
        );
        Ok(note)
    }

    /// Take a conversation from the queue.
    pub async fn claim(
        &self,
        agent: &AgentRecord,
        conversation_id: &str,
    ) -> Result<(), HandoffError> {
        let now = self.clock.now();
        let handoff = self
            .handoffs
            .get_handoff(conversation_id)
            .await?
            .ok_or_else(|| HandoffError::ConversationNotFound(conversation_id.to_string()))?;
        if handoff.state != ConversationState::Queued {
            return Err(HandoffError::NotQueued(conversation_id.to_string()));
        }
        let event = EventDraft::new(
            "assigned",
            json!({ "agent_id": agent.id, "how": "claimed", "skill": handoff.skill }),
        );
        if !self
            .handoffs
            .assign(conversation_id, &agent.id, None, now, &event)
            .await?
        {
            // Lost a race, or no capacity: tell which.
            let fresh = self.handoffs.get_agent(&agent.id).await?;
            if fresh.is_some_and(|a| a.active >= a.capacity) {
                return Err(HandoffError::AgentFull(agent.display_name.clone()));
            }
            return Err(HandoffError::NotQueued(conversation_id.to_string()));
        }
        self.after_assignment(conversation_id, agent, &handoff, now)
            .await?;
        self.publish_queue().await?;
        Ok(())
    }

    pub async fn accept(
        &self,
        agent: &AgentRecord,
        conversation_id: &str,
    ) -> Result<(), HandoffError> {
        let now = self.clock.now();
        let handoff = self.held_by(&agent.id, conversation_id).await?;
        let event = EventDraft::new(
            "assigned",
            json!({ "agent_id": agent.id, "how": "accepted" }),
        );
        if !self
            .handoffs
            .accept_offer(conversation_id, &agent.id, now, &event)
            .await?
        {
            return Err(HandoffError::NotOffered(conversation_id.to_string()));
        }
        self.after_assignment(conversation_id, agent, &handoff, now)
            .await
    }

    pub async fn decline(
        &self,
        agent: &AgentRecord,
        conversation_id: &str,
    ) -> Result<(), HandoffError> {
        let handoff = self.held_by(&agent.id, conversation_id).await?;
        if handoff.state != ConversationState::Offered {
            return Err(HandoffError::NotOffered(conversation_id.to_string()));
        }
        let requeue = Release::Requeue {
            at_head: true,
            skill: None,
        };
        let event = EventDraft::new("offer_declined", json!({ "agent_id": agent.id }));
        if self
            .handoffs
            .release(
                conversation_id,
                &agent.id,
                &requeue,
                self.clock.now(),
                &event,
            )
            .await?
        {
            self.avoid
                .lock()
                .insert(conversation_id.to_string(), agent.id.clone());
            self.unassigned(&agent.id, conversation_id, "declined");
        }
        self.dispatch().await
    }

    /// Move a conversation to another agent or skill; the note travels with it.
    pub async fn transfer(
        &self,
        actor: &Actor,
        conversation_id: &str,
        target: TransferTarget,
        note: Option<&str>,
    ) -> Result<(), HandoffError> {
        let now = self.clock.now();
        let handoff = self.actionable(actor, conversation_id).await?;
        let from = handoff.agent_id.clone();
        if let Some(note) = note.map(str::trim).filter(|n| !n.is_empty()) {
            let note = self.masked(note);
            let author = match actor {
                Actor::Agent(agent) => agent.display_name.clone(),
                Actor::Admin => "admin".into(),
            };
            self.store
                .append_event(
                    Some(conversation_id),
                    "note",
                    &json!({ "author": author, "text": note, "transfer": true }),
                )
                .await?;
        }
        match target {
            TransferTarget::Agent(target_id) => {
                let target = self
                    .handoffs
                    .get_agent(&target_id)
                    .await?
                    .ok_or_else(|| HandoffError::AgentNotFound(target_id.clone()))?;
                let event = EventDraft::new(
                    "transferred",
                    json!({ "from_agent": from, "to_agent": target.id }),
                );
                let moved = match &from {
                    Some(from) => {
                        self.handoffs
                            .transfer_to_agent(conversation_id, from, &target.id, now, &event)
                            .await?
                    }
                    None => {
                        self.handoffs
                            .assign(conversation_id, &target.id, None, now, &event)
                            .await?
                    }
                };
                if !moved {
                    return Err(HandoffError::AgentFull(target.display_name));
                }
                if let Some(from) = &from {
                    self.unassigned(from, conversation_id, "transferred");
                    if let Some(previous) = self.handoffs.get_agent(from).await? {
                        self.system_message(
                            conversation_id,
                            "agent_left",
                            render(
                                &self.templates.agent_left,
                                &[("agent", &previous.display_name)],
                            ),
                            json!({ "author": previous.display_name }),
                        )
                        .await?;
                    }
                }
                self.after_assignment(conversation_id, &target, &handoff, now)
                    .await?;
            }
            TransferTarget::Skill(skill) => {
                let skill = skill.trim().to_string();
                if skill.is_empty() {
                    return Err(HandoffError::Invalid("the skill must not be empty".into()));
                }
                let release = Release::Requeue {
                    at_head: false,
                    skill: Some(skill.clone()),
                };
                let event = EventDraft::new(
                    "transferred",
                    json!({ "from_agent": from, "to_skill": skill }),
                );
                let moved = match &from {
                    Some(from) => {
                        self.handoffs
                            .release(conversation_id, from, &release, now, &event)
                            .await?
                    }
                    None => {
                        // Queued without an agent: change its skill by closing and re-queueing.
                        let request = QueueRequest {
                            skill: skill.clone(),
                            priority: handoff.priority,
                            reasons: handoff.reasons.clone(),
                            frustration: handoff.frustration,
                            intent: handoff.intent.clone(),
                            preview: handoff.preview.clone(),
                        };
                        self.handoffs
                            .close_queued(conversation_id, &Release::HandBack, now, &event)
                            .await?
                            && self
                                .handoffs
                                .enqueue(conversation_id, &request, now, &event)
                                .await?
                    }
                };
                if !moved {
                    return Err(HandoffError::NotHeld(conversation_id.to_string()));
                }
                if let Some(from) = &from {
                    self.unassigned(from, conversation_id, "transferred");
                }
                self.system_message(
                    conversation_id,
                    "transferred",
                    render(&self.templates.transferred, &[("team", &skill)]),
                    json!({ "skill": skill }),
                )
                .await?;
                self.dispatch().await?;
            }
        }
        Ok(())
    }

    pub async fn resolve(&self, actor: &Actor, conversation_id: &str) -> Result<(), HandoffError> {
        self.finish(actor, conversation_id, Release::Resolve).await
    }

    /// Back to the bot, which answers the customer's next message again.
    pub async fn hand_back(
        &self,
        actor: &Actor,
        conversation_id: &str,
    ) -> Result<(), HandoffError> {
        self.finish(actor, conversation_id, Release::HandBack).await
    }

    async fn finish(
        &self,
        actor: &Actor,
        conversation_id: &str,
        release: Release,
    ) -> Result<(), HandoffError> {
        let now = self.clock.now();
        let handoff = self.actionable(actor, conversation_id).await?;
        let (kind, template, reason) = match release {
            Release::Resolve => ("resolved", &self.templates.resolved, "resolved"),
            _ => ("handed_back", &self.templates.handed_back, "handed_back"),
        };
        let by = match actor {
            Actor::Agent(agent) => json!(agent.id),
            Actor::Admin => json!("admin"),
        };
        let event = EventDraft::new(kind, json!({ "agent_id": handoff.agent_id, "by": by }));
        let done = match &handoff.agent_id {
            Some(agent) => {
                self.handoffs
                    .release(conversation_id, agent, &release, now, &event)
                    .await?
            }
            None => {
                self.handoffs
                    .close_queued(conversation_id, &release, now, &event)
                    .await?
            }
        };
        if !done {
            return Err(HandoffError::NotHeld(conversation_id.to_string()));
        }
        if let (Some(agent), Some(assigned_at)) = (&handoff.agent_id, handoff.assigned_at) {
            let seconds = (now - assigned_at).max(0) as f64 / 1000.0;
            self.metrics.handle_time.observe(seconds);
            let mut average = self.average_handle_secs.lock();
            *average = 0.8 * *average + 0.2 * seconds.max(1.0);
            drop(average);
            self.unassigned(agent, conversation_id, reason);
        }
        self.system_message(conversation_id, kind, template.clone(), json!({}))
            .await?;
        self.hub.send_customer(
            conversation_id,
            CustomerFrame::State {
                state: if kind == "resolved" {
                    ConversationState::Resolved
                } else {
                    ConversationState::Bot
                },
            },
        );
        self.dispatch().await
    }

    /// Admin or integration: put a queued conversation with a specific agent.
    pub async fn assign_to(
        &self,
        conversation_id: &str,
        agent_id: &str,
    ) -> Result<(), HandoffError> {
        let agent = self
            .handoffs
            .get_agent(agent_id)
            .await?
            .ok_or_else(|| HandoffError::AgentNotFound(agent_id.to_string()))?;
        let handoff = self
            .handoffs
            .get_handoff(conversation_id)
            .await?
            .ok_or_else(|| HandoffError::ConversationNotFound(conversation_id.to_string()))?;
        if handoff.state != ConversationState::Queued {
            return Err(HandoffError::NotQueued(conversation_id.to_string()));
        }
        let now = self.clock.now();
        let event = EventDraft::new("assigned", json!({ "agent_id": agent.id, "how": "admin" }));
        if !self
            .handoffs
            .assign(conversation_id, &agent.id, None, now, &event)
            .await?
        {
            return Err(HandoffError::AgentFull(agent.display_name));
        }
        self.after_assignment(conversation_id, &agent, &handoff, now)
            .await?;
        self.publish_queue().await
    }

    // ---------------------------------------------------------------------------------------
    // Dispatch and timeouts

    /// Give queued conversations to free agents: queue order (head, priority, frustration, age),
    /// least-loaded agent with the skill first. Offers or assigns depending on the mode.
    pub async fn dispatch(&self) -> Result<(), HandoffError> {
        let _one_at_a_time = self.dispatching.lock().await;
        let queued = self
            .handoffs
            .list_handoffs(&[ConversationState::Queued])
            .await?;
        if !queued.is_empty() {
            let presence = self.presence().await?;
            let mut agents: Vec<AgentRecord> = self
                .handoffs
                .list_agents()
                .await?
                .into_iter()
                .filter(|a| a.status == AgentStatus::Online && presence.is_connected(&a.id))
                .collect();
            let now = self.clock.now();
            let open = self.hours.as_ref().is_none_or(|hours| hours.is_open(now));
            for handoff in queued {
                if !open {
                    break;
                }
                let avoid = self.avoid.lock().get(&handoff.conversation_id).cloned();
                let choice = agents
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.active < a.capacity && has_skill(a, &handoff.skill))
                    .filter(|(_, a)| avoid.as_deref() != Some(a.id.as_str()))
                    // Least loaded relative to capacity, then fewest held, then name for stability.
                    .min_by(|(_, a), (_, b)| {
                        (a.active * b.capacity)
                            .cmp(&(b.active * a.capacity))
                            .then(a.active.cmp(&b.active))
                            .then(a.name.cmp(&b.name))
                    })
                    .map(|(index, _)| index);
                let Some(index) = choice else {
                    continue;
                };
                let agent = agents[index].clone();
                let offer_expires_at = match self.settings.assignment {
                    AssignmentMode::Auto => None,
                    AssignmentMode::Offer => {
                        Some(now + self.settings.offer_timeout_secs as i64 * 1000)
                    }
                };
                let kind = if offer_expires_at.is_some() {
                    "offered"
                } else {
                    "assigned"
                };
                let event = EventDraft::new(
                    kind,
                    json!({ "agent_id": agent.id, "how": "dispatch", "skill": handoff.skill }),
                );
                if self
                    .handoffs
                    .assign(
                        &handoff.conversation_id,
                        &agent.id,
                        offer_expires_at,
                        now,
                        &event,
                    )
                    .await?
                {
                    agents[index].active += 1;
                    self.avoid.lock().remove(&handoff.conversation_id);
                    match offer_expires_at {
                        Some(expires_at) => {
                            let mut fresh = handoff.clone();
                            fresh.state = ConversationState::Offered;
                            fresh.agent_id = Some(agent.id.clone());
                            let conversation = self.context(&fresh).await?;
                            self.hub.send_agent(
                                &agent.id,
                                AgentFrame::Offer {
                                    conversation,
                                    expires_at,
                                },
                            );
                        }
                        None => {
                            self.after_assignment(&handoff.conversation_id, &agent, &handoff, now)
                                .await?
                        }
                    }
                } else {
                    // Someone else changed the agent or the conversation: refresh the agent.
                    if let Some(fresh) = self.handoffs.get_agent(&agent.id).await? {
                        agents[index] = fresh;
                    }
                }
            }
        }
        drop(_one_at_a_time);
        self.publish_queue().await
    }

    /// Expired offers, silent agents, agents gone past the grace period: their conversations go
    /// back to the head of the queue (the customer is told), then dispatch.
    pub async fn sweep(&self) -> Result<(), HandoffError> {
        let now = self.clock.now();
        let held = self
            .handoffs
            .list_handoffs(&[ConversationState::Offered, ConversationState::Assigned])
            .await?;
        let reply_timeout = self.settings.agent_reply_timeout_secs as i64 * 1000;
        let grace = self.settings.disconnect_grace_secs as i64 * 1000;
        let presence = if held.is_empty() {
            PresenceSnapshot::default()
        } else {
            self.presence().await?
        };
        for handoff in held {
            let Some(agent) = handoff.agent_id.clone() else {
                continue;
            };
            let gone = !presence.is_connected(&agent)
                && presence
                    .disconnected_at(&agent)
                    .is_none_or(|since| now - since >= grace);
            let reason = if gone {
                Some("agent_disconnected")
            } else if handoff.state == ConversationState::Offered
                && handoff
                    .offer_expires_at
                    .is_some_and(|expires| expires <= now)
            {
                Some("offer_expired")
            } else if handoff.state == ConversationState::Assigned
                && handoff
                    .waiting_since
                    .is_some_and(|since| now - since >= reply_timeout)
            {
                Some("no_reply")
            } else {
                None
            };
            let Some(reason) = reason else {
                continue;
            };
            let release = Release::Requeue {
                at_head: true,
                skill: None,
            };
            let event = EventDraft::new(
                "reassigning",
                json!({ "agent_id": agent, "reason": reason }),
            );
            if self
                .handoffs
                .release(&handoff.conversation_id, &agent, &release, now, &event)
                .await?
            {
                self.metrics
                    .reassignments
                    .with_label_values(&[reason])
                    .inc();
                self.avoid
                    .lock()
                    .insert(handoff.conversation_id.clone(), agent.clone());
                self.unassigned(&agent, &handoff.conversation_id, reason);
                if handoff.state == ConversationState::Assigned {
                    self.system_message(
                        &handoff.conversation_id,
                        "reassigning",
                        render(&self.templates.reassigning, &[("team", &handoff.skill)]),
                        json!({ "reason": reason }),
                    )
                    .await?;
                }
            }
        }
        self.dispatch().await
    }

    /// Runs [`HandoffService::sweep`] every `sweep_interval_ms` until `stop` resolves, when
    /// `leading()` (with several instances only the leader sweeps).
    pub async fn run_sweeper(
        self: Arc<Self>,
        leading: impl Fn() -> bool,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut interval = tokio::time::interval(std::time::Duration::from_millis(
            self.settings.sweep_interval_ms.max(10),
        ));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = interval.tick() => {
                    if !leading() {
                        continue;
                    }
                    if let Err(err) = self.sweep().await {
                        tracing::warn!(error = %err, "handoff sweep failed");
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Views

    /// The queue, in order, as agents see it.
    pub async fn queue_view(&self) -> Result<Vec<QueueItem>, HandoffError> {
        let now = self.clock.now();
        // One query: the intent and preview were stored when the conversation joined the queue.
        Ok(self
            .handoffs
            .list_handoffs(&[ConversationState::Queued])
            .await?
            .into_iter()
            .map(|handoff| QueueItem {
                waiting_secs: ((now - handoff.queued_at).max(0) / 1000) as u64,
                conversation_id: handoff.conversation_id,
                skill: handoff.skill,
                priority: handoff.priority,
                frustration: handoff.frustration,
                reasons: handoff.reasons,
                intent: handoff.intent,
                preview: handoff.preview,
            })
            .collect())
    }

    /// Tell agents the queue and waiting customers their place in it: when the queue changed, and
    /// otherwise every [`QUEUE_REFRESH_MILLIS`] so waiting times stay current without a broadcast
    /// on every sweep.
    async fn publish_queue(&self) -> Result<(), HandoffError> {
        let queue = self.queue_view().await?;
        {
            let now = self.clock.now();
            let shape: Vec<(String, String)> = queue
                .iter()
                .map(|q| (q.conversation_id.clone(), q.skill.clone()))
                .collect();
            let mut last = self.last_queue.lock();
            if last.0 == shape && now - last.1 < QUEUE_REFRESH_MILLIS {
                return Ok(());
            }
            *last = (shape, now);
        }
        let mut by_skill: HashMap<&str, usize> = HashMap::new();
        for item in &queue {
            *by_skill.entry(item.skill.as_str()).or_default() += 1;
        }
        // Skills whose queue emptied must read 0, not their last length.
        {
            let mut seen = self.queued_skills.lock();
            for skill in seen.iter() {
                if !by_skill.contains_key(skill.as_str()) {
                    self.metrics.queue_length.with_label_values(&[skill]).set(0);
                }
            }
            for (skill, length) in &by_skill {
                self.metrics
                    .queue_length
                    .with_label_values(&[skill])
                    .set(*length as i64);
                seen.insert(skill.to_string());
            }
        }
        self.metrics
            .connected_customers
            .set(self.hub.connected_customer_count() as i64);
        for (conversation_id, frame) in self.queue_positions(&queue).await? {
            self.hub.send_customer(&conversation_id, frame);
        }
        self.hub.broadcast_agents(AgentFrame::Queue { queue });
        Ok(())
    }

    /// Each waiting customer's place in their skill's queue, with an estimated wait.
    async fn queue_positions(
        &self,
        queue: &[QueueItem],
    ) -> Result<Vec<(String, CustomerFrame)>, HandoffError> {
        let agents = self.handoffs.list_agents().await?;
        let presence = self.presence().await?;
        let average = *self.average_handle_secs.lock();
        let mut positions: HashMap<&str, usize> = HashMap::new();
        let mut frames = Vec::with_capacity(queue.len());
        for item in queue {
            let position = positions.entry(item.skill.as_str()).or_default();
            *position += 1;
            let available: Vec<&AgentRecord> = agents
                .iter()
                .filter(|a| {
                    a.status == AgentStatus::Online
                        && presence.is_connected(&a.id)
                        && has_skill(a, &item.skill)
                })
                .collect();
            // Each online agent with the skill works through `capacity` conversations at a time,
            // each taking about the average handling time.
            let slots: i64 = available.iter().map(|a| a.capacity.max(1)).sum();
            let estimated_wait_secs = if slots == 0 {
                0
            } else {
                (average * (*position as f64) / slots as f64).round() as u64
            };
            frames.push((
                item.conversation_id.clone(),
                CustomerFrame::Queue {
                    position: *position,
                    estimated_wait_secs,
                    agents_online: available.len(),
                },
            ));
        }
        Ok(frames)
    }

    /// The queue frame for one waiting conversation (sent when its customer connects).
    pub async fn queue_position(
        &self,
        conversation_id: &str,
    ) -> Result<Option<CustomerFrame>, HandoffError> {
        let queue = self.queue_view().await?;
        if !queue.iter().any(|q| q.conversation_id == conversation_id) {
            return Ok(None);
        }
        Ok(self
            .queue_positions(&queue)
            .await?
            .into_iter()
            .find(|(id, _)| id == conversation_id)
            .map(|(_, frame)| frame))
    }

    /// Everything an agent needs to take over the conversation.
    pub async fn context(
        &self,
        handoff: &HandoffRecord,
    ) -> Result<ConversationContext, HandoffError> {
        let conversation_id = &handoff.conversation_id;
        let messages = self
            .store
            .recent_messages(conversation_id, i64::MAX, CONTEXT_MESSAGES)
            .await?;
        let latest_with = |field: &str| {
            messages
                .iter()
                .rev()
                .filter(|m| m.role == Role::Customer)
                .filter_map(|m| m.understanding.as_ref())
                .find(|u| u.get(field).is_some_and(|v| !v.is_null()))
                .cloned()
                .unwrap_or(serde_json::Value::Null)
        };
        // Messages written while a person owns the conversation may have been read for the
        // panel only (sentiment, no intent or knowledge): intent and suggested articles come
        // from the latest message read in full, sentiment from the latest message of all.
        let understanding = latest_with("intent");
        let sentiment = latest_with("sentiment").get("sentiment").cloned();
        let intent = understanding.get("intent").and_then(|i| {
            Some(IntentView {
                name: i.get("name")?.as_str()?.to_string(),
                confidence: i.get("confidence")?.as_f64()? as f32,
            })
        });
        let knowledge = understanding
            .get("knowledge")
            .and_then(|k| k.as_array())
            .cloned()
            .unwrap_or_default();
        let notes = self
            .store
            .list_events(Some(conversation_id), None, 1000)
            .await?
            .into_iter()
            .filter(|e| e.kind == "note")
            .map(|e| NoteView {
                author: e
                    .payload
                    .get("author")
                    .and_then(|a| a.as_str())
                    .unwrap_or("agent")
                    .to_string(),
                text: e
                    .payload
                    .get("text")
                    .and_then(|t| t.as_str())
                    .unwrap_or_default()
                    .to_string(),
                created_at: e.created_at,
            })
            .collect();
        Ok(ConversationContext {
            conversation_id: conversation_id.clone(),
            state: handoff.state,
            skill: handoff.skill.clone(),
            priority: handoff.priority,
            reasons: handoff.reasons.clone(),
            frustration: handoff.frustration,
            queued_at: handoff.queued_at,
            summary: summarise(&messages, intent.as_ref(), &handoff.reasons),
            intent,
            sentiment,
            knowledge,
            transcript: messages.iter().map(MessageView::from).collect(),
            notes,
            mood: messages
                .iter()
                .filter(|m| m.role == Role::Customer)
                .filter_map(|m| {
                    let understanding = m.understanding.as_ref()?;
                    let number = |pointer: &str| {
                        understanding
                            .pointer(pointer)
                            .and_then(|v| v.as_f64())
                            .map(|v| v as f32)
                    };
                    Some(protocol::MoodPoint {
                        message_id: m.id,
                        negative: number("/sentiment/scores/negative"),
                        frustration: number("/frustration/score"),
                    })
                })
                .collect(),
            contact_email: handoff.contact_email.clone(),
            contact_note: handoff.contact_note.clone(),
            reassignments: handoff.reassignments,
        })
    }

    // ---------------------------------------------------------------------------------------
    // Helpers

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
