//! Writing the reply a decision calls for: the answer (through the answer writer, with its
//! fallback), the clarifying question and its options, or the handoff message.

use super::*;

impl Engine {
    /// For a decision to answer from knowledge: the written answer, with the knowledge it cites
    /// as sources. A writer that declines turns the decision into a handoff (`llm_declined`); one
    /// that is unavailable is replaced by the fallback (`llm_unavailable`). Other decisions pass
    /// through untouched.
    pub(super) async fn write_answer(
        &self,
        mut decision: Decision,
        question: &str,
        detail: &UnderstandingDetail,
        history: &[MessageRecord],
        deltas: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<(Decision, Option<Reply>), EngineError> {
        if decision.kind != DecisionKind::Answer || decision.reasons.contains(&Reason::SmallTalk) {
            return Ok((decision, None));
        }
        let history: Vec<(String, String)> = history
            .iter()
            .map(|m| (m.role.as_str().to_string(), m.text.clone()))
            .collect();
        let request = |deltas| AnswerRequest {
            question,
            hits: &detail.hits,
            history: &history,
            deltas,
        };
        let answer = match (self.answerer.write(request(deltas)).await, &self.fallback) {
            (Ok(answer), _) => answer,
            (Err(AnswerError::Unavailable { cause, detail }), Some(fallback)) => {
                tracing::warn!(
                    writer = self.answerer.name(),
                    cause,
                    error = %detail,
                    "answer writer unavailable; answering with {}",
                    fallback.name()
                );
                decision.reasons.push(Reason::LlmUnavailable);
                fallback.write(request(None)).await?
            }
            (Err(other), _) => return Err(other.into()),
        };
        match answer {
            Answer::Written { text, cited } => {
                let sources = cited
                    .iter()
                    .filter_map(|&index| detail.hits.get(index))
                    .map(source_of)
                    .collect();
                let reply = Reply {
                    text,
                    sources,
                    options: None,
                };
                Ok((decision, Some(reply)))
            }
            Answer::Declined { why } => {
                tracing::info!(
                    writer = self.answerer.name(),
                    why,
                    "the answer writer declined; handing off"
                );
                let handoff = Decision {
                    kind: DecisionKind::Handoff,
                    reasons: vec![Reason::LlmDeclined],
                    clarify: None,
                };
                Ok((handoff, None))
            }
        }
    }

    /// The reply for every decision but an answer from knowledge (see `write_answer`).
    pub(super) fn compose_reply(
        &self,
        decision: &Decision,
        route: Option<&HandoffRoute>,
        fixed_reply: Option<&str>,
        detail: &UnderstandingDetail,
    ) -> Option<Reply> {
        let templates = &self.templates;
        let reply = match decision.kind {
            DecisionKind::Answer if decision.reasons.contains(&Reason::SmallTalk) => Reply {
                text: fixed_reply.unwrap_or_default().to_string(),
                sources: Vec::new(),
                options: None,
            },
            DecisionKind::Answer => {
                // An answer from knowledge was written by `write_answer`; nothing to add.
                return None;
            }
            DecisionKind::Clarify => match decision.clarify {
                Some(ClarifyKind::Articles) => {
                    let options = top_articles(&detail.hits, 3);
                    Reply {
                        text: render(
                            &templates.clarify_articles,
                            &[(
                                "topic",
                                options
                                    .first()
                                    .map(|o| o.label.as_str())
                                    .unwrap_or_default(),
                            )],
                        ),
                        sources: Vec::new(),
                        options: Some(options),
                    }
                }
                Some(ClarifyKind::Intents) => {
                    let recognizer = self.intents();
                    let names: Vec<&IntentScoreView> = detail
                        .understanding
                        .intent
                        .iter()
                        .chain(detail.understanding.alternatives.iter())
                        .take(2)
                        .collect();
                    let describe = |name: &str| {
                        recognizer
                            .spec(name)
                            .and_then(|s| s.description.clone())
                            .unwrap_or_else(|| name.replace('_', " "))
                    };
                    let descriptions: Vec<String> =
                        names.iter().map(|n| describe(&n.name)).collect();
                    Reply {
                        text: render(
                            &templates.clarify_intents,
                            &[
                                (
                                    "first",
                                    descriptions.first().map(String::as_str).unwrap_or_default(),
                                ),
                                (
                                    "second",
                                    descriptions.get(1).map(String::as_str).unwrap_or_default(),
                                ),
                            ],
                        ),
                        sources: Vec::new(),
                        options: Some(
                            names
                                .iter()
                                .zip(&descriptions)
                                .map(|(name, description)| ReplyOption {
                                    label: description.clone(),
                                    kind: "intent".into(),
                                    value: name.name.clone(),
                                    url: None,
                                })
                                .collect(),
                        ),
                    }
                }
                Some(ClarifyKind::Rephrase) | None => Reply {
                    text: templates.clarify_rephrase.clone(),
                    sources: Vec::new(),
                    options: None,
                },
            },
            DecisionKind::Handoff => {
                if decision.reasons.contains(&Reason::AwaitingHuman) {
                    return None;
                }
                let team = route.map(|r| r.skill.as_str()).unwrap_or("support");
                let template = match decision.reasons.first() {
                    Some(Reason::ExplicitRequest) => &templates.handoff_explicit_request,
                    Some(Reason::IntentRequiresHuman) => &templates.handoff_intent_requires_human,
                    Some(Reason::OutOfScope) => &templates.handoff_out_of_scope,
                    Some(Reason::RepeatedFailure) => &templates.handoff_repeated_failure,
                    Some(Reason::Frustration) => &templates.handoff_frustration,
                    _ => &templates.handoff_default,
                };
                Reply {
                    text: render(template, &[("team", team)]),
                    sources: Vec::new(),
                    options: None,
                }
            }
        };
        Some(reply)
    }
}

pub(super) fn silent_decision() -> Decision {
    Decision {
        kind: DecisionKind::Handoff,
        reasons: vec![Reason::AwaitingHuman],
        clarify: None,
    }
}

pub(super) fn knowledge_ref(hit: &KnowledgeHit) -> KnowledgeRef {
    KnowledgeRef {
        chunk_id: hit.chunk.id.clone(),
        document_id: hit.chunk.document_id.clone(),
        title: hit.chunk.title.clone(),
        heading_path: hit.chunk.heading_path.clone(),
        score: hit.score,
        keyword_score: hit.keyword_score,
        url: hit.chunk.url.clone(),
        source: hit.chunk.source.clone(),
    }
}

pub(super) fn source_of(hit: &KnowledgeHit) -> Source {
    let chunk = &hit.chunk;
    Source {
        title: chunk.display_title(),
        url: chunk.url.clone(),
        path: chunk.url.is_none().then(|| chunk.source.clone()),
        score: hit.score,
    }
}

/// Up to `limit` options, one per document, best first.
pub(super) fn top_articles(hits: &[KnowledgeHit], limit: usize) -> Vec<ReplyOption> {
    let mut seen = std::collections::HashSet::new();
    hits.iter()
        .filter(|hit| seen.insert(hit.chunk.document_id.clone()))
        .take(limit)
        .map(|hit| {
            let source = source_of(hit);
            ReplyOption {
                label: source.title,
                kind: "article".into(),
                value: hit.chunk.id.clone(),
                url: hit.chunk.url.clone(),
            }
        })
        .collect()
}
