//! Moves between people: claim, accept or decline an offer, transfer to an agent or a skill,
//! resolve, hand back to the bot, admin assignment.

use super::*;

impl HandoffService {
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

    pub(super) async fn finish(
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
}
