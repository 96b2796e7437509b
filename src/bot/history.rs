//! What the conversation so far tells about the message at hand: the question a follow-up leans
//! on, failed turns in a row, answers already given, and the turns the frustration model reads.

use super::*;

/// Longest context carried into a follow-up, in characters: the question it follows, not the
/// whole conversation.
pub(super) const FOLLOW_UP_CONTEXT_CHARS: usize = 300;

/// The question a follow-up would lean on: the latest customer message, when the bot answered
/// it from knowledge (its rewritten form when it was itself a follow-up).
pub(super) fn follow_up_context(history: &[MessageRecord]) -> Option<String> {
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
pub(super) const REFERRING_WORDS: &[&str] = &[
    "it", "that", "this", "those", "these", "they", "them", "ones", "one",
];
/// Openings that continue the previous question.
pub(super) const CONTINUING_OPENINGS: &[&str] = &[
    "and",
    "also",
    "but",
    "so",
    "then",
    "what about",
    "how about",
];
/// Longer messages carry their own context.
pub(super) const FOLLOW_UP_MAX_WORDS: usize = 12;

/// A short message that refers back ("can I use rechargeable ones?") or continues ("and if I
/// paid with PayPal?").
pub(super) fn looks_like_follow_up(text: &str) -> bool {
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
pub(super) fn consecutive_failures(history: &[MessageRecord]) -> u32 {
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
pub(super) fn answered_with(history: &[MessageRecord], chunk_id: &str) -> bool {
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
pub(super) fn frustration_history(history: &[MessageRecord]) -> Vec<HistoryTurn> {
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
