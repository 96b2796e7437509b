//! The queue as agents see it, and each waiting customer's place in it.

use super::*;

impl HandoffService {
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
    pub(super) async fn publish_queue(&self) -> Result<(), HandoffError> {
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
    pub(super) async fn queue_positions(
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
}
