//! The out-of-scope threshold: held-out scores, the accuracy / recall curve, and the rule that
//! chooses the default threshold.

use super::*;

/// One held-out in-scope example, scored by a model that did not train on it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoredExample {
    pub gold: usize,
    pub predicted: usize,
    pub in_scope_score: f32,
}

/// Held-out scores that thresholds are chosen and evaluated on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldOutScores {
    pub in_scope: Vec<ScoredExample>,
    /// In-scope scores of held-out out-of-scope examples.
    pub out_of_scope: Vec<f32>,
}

/// Figures at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub threshold: f32,
    /// In-scope examples accepted *and* classified correctly, over all in-scope examples (a
    /// rejected in-scope example counts as wrong, as in the CLINC150 paper).
    pub in_scope_accuracy: f32,
    /// In-scope examples accepted, over all in-scope examples.
    pub in_scope_acceptance: f32,
    /// Out-of-scope examples rejected, over all out-of-scope examples; `None` without any.
    pub oos_recall: Option<f32>,
    /// Rejected examples that were out of scope; `None` without out-of-scope examples or when
    /// nothing is rejected.
    pub oos_precision: Option<f32>,
}

/// Held-out scores sorted for counting at many thresholds.
pub(super) struct SortedScores {
    pub(super) all_in_scope: Vec<f32>,
    pub(super) correct_in_scope: Vec<f32>,
    pub(super) out_of_scope: Vec<f32>,
}

impl SortedScores {
    pub(super) fn new(held_out: &HeldOutScores) -> Self {
        let sorted = |mut values: Vec<f32>| {
            values.sort_by(f32::total_cmp);
            values
        };
        Self {
            all_in_scope: sorted(held_out.in_scope.iter().map(|e| e.in_scope_score).collect()),
            correct_in_scope: sorted(
                held_out
                    .in_scope
                    .iter()
                    .filter(|e| e.gold == e.predicted)
                    .map(|e| e.in_scope_score)
                    .collect(),
            ),
            out_of_scope: sorted(held_out.out_of_scope.clone()),
        }
    }

    pub(super) fn below(sorted: &[f32], threshold: f32) -> usize {
        sorted.partition_point(|&score| score < threshold)
    }

    pub(super) fn point(&self, threshold: f32) -> CurvePoint {
        let in_scope = self.all_in_scope.len().max(1) as f32;
        let rejected_in_scope = Self::below(&self.all_in_scope, threshold);
        let accepted_correct =
            self.correct_in_scope.len() - Self::below(&self.correct_in_scope, threshold);
        let rejected_oos = Self::below(&self.out_of_scope, threshold);
        let has_oos = !self.out_of_scope.is_empty();
        let rejected = rejected_in_scope + rejected_oos;
        CurvePoint {
            threshold,
            in_scope_accuracy: accepted_correct as f32 / in_scope,
            in_scope_acceptance: (self.all_in_scope.len() - rejected_in_scope) as f32 / in_scope,
            oos_recall: has_oos.then(|| rejected_oos as f32 / self.out_of_scope.len() as f32),
            oos_precision: (has_oos && rejected > 0).then(|| rejected_oos as f32 / rejected as f32),
        }
    }

    /// Highest threshold that still accepts at least `fraction` of the in-scope examples.
    pub(super) fn threshold_accepting(&self, fraction: f32) -> f32 {
        let count = self.all_in_scope.len();
        let accepted = ((fraction.clamp(0.0, 1.0) * count as f32).ceil() as usize).clamp(1, count);
        self.all_in_scope[count - accepted]
    }
}

/// Figures at each of `thresholds`, on held-out scores.
pub fn threshold_curve(held_out: &HeldOutScores, thresholds: &[f32]) -> Vec<CurvePoint> {
    let sorted = SortedScores::new(held_out);
    thresholds.iter().map(|&t| sorted.point(t)).collect()
}

/// How the default threshold is chosen from held-out scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThresholdRule {
    /// Fraction of held-out in-scope examples to accept: the knob between needless handoffs and
    /// answering messages the bot should not. 0.98 (chosen on CLINC150 val, where the curve
    /// bends) gives about 94.7% in-scope accuracy and 76% out-of-scope recall on CLINC150 test.
    pub target_acceptance: f32,
    /// With out-of-scope examples, how far (in acceptance) the threshold may move from the
    /// target to trade accuracy for recall. 0 (the default) ignores them for the threshold.
    pub acceptance_band: f32,
    /// Value of one unit of out-of-scope recall against one unit of in-scope accuracy inside the
    /// band. Small because a rejected in-scope message (needless handoff) is paid by every
    /// customer who asks it, while out-of-scope samples are few and often easier than real ones.
    pub out_of_scope_weight: f32,
}

impl Default for ThresholdRule {
    fn default() -> Self {
        Self {
            target_acceptance: 0.98,
            acceptance_band: 0.0,
            out_of_scope_weight: 0.1,
        }
    }
}

/// The chosen threshold and the held-out figures at it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdChoice {
    pub threshold: f32,
    pub at_threshold: CurvePoint,
    pub held_out_in_scope: usize,
    pub held_out_out_of_scope: usize,
}

/// Chooses the out-of-scope threshold from held-out scores; see [`ThresholdRule`].
pub fn choose_threshold(held_out: &HeldOutScores, rule: &ThresholdRule) -> Result<ThresholdChoice> {
    let in_unit_interval = |value: f32| value.is_finite() && (0.0..=1.0).contains(&value);
    if !(in_unit_interval(rule.target_acceptance) && rule.target_acceptance > 0.0) {
        return Err(ClassifierError::InvalidOption(
            "target_acceptance must be in (0, 1]".to_string(),
        ));
    }
    if !in_unit_interval(rule.acceptance_band) {
        return Err(ClassifierError::InvalidOption(
            "acceptance_band must be in [0, 1]".to_string(),
        ));
    }
    if !(rule.out_of_scope_weight.is_finite() && rule.out_of_scope_weight >= 0.0) {
        return Err(ClassifierError::InvalidOption(
            "out_of_scope_weight must be a non-negative number".to_string(),
        ));
    }
    if held_out.in_scope.is_empty() {
        return Err(ClassifierError::EmptyInput);
    }
    let sorted = SortedScores::new(held_out);
    let target = sorted.threshold_accepting(rule.target_acceptance);
    let mut best = sorted.point(target);
    if !sorted.out_of_scope.is_empty() && rule.acceptance_band > 0.0 {
        let lenient = sorted.threshold_accepting(rule.target_acceptance + rule.acceptance_band);
        let strict = sorted.threshold_accepting(rule.target_acceptance - rule.acceptance_band);
        let objective = |p: &CurvePoint| {
            p.in_scope_accuracy + rule.out_of_scope_weight * p.oos_recall.unwrap_or(0.0)
        };
        // Candidates where a figure changes: each in-scope score (accepts that example) and just
        // above each out-of-scope score (rejects that example).
        let mut candidates: Vec<f32> = sorted
            .all_in_scope
            .iter()
            .copied()
            .chain(sorted.out_of_scope.iter().map(|score| score.next_up()))
            .filter(|&t| (lenient..=strict).contains(&t))
            .collect();
        candidates.sort_by(f32::total_cmp);
        let mut best_value = objective(&best);
        for candidate in candidates {
            let point = sorted.point(candidate);
            let value = objective(&point);
            // Strictly better only: a tie keeps the in-scope target, and otherwise the most
            // lenient threshold (fewest needless handoffs), since candidates ascend.
            if value > best_value + 1e-7 {
                best = point;
                best_value = value;
            }
        }
    }
    Ok(ThresholdChoice {
        threshold: best.threshold,
        at_threshold: best,
        held_out_in_scope: held_out.in_scope.len(),
        held_out_out_of_scope: held_out.out_of_scope.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_out(in_scope: &[(f32, bool)], out_of_scope: &[f32]) -> HeldOutScores {
        HeldOutScores {
            in_scope: in_scope
                .iter()
                .map(|&(score, correct)| ScoredExample {
                    gold: 0,
                    predicted: usize::from(!correct),
                    in_scope_score: score,
                })
                .collect(),
            out_of_scope: out_of_scope.to_vec(),
        }
    }

    #[test]
    fn threshold_keeps_the_target_fraction_of_in_scope_examples() {
        // 100 in-scope scores 0.01..=1.00; the lowest 5 are misclassified.
        let scores: Vec<(f32, bool)> = (1..=100).map(|i| (i as f32 / 100.0, i > 5)).collect();
        let rule = ThresholdRule {
            target_acceptance: 0.9,
            ..ThresholdRule::default()
        };
        let choice = choose_threshold(&held_out(&scores, &[]), &rule).unwrap();
        assert_eq!(choice.threshold, 0.11);
        assert_eq!(choice.at_threshold.in_scope_acceptance, 0.9);
        assert_eq!(choice.at_threshold.in_scope_accuracy, 0.9);
        assert_eq!(choice.at_threshold.oos_recall, None);
        assert_eq!(choice.held_out_out_of_scope, 0);
    }

    #[test]
    fn threshold_moves_within_the_band_towards_out_of_scope_examples() {
        let scores: Vec<(f32, bool)> = (1..=100).map(|i| (i as f32 / 100.0, true)).collect();
        // Out-of-scope scores just above the target threshold (0.11): rejecting them all needs
        // 0.125, which accepts 88% of in-scope examples, inside a band of 0.05.
        let oos = [0.115, 0.12, 0.02];
        let rule = ThresholdRule {
            target_acceptance: 0.9,
            acceptance_band: 0.05,
            out_of_scope_weight: 0.5,
        };
        let choice = choose_threshold(&held_out(&scores, &oos), &rule).unwrap();
        assert!(
            choice.threshold > 0.12 && choice.threshold <= 0.13,
            "{choice:?}"
        );
        assert_eq!(choice.at_threshold.oos_recall, Some(1.0));
        assert_eq!(choice.at_threshold.in_scope_acceptance, 0.88);
        // Without a band the target wins whatever the out-of-scope examples say.
        let fixed = ThresholdRule {
            acceptance_band: 0.0,
            ..rule
        };
        let choice = choose_threshold(&held_out(&scores, &oos), &fixed).unwrap();
        assert_eq!(choice.threshold, 0.11);
        assert_eq!(choice.at_threshold.oos_recall, Some(1.0 / 3.0));
        assert!(choose_threshold(&HeldOutScores::default(), &rule).is_err());
        let bad = ThresholdRule {
            target_acceptance: 1.5,
            ..rule
        };
        assert!(choose_threshold(&held_out(&scores, &oos), &bad).is_err());
    }

    #[test]
    fn cross_validation_rule_rejects_proportionally_fewer() {
        let opts = FitOptions {
            cross_validation_rejection_scale: 0.5,
            rule: ThresholdRule {
                acceptance_band: 0.01,
                ..ThresholdRule::default()
            },
            ..FitOptions::default()
        };
        let rule = opts.cross_validation_rule();
        assert!((rule.target_acceptance - 0.99).abs() < 1e-6, "{rule:?}");
        assert!((rule.acceptance_band - 0.005).abs() < 1e-6, "{rule:?}");
        assert_eq!(rule.out_of_scope_weight, opts.rule.out_of_scope_weight);
    }

    #[test]
    fn curve_counts_rejections_as_errors_and_reports_precision() {
        let scores = held_out(
            &[(0.9, true), (0.8, false), (0.4, true), (0.2, true)],
            &[0.3, 0.1],
        );
        let curve = threshold_curve(&scores, &[0.0, 0.35, 0.5, 1.0]);
        assert_eq!(curve[0].in_scope_accuracy, 0.75);
        assert_eq!(curve[0].oos_recall, Some(0.0));
        assert_eq!(curve[0].oos_precision, None);
        assert_eq!(curve[1].in_scope_accuracy, 0.5);
        assert_eq!(curve[1].in_scope_acceptance, 0.75);
        assert_eq!(curve[1].oos_recall, Some(1.0));
        assert_eq!(curve[1].oos_precision, Some(2.0 / 3.0));
        assert_eq!(curve[2].in_scope_accuracy, 0.25);
        assert_eq!(curve[3].in_scope_accuracy, 0.0);
        assert_eq!(curve[3].oos_precision, Some(2.0 / 6.0));
    }
}
