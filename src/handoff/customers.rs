//! What customers do on the human side: their messages reach the agent, joining the queue, contact
//! details left when nobody is available, typing, rating.

use super::*;

impl HandoffService {
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

    pub(super) async fn on_turn(
        &self,
        conversation_id: &str,
        result: &TurnResult,
    ) -> Result<(), HandoffError> {
        // A silent turn (humans own the conversation) adds no message of the bot's: the
        // customer's was announced when it was stored (`customer_message_stored`), and its
        // completion recorded that the customer is waiting.
        if result.reasons.contains(&Reason::AwaitingHuman) {
            return Ok(());
        }
        self.announce_messages(conversation_id).await?;
        if result.conversation_state == ConversationState::Queued {
            self.on_enqueued(conversation_id).await?;
        }
        Ok(())
    }

    /// A conversation just joined the queue: tell the customer where they stand (or that nobody
    /// is available), then try to assign it.
    pub(super) async fn on_enqueued(&self, conversation_id: &str) -> Result<(), HandoffError> {
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
}
