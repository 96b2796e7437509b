//! Agents on their sockets: connecting (and catching up after lost notifications), presence,
//! messages, typing, internal notes.

use super::*;

impl HandoffService {
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
                &agent.id,
                &NewMessage {
                    role: Role::Agent,
                    text: text.to_string(),
                    author_id: Some(agent.id.clone()),
                    kind: None,
                    meta: Some(json!({ "author": agent.display_name })),
                },
                now,
            )
            .await?
            // Transferred, released or handed back since `held_by` looked.
            .ok_or_else(|| HandoffError::NotHeld(conversation_id.to_string()))?;
        if handoff.first_response_at.is_none() {
            if let Some(assigned_at) = handoff.assigned_at {
                self.metrics
                    .first_response
                    .observe((now - assigned_at).max(0) as f64 / 1000.0);
            }
        }
        self.customer_typing_off(conversation_id, agent);
        // The store checked, in the reply's own transaction, that this agent held the
        // conversation when the reply committed: wake them without reading the handoff again.
        self.hub.wake_customer(conversation_id);
        self.hub.wake_agent(&agent.id, conversation_id);
        Ok(message)
    }

    pub(super) fn customer_typing_off(&self, conversation_id: &str, agent: &AgentRecord) {
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
}
