//! Everything an agent needs to take over a conversation.

use super::*;

impl HandoffService {
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
}
