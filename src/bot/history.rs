//! What the conversation so far tells about the message at hand: the question a follow-up leans
//! on, failed turns in a row, answers already given (and from which article), and the turns the
//! frustration model reads.

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
    bot_reply_recorded(history, "chunk_id", chunk_id)
}

/// Whether a bot reply in the history answered from this document (replies stored before the
/// document was recorded count as not).
pub(super) fn answered_from_document(history: &[MessageRecord], document_id: &str) -> bool {
    bot_reply_recorded(history, "document_id", document_id)
}

/// Whether a bot reply in the history recorded `value` under `key` in its meta.
fn bot_reply_recorded(history: &[MessageRecord], key: &str, value: &str) -> bool {
    history.iter().any(|m| {
        m.role == Role::Bot
            && m.meta
                .as_ref()
                .and_then(|meta| meta.get(key))
                .and_then(|recorded| recorded.as_str())
                == Some(value)
    })
}

/// A section whose answer is to contact the team ("Still offline: contact our technical team in
/// chat") is its article's last resort: until the customer has had an answer from that article,
/// the best other section goes first (the referral right after it), so "thermostat offline since
/// yesterday" gets the checks and "did all that, still offline" gets a person. Returns whether
/// the order changed.
pub(super) fn last_resort_sections_last(
    hits: &mut Vec<KnowledgeHit>,
    history: &[MessageRecord],
) -> bool {
    let Some(best) = hits.first() else {
        return false;
    };
    if !refers_to_a_person(&best.chunk.text)
        || answered_from_document(history, &best.chunk.document_id)
    {
        return false;
    }
    let Some(first_answer) = hits
        .iter()
        .position(|hit| !refers_to_a_person(&hit.chunk.text))
    else {
        // Every section found sends the customer to the team: that is the answer.
        return false;
    };
    let referral = hits.remove(0);
    hits.insert(first_answer, referral);
    true
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

    fn section(document_id: &str, heading: &str, text: &str) -> KnowledgeHit {
        KnowledgeHit {
            chunk: crate::model::Chunk {
                id: format!("{document_id}/{heading}"),
                document_id: document_id.into(),
                ordinal: 0,
                title: "Device offline".into(),
                heading_path: vec![heading.into()],
                text: text.into(),
                question: None,
                source: format!("{document_id}.md"),
                url: None,
                content_hash: String::new(),
            },
            score: 0.7,
            keyword_score: None,
            fused: 0.7,
        }
    }

    fn bot_answer_from(document_id: &str) -> MessageRecord {
        MessageRecord {
            role: Role::Bot,
            meta: Some(serde_json::json!({ "decision": "answer", "document_id": document_id })),
            ..customer("here is how", serde_json::json!({}), None)
        }
    }

    fn headings(hits: &[KnowledgeHit]) -> Vec<&str> {
        hits.iter()
            .map(|hit| hit.chunk.heading_path[0].as_str())
            .collect()
    }

    #[test]
    fn a_contact_the_team_section_waits_until_its_article_has_been_given() {
        let found = || {
            vec![
                section(
                    "offline",
                    "Still offline",
                    "Contact our technical team in chat.",
                ),
                section("offline", "Weak signal", "Move the router closer."),
                section("offline", "Quick checks", "1. Check the power."),
            ]
        };
        // First time: the checks come first, the referral right after the best of them.
        let mut hits = found();
        assert!(last_resort_sections_last(&mut hits, &[]));
        assert_eq!(
            headings(&hits),
            ["Weak signal", "Still offline", "Quick checks"]
        );
        // The article (or another) already answered: the referral stays first, as found, only
        // when it was this article.
        let mut hits = found();
        assert!(!last_resort_sections_last(
            &mut hits,
            &[bot_answer_from("offline")]
        ));
        assert_eq!(headings(&hits)[0], "Still offline");
        let mut hits = found();
        assert!(last_resort_sections_last(
            &mut hits,
            &[bot_answer_from("billing")]
        ));
        assert_eq!(headings(&hits)[0], "Weak signal");
        // Nothing but referrals: that is the answer, as found.
        let mut hits = vec![
            section(
                "2fa",
                "Lost your phone",
                "Contact our accounts team in chat or by email.",
            ),
            section(
                "2fa",
                "Still stuck",
                "Chat with our team from the Help button.",
            ),
        ];
        assert!(!last_resort_sections_last(&mut hits, &[]));
        assert_eq!(headings(&hits), ["Lost your phone", "Still stuck"]);
        assert!(!last_resort_sections_last(&mut Vec::new(), &[]));
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
