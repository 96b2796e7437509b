//! `baton intents check`: what a knowledge manager needs to improve an intents file. Which intents
//! are too thin (few examples), which pairs are too close to tell apart (their examples' centroids
//! nearly coincide, or cross-validation confuses them), and which examples overlap another intent
//! (their nearest example belongs to a different intent and is nearly the same sentence).
//!
//! Pure computation on embedded examples and a cross-validation run, so it is tested without the
//! encoder.

use serde::Serialize;

use crate::nlp::classifier::CrossValidation;
use crate::nlp::encoder::{self, normalise};
use crate::nlp::intent_model::class_centroids;
use crate::nlp::intents::{IntentsFile, IntentsWarning, RECOMMENDED_EXAMPLES};

/// Centroid cosine at or above which two intents are reported as too close. On the demo file the
/// closest pair of distinct intents sits near 0.75 and the median pair near 0.3.
pub const CLOSE_CENTROIDS: f32 = 0.80;
/// Cosine at or above which an example and its nearest example of another intent are reported as
/// overlapping (near paraphrases).
pub const OVERLAPPING_EXAMPLES: f32 = 0.85;
/// Share of an intent's held-out examples that cross-validation gave to one other intent, at or
/// above which the pair is reported as confused.
pub const CONFUSED_SHARE: f32 = 0.2;
/// Cross-validated recall under which an intent is reported as often misread.
pub const LOW_RECALL: f32 = 0.8;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntentHealth {
    pub name: String,
    pub examples: usize,
    /// Fewer than [`RECOMMENDED_EXAMPLES`].
    pub thin: bool,
    /// Share of the intent's examples that cross-validation classified correctly; None when none
    /// could be held out (a single example).
    pub cross_validated_recall: Option<f32>,
    /// The intent whose centroid is closest, with the cosine.
    pub nearest_intent: Option<(String, f32)>,
    /// The intent cross-validation most often gave this one's examples to, and how many.
    pub misread_as: Option<(String, usize)>,
}

impl IntentHealth {
    /// Cross-validation got fewer than [`LOW_RECALL`] of its examples right.
    pub fn often_misread(&self) -> bool {
        self.cross_validated_recall.is_some_and(|r| r < LOW_RECALL)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClosePair {
    pub first: String,
    pub second: String,
    pub centroid_cosine: f32,
    /// Held-out examples of either intent given to the other by cross-validation.
    pub confused_examples: usize,
    /// Held-out examples of the two intents together.
    pub held_out_examples: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overlap {
    pub intent: String,
    pub example: String,
    pub other_intent: String,
    pub other_example: String,
    pub cosine: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntentsCheck {
    pub intents: Vec<IntentHealth>,
    /// Too close or confused, closest first.
    pub close_pairs: Vec<ClosePair>,
    /// Most similar first.
    pub overlaps: Vec<Overlap>,
    /// What parsing the file reported (duplicates, conflicts, thin intents), with lines.
    pub warnings: Vec<IntentsWarning>,
    pub cross_validated_accuracy: f32,
}

impl IntentsCheck {
    /// Nothing to fix.
    pub fn is_clean(&self) -> bool {
        self.close_pairs.is_empty()
            && self.overlaps.is_empty()
            && self.warnings.is_empty()
            && self.intents.iter().all(|i| !i.thin && !i.often_misread())
    }
}

fn unit(mut vector: Vec<f32>) -> Vec<f32> {
    normalise(&mut vector);
    vector
}

/// Checks `file` given its examples' embeddings and labels (in the order of
/// `intent_model::training_texts`) and a cross-validation of the same set.
pub fn check(
    file: &IntentsFile,
    texts: &[String],
    embeddings: &[Vec<f32>],
    labels: &[usize],
    cross_validation: &CrossValidation,
) -> IntentsCheck {
    let classes = file.intents.len();
    let embeddings: Vec<Vec<f32>> = embeddings.iter().cloned().map(unit).collect();
    // The same centroids the recogniser keeps for steering retrieval.
    let centroids = class_centroids(&embeddings, labels, classes);
    let mut counts = vec![0usize; classes];
    for &label in labels {
        counts[label] += 1;
    }

    // Cross-validation: per intent, held-out examples, correct ones, and where the rest went.
    let mut held_out = vec![0usize; classes];
    let mut correct = vec![0usize; classes];
    let mut confusion = vec![vec![0usize; classes]; classes];
    for example in &cross_validation.held_out.in_scope {
        held_out[example.gold] += 1;
        if example.gold == example.predicted {
            correct[example.gold] += 1;
        } else {
            confusion[example.gold][example.predicted] += 1;
        }
    }

    let name = |index: usize| file.intents[index].name.clone();
    let intents = (0..classes)
        .map(|index| {
            let nearest = (0..classes)
                .filter(|&other| other != index)
                .map(|other| (other, encoder::cosine(&centroids[index], &centroids[other])))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            IntentHealth {
                name: name(index),
                examples: counts[index],
                thin: counts[index] < RECOMMENDED_EXAMPLES,
                cross_validated_recall: (held_out[index] > 0)
                    .then(|| correct[index] as f32 / held_out[index] as f32),
                nearest_intent: nearest.map(|(other, cosine)| (name(other), cosine)),
                misread_as: (0..classes)
                    .filter(|&other| confusion[index][other] > 0)
                    .max_by_key(|&other| (confusion[index][other], std::cmp::Reverse(other)))
                    .map(|other| (name(other), confusion[index][other])),
            }
        })
        .collect();

    let mut close_pairs = Vec::new();
    for first in 0..classes {
        for second in first + 1..classes {
            let cosine = encoder::cosine(&centroids[first], &centroids[second]);
            let confused = confusion[first][second] + confusion[second][first];
            let held = held_out[first] + held_out[second];
            let confused_share = |from: usize, to: usize| {
                held_out[from] > 0
                    && confusion[from][to] as f32 / held_out[from] as f32 >= CONFUSED_SHARE
            };
            if cosine >= CLOSE_CENTROIDS
                || confused_share(first, second)
                || confused_share(second, first)
            {
                close_pairs.push(ClosePair {
                    first: name(first),
                    second: name(second),
                    centroid_cosine: cosine,
                    confused_examples: confused,
                    held_out_examples: held,
                });
            }
        }
    }
    close_pairs.sort_by(|a, b| b.centroid_cosine.total_cmp(&a.centroid_cosine));

    // Each pair of overlapping examples once: from the example of the earlier intent.
    let mut overlaps = Vec::new();
    for (index, embedding) in embeddings.iter().enumerate() {
        let nearest_other = embeddings
            .iter()
            .enumerate()
            .filter(|(other, _)| labels[*other] != labels[index])
            .map(|(other, candidate)| (other, encoder::cosine(embedding, candidate)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((other, cosine)) = nearest_other {
            if cosine >= OVERLAPPING_EXAMPLES && labels[index] < labels[other] {
                overlaps.push(Overlap {
                    intent: name(labels[index]),
                    example: texts[index].clone(),
                    other_intent: name(labels[other]),
                    other_example: texts[other].clone(),
                    cosine,
                });
            }
        }
    }
    overlaps.sort_by(|a, b| b.cosine.total_cmp(&a.cosine));

    let scored = cross_validation.held_out.in_scope.len();
    IntentsCheck {
        intents,
        close_pairs,
        overlaps,
        warnings: file.warnings.clone(),
        cross_validated_accuracy: correct.iter().sum::<usize>() as f32 / scored.max(1) as f32,
    }
}

/// The report as a knowledge manager reads it in a terminal.
pub fn render(check: &IntentsCheck, origin: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} intents, {} examples; cross-validated accuracy {:.1}%",
        check.intents.len(),
        check.intents.iter().map(|i| i.examples).sum::<usize>(),
        check.cross_validated_accuracy * 100.0
    );
    if !check.warnings.is_empty() {
        let _ = writeln!(out, "\nIn the file ({}):", check.warnings.len());
        for warning in &check.warnings {
            let _ = writeln!(out, "  {}", warning.display(origin));
        }
    }
    let thin: Vec<&IntentHealth> = check.intents.iter().filter(|i| i.thin).collect();
    if !thin.is_empty() {
        let _ = writeln!(
            out,
            "\nToo thin (fewer than {RECOMMENDED_EXAMPLES} examples; add real customer messages):"
        );
        for intent in thin {
            let _ = writeln!(out, "  {:<28} {} examples", intent.name, intent.examples);
        }
    }
    let misread: Vec<&IntentHealth> = check.intents.iter().filter(|i| i.often_misread()).collect();
    if !misread.is_empty() {
        let _ = writeln!(
            out,
            "\nOften misread (cross-validated recall under {:.0}%; add examples that show the difference):",
            LOW_RECALL * 100.0
        );
        for intent in misread {
            let _ = writeln!(
                out,
                "  {:<28} {:.1}%{}",
                intent.name,
                intent.cross_validated_recall.unwrap_or_default() * 100.0,
                intent
                    .misread_as
                    .as_ref()
                    .map(|(other, count)| format!(", {count} read as {other}"))
                    .unwrap_or_default()
            );
        }
    }
    if !check.close_pairs.is_empty() {
        let _ = writeln!(
            out,
            "\nToo close to tell apart (merge them, or write examples that show the difference):"
        );
        for pair in &check.close_pairs {
            let _ = writeln!(
                out,
                "  {} ~ {}: centroid cosine {:.2}; cross-validation confused {} of {} held-out examples",
                pair.first,
                pair.second,
                pair.centroid_cosine,
                pair.confused_examples,
                pair.held_out_examples
            );
        }
    }
    if !check.overlaps.is_empty() {
        let _ = writeln!(
            out,
            "\nOverlapping examples (near paraphrases under different intents):"
        );
        for overlap in &check.overlaps {
            let _ = writeln!(
                out,
                "  {:.2}  {}: {:?}  ~  {}: {:?}",
                overlap.cosine,
                overlap.intent,
                overlap.example,
                overlap.other_intent,
                overlap.other_example
            );
        }
    }
    let _ = writeln!(
        out,
        "\nPer intent (cross-validated recall, nearest intent by centroid):"
    );
    let mut by_recall: Vec<&IntentHealth> = check.intents.iter().collect();
    by_recall.sort_by(|a, b| {
        a.cross_validated_recall
            .unwrap_or(f32::INFINITY)
            .total_cmp(&b.cross_validated_recall.unwrap_or(f32::INFINITY))
    });
    for intent in by_recall {
        let recall = intent
            .cross_validated_recall
            .map(|r| format!("{:>5.1}%", r * 100.0))
            .unwrap_or_else(|| "    -".into());
        let nearest = intent
            .nearest_intent
            .as_ref()
            .map(|(name, cosine)| format!("{name} ({cosine:.2})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<28} {:>3} examples  {recall}  {nearest}",
            intent.name, intent.examples
        );
    }
    if check.is_clean() {
        let _ = writeln!(out, "\nNothing to fix.");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nlp::classifier::{HeldOutScores, ScoredExample};
    use crate::nlp::intents::IntentsFile;

    fn file() -> IntentsFile {
        IntentsFile::parse(
            b"intents:\n  - name: refund\n    examples: [a, b, c, d, e]\n  - name: return\n    examples: [f, g, h, i, j]\n  - name: hello\n    examples: [k]\n",
            "intents.yaml",
        )
        .unwrap()
    }

    #[test]
    fn reports_thin_close_and_overlapping_intents() {
        let file = file();
        let texts: Vec<String> = "abcdefghijk".chars().map(|c| c.to_string()).collect();
        // refund and return point the same way; one return example ("f") nearly equals "a".
        let mut embeddings = Vec::new();
        let mut labels = Vec::new();
        for i in 0..5 {
            embeddings.push(vec![1.0, 0.1 * i as f32, 0.0]);
            labels.push(0);
        }
        embeddings.push(vec![1.0, 0.01, 0.0]);
        labels.push(1);
        for i in 1..5 {
            embeddings.push(vec![1.0, -0.2 * i as f32, 0.3]);
            labels.push(1);
        }
        embeddings.push(vec![0.0, 0.0, 1.0]);
        labels.push(2);
        // Cross-validation gave two "return" examples to "refund".
        let mut in_scope: Vec<ScoredExample> = (0..5)
            .map(|_| ScoredExample {
                gold: 0,
                predicted: 0,
                in_scope_score: 0.9,
            })
            .collect();
        for predicted in [0, 0, 1, 1, 1] {
            in_scope.push(ScoredExample {
                gold: 1,
                predicted,
                in_scope_score: 0.8,
            });
        }
        let cv = CrossValidation {
            held_out: HeldOutScores {
                in_scope,
                out_of_scope: Vec::new(),
            },
            temperature: 1.0,
        };
        let report = check(&file, &texts, &embeddings, &labels, &cv);
        assert_eq!(report.cross_validated_accuracy, 0.8);
        let hello = &report.intents[2];
        assert!(hello.thin && hello.cross_validated_recall.is_none());
        assert_eq!(report.intents[1].cross_validated_recall, Some(0.6));
        assert!(report.intents[1].often_misread());
        assert_eq!(
            report.intents[1].misread_as,
            Some(("refund".to_string(), 2))
        );
        assert!(!report.intents[0].often_misread());
        assert_eq!(report.close_pairs.len(), 1, "{:?}", report.close_pairs);
        let pair = &report.close_pairs[0];
        assert_eq!(
            (pair.first.as_str(), pair.second.as_str()),
            ("refund", "return")
        );
        assert_eq!((pair.confused_examples, pair.held_out_examples), (2, 10));
        assert!(report
            .overlaps
            .iter()
            .any(|o| o.example == "a" && o.other_example == "f" && o.cosine > 0.99));
        assert!(report.overlaps.iter().all(|o| o.intent != "hello"));
        let text = render(&report, "intents.yaml");
        assert!(
            text.contains("Too thin") && text.contains("hello"),
            "{text}"
        );
        assert!(text.contains("refund ~ return"), "{text}");
        assert!(text.contains("2 read as refund"), "{text}");
        assert!(text.contains("intents.yaml line 6"), "{text}");
        assert!(!report.is_clean());
    }
}
