//! The decision for each customer message: answer from the knowledge base, ask a clarifying
//! question, or hand off to a human. Pure and synchronous: it sees the understanding of the message
//! and a summary of the conversation so far, and every outcome carries machine-readable reasons.
//!
//! Order of precedence (first match wins):
//! 1. an explicit request for a person (`explicit_request`);
//! 2. an intent that always needs a person (`intent_requires_human`);
//! 3. small talk with a fixed reply (`small_talk`);
//! 4. a message that is out of scope and matches no knowledge (`out_of_scope`, `no_knowledge`);
//! 5. two intents too close to tell apart (`ambiguous_intent`, clarify);
//! 6. knowledge strong enough to answer (`knowledge_match`; a handoff, `article_refers_to_person`,
//!    when the answer is to contact the team), middling (`weak_knowledge`, clarify with the top
//!    articles) or missing (`no_knowledge`, with `low_confidence` when the intent was unsure too,
//!    handoff);
//!
//! A clarify that would be the second failed turn in a row becomes a handoff (`repeated_failure`).

use serde::{Deserialize, Serialize};

use crate::config::PolicySettings;
use crate::nlp::intents::{HandoffMode, Priority};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Answer,
    Clarify,
    Handoff,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Answer => "answer",
            DecisionKind::Clarify => "clarify",
            DecisionKind::Handoff => "handoff",
        }
    }
}

/// Why the policy decided what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The customer asked for a person.
    ExplicitRequest,
    /// The intent is configured `handoff: always`.
    IntentRequiresHuman,
    /// The message is about nothing the business's intents cover.
    OutOfScope,
    /// The intent classifier was unsure.
    LowConfidence,
    /// No knowledge chunk is close enough to answer from.
    NoKnowledge,
    /// The bot failed or had to clarify twice in a row.
    RepeatedFailure,
    /// The conversation shows frustration (sentiment, repetition, complaint language).
    Frustration,
    /// A human already owns the conversation; the bot stays silent.
    AwaitingHuman,
    /// A knowledge chunk matched well.
    KnowledgeMatch,
    /// Small talk answered with the intent's fixed reply.
    SmallTalk,
    /// Two intents are too close to tell apart.
    AmbiguousIntent,
    /// The best knowledge is only a middling match.
    WeakKnowledge,
    /// The LLM read the passages and found no answer there (or cited none): a person answers
    /// rather than the bot inventing one.
    LlmDeclined,
    /// The LLM was down, too slow or returned nothing: the best chunk was given instead.
    LlmUnavailable,
    /// The question turns on something the business never mentions (not in its intents nor its
    /// knowledge base): the closest article would answer another question.
    NotCovered,
    /// The best article's answer is to contact the team: in this chat, that is a person.
    ArticleRefersToPerson,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ExplicitRequest => "explicit_request",
            Reason::IntentRequiresHuman => "intent_requires_human",
            Reason::OutOfScope => "out_of_scope",
            Reason::LowConfidence => "low_confidence",
            Reason::NoKnowledge => "no_knowledge",
            Reason::RepeatedFailure => "repeated_failure",
            Reason::Frustration => "frustration",
            Reason::AwaitingHuman => "awaiting_human",
            Reason::KnowledgeMatch => "knowledge_match",
            Reason::SmallTalk => "small_talk",
            Reason::AmbiguousIntent => "ambiguous_intent",
            Reason::WeakKnowledge => "weak_knowledge",
            Reason::LlmDeclined => "llm_declined",
            Reason::LlmUnavailable => "llm_unavailable",
            Reason::NotCovered => "not_covered",
            Reason::ArticleRefersToPerson => "article_refers_to_person",
        }
    }

    pub const ALL: [Reason; 16] = [
        Reason::ExplicitRequest,
        Reason::IntentRequiresHuman,
        Reason::OutOfScope,
        Reason::LowConfidence,
        Reason::NoKnowledge,
        Reason::RepeatedFailure,
        Reason::Frustration,
        Reason::AwaitingHuman,
        Reason::KnowledgeMatch,
        Reason::SmallTalk,
        Reason::AmbiguousIntent,
        Reason::WeakKnowledge,
        Reason::LlmDeclined,
        Reason::LlmUnavailable,
        Reason::NotCovered,
        Reason::ArticleRefersToPerson,
    ];
}

/// What the policy needs to know about the top intent.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentView {
    pub name: String,
    pub confidence: f32,
    pub handoff: HandoffMode,
    pub has_fixed_reply: bool,
}

/// The understanding of one message, reduced to what the policy decides on.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyInput {
    /// The top intent (None when the classifier has no intents).
    pub intent: Option<IntentView>,
    /// Probability of the runner-up intent, for ambiguity.
    pub runner_up_confidence: Option<f32>,
    pub out_of_scope: bool,
    /// Cosine similarity of the best knowledge chunk (None: the knowledge base is empty).
    pub best_knowledge_score: Option<f32>,
    /// Frustration in [0, 1] when a sentiment model is present; above `frustration_threshold` the
    /// policy hands off.
    pub frustration: Option<f32>,
    /// The question turns on words the business never uses (`Understanding::uncovered_terms`).
    pub uncovered: bool,
    /// The best knowledge chunk's answer is to contact the team (`retrieval::refers_to_a_person`).
    pub best_knowledge_refers_to_a_person: bool,
}

/// The conversation so far, as far as the policy cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversationView {
    /// Consecutive bot turns that failed (clarified), immediately before this message.
    pub consecutive_failures: u32,
    /// The best knowledge chunk for this message is one the bot already answered with in this
    /// conversation: the customer is back, so that answer did not help.
    pub answer_already_given: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub kind: DecisionKind,
    pub reasons: Vec<Reason>,
    /// For clarify: what to ask about.
    pub clarify: Option<ClarifyKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClarifyKind {
    /// Offer the top intents as options.
    Intents,
    /// Offer the top articles as options.
    Articles,
    /// Ask the customer to rephrase (out of scope, handoff disabled).
    Rephrase,
}

/// Queue details for a handoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HandoffRoute {
    pub skill: String,
    pub priority: Priority,
}

pub struct Policy {
    settings: PolicySettings,
    /// Name of the intent meaning "let me talk to a person".
    human_request_intent: String,
    frustration_threshold: f32,
}

impl Policy {
    pub fn new(settings: PolicySettings) -> Self {
        Self {
            frustration_threshold: settings.frustration_threshold,
            settings,
            human_request_intent: "human_agent".into(),
        }
    }

    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// The intent that means "let me talk to a person".
    pub fn human_request_intent(&self) -> &str {
        &self.human_request_intent
    }

    pub fn decide(&self, input: &PolicyInput, conversation: ConversationView) -> Decision {
        let decision = self.decide_turn(input);
        // Giving the same answer again to someone who came back after it is a failure too.
        if decision.reasons == [Reason::KnowledgeMatch] && conversation.answer_already_given {
            return handoff(vec![Reason::RepeatedFailure]);
        }
        // A second failed turn in a row is not worth a third attempt.
        if decision.kind == DecisionKind::Clarify
            && conversation.consecutive_failures + 1 >= self.settings.max_failed_turns
        {
            let mut reasons = vec![Reason::RepeatedFailure];
            reasons.extend(decision.reasons);
            return handoff(reasons);
        }
        decision
    }

    fn decide_turn(&self, input: &PolicyInput) -> Decision {
        let settings = &self.settings;
        let knowledge = input.best_knowledge_score.unwrap_or(0.0);
        let confident_intent = input.intent.as_ref().filter(|intent| {
            !input.out_of_scope && intent.confidence >= settings.intent_min_confidence
        });

        if let Some(intent) = confident_intent {
            if intent.name == self.human_request_intent {
                return handoff(vec![Reason::ExplicitRequest]);
            }
            if intent.handoff == HandoffMode::Always {
                return handoff(vec![Reason::IntentRequiresHuman]);
            }
        }
        if input
            .frustration
            .is_some_and(|f| f >= self.frustration_threshold)
        {
            return handoff(vec![Reason::Frustration]);
        }
        let sure_of_intent =
            confident_intent.is_some_and(|intent| intent.confidence >= settings.confident_intent);
        if let Some(intent) = confident_intent {
            // A canned reply to a misread message ("tell me a joke" -> goodbye) reads as broken,
            // so small talk needs a sure intent.
            if intent.has_fixed_reply && sure_of_intent {
                return decision(DecisionKind::Answer, vec![Reason::SmallTalk], None);
            }
        }
        let bot_only = confident_intent.is_some_and(|intent| intent.handoff == HandoffMode::Never);

        if input.out_of_scope && knowledge < settings.answer_min_score {
            if settings.handoff_out_of_scope && !bot_only {
                return handoff(vec![Reason::OutOfScope, Reason::NoKnowledge]);
            }
            return decision(
                DecisionKind::Clarify,
                vec![Reason::OutOfScope],
                Some(ClarifyKind::Rephrase),
            );
        }

        // In scope, but about something the help centre never mentions: a person, rather than
        // the nearest article or a question back that cannot lead anywhere.
        if input.uncovered && knowledge < settings.covered_min_score && !bot_only {
            return handoff(vec![Reason::NotCovered]);
        }

        if let (Some(intent), Some(runner_up)) = (confident_intent, input.runner_up_confidence) {
            // Two intents nearly tied and no knowledge that settles it: ask which one was meant.
            if intent.confidence - runner_up < settings.ambiguity_margin
                && knowledge < settings.answer_min_score
            {
                return decision(
                    DecisionKind::Clarify,
                    vec![Reason::AmbiguousIntent],
                    Some(ClarifyKind::Intents),
                );
            }
        }

        if knowledge >= settings.answer_min_score
            || (sure_of_intent && knowledge >= settings.clarify_min_score)
        {
            // "Contact our team in chat" said in the chat itself sends the customer nowhere: the
            // person it names is who a handoff reaches.
            if input.best_knowledge_refers_to_a_person && !bot_only {
                return handoff(vec![Reason::ArticleRefersToPerson]);
            }
            return decision(DecisionKind::Answer, vec![Reason::KnowledgeMatch], None);
        }
        if knowledge >= settings.clarify_min_score {
            return decision(
                DecisionKind::Clarify,
                vec![Reason::WeakKnowledge],
                Some(ClarifyKind::Articles),
            );
        }
        if bot_only {
            return decision(
                DecisionKind::Clarify,
                vec![Reason::NoKnowledge],
                Some(ClarifyKind::Rephrase),
            );
        }
        let mut reasons = Vec::new();
        if confident_intent.is_none() {
            reasons.push(Reason::LowConfidence);
        }
        reasons.push(Reason::NoKnowledge);
        handoff(reasons)
    }
}

fn decision(kind: DecisionKind, reasons: Vec<Reason>, clarify: Option<ClarifyKind>) -> Decision {
    Decision {
        kind,
        reasons,
        clarify,
    }
}

fn handoff(reasons: Vec<Reason>) -> Decision {
    decision(DecisionKind::Handoff, reasons, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(name: &str, confidence: f32, handoff: HandoffMode) -> IntentView {
        IntentView {
            name: name.into(),
            confidence,
            handoff,
            has_fixed_reply: false,
        }
    }

    fn input(intent: Option<IntentView>, knowledge: Option<f32>) -> PolicyInput {
        PolicyInput {
            intent,
            runner_up_confidence: None,
            out_of_scope: false,
            best_knowledge_score: knowledge,
            frustration: None,
            uncovered: false,
            best_knowledge_refers_to_a_person: false,
        }
    }

    fn policy() -> Policy {
        Policy::new(PolicySettings::default())
    }

    const FIRST_TURN: ConversationView = ConversationView {
        consecutive_failures: 0,
        answer_already_given: false,
    };

    #[test]
    fn an_answer_that_is_to_contact_the_team_is_a_handoff() {
        let referral = |intent_view| PolicyInput {
            best_knowledge_refers_to_a_person: true,
            ..input(Some(intent_view), Some(0.8))
        };
        let d = policy().decide(
            &referral(intent("device_offline", 0.9, HandoffMode::Auto)),
            FIRST_TURN,
        );
        assert_eq!(d.kind, DecisionKind::Handoff);
        assert_eq!(d.reasons, vec![Reason::ArticleRefersToPerson]);
        // An intent the bot must keep answers, as it would any article.
        let d = policy().decide(
            &referral(intent("faq_only", 0.9, HandoffMode::Never)),
            FIRST_TURN,
        );
        assert_eq!(d.reasons, vec![Reason::KnowledgeMatch]);
        // Only an answer turns into a handoff: a middling match still asks.
        let d = policy().decide(
            &PolicyInput {
                best_knowledge_refers_to_a_person: true,
                ..input(
                    Some(intent("device_offline", 0.4, HandoffMode::Auto)),
                    Some(0.5),
                )
            },
            FIRST_TURN,
        );
        assert_eq!(d.kind, DecisionKind::Clarify);
    }

    #[test]
    fn questions_about_what_the_business_never_mentions_go_to_a_person() {
        let uncovered = |intent_view, knowledge| PolicyInput {
            uncovered: true,
            ..input(Some(intent_view), Some(knowledge))
        };
        // A middling or even answerable match is the nearest article, not an answer.
        for knowledge in [0.45, 0.6] {
            let d = policy().decide(
                &uncovered(intent("pair_sensor", 0.6, HandoffMode::Auto), knowledge),
                FIRST_TURN,
            );
            assert_eq!(
                (d.kind, d.reasons.as_slice()),
                (DecisionKind::Handoff, &[Reason::NotCovered][..]),
                "{knowledge}"
            );
        }
        // A strong match: the help centre covers it in its own words.
        let d = policy().decide(
            &uncovered(intent("device_offline", 0.6, HandoffMode::Auto), 0.85),
            FIRST_TURN,
        );
        assert_eq!(d.reasons, vec![Reason::KnowledgeMatch]);
        // Bot-only intents and the explicit request keep their own rules.
        let d = policy().decide(
            &uncovered(intent("opening_hours", 0.9, HandoffMode::Never), 0.6),
            FIRST_TURN,
        );
        assert_eq!(d.kind, DecisionKind::Answer);
        let d = policy().decide(
            &uncovered(intent("human_agent", 0.9, HandoffMode::Always), 0.2),
            FIRST_TURN,
        );
        assert_eq!(d.reasons, vec![Reason::ExplicitRequest]);
    }

    #[test]
    fn explicit_request_and_always_intents_hand_off_even_with_knowledge() {
        let d = policy().decide(
            &input(
                Some(intent("human_agent", 0.9, HandoffMode::Always)),
                Some(0.9),
            ),
            FIRST_TURN,
        );
        assert_eq!(
            (d.kind, d.reasons.as_slice()),
            (DecisionKind::Handoff, &[Reason::ExplicitRequest][..])
        );
        let d = policy().decide(
            &input(
                Some(intent("complaint", 0.8, HandoffMode::Always)),
                Some(0.9),
            ),
            FIRST_TURN,
        );
        assert_eq!(d.reasons, vec![Reason::IntentRequiresHuman]);
    }

    #[test]
    fn unsure_explicit_request_does_not_hand_off_on_intent_alone() {
        let d = policy().decide(
            &input(
                Some(intent("human_agent", 0.2, HandoffMode::Always)),
                Some(0.8),
            ),
            FIRST_TURN,
        );
        assert_eq!(d.kind, DecisionKind::Answer);
    }

    #[test]
    fn knowledge_score_bands_decide_answer_clarify_handoff() {
        let p = policy();
        let s = p.settings().clone();
        let refund = || Some(intent("refund", 0.9, HandoffMode::Auto));
        let d = p.decide(
            &input(refund(), Some(s.answer_min_score + 0.01)),
            FIRST_TURN,
        );
        assert_eq!(
            (d.kind, d.reasons.clone()),
            (DecisionKind::Answer, vec![Reason::KnowledgeMatch])
        );
        // A sure intent makes a middling match enough; an unsure one asks.
        let d = p.decide(
            &input(refund(), Some(s.clarify_min_score + 0.01)),
            FIRST_TURN,
        );
        assert_eq!(d.kind, DecisionKind::Answer);
        let unsure = || Some(intent("refund", 0.6, HandoffMode::Auto));
        let d = p.decide(
            &input(unsure(), Some(s.clarify_min_score + 0.01)),
            FIRST_TURN,
        );
        assert_eq!(
            (d.kind, d.clarify),
            (DecisionKind::Clarify, Some(ClarifyKind::Articles))
        );
        let d = p.decide(
            &input(refund(), Some(s.clarify_min_score - 0.01)),
            FIRST_TURN,
        );
        assert_eq!(
            (d.kind, d.reasons),
            (DecisionKind::Handoff, vec![Reason::NoKnowledge])
        );
        let d = p.decide(
            &input(Some(intent("refund", 0.1, HandoffMode::Auto)), None),
            FIRST_TURN,
        );
        assert_eq!(d.reasons, vec![Reason::LowConfidence, Reason::NoKnowledge]);
    }

    #[test]
    fn out_of_scope_asks_to_rephrase_then_hands_off_unless_knowledge_answers() {
        let mut i = input(Some(intent("refund", 0.9, HandoffMode::Auto)), Some(0.2));
        i.out_of_scope = true;
        let d = policy().decide(&i, FIRST_TURN);
        assert_eq!(
            (d.kind, d.reasons.clone(), d.clarify),
            (
                DecisionKind::Clarify,
                vec![Reason::OutOfScope],
                Some(ClarifyKind::Rephrase)
            )
        );
        let again = ConversationView {
            consecutive_failures: 1,
            answer_already_given: false,
        };
        let d = policy().decide(&i, again);
        assert_eq!(
            (d.kind, d.reasons),
            (
                DecisionKind::Handoff,
                vec![Reason::RepeatedFailure, Reason::OutOfScope]
            )
        );
        i.best_knowledge_score = Some(0.9);
        assert_eq!(policy().decide(&i, FIRST_TURN).kind, DecisionKind::Answer);

        // Configured to hand off at once.
        let settings = PolicySettings {
            handoff_out_of_scope: true,
            ..PolicySettings::default()
        };
        i.best_knowledge_score = Some(0.1);
        let d = Policy::new(settings).decide(&i, FIRST_TURN);
        assert_eq!(
            (d.kind, d.reasons),
            (
                DecisionKind::Handoff,
                vec![Reason::OutOfScope, Reason::NoKnowledge]
            )
        );
    }

    #[test]
    fn ambiguity_clarifies_between_intents() {
        let mut i = input(Some(intent("refund", 0.45, HandoffMode::Auto)), Some(0.3));
        i.runner_up_confidence = Some(0.40);
        let d = policy().decide(&i, FIRST_TURN);
        assert_eq!(
            (d.kind, d.reasons, d.clarify),
            (
                DecisionKind::Clarify,
                vec![Reason::AmbiguousIntent],
                Some(ClarifyKind::Intents)
            )
        );
    }

    #[test]
    fn second_failure_in_a_row_hands_off() {
        let p = policy();
        let weak = input(
            Some(intent("refund", 0.6, HandoffMode::Auto)),
            Some(p.settings().clarify_min_score + 0.01),
        );
        assert_eq!(p.decide(&weak, FIRST_TURN).kind, DecisionKind::Clarify);
        let d = p.decide(
            &weak,
            ConversationView {
                consecutive_failures: 1,
                answer_already_given: false,
            },
        );
        assert_eq!(
            (d.kind, d.reasons),
            (
                DecisionKind::Handoff,
                vec![Reason::RepeatedFailure, Reason::WeakKnowledge]
            )
        );
    }

    #[test]
    fn the_same_answer_twice_is_a_failure() {
        let p = policy();
        let strong = input(
            Some(intent("device_offline", 0.9, HandoffMode::Auto)),
            Some(0.9),
        );
        let again = ConversationView {
            consecutive_failures: 0,
            answer_already_given: true,
        };
        let d = p.decide(&strong, again);
        assert_eq!(
            (d.kind, d.reasons),
            (DecisionKind::Handoff, vec![Reason::RepeatedFailure])
        );
        assert_eq!(p.decide(&strong, FIRST_TURN).kind, DecisionKind::Answer);
    }

    #[test]
    fn small_talk_uses_the_fixed_reply_and_never_hands_off() {
        let mut greet = intent("greet", 0.9, HandoffMode::Never);
        greet.has_fixed_reply = true;
        let d = policy().decide(&input(Some(greet.clone()), None), FIRST_TURN);
        assert_eq!(
            (d.kind, d.reasons),
            (DecisionKind::Answer, vec![Reason::SmallTalk])
        );
        greet.confidence = 0.5;
        let d = policy().decide(&input(Some(greet), None), FIRST_TURN);
        assert_ne!(
            d.reasons,
            vec![Reason::SmallTalk],
            "an unsure greeting gets no canned reply"
        );
        let d = policy().decide(
            &input(Some(intent("chitchat", 0.9, HandoffMode::Never)), None),
            FIRST_TURN,
        );
        assert_eq!(d.kind, DecisionKind::Clarify);
    }

    #[test]
    fn frustration_above_threshold_hands_off() {
        let mut i = input(Some(intent("refund", 0.9, HandoffMode::Auto)), Some(0.9));
        i.frustration = Some(0.95);
        assert_eq!(
            policy().decide(&i, FIRST_TURN).reasons,
            vec![Reason::Frustration]
        );
    }
}
