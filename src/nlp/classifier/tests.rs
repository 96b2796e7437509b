//! The classifier's tests: training, prediction, serialisation and the threshold on clustered
//! synthetic data.

use super::*;

const DIM: usize = 16;

/// Deterministic pseudo-random numbers for test data, independent of `rand`'s algorithms.
pub(super) struct Lcg(pub(super) u64);

impl Lcg {
    pub(super) fn next_unit(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// `classes` well separated clusters around basis directions, `per_class` noisy points each.
fn clusters(
    classes: usize,
    per_class: usize,
    noise: f32,
    seed: u64,
) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut rng = Lcg(seed);
    let mut embeddings = Vec::new();
    let mut labels = Vec::new();
    for class in 0..classes {
        for _ in 0..per_class {
            let mut v: Vec<f32> = (0..DIM).map(|_| noise * rng.next_unit()).collect();
            v[class] += 1.0;
            embeddings.push(v);
            labels.push(class);
        }
    }
    (embeddings, labels)
}

fn names(classes: usize) -> Vec<String> {
    (0..classes).map(|c| format!("intent_{c}")).collect()
}

fn quick_options() -> TrainOptions {
    TrainOptions {
        min_steps: 200,
        threads: 2,
        ..TrainOptions::default()
    }
}

/// A point on the far side of the space from every cluster used in these tests.
/// A training set of these examples, without out-of-scope examples.
fn in_scope_set<'a>(
    embeddings: &'a [Vec<f32>],
    labels: &'a [usize],
    class_names: &'a [String],
) -> TrainingSet<'a> {
    TrainingSet {
        embeddings,
        labels,
        class_names,
        out_of_scope: &[],
    }
}

/// `fit` with the quick training options and the default folds and threshold rule.
fn fit_quickly(set: &TrainingSet<'_>) -> FittedModel {
    fit(
        set,
        &FitOptions {
            train: quick_options(),
            ..FitOptions::default()
        },
    )
    .unwrap()
}

fn far_point() -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[DIM - 1] = 1.0;
    v[DIM - 2] = -0.3;
    v
}

#[test]
fn learns_separable_clusters() {
    let (embeddings, labels) = clusters(4, 20, 0.2, 1);
    let class_names = names(4);
    let set = in_scope_set(&embeddings, &labels, &class_names);
    let model = train(&set, &quick_options()).unwrap();
    let (test, test_labels) = clusters(4, 10, 0.2, 99);
    let predictions = model.predict_batch(&test).unwrap();
    let correct = predictions
        .iter()
        .zip(&test_labels)
        .filter(|(p, &gold)| p.top().0 == gold)
        .count();
    assert_eq!(correct, test.len());
    for prediction in &predictions {
        assert!(prediction.top().1 > 0.5, "{prediction:?}");
    }
}

#[test]
fn probabilities_are_ranked_and_sum_to_one() {
    let (embeddings, labels) = clusters(5, 8, 0.3, 2);
    let class_names = names(5);
    let set = in_scope_set(&embeddings, &labels, &class_names);
    let fitted = fit(
        &set,
        &FitOptions {
            train: quick_options(),
            folds: 4,
            ..FitOptions::default()
        },
    )
    .unwrap();
    let prediction = fitted.model.predict(&embeddings[3]).unwrap();
    assert_eq!(prediction.ranked.len(), 5);
    let total: f32 = prediction.ranked.iter().map(|(_, p)| p).sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");
    assert!(prediction.ranked.windows(2).all(|w| w[0].1 >= w[1].1));
    let mut classes: Vec<usize> = prediction.ranked.iter().map(|(c, _)| *c).collect();
    classes.sort_unstable();
    assert_eq!(classes, vec![0, 1, 2, 3, 4]);
}

#[test]
fn far_points_score_low_and_are_flagged_out_of_scope() {
    let (embeddings, labels) = clusters(4, 15, 0.15, 3);
    let class_names = names(4);
    let set = in_scope_set(&embeddings, &labels, &class_names);
    let fitted = fit_quickly(&set);
    let far = fitted.model.predict(&far_point()).unwrap();
    let near = fitted.model.predict(&embeddings[0]).unwrap();
    // The linear model extrapolates: far from every cluster it is still certain of some
    // intent. Only the neighbour similarity pulls the score down, to about 1 / (1 + w).
    assert!(far.top().1 > 0.99, "{far:?}");
    assert!(far.in_scope_score < 0.4, "{far:?}");
    assert!(near.in_scope_score > 0.7, "{near:?}");
    assert!(far.out_of_scope);
    assert!(!near.out_of_scope);
    assert!(fitted.threshold.at_threshold.in_scope_acceptance >= 0.98);
}

#[test]
fn out_of_scope_examples_lower_the_score_near_them() {
    let (embeddings, labels) = clusters(3, 12, 0.15, 4);
    let class_names = names(3);
    // Out-of-scope examples around a direction between intent 0 and the empty dimensions.
    let mut rng = Lcg(5);
    let oos: Vec<Vec<f32>> = (0..12)
        .map(|_| {
            let mut v: Vec<f32> = (0..DIM).map(|_| 0.15 * rng.next_unit()).collect();
            v[8] += 1.0;
            v[0] += 0.4;
            v
        })
        .collect();
    let mut query = vec![0.0; DIM];
    query[8] = 1.0;
    query[0] = 0.4;
    let without = in_scope_set(&embeddings, &labels, &class_names);
    let with = TrainingSet {
        out_of_scope: &oos,
        ..without
    };
    let plain = train(&without, &quick_options()).unwrap();
    let informed = train(&with, &quick_options()).unwrap();
    let plain_score = plain.predict(&query).unwrap().in_scope_score;
    let informed_score = informed.predict(&query).unwrap().in_scope_score;
    assert!(
        informed_score < 0.5 * plain_score,
        "{informed_score} vs {plain_score}"
    );
    // The extra output is not an intent.
    assert_eq!(informed.predict(&query).unwrap().ranked.len(), 3);
}

#[test]
fn training_is_deterministic_for_a_seed_and_thread_count_independent() {
    let (embeddings, labels) = clusters(3, 10, 0.4, 6);
    let class_names = names(3);
    let set = in_scope_set(&embeddings, &labels, &class_names);
    // Batches smaller than the data, so that the seed (batch order) matters.
    let opts = TrainOptions {
        batch_size: 8,
        ..quick_options()
    };
    let one_thread = TrainOptions {
        threads: 1,
        ..opts.clone()
    };
    let a = train(&set, &opts).unwrap();
    let b = train(&set, &one_thread).unwrap();
    assert_eq!(a.stored.weights, b.stored.weights);
    assert_eq!(a.stored.bias, b.stored.bias);
    let other_seed = TrainOptions {
        seed: 7,
        ..opts.clone()
    };
    let c = train(&set, &other_seed).unwrap();
    assert_ne!(a.stored.weights, c.stored.weights);
    let cv_a = cross_validate(&set, &opts, 3).unwrap();
    let cv_b = cross_validate(&set, &one_thread, 3).unwrap();
    assert_eq!(cv_a, cv_b);
}

#[test]
fn rejects_bad_training_sets() {
    let (embeddings, labels) = clusters(3, 4, 0.1, 7);
    let class_names = names(3);
    let base = in_scope_set(&embeddings, &labels, &class_names);
    let opts = quick_options();
    let one_name = names(1);
    assert_eq!(
        train(
            &TrainingSet {
                class_names: &one_name,
                ..base
            },
            &opts
        )
        .unwrap_err(),
        ClassifierError::TooFewClasses(1)
    );
    assert_eq!(
        train(
            &TrainingSet {
                embeddings: &[],
                labels: &[],
                ..base
            },
            &opts
        )
        .unwrap_err(),
        ClassifierError::EmptyInput
    );
    let four_names = names(4);
    assert!(matches!(
        train(&TrainingSet { class_names: &four_names, ..base }, &opts).unwrap_err(),
        ClassifierError::TooFewExamples { ref name, count: 0, .. } if name == "intent_3"
    ));
    assert!(matches!(
        train(
            &TrainingSet {
                labels: &labels[1..],
                ..base
            },
            &opts
        )
        .unwrap_err(),
        ClassifierError::LengthMismatch { .. }
    ));
    let mut bad_label = labels.clone();
    bad_label[2] = 3;
    assert!(matches!(
        train(
            &TrainingSet {
                labels: &bad_label,
                ..base
            },
            &opts
        )
        .unwrap_err(),
        ClassifierError::LabelOutOfRange {
            index: 2,
            label: 3,
            ..
        }
    ));
    let mut short = embeddings.clone();
    short[5].pop();
    assert_eq!(
        train(
            &TrainingSet {
                embeddings: &short,
                ..base
            },
            &opts
        )
        .unwrap_err(),
        ClassifierError::DimensionMismatch {
            index: 5,
            found: DIM - 1,
            expected: DIM
        }
    );
    let mut nan = embeddings.clone();
    nan[6][1] = f32::NAN;
    assert_eq!(
        train(
            &TrainingSet {
                embeddings: &nan,
                ..base
            },
            &opts
        )
        .unwrap_err(),
        ClassifierError::NonFinite { index: 6 }
    );
    let mut zero = embeddings.clone();
    zero[7] = vec![0.0; DIM];
    assert_eq!(
        train(
            &TrainingSet {
                embeddings: &zero,
                ..base
            },
            &opts
        )
        .unwrap_err(),
        ClassifierError::ZeroVector { index: 7 }
    );
    // A single out-of-scope example is usable (it is never held out).
    let lone_oos = vec![far_point()];
    assert!(train(
        &TrainingSet {
            out_of_scope: &lone_oos,
            ..base
        },
        &opts
    )
    .is_ok());
    assert!(matches!(
        train(
            &base,
            &TrainOptions {
                batch_size: 0,
                ..opts.clone()
            }
        )
        .unwrap_err(),
        ClassifierError::InvalidOption(_)
    ));
    assert!(matches!(
        cross_validate(&base, &opts, 1).unwrap_err(),
        ClassifierError::InvalidOption(_)
    ));
}

#[test]
fn prediction_checks_the_dimension_and_values() {
    let (embeddings, labels) = clusters(2, 5, 0.1, 8);
    let class_names = names(2);
    let set = in_scope_set(&embeddings, &labels, &class_names);
    let model = train(&set, &quick_options()).unwrap();
    assert_eq!(
        model.predict(&[1.0; DIM + 1]).unwrap_err(),
        ClassifierError::DimensionMismatch {
            index: 0,
            found: DIM + 1,
            expected: DIM
        }
    );
    let mut nan = vec![1.0; DIM];
    nan[0] = f32::NAN;
    assert_eq!(
        model.predict(&nan).unwrap_err(),
        ClassifierError::NonFinite { index: 0 }
    );
    assert!(model.predict_batch(&[]).unwrap().is_empty());
}

#[test]
fn serde_round_trip_preserves_predictions_and_rejects_corruption() {
    let (embeddings, labels) = clusters(3, 6, 0.2, 9);
    let class_names = names(3);
    let set = in_scope_set(&embeddings, &labels, &class_names);
    let fitted = fit(
        &set,
        &FitOptions {
            train: quick_options(),
            folds: 3,
            ..FitOptions::default()
        },
    )
    .unwrap();
    let json = serde_json::to_string(&fitted.model).unwrap();
    let loaded: IntentModel = serde_json::from_str(&json).unwrap();
    assert_eq!(loaded.class_names(), fitted.model.class_names());
    assert_eq!(loaded.threshold(), fitted.model.threshold());
    for embedding in &embeddings {
        assert_eq!(
            loaded.predict(embedding).unwrap(),
            fitted.model.predict(embedding).unwrap()
        );
    }
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["bias"].as_array_mut().unwrap().pop();
    let error = serde_json::from_value::<IntentModel>(value).unwrap_err();
    assert!(error.to_string().contains("inconsistent"), "{error}");
}

#[test]
fn batched_and_single_predictions_agree() {
    // Batches of at least DIRECT_DOT_MAX_ROWS go through the matrix product, single
    // messages through plain dot products: the two must give the same answers.
    let (embeddings, labels) = clusters(4, 30, 0.4, 11);
    let class_names = names(4);
    let set = in_scope_set(&embeddings, &labels, &class_names);
    let model = train(&set, &quick_options()).unwrap();
    let (queries, _) = clusters(4, 5, 0.6, 12);
    let batch = model.predict_batch(&queries).unwrap();
    for (query, batched) in queries.iter().zip(&batch) {
        let single = model.predict(query).unwrap();
        assert!((single.in_scope_score - batched.in_scope_score).abs() < 1e-5);
        assert_eq!(single.top().0, batched.top().0);
        assert!((single.top().1 - batched.top().1).abs() < 1e-5);
    }
}

#[test]
fn single_example_intents_train_and_are_never_held_out() {
    let (mut embeddings, mut labels) = clusters(3, 12, 0.2, 5);
    // Intent 3 has one example.
    let mut lone = vec![0.0; DIM];
    lone[3] = 1.0;
    embeddings.push(lone.clone());
    labels.push(3);
    let class_names = names(4);
    let set = in_scope_set(&embeddings, &labels, &class_names);
    let fitted = fit_quickly(&set);
    // Held out: the 36 examples of the three full intents, not the lone one.
    assert_eq!(fitted.threshold.held_out_in_scope, 36);
    let prediction = fitted.model.predict(&lone).unwrap();
    assert_eq!(prediction.top().0, 3);
    let cv = cross_validate(&set, &quick_options(), 5).unwrap();
    assert!(cv.held_out.in_scope.iter().all(|e| e.gold != 3));
}

#[test]
fn all_single_example_intents_fall_back_to_the_default_threshold() {
    let (embeddings, labels) = clusters(3, 1, 0.1, 8);
    let class_names = names(3);
    let set = in_scope_set(&embeddings, &labels, &class_names);
    let fitted = fit_quickly(&set);
    assert_eq!(fitted.threshold.held_out_in_scope, 0);
    assert_eq!(fitted.model.threshold(), FALLBACK_THRESHOLD);
    for (embedding, &label) in embeddings.iter().zip(&labels) {
        assert_eq!(fitted.model.predict(embedding).unwrap().top().0, label);
    }
}

#[test]
fn the_cost_of_a_prediction_counts_the_weights_and_every_stored_example() {
    // 4 intents x 20 examples: the linear layer (DIM x 4 outputs) and the neighbour search over
    // the 80 examples. What decides whether a classification runs inline (`crate::cpu`).
    let (embeddings, labels) = clusters(4, 20, 0.2, 1);
    let class_names = names(4);
    let model = train(
        &in_scope_set(&embeddings, &labels, &class_names),
        &quick_options(),
    )
    .unwrap();
    assert_eq!(model.multiply_adds_per_prediction(), DIM * 4 + DIM * 80);
}
