//! Dispatch (queued conversations to free agents) and the timeouts sweep (expired offers, silent
//! agents, grace periods), run by the leader.

use super::*;

impl HandoffService {
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
}
