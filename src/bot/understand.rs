//! Reading a message: one encoder pass (the sentiment model beside it) feeding intent
//! classification and retrieval, then frustration; the cheaper reading for messages a person
//! handles; follow-ups read with the question they follow.

use super::*;
use crate::knowledge::retrieval::KnowledgeHit;
use crate::nlp::encoder::{FeaturesFollowUp, IntentFeatures};
use crate::nlp::intent_model::IntentResult;

/// Below this cosine between a message and the message without its unfamiliar words, the
/// question turns on those words. Chosen on the demo conversation scripts (evals/RESULTS.md):
/// "alexa" 0.74, "valves" 0.81, "rental flats" 0.86 turn the question; "bristol" 0.92 ("I'm in
/// Bristol"), "stone" 0.94 ("stone cold"), "tomorrow" 0.98 do not. "broadband" (0.76) is saved by
/// the knowledge base's strong match on "internet" (`policy.covered_min_score`).
const UNCOVERED_COSINE: f32 = 0.90;

impl Engine {
    /// Understand a message without any conversation: one encoder pass, then intent
    /// classification and retrieval side by side.
    pub async fn understand(&self, text: &str) -> Result<UnderstandingDetail, EngineError> {
        let text = &self.masker.mask_text(text);
        self.understand_masked(text).await
    }

    pub(super) async fn understand_masked(
        &self,
        text: &str,
    ) -> Result<UnderstandingDetail, EngineError> {
        let started = Instant::now();
        let spelling = self.vocabulary().read(text);
        // What the encoder and retrieval read: the message with its typos corrected.
        let text = spelling.corrected.as_deref().unwrap_or(text);
        // Embedding and sentiment in one call: with two encoder workers the two models run side
        // by side. A message with unfamiliar words is also read without them (see
        // `uncovered_terms`); that pass is queued at the same time, so the worker that finishes
        // first takes it rather than it waiting for both. (Starting intent and retrieval before
        // the sentiment is done measured no faster: `baton bench`, understanding p50 2.48-2.60
        // ms against 2.34-2.54 ms; nor did starting the keyword search beside the encoder: it
        // takes a core from the two models.)
        let without_unfamiliar = text_without(text, &spelling.unfamiliar);
        // A small intent classifier runs on the encoder thread as soon as the features exist,
        // while this task searches the knowledge base: run in turn, on one thread, the two took
        // 0.3-0.4 ms of the reading (`timings`, evals/RESULTS.md, stop 35). A large one goes
        // to the blocking pool below, beside the search, as before.
        let recognizer = self.intents();
        let (classify_on_encoder, classified_on_encoder) = if recognizer.classifies_inline() {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let settings = self.intent_settings.clone();
            let classify: FeaturesFollowUp = Box::new(move |features: &IntentFeatures| {
                let started = Instant::now();
                let result =
                    recognizer.classify(features, settings.alternatives, settings.oos_threshold);
                let _ = sender.send((result, ms(started)));
            });
            (Some(classify), Some(receiver))
        } else {
            (None, None)
        };
        let analysis = self.encoder.analyze_with(text, classify_on_encoder);
        let (analysis, reduced) = tokio::join!(analysis, async {
            match &without_unfamiliar {
                Some(without) => self.encoder.embed(without).await.map(Some),
                None => Ok(None),
            }
        });
        let analysis = analysis?;
        let embedding = analysis.embedding;
        let intent_features = analysis.intent_features;
        let sentiment = analysis.sentiment;
        let encoder_ms = ms(started);
        self.metrics.observe_stage("encoder", encoder_ms / 1000.0);
        let uncovered_terms = match reduced? {
            Some(reduced) => uncovered_terms(&embedding, &reduced, &spelling.unfamiliar),
            None => Vec::new(),
        };
        let classified = async {
            match classified_on_encoder {
                Some(receiver) => {
                    let (result, classify_ms) = receiver.await.map_err(|_| {
                        ClassifierError::InvalidOption(
                            "classification on the encoder thread failed".into(),
                        )
                    })?;
                    Ok((result?, classify_ms))
                }
                None => self.classify(intent_features).await,
            }
        };
        let (classified, retrieved) = tokio::join!(classified, self.retrieve(text, &embedding));
        let (intent, intent_ms) = classified?;
        let (hits, retrieval_ms) = retrieved?;
        self.metrics.observe_stage("intent", intent_ms / 1000.0);
        self.metrics
            .observe_stage("retrieval", retrieval_ms / 1000.0);
        let (intent, person_requested_in) = self.request_for_a_person(text, intent).await?;
        let total_ms = ms(started);
        self.metrics
            .observe_stage("understanding", total_ms / 1000.0);

        let understanding = Understanding {
            intent: Some(intent.intent.into()),
            alternatives: intent.alternatives.into_iter().map(Into::into).collect(),
            out_of_scope: intent.out_of_scope,
            in_scope_score: intent.in_scope_score,
            knowledge: hits.iter().map(knowledge_ref).collect(),
            knowledge_steered: false,
            sentiment: sentiment.map(|scores| SentimentView {
                label: scores.label().to_string(),
                scores,
            }),
            // Without a conversation, frustration reads the message alone.
            frustration: Some(self.frustration.assess(
                &self.keywords,
                text,
                sentiment.as_ref(),
                &[],
            )),
            rewritten_query: None,
            corrected_query: spelling.corrected.clone(),
            uncovered_terms,
            person_requested_in,
            reading: Reading::Full,
            timings: Timings {
                encoder_ms,
                intent_ms,
                retrieval_ms,
                total_ms,
            },
        };
        Ok(UnderstandingDetail {
            understanding,
            hits,
            embedding,
        })
    }

    /// The message's intent, with the time it took. The neighbour search over every example is
    /// CPU work that grows with the intents file: a small file's runs here, a large one's on the
    /// blocking pool rather than stalling the runtime (`crate::cpu`).
    async fn classify(&self, features: IntentFeatures) -> Result<(IntentResult, f64), EngineError> {
        let started = Instant::now();
        let recognizer = self.intents();
        let settings = self.intent_settings.clone();
        let result = crate::cpu::run(recognizer.classifies_inline(), move || {
            recognizer.classify(&features, settings.alternatives, settings.oos_threshold)
        })
        .await
        .map_err(|e| ClassifierError::InvalidOption(format!("classification task failed: {e}")))?;
        Ok((result?, ms(started)))
    }

    /// A longer message can ask in one of its sentences for what only a person handles: a
    /// person ("i've done all of that already, it's still offline. can someone from your team
    /// look at it?") or an intent that always goes to one ("right that's more than i thought.
    /// stop my membership then"); read whole, the request is diluted by the rest. So the
    /// sentences of a message of several are classified too (one encoder pass each, only for
    /// such messages), and a sentence that is surely such a request makes the message one.
    /// "Surely" counts the intents together: a sentence read as 0.72 complaint and 0.18 request
    /// for a person ("can someone from your team look into this?") needs a person with 0.90,
    /// more than `policy.confident_intent` asks; its top intent is then one of them (no other
    /// can hold more than the rest). Returns the intent reading to use and that sentence.
    async fn request_for_a_person(
        &self,
        text: &str,
        whole: IntentResult,
    ) -> Result<(IntentResult, Option<String>), EngineError> {
        let person = self.policy.human_request_intent();
        let recognizer = self.intents();
        let needs_a_person = |name: &str| {
            name == person
                || recognizer
                    .spec(name)
                    .is_some_and(|spec| spec.handoff == crate::nlp::intents::HandoffMode::Always)
        };
        if needs_a_person(&whole.intent.name) && !whole.out_of_scope {
            return Ok((whole, None));
        }
        let sentences = sentences(text);
        if sentences.len() < 2 {
            return Ok((whole, None));
        }
        let encoded = self.encoder.encode_many(sentences.clone()).await?;
        for (sentence, encoded) in sentences.into_iter().zip(encoded) {
            let (reading, _) = self.classify(encoded.intent_features).await?;
            // The ranked intents that need a person, together (the top and the alternatives
            // the classifier reports: a lower bound of their whole probability).
            let needs_a_person_probability: f32 = std::iter::once(&reading.intent)
                .chain(&reading.alternatives)
                .filter(|score| needs_a_person(&score.name))
                .map(|score| score.confidence)
                .sum();
            if !reading.out_of_scope
                && needs_a_person(&reading.intent.name)
                && needs_a_person_probability >= self.policy.settings().confident_intent
            {
                return Ok((reading, Some(sentence)));
            }
        }
        Ok((whole, None))
    }

    /// The knowledge hits for the message, with the time the search took.
    async fn retrieve(
        &self,
        text: &str,
        embedding: &[f32],
    ) -> Result<(Vec<KnowledgeHit>, f64), EngineError> {
        let started = Instant::now();
        let hits = self.retriever.search(text, embedding).await?;
        Ok((hits, ms(started)))
    }

    /// What the agent panel needs of a message in a conversation a person owns: its sentiment
    /// (one pass of the small sentiment model, when installed). Frustration is added by the
    /// caller, which has the history.
    pub(super) async fn read_for_agent_panel(
        &self,
        text: &str,
    ) -> Result<Understanding, EngineError> {
        let started = Instant::now();
        let sentiment = self.encoder.sentiment(text).await?;
        let total_ms = ms(started);
        self.metrics.observe_stage("agent_panel", total_ms / 1000.0);
        Ok(Understanding {
            intent: None,
            alternatives: Vec::new(),
            out_of_scope: false,
            in_scope_score: 0.0,
            knowledge: Vec::new(),
            knowledge_steered: false,
            sentiment: sentiment.map(|scores| SentimentView {
                label: scores.label().to_string(),
                scores,
            }),
            frustration: None,
            rewritten_query: None,
            corrected_query: None,
            uncovered_terms: Vec::new(),
            person_requested_in: None,
            reading: Reading::AgentPanel,
            timings: Timings {
                encoder_ms: total_ms,
                total_ms,
                ..Timings::default()
            },
        })
    }

    /// The conversation's frustration with this message: the message, its sentiment and the
    /// turns before it.
    pub(super) fn assess_frustration(
        &self,
        text: &str,
        understanding: &Understanding,
        history: &[MessageRecord],
    ) -> Frustration {
        self.frustration.assess(
            &self.keywords,
            text,
            understanding.sentiment.as_ref().map(|s| &s.scores),
            &frustration_history(history),
        )
    }

    /// When the intent is clear (in scope, sure, answered from knowledge) but the message's own
    /// words find little ("the power base wasn't in the box"), search again with the message
    /// pulled towards what messages of that intent look like (its examples' centroid), and keep
    /// the result if it matches better. Scores stay cosine similarities, of the steered query.
    pub(super) async fn steer_retrieval(
        &self,
        text: &str,
        detail: &mut UnderstandingDetail,
        recognizer: &IntentRecognizer,
        spec: &crate::nlp::intents::IntentSpec,
    ) -> Result<(), EngineError> {
        let settings = self.policy.settings();
        let Some(intent) = detail.understanding.intent.as_ref() else {
            return Ok(());
        };
        let best = detail.hits.first().map(|h| h.score).unwrap_or(0.0);
        let sure = !detail.understanding.out_of_scope
            && intent.confidence >= settings.confident_intent
            && spec.handoff == crate::nlp::intents::HandoffMode::Auto
            && spec.reply.is_none();
        if !sure || best >= settings.answer_min_score {
            return Ok(());
        }
        let Some(centroid) = recognizer.centroid(&intent.name) else {
            return Ok(());
        };
        let mut steered: Vec<f32> = detail
            .embedding
            .iter()
            .zip(centroid)
            .map(|(m, c)| m + c)
            .collect();
        crate::nlp::encoder::normalise(&mut steered);
        let hits = self.retriever.search(text, &steered).await?;
        if hits.first().is_some_and(|h| h.score > best) {
            detail.understanding.knowledge = hits.iter().map(knowledge_ref).collect();
            detail.understanding.knowledge_steered = true;
            detail.hits = hits;
        }
        Ok(())
    }

    /// A short message that leans on the previous turn ("and if I paid with PayPal?", "can I use
    /// rechargeable ones?") says too little alone: read its intent and knowledge from the previous
    /// question and the message together. Only after a turn the bot answered from knowledge, and
    /// never when the message's own reading is sure ("stop my membership then" is a cancellation
    /// whatever came before), an explicit request for a person, or small talk with a fixed reply
    /// ("thanks, that worked"). The chunks already given as answers are left out of the
    /// follow-up's knowledge: the customer asks for more than that answer said.
    pub(super) async fn read_as_follow_up(
        &self,
        text: &str,
        history: &[MessageRecord],
        detail: &mut UnderstandingDetail,
    ) -> Result<(), EngineError> {
        let Some(context) = follow_up_context(history) else {
            return Ok(());
        };
        if !looks_like_follow_up(text) {
            return Ok(());
        }
        let recognizer = self.intents();
        let own_reading_stands = detail
            .understanding
            .intent
            .as_ref()
            .filter(|_| !detail.understanding.out_of_scope)
            .is_some_and(|intent| {
                intent.confidence >= self.policy.settings().confident_intent
                    || intent.name == self.policy.human_request_intent()
                    || recognizer
                        .spec(&intent.name)
                        .is_some_and(|spec| spec.reply.is_some())
            });
        if own_reading_stands {
            return Ok(());
        }
        // The answer writer rewrites it when it can (an LLM); otherwise the two are joined,
        // which the encoder reads well enough.
        let merged = match self.answerer.rewrite_follow_up(&context, text).await {
            Some(rewritten) => rewritten,
            None => format!("{context} {text}"),
        };
        let mut merged_detail = self.understand_masked(&merged).await?;
        let own = &detail.understanding;
        merged_detail.understanding.sentiment = own.sentiment.clone();
        merged_detail.understanding.frustration = own.frustration.clone();
        merged_detail.understanding.timings.encoder_ms += own.timings.encoder_ms;
        merged_detail.understanding.timings.total_ms += own.timings.total_ms;
        merged_detail.understanding.rewritten_query = Some(merged);
        *detail = merged_detail;
        Ok(())
    }
}

/// The message without its unfamiliar words, to read it again without them (see
/// [`uncovered_terms`]); None when it has none, or when nothing but them (gibberish, another
/// language: that is for the out-of-scope rule, not this one).
fn text_without(text: &str, unfamiliar: &[String]) -> Option<String> {
    if unfamiliar.is_empty() {
        return None;
    }
    let without: String = text
        .split_inclusive(|c: char| !c.is_alphabetic())
        .map(|piece| {
            let word = piece.trim_end_matches(|c: char| !c.is_alphabetic());
            if unfamiliar.contains(&word.to_lowercase()) {
                &piece[word.len()..]
            } else {
                piece
            }
        })
        .collect();
    without.chars().any(char::is_alphabetic).then_some(without)
}

/// The unfamiliar words a question turns on: those whose removal moves the message's embedding
/// away from where it was (cosine under [`UNCOVERED_COSINE`] between the message and `reduced`,
/// the message read without them). A long message with one odd word ("our landlord won't let us
/// fit it") keeps its meaning without it; "does the thermostat work with alexa?" does not.
fn uncovered_terms(embedding: &[f32], reduced: &[f32], unfamiliar: &[String]) -> Vec<String> {
    let similarity = crate::nlp::encoder::cosine(embedding, reduced);
    tracing::debug!(
        similarity,
        ?unfamiliar,
        "message read without its unfamiliar words"
    );
    if similarity < UNCOVERED_COSINE {
        unfamiliar.to_vec()
    } else {
        Vec::new()
    }
}

/// Most sentences of one message read on their own (a pasted log is not a conversation).
const MAX_SENTENCES: usize = 6;

/// The sentences of a message: split after `.`, `!`, `?` or `;` followed by a space (so "2.5"
/// and "e.g.x" stay whole) and at line breaks; pieces without a letter are dropped.
fn sentences(text: &str) -> Vec<String> {
    let mut sentences = Vec::new();
    let mut current = String::new();
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        let ends = character == '\n'
            || (matches!(character, '.' | '!' | '?' | ';')
                && characters.peek().is_none_or(|next| next.is_whitespace()));
        if character != '\n' {
            current.push(character);
        }
        if ends {
            sentences.push(std::mem::take(&mut current));
        }
    }
    sentences.push(current);
    sentences
        .into_iter()
        .map(|sentence| sentence.trim().to_string())
        .filter(|sentence| sentence.chars().any(char::is_alphabetic))
        .take(MAX_SENTENCES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{sentences, text_without, uncovered_terms};

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|word| word.to_string()).collect()
    }

    #[test]
    fn a_message_is_read_again_without_its_unfamiliar_words_only_when_something_is_left() {
        assert_eq!(
            text_without("Does the thermostat work with Alexa?", &words(&["alexa"])).as_deref(),
            Some("Does the thermostat work with ?")
        );
        assert_eq!(
            text_without("my flat's valves, the valves!", &words(&["valves"])).as_deref(),
            Some("my flat's , the !")
        );
        // Words are matched whole: "alexander" is not "alexa".
        assert_eq!(
            text_without("ask alexander", &words(&["alexa"])).as_deref(),
            Some("ask alexander")
        );
        assert_eq!(text_without("how do i pair it", &[]), None);
        // Nothing but unfamiliar words: for the out-of-scope rule, not this one.
        assert_eq!(
            text_without("zorblax qwerty?", &words(&["zorblax", "qwerty"])),
            None
        );
    }

    #[test]
    fn unfamiliar_words_count_only_when_leaving_them_out_moves_the_meaning() {
        let unfamiliar = words(&["alexa"]);
        let message = [1.0, 0.0];
        // cos = 0.80: the question turns on the word.
        assert_eq!(
            uncovered_terms(&message, &[0.8, 0.6], &unfamiliar),
            unfamiliar
        );
        // cos = 0.96: it does not.
        assert!(uncovered_terms(&message, &[0.96, 0.28], &unfamiliar).is_empty());
    }

    #[test]
    fn messages_split_into_sentences_at_their_ends_only() {
        assert_eq!(
            sentences("i've done all of that already, it's still offline. can someone look at it?"),
            vec![
                "i've done all of that already, it's still offline.",
                "can someone look at it?"
            ]
        );
        assert_eq!(
            sentences("it costs 2.5 pounds, e.g.today"),
            vec!["it costs 2.5 pounds, e.g.today"]
        );
        assert_eq!(
            sentences("hello!!! help\n\nplease"),
            vec!["hello!!!", "help", "please"]
        );
        assert_eq!(sentences("... ?"), Vec::<String>::new());
        assert_eq!(
            sentences("a. b. c. d. e. f. g. h."),
            vec!["a.", "b.", "c.", "d.", "e.", "f."]
        );
    }
}
