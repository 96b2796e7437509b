//! Stratified k-fold cross-validation: held-out scores for the threshold and the temperature
//! when a file has no validation split (a business's own intents file).

use super::linear::run_jobs;
use super::neighbours::argmax;
use super::*;

/// Held-out scores from k-fold cross-validation, and the temperature fitted on the held-out
/// logits.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossValidation {
    pub held_out: HeldOutScores,
    pub temperature: f32,
}

/// Stratified fold of each example: every class (and the out-of-scope set) is dealt round-robin
/// across folds after a seeded shuffle, continuing the deal from class to class so folds stay
/// balanced even when classes are small. The only example of a class is never held out
/// ([`NEVER_HELD_OUT`]): every fold model trains on it.
pub(super) fn assign_folds(
    labels: &[usize],
    classes: usize,
    folds: usize,
    seed: u64,
) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xf01d);
    let mut by_class = vec![Vec::new(); classes];
    for (index, &label) in labels.iter().enumerate() {
        by_class[label].push(index);
    }
    let mut fold_of = vec![0; labels.len()];
    let mut dealt = 0;
    for members in &mut by_class {
        if let [only] = members.as_slice() {
            fold_of[*only] = NEVER_HELD_OUT;
            continue;
        }
        members.shuffle(&mut rng);
        for &index in members.iter() {
            fold_of[index] = dealt % folds;
            dealt += 1;
        }
    }
    fold_of
}

/// What one cross-validation job produced.
pub(super) enum JobOutput {
    Fold {
        in_scope: Vec<(usize, ScoredExample)>,
        in_scope_logits: Vec<f32>,
        out_of_scope: Vec<f32>,
    },
    Final(IntentModel),
}

/// Cross-validation, optionally with the final training as one more job in the same pool (so the
/// two threads stay busy).
pub(super) fn cross_validate_jobs(
    set: &TrainingSet<'_>,
    opts: &TrainOptions,
    folds: usize,
    with_final_model: bool,
) -> Result<(CrossValidation, Option<IntentModel>)> {
    opts.validate()?;
    if folds < 2 {
        return Err(ClassifierError::InvalidOption(
            "cross-validation needs at least 2 folds".to_string(),
        ));
    }
    let (x, out_of_scope) = validated(set)?;
    let classes = set.class_names.len();
    let fold_of = assign_folds(set.labels, classes, folds, opts.seed);
    let oos_fold_of = out_of_scope
        .as_ref()
        .map(|oos| assign_folds(&vec![0; oos.rows], 1, folds, opts.seed.wrapping_add(1)));
    // Jobs already run side by side, so a fold model scores its held-out examples on its own
    // thread rather than starting more.
    let job_opts = TrainOptions {
        threads: 1,
        ..opts.clone()
    };
    // The final model, when wanted, is job 0 so that it starts first and is not the straggler.
    let first_fold_job = usize::from(with_final_model);
    let outputs = run_jobs(folds + first_fold_job, opts.threads, |job| {
        if job < first_fold_job {
            return JobOutput::Final(train_unchecked(
                &x,
                set.labels,
                set.class_names,
                out_of_scope.as_ref(),
                opts,
            ));
        }
        let fold = job - first_fold_job;
        let split = |fold_of: &[usize]| -> (Vec<usize>, Vec<usize>) {
            (0..fold_of.len()).partition(|&index| fold_of[index] != fold)
        };
        let (train_rows, test_rows) = split(&fold_of);
        let oos_split = oos_fold_of.as_deref().map(split);
        let train_labels: Vec<usize> = train_rows.iter().map(|&i| set.labels[i]).collect();
        let fold_oos = match (&out_of_scope, &oos_split) {
            (Some(oos), Some((train_oos, _))) => Some(oos.select(train_oos)),
            _ => None,
        };
        let model = train_unchecked(
            &x.select(&train_rows),
            &train_labels,
            set.class_names,
            fold_oos.as_ref(),
            &job_opts,
        );
        let mut in_scope = Vec::with_capacity(test_rows.len());
        let mut in_scope_logits = Vec::with_capacity(test_rows.len() * classes);
        if !test_rows.is_empty() {
            let raw = model.raw_scores(&x.select(&test_rows));
            for ((row, score), &index) in raw
                .logits
                .chunks(model.outputs())
                .zip(raw.in_scope_scores)
                .zip(&test_rows)
            {
                in_scope_logits.extend_from_slice(&row[..classes]);
                in_scope.push((
                    index,
                    ScoredExample {
                        gold: set.labels[index],
                        predicted: argmax(&row[..classes]),
                        in_scope_score: score,
                    },
                ));
            }
        }
        let out_of_scope_scores = match (&out_of_scope, &oos_split) {
            (Some(oos), Some((_, test_oos))) if !test_oos.is_empty() => {
                model.raw_scores(&oos.select(test_oos)).in_scope_scores
            }
            _ => Vec::new(),
        };
        JobOutput::Fold {
            in_scope,
            in_scope_logits,
            out_of_scope: out_of_scope_scores,
        }
    });

    // Reassemble in example order so the result is independent of fold scheduling.
    let mut scored: Vec<Option<ScoredExample>> = vec![None; x.rows];
    let mut logits = vec![0.0f32; x.rows * classes];
    let mut held_out_oos = Vec::new();
    let mut final_model = None;
    for output in outputs {
        match output {
            JobOutput::Fold {
                in_scope,
                in_scope_logits,
                out_of_scope,
            } => {
                for ((index, example), row) in
                    in_scope.into_iter().zip(in_scope_logits.chunks(classes))
                {
                    scored[index] = Some(example);
                    logits[index * classes..(index + 1) * classes].copy_from_slice(row);
                }
                held_out_oos.extend(out_of_scope);
            }
            JobOutput::Final(model) => final_model = Some(model),
        }
    }
    // Examples never held out (the only one of their intent) have no held-out score.
    let mut held_out_logits = Vec::with_capacity(logits.len());
    let mut held_out_labels = Vec::with_capacity(x.rows);
    let mut in_scope = Vec::with_capacity(x.rows);
    for (index, example) in scored.into_iter().enumerate() {
        if let Some(example) = example {
            held_out_logits.extend_from_slice(&logits[index * classes..(index + 1) * classes]);
            held_out_labels.push(set.labels[index]);
            in_scope.push(example);
        }
    }
    let temperature = fit_temperature(&held_out_logits, classes, &held_out_labels);
    Ok((
        CrossValidation {
            held_out: HeldOutScores {
                in_scope,
                out_of_scope: held_out_oos,
            },
            temperature,
        },
        final_model,
    ))
}

/// k-fold cross-validation on the training set: every example (and every out-of-scope example)
/// is scored by a model trained on the other folds.
pub fn cross_validate(
    set: &TrainingSet<'_>,
    opts: &TrainOptions,
    folds: usize,
) -> Result<CrossValidation> {
    cross_validate_jobs(set, opts, folds, false).map(|(cv, _)| cv)
}

/// The default threshold for a business with no separate held-out set: cross-validate, then
/// apply `rule` to the held-out scores (using the out-of-scope examples when the set has them).
pub fn cross_validated_threshold(
    set: &TrainingSet<'_>,
    opts: &TrainOptions,
    folds: usize,
    rule: &ThresholdRule,
) -> Result<ThresholdChoice> {
    choose_threshold(&cross_validate(set, opts, folds)?.held_out, rule)
}
