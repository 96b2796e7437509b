//! Checks the intent classifier (`baton::nlp::classifier`) against the CLINC150 quality bar from
//! precomputed sentence embeddings, so it runs without the encoder.
//!
//! Input: `PREFIX.f32` (rows x dim little-endian f32, one embedding per CLINC150 query) and
//! `PREFIX.json` (`{"dim", "rows", "split": [...], "label": [...]}`, one split and label per row;
//! splits are train, val, test, oos_train, oos_val, oos_test as in `data_full.json`).
//!
//! ```text
//! cargo run --release --example clinc_check -- /path/to/clinc_emb [SEED]
//! ```
//!
//! The test split is only ever scored: training uses train (+ oos_train where stated), and
//! thresholds and temperatures come from val (+ oos_val) or from cross-validation on train.

use std::collections::BTreeSet;
use std::error::Error;
use std::time::Instant;

use baton::nlp::classifier::{
    choose_threshold, fit, threshold_curve, CurvePoint, FitOptions, HeldOutScores, IntentModel,
    ThresholdChoice, ThresholdRule, TrainOptions, TrainingSet,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Meta {
    dim: usize,
    rows: usize,
    split: Vec<String>,
    label: Vec<String>,
}

/// Embeddings of one split with their intent indices (empty labels for out-of-scope splits).
#[derive(Default)]
struct Split {
    embeddings: Vec<Vec<f32>>,
    labels: Vec<usize>,
}

struct Clinc {
    intents: Vec<String>,
    train: Split,
    val: Split,
    test: Split,
    oos_train: Split,
    oos_val: Split,
    oos_test: Split,
}

fn load(prefix: &str) -> Result<Clinc, Box<dyn Error>> {
    let meta: Meta = serde_json::from_slice(&std::fs::read(format!("{prefix}.json"))?)?;
    let bytes = std::fs::read(format!("{prefix}.f32"))?;
    if bytes.len() != meta.rows * meta.dim * 4
        || meta.split.len() != meta.rows
        || meta.label.len() != meta.rows
    {
        return Err("embedding file and metadata disagree on the row count".into());
    }
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let intents: Vec<String> = meta
        .split
        .iter()
        .zip(&meta.label)
        .filter(|(split, _)| *split == "train")
        .map(|(_, label)| label.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut clinc = Clinc {
        intents,
        train: Split::default(),
        val: Split::default(),
        test: Split::default(),
        oos_train: Split::default(),
        oos_val: Split::default(),
        oos_test: Split::default(),
    };
    for (row, (split, label)) in meta.split.iter().zip(&meta.label).enumerate() {
        let embedding = values[row * meta.dim..(row + 1) * meta.dim].to_vec();
        let target = match split.as_str() {
            "train" => &mut clinc.train,
            "val" => &mut clinc.val,
            "test" => &mut clinc.test,
            "oos_train" => &mut clinc.oos_train,
            "oos_val" => &mut clinc.oos_val,
            "oos_test" => &mut clinc.oos_test,
            other => return Err(format!("unknown split {other}").into()),
        };
        if !split.starts_with("oos") {
            let index = clinc
                .intents
                .binary_search(label)
                .map_err(|_| format!("intent {label} has no training example"))?;
            target.labels.push(index);
        }
        target.embeddings.push(embedding);
    }
    Ok(clinc)
}

fn percent(value: f32) -> String {
    format!("{:.2}", 100.0 * value)
}

fn describe(point: &CurvePoint) -> String {
    format!(
        "in-scope acc {}%, acceptance {}%, OOS recall {}%, OOS precision {}%",
        percent(point.in_scope_accuracy),
        percent(point.in_scope_acceptance),
        point.oos_recall.map_or("-".into(), percent),
        point.oos_precision.map_or("-".into(), percent),
    )
}

/// In-scope accuracy at the thresholds that reach given out-of-scope recalls on these scores
/// (an oracle view of the curve, for comparing scores; never used to choose anything).
fn accuracy_at_recalls(held_out: &HeldOutScores, recalls: &[f32]) -> String {
    let mut oos = held_out.out_of_scope.clone();
    oos.sort_by(f32::total_cmp);
    recalls
        .iter()
        .map(|&recall| {
            let rejected = ((recall * oos.len() as f32).ceil() as usize).clamp(1, oos.len());
            let threshold = oos[rejected - 1].next_up();
            let point = threshold_curve(held_out, &[threshold])[0];
            format!(
                "{}% @ {}%",
                percent(point.in_scope_accuracy),
                percent(point.oos_recall.unwrap_or(0.0))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Expected calibration error of the top probability over 15 equal-width bins.
fn calibration_error(model: &IntentModel, split: &Split) -> Result<f32, Box<dyn Error>> {
    const BINS: usize = 15;
    let mut confidence = [0.0f64; BINS];
    let mut correct = [0.0f64; BINS];
    let mut count = [0usize; BINS];
    for (prediction, &gold) in model
        .predict_batch(&split.embeddings)?
        .iter()
        .zip(&split.labels)
    {
        let (class, probability) = prediction.top();
        let bin = ((probability * BINS as f32) as usize).min(BINS - 1);
        confidence[bin] += probability as f64;
        correct[bin] += f64::from(u8::from(class == gold));
        count[bin] += 1;
    }
    let total = split.labels.len() as f64;
    Ok((0..BINS)
        .map(|bin| (confidence[bin] - correct[bin]).abs() / total)
        .sum::<f64>() as f32)
}

fn report_test(
    model: &IntentModel,
    choice: &ThresholdChoice,
    clinc: &Clinc,
) -> Result<(), Box<dyn Error>> {
    let test = model.score_held_out(
        &clinc.test.embeddings,
        &clinc.test.labels,
        &clinc.oos_test.embeddings,
    )?;
    let unthresholded = threshold_curve(&test, &[f32::NEG_INFINITY])[0];
    let at_threshold = threshold_curve(&test, &[choice.threshold])[0];
    println!(
        "  threshold {:.4} (held-out: {} in-scope, {} out-of-scope; {})",
        choice.threshold,
        choice.held_out_in_scope,
        choice.held_out_out_of_scope,
        describe(&choice.at_threshold)
    );
    println!("  TEST at threshold: {}", describe(&at_threshold));
    println!(
        "  test without threshold: in-scope acc {}%; temperature {:.3}, ECE {}%",
        percent(unthresholded.in_scope_accuracy),
        model.temperature(),
        percent(calibration_error(model, &clinc.test)?)
    );
    println!(
        "  test curve (oracle, information only): {}",
        accuracy_at_recalls(&test, &[0.70, 0.75, 0.80])
    );
    Ok(())
}

/// Train on train (+ oos_train), calibrate and choose the threshold on val (+ oos_val).
fn with_validation_split(
    clinc: &Clinc,
    train_oos: bool,
    val_oos: bool,
    opts: &TrainOptions,
) -> Result<(), Box<dyn Error>> {
    let set = TrainingSet {
        embeddings: &clinc.train.embeddings,
        labels: &clinc.train.labels,
        class_names: &clinc.intents,
        out_of_scope: if train_oos {
            &clinc.oos_train.embeddings
        } else {
            &[]
        },
    };
    let started = Instant::now();
    let mut model = baton::nlp::classifier::train(&set, opts)?;
    let train_time = started.elapsed();
    model.calibrate(&clinc.val.embeddings, &clinc.val.labels)?;
    let val_oos_embeddings: &[Vec<f32>] = if val_oos {
        &clinc.oos_val.embeddings
    } else {
        &[]
    };
    let held_out =
        model.score_held_out(&clinc.val.embeddings, &clinc.val.labels, val_oos_embeddings)?;
    let choice = choose_threshold(&held_out, &ThresholdRule::default())?;
    model.set_threshold(choice.threshold)?;
    println!(
        "train{} -> threshold on val{}: trained in {:.2} s",
        if train_oos { " + oos_train" } else { "" },
        if val_oos {
            " + oos_val"
        } else {
            " (in-scope only)"
        },
        train_time.as_secs_f64()
    );
    report_test(&model, &choice, clinc)?;
    let messages = &clinc.test.embeddings[..500];
    let started = Instant::now();
    for embedding in messages {
        model.predict(embedding)?;
    }
    println!(
        "  one message at a time: {:.2} ms per prediction",
        started.elapsed().as_secs_f64() * 1000.0 / messages.len() as f64
    );
    Ok(())
}

/// What a business with only its examples gets: `fit` (k-fold cross-validation on train).
fn with_cross_validation(
    clinc: &Clinc,
    train_oos: bool,
    opts: &TrainOptions,
) -> Result<(), Box<dyn Error>> {
    let set = TrainingSet {
        embeddings: &clinc.train.embeddings,
        labels: &clinc.train.labels,
        class_names: &clinc.intents,
        out_of_scope: if train_oos {
            &clinc.oos_train.embeddings
        } else {
            &[]
        },
    };
    let started = Instant::now();
    let fitted = fit(
        &set,
        &FitOptions {
            train: opts.clone(),
            ..FitOptions::default()
        },
    )?;
    println!(
        "fit on train{} (5-fold CV, no val; CV target acceptance {}%): {:.2} s; CV accuracy {}%",
        if train_oos { " + oos_train" } else { "" },
        percent(
            FitOptions::default()
                .cross_validation_rule()
                .target_acceptance
        ),
        started.elapsed().as_secs_f64(),
        percent(fitted.cross_validated_accuracy)
    );
    // Val is not used to choose anything here, so it shows how the cross-validated threshold
    // behaves on fresh in-scope messages.
    let val = fitted.model.score_held_out(
        &clinc.val.embeddings,
        &clinc.val.labels,
        &clinc.oos_val.embeddings,
    )?;
    println!(
        "  val at that threshold: {}",
        describe(&threshold_curve(&val, &[fitted.threshold.threshold])[0])
    );
    report_test(&fitted.model, &fitted.threshold, clinc)
}

fn main() -> Result<(), Box<dyn Error>> {
    let Some(prefix) = std::env::args().nth(1) else {
        return Err("usage: clinc_check PREFIX [SEED] (reads PREFIX.f32 and PREFIX.json)".into());
    };
    let clinc = load(&prefix)?;
    println!(
        "CLINC150: {} intents; train {}, val {}, test {}, oos train/val/test {}/{}/{}",
        clinc.intents.len(),
        clinc.train.labels.len(),
        clinc.val.labels.len(),
        clinc.test.labels.len(),
        clinc.oos_train.embeddings.len(),
        clinc.oos_val.embeddings.len(),
        clinc.oos_test.embeddings.len()
    );
    let mut opts = TrainOptions::default();
    if let Some(seed) = std::env::args().nth(2) {
        opts.seed = seed.parse()?;
    }
    println!("options: {opts:?}\n");
    let set = TrainingSet {
        embeddings: &clinc.train.embeddings,
        labels: &clinc.train.labels,
        class_names: &clinc.intents,
        out_of_scope: &[],
    };
    for threads in [1, opts.threads] {
        let started = Instant::now();
        let single = TrainOptions {
            threads,
            ..opts.clone()
        };
        baton::nlp::classifier::train(&set, &single)?;
        println!(
            "train on {} examples with {threads} thread(s): {:.2} s",
            set.labels.len(),
            started.elapsed().as_secs_f64()
        );
    }
    println!();
    with_validation_split(&clinc, false, false, &opts)?;
    with_validation_split(&clinc, false, true, &opts)?;
    with_validation_split(&clinc, true, true, &opts)?;
    with_cross_validation(&clinc, false, &opts)?;
    with_cross_validation(&clinc, true, &opts)?;
    Ok(())
}
