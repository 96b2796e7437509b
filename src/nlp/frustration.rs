//! Conversation-level frustration: a score in [0, 1] from signals a support lead would look at,
//! each reported with its value so the handoff says *why*:
//! - `negative`: how negative the latest message is (sentiment model);
//! - `sustained_negative`: negativity over the last three customer messages;
//! - `repetition`: the customer says again what they said before (word overlap);
//! - `bot_failures`: recent bot turns that failed (clarified, apologised, found nothing);
//! - `complaint`: complaint language ("useless", "ridiculous", "still not working", ...);
//! - `correction`: the customer corrects the bot ("no, that's not what I asked");
//! - `shouting`: capitals, "!!!";
//! - `profanity`.
//!
//! The score is a logistic combination of the signals, with hand-set weights (see
//! [`FrustrationModel::default`]). `baton eval frustration` scores them on the evaluation half of the
//! USS dialogues, and `--fit` fits weights on the other (tuning) half for comparison. The fitted
//! weights are not the default: USS is task-oriented chat with almost no complaint language,
//! shouting or profanity, so the fit drives those weights to zero and its scores are calibrated to
//! USS's rare dissatisfied turns (about 0.6%), not to "hand this conversation over now".

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::nlp::encoder::SentimentScores;
use crate::nlp::keywords::KeywordEncoder;

/// Names of the signals, in the order of [`FrustrationModel::weights`].
pub const SIGNALS: [&str; 8] = [
    "negative",
    "sustained_negative",
    "repetition",
    "bot_failures",
    "complaint",
    "correction",
    "shouting",
    "profanity",
];

/// An earlier turn, as far as frustration cares.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryTurn {
    pub from_customer: bool,
    pub text: String,
    /// Customer turns: the negative probability of the message, when known.
    pub negative: Option<f32>,
    /// Bot turns: the bot failed (clarified, apologised, had nothing).
    pub failed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Signal {
    pub name: String,
    /// In [0, 1]; 0 means the signal did not fire.
    pub value: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Frustration {
    pub score: f32,
    /// The signals that fired (value > 0), strongest contribution first.
    pub signals: Vec<Signal>,
}

/// Weights of the logistic combination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrustrationModel {
    pub bias: f32,
    pub weights: [f32; 8],
}

impl Default for FrustrationModel {
    /// Starting weights chosen by hand for support conversations (complaint language, shouting
    /// and profanity count heavily; negativity and repetition moderately). `baton eval
    /// frustration` reports how these score on USS, and `--fit` how fitted ones would.
    fn default() -> Self {
        Self {
            bias: -4.0,
            weights: [2.0, 2.5, 2.0, 1.5, 3.0, 1.5, 2.0, 3.0],
        }
    }
}

/// Words of complaint, as stemmed terms or phrases (matched on lower-cased text).
const COMPLAINT_PHRASES: &[&str] = &[
    "useless",
    "ridiculous",
    "terrible",
    "awful",
    "horrible",
    "worst",
    "waste of time",
    "not helpful",
    "unhelpful",
    "doesn't help",
    "didn't help",
    "does not help",
    "did not help",
    "not working",
    "still not",
    "still doesn't",
    "still isn't",
    "fed up",
    "sick of",
    "unacceptable",
    "frustrat",
    "annoy",
    "angry",
    "disappoint",
    "complain",
    "pathetic",
    "stupid",
    "hopeless",
    "nobody helps",
    "no one helps",
    "again and again",
    "how many times",
    "for the third time",
    "already told you",
    "i said",
    "not what i asked",
    "you don't understand",
    "you do not understand",
    "makes no sense",
];

const CORRECTION_STARTS: &[&str] = &[
    "no,",
    "no.",
    "no ",
    "nope",
    "not that",
    "that's not",
    "that is not",
    "wrong",
    "incorrect",
    "i didn't",
    "i did not",
    "i meant",
];

const PROFANITY: &[&str] = &[
    "fuck", "shit", "crap", "damn", "bloody", "bullshit", "wtf", "piss", "bastard", "hell",
];

/// Phrases of a bot turn that did not help (used where the decision is not recorded, e.g. USS).
const FAILURE_PHRASES: &[&str] = &[
    "sorry",
    "unable to",
    "i couldn't",
    "i could not",
    "can't find",
    "cannot find",
    "couldn't find",
    "no results",
    "not able to",
    "didn't quite catch",
    "did not understand",
    "could you rephrase",
];

/// Whether a bot message reads as a failure (for transcripts without recorded decisions).
pub fn bot_text_failed(text: &str) -> bool {
    let lower = text.to_lowercase();
    FAILURE_PHRASES.iter().any(|p| lower.contains(p))
}

impl FrustrationModel {
    /// The signals of the latest customer message given the conversation so far.
    pub fn signals(
        &self,
        keywords: &KeywordEncoder,
        text: &str,
        sentiment: Option<&SentimentScores>,
        history: &[HistoryTurn],
    ) -> [f32; 8] {
        let lower = text.to_lowercase();
        let negative = sentiment.map(|s| s.negative).unwrap_or(0.0);

        let earlier_negatives: Vec<f32> = history
            .iter()
            .filter(|t| t.from_customer)
            .filter_map(|t| t.negative)
            .rev()
            .take(2)
            .collect();
        let sustained_negative = if sentiment.is_some() && !earlier_negatives.is_empty() {
            let sum: f32 = earlier_negatives.iter().sum::<f32>() + negative;
            // Only counts when it is sustained: the mean over up to three messages, minus what a
            // single negative message contributes on its own.
            (sum / (earlier_negatives.len() + 1) as f32).clamp(0.0, 1.0)
        } else {
            0.0
        };

        let terms: HashSet<String> = keywords.terms(text).into_iter().collect();
        let repetition = if terms.len() >= 2 {
            history
                .iter()
                .filter(|t| t.from_customer)
                .map(|t| {
                    let other: HashSet<String> = keywords.terms(&t.text).into_iter().collect();
                    let shared = terms.intersection(&other).count() as f32;
                    let union = terms.union(&other).count().max(1) as f32;
                    shared / union
                })
                .fold(0.0f32, f32::max)
        } else {
            0.0
        };
        let repetition = if repetition >= 0.5 { repetition } else { 0.0 };

        let recent_bot: Vec<&HistoryTurn> = history
            .iter()
            .rev()
            .filter(|t| !t.from_customer)
            .take(3)
            .collect();
        let failures = recent_bot.iter().filter(|t| t.failed).count();
        let bot_failures = (failures as f32 / 2.0).min(1.0);

        let complaint = (COMPLAINT_PHRASES
            .iter()
            .filter(|p| lower.contains(*p))
            .count() as f32
            / 2.0)
            .min(1.0);
        let trimmed = lower.trim_start();
        let correction = if CORRECTION_STARTS.iter().any(|p| trimmed.starts_with(p)) {
            1.0
        } else {
            0.0
        };

        let letters: Vec<char> = text.chars().filter(|c| c.is_alphabetic()).collect();
        let upper = letters.iter().filter(|c| c.is_uppercase()).count();
        let capitals = letters.len() >= 8 && upper as f32 / letters.len() as f32 >= 0.6;
        let shouting =
            if capitals || text.contains("!!") || text.contains("?!") || text.contains("!?") {
                1.0
            } else {
                0.0
            };
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let profanity = if words
            .iter()
            .any(|w| PROFANITY.iter().any(|p| w.starts_with(p)))
        {
            1.0
        } else {
            0.0
        };
        [
            negative,
            sustained_negative,
            repetition,
            bot_failures,
            complaint,
            correction,
            shouting,
            profanity,
        ]
    }

    pub fn score_signals(&self, signals: &[f32; 8]) -> f32 {
        let z = self.bias
            + self
                .weights
                .iter()
                .zip(signals)
                .map(|(w, x)| w * x)
                .sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }

    pub fn assess(
        &self,
        keywords: &KeywordEncoder,
        text: &str,
        sentiment: Option<&SentimentScores>,
        history: &[HistoryTurn],
    ) -> Frustration {
        let values = self.signals(keywords, text, sentiment, history);
        let mut fired: Vec<(f32, Signal)> = values
            .iter()
            .zip(SIGNALS)
            .zip(self.weights)
            .filter(|((value, _), _)| **value > 0.0)
            .map(|((value, name), weight)| {
                (
                    weight * value,
                    Signal {
                        name: name.to_string(),
                        value: *value,
                    },
                )
            })
            .collect();
        fired.sort_by(|a, b| b.0.total_cmp(&a.0));
        Frustration {
            score: self.score_signals(&values),
            signals: fired.into_iter().map(|(_, s)| s).collect(),
        }
    }

    /// Logistic regression on signal vectors (gradient descent, L2), for `--fit`.
    pub fn fit(examples: &[([f32; 8], bool)], epochs: usize) -> Self {
        let mut model = Self {
            bias: 0.0,
            weights: [0.0; 8],
        };
        if examples.is_empty() {
            return model;
        }
        let n = examples.len() as f32;
        let positives = examples.iter().filter(|(_, y)| *y).count() as f32;
        // Start the bias at the base rate so few epochs suffice.
        let rate = (positives / n).clamp(1e-4, 1.0 - 1e-4);
        model.bias = (rate / (1.0 - rate)).ln();
        let learning_rate = 0.5;
        let l2 = 1e-3;
        for _ in 0..epochs {
            let mut gradient = [0.0f32; 8];
            let mut gradient_bias = 0.0f32;
            for (x, y) in examples {
                let p = model.score_signals(x);
                let error = p - if *y { 1.0 } else { 0.0 };
                gradient_bias += error;
                for (g, xi) in gradient.iter_mut().zip(x) {
                    *g += error * xi;
                }
            }
            model.bias -= learning_rate * gradient_bias / n;
            for (w, g) in model.weights.iter_mut().zip(gradient) {
                *w -= learning_rate * (g / n + l2 * *w);
            }
        }
        model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(negative: f32) -> SentimentScores {
        SentimentScores {
            negative,
            neutral: (1.0 - negative) / 2.0,
            positive: (1.0 - negative) / 2.0,
        }
    }

    fn customer(text: &str, negative: f32) -> HistoryTurn {
        HistoryTurn {
            from_customer: true,
            text: text.into(),
            negative: Some(negative),
            failed: false,
        }
    }

    fn bot(text: &str, failed: bool) -> HistoryTurn {
        HistoryTurn {
            from_customer: false,
            text: text.into(),
            negative: None,
            failed,
        }
    }

    #[test]
    fn a_calm_question_scores_low_and_fires_nothing() {
        let model = FrustrationModel::default();
        let keywords = KeywordEncoder::default();
        let result = model.assess(
            &keywords,
            "How do I change my email address?",
            Some(&scores(0.05)),
            &[],
        );
        assert!(result.score < 0.1, "{result:?}");
        assert_eq!(
            result.signals.len(),
            1,
            "only a faint negative signal: {result:?}"
        );
    }

    #[test]
    fn growing_anger_over_turns_scores_high_with_its_reasons() {
        let model = FrustrationModel::default();
        let keywords = KeywordEncoder::default();
        let history = vec![
            customer("my thermostat is not heating", 0.4),
            bot("Sorry, I couldn't find anything about that.", true),
            customer("the thermostat is still not heating at all", 0.7),
            bot(
                "I'm not completely sure I understood. Is your question about one of these?",
                true,
            ),
        ];
        let result = model.assess(
            &keywords,
            "THIS IS RIDICULOUS, my thermostat is STILL not heating!!!",
            Some(&scores(0.95)),
            &history,
        );
        assert!(result.score > 0.9, "{result:?}");
        let names: Vec<&str> = result.signals.iter().map(|s| s.name.as_str()).collect();
        for expected in [
            "complaint",
            "shouting",
            "repetition",
            "bot_failures",
            "sustained_negative",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
    }

    #[test]
    fn corrections_profanity_and_bot_failure_text_are_recognised() {
        let model = FrustrationModel::default();
        let keywords = KeywordEncoder::default();
        let values = model.signals(&keywords, "No, that's not what I asked, damn it", None, &[]);
        assert_eq!(values[5], 1.0, "correction");
        assert_eq!(values[7], 1.0, "profanity");
        assert_eq!(values[0], 0.0, "no sentiment model: no negative signal");
        assert!(bot_text_failed("Sorry, I couldn't find any restaurants."));
        assert!(!bot_text_failed("The weather will be sunny."));
    }

    #[test]
    fn fitting_learns_which_signal_predicts() {
        let mut examples = Vec::new();
        for i in 0..200 {
            let mut x = [0.0f32; 8];
            x[4] = if i % 2 == 0 { 1.0 } else { 0.0 };
            x[2] = if i % 3 == 0 { 1.0 } else { 0.0 };
            examples.push((x, i % 2 == 0));
        }
        let model = FrustrationModel::fit(&examples, 500);
        assert!(model.weights[4] > 2.0, "{model:?}");
        assert!(model.weights[2].abs() < 0.5, "{model:?}");
        assert!(model.score_signals(&examples[0].0) > 0.8);
        assert!(model.score_signals(&examples[1].0) < 0.2);
    }
}
