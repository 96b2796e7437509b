//! `baton eval intents`: train on the train split exactly as `intents.yaml` is trained, choose the
//! out-of-scope threshold on the validation split (or by cross-validation when there is none, as
//! for a business's own file), and score the test split.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use crate::config::Settings;
use crate::nlp::classifier::{
    choose_threshold, threshold_curve, CurvePoint, FitOptions, HeldOutScores, ScoredExample,
};
use crate::nlp::intent_model::{out_of_scope_texts, training_texts, IntentRecognizer};
use crate::nlp::intents::{HandoffMode, IntentSpec, IntentsFile, Priority};
use crate::tools::eval::{
    encode_with_progress, intent_features_with_progress, percent, resolve_data, start_encoder,
    write_json, EvalError,
};

mod page;

/// The label that marks an out-of-scope query in the data.
pub const OOS_LABEL: &str = "oos";

#[derive(Debug, Args)]
pub struct IntentsArgs {
    /// CLINC150 JSON file (e.g. clinc150/data_full.json) or a folder with train.jsonl, test.jsonl
    /// and optionally val.jsonl.
    #[arg(long)]
    pub data: PathBuf,
    /// Write the full report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Also report the threshold (chosen on held-out data) that reaches this out-of-scope recall.
    #[arg(long, default_value_t = 0.75)]
    pub target_oos_recall: f64,
    /// Use out-of-scope training examples (CLINC's oos_train, or `oos` lines in train.jsonl) the
    /// way intents.yaml's `out_of_scope` list is used.
    #[arg(long)]
    pub oos_examples: bool,
    /// Keep only this fraction of every split (per label, fixed selection), for quick checks.
    #[arg(long)]
    pub sample: Option<f64>,
    /// Few-shot: keep only N training examples per intent (a fixed selection for each --seed) and
    /// drop the validation split, so the threshold comes from cross-validation on those examples
    /// as it does for a business's own file. The test split stays whole.
    #[arg(long)]
    pub per_intent: Option<usize>,
    /// Which few-shot selection (--per-intent) to use.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Override the classifier's prototype weight (see `TrainOptions::prototype_weight`), to
    /// measure it.
    #[arg(long)]
    pub prototype_weight: Option<f32>,
    /// Score on the validation split instead of the test split (to choose settings without
    /// looking at the test split); the validation split is then not used for the threshold.
    #[arg(long)]
    pub score_on_validation: bool,
}

/// One labelled query; `label == None` is out of scope.
#[derive(Debug, Clone)]
pub struct Item {
    pub text: String,
    pub label: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IntentData {
    pub train: Vec<Item>,
    pub val: Option<Vec<Item>>,
    pub test: Vec<Item>,
}

impl IntentData {
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        if path.is_dir() {
            let val_path = path.join("val.jsonl");
            Ok(Self {
                train: read_jsonl(&path.join("train.jsonl"))?,
                val: if val_path.exists() {
                    Some(read_jsonl(&val_path)?)
                } else {
                    None
                },
                test: read_jsonl(&path.join("test.jsonl"))?,
            })
        } else {
            read_clinc(path)
        }
    }

    /// Few-shot training data: `count` training examples per label (out-of-scope included),
    /// chosen by a hash of the text and `seed`, so a selection is the same on every run and
    /// machine; no validation split; the test split whole.
    pub fn few_shot(self, count: usize, seed: u64) -> Self {
        let mut by_label: BTreeMap<Option<String>, Vec<Item>> = BTreeMap::new();
        for item in self.train {
            by_label.entry(item.label.clone()).or_default().push(item);
        }
        let train = by_label
            .into_values()
            .flat_map(|mut group| {
                group.sort_by_cached_key(|item| stable_hash(&format!("{seed}:{}", item.text)));
                group.truncate(count);
                group
            })
            .collect();
        Self {
            train,
            val: None,
            test: self.test,
        }
    }

    /// Keep `fraction` of each label in each split, chosen by a hash of the text so the sample is
    /// the same on every run and machine.
    pub fn sample(self, fraction: f64) -> Self {
        let keep = |items: Vec<Item>| -> Vec<Item> {
            let mut by_label: BTreeMap<Option<String>, Vec<Item>> = BTreeMap::new();
            for item in items {
                by_label.entry(item.label.clone()).or_default().push(item);
            }
            by_label
                .into_values()
                .flat_map(|mut group| {
                    group.sort_by_key(|item| stable_hash(&item.text));
                    let count =
                        ((group.len() as f64 * fraction).ceil() as usize).clamp(1, group.len());
                    group.truncate(count);
                    group
                })
                .collect()
        };
        Self {
            train: keep(self.train),
            val: self.val.map(keep),
            test: keep(self.test),
        }
    }
}

fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn read_clinc(path: &Path) -> Result<IntentData, EvalError> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::data(path, None, e.to_string()))?;
    let raw: HashMap<String, Vec<(String, String)>> = serde_json::from_slice(&bytes).map_err(|e| {
        EvalError::data(
            path,
            Some(e.line()),
            format!("expected CLINC150 JSON (an object of splits, each a list of [text, intent]): {e}"),
        )
    })?;
    let split = |name: &str| -> Vec<Item> {
        raw.get(name)
            .map(|rows| {
                rows.iter()
                    .map(|(text, label)| Item {
                        text: text.clone(),
                        label: (label != OOS_LABEL).then(|| label.clone()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for required in ["train", "test"] {
        if !raw.contains_key(required) {
            return Err(EvalError::data(
                path,
                None,
                format!("missing the {required:?} split"),
            ));
        }
    }
    let mut train = split("train");
    train.extend(split("oos_train"));
    let mut test = split("test");
    test.extend(split("oos_test"));
    let val = raw.contains_key("val").then(|| {
        let mut val = split("val");
        val.extend(split("oos_val"));
        val
    });
    Ok(IntentData { train, val, test })
}

fn read_jsonl(path: &Path) -> Result<Vec<Item>, EvalError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        text: String,
        label: String,
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| EvalError::data(path, None, e.to_string()))?;
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(line).map_err(|e| {
            EvalError::data(
                path,
                Some(index + 1),
                format!("expected {{\"text\", \"label\"}}: {e}"),
            )
        })?;
        if parsed.text.trim().is_empty() || parsed.label.trim().is_empty() {
            return Err(EvalError::data(
                path,
                Some(index + 1),
                "text and label must not be empty",
            ));
        }
        items.push(Item {
            text: parsed.text,
            label: (parsed.label != OOS_LABEL).then_some(parsed.label),
        });
    }
    if items.is_empty() {
        return Err(EvalError::data(path, None, "no examples"));
    }
    Ok(items)
}

#[derive(Debug, Serialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Serialize)]
pub struct Confusion {
    pub gold: String,
    pub predicted: String,
    pub count: usize,
}

#[derive(Debug, Serialize)]
pub struct CurveRow {
    pub threshold: f32,
    pub in_scope_accuracy: f32,
    pub oos_recall: Option<f32>,
}

#[derive(Debug, Serialize)]
pub struct Recommendation {
    pub target_oos_recall: f64,
    /// Chosen on held-out data (validation split, else cross-validation), never on test.
    pub threshold: f32,
    pub test_in_scope_accuracy: f32,
    pub test_oos_recall: Option<f32>,
}

#[derive(Debug, Serialize)]
pub struct IntentsReport {
    /// "intents", for `baton eval compare`.
    pub kind: &'static str,
    pub data: String,
    pub intents: usize,
    pub train_examples: usize,
    pub train_oos_examples: usize,
    pub test_in_scope: usize,
    pub test_oos: usize,
    /// Where the threshold came from: "validation" or "cross-validation".
    pub threshold_source: &'static str,
    pub threshold: f32,
    pub accuracy: f64,
    pub in_scope_accuracy: f64,
    /// In-scope accuracy with no out-of-scope rejection at all.
    pub in_scope_accuracy_no_threshold: f64,
    pub oos_recall: Option<f64>,
    pub oos_precision: Option<f64>,
    pub macro_f1: f64,
    pub per_intent: BTreeMap<String, ClassMetrics>,
    pub confusions: Vec<Confusion>,
    pub curve: Vec<CurveRow>,
    pub recommended: Option<Recommendation>,
    pub embed_seconds: f64,
    pub train_seconds: f64,
}

pub async fn run(settings: &Settings, args: IntentsArgs) -> Result<(), EvalError> {
    let path = resolve_data(settings, &args.data)?;
    let mut data = IntentData::load(&path)?;
    if let Some(fraction) = args.sample {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(EvalError::Pipeline("--sample must be in (0, 1]".into()));
        }
        data = data.sample(fraction);
    }
    if args.score_on_validation {
        let val = data.val.take().ok_or_else(|| {
            EvalError::Pipeline("--score-on-validation needs data with a validation split".into())
        })?;
        data.test = val;
    }
    if let Some(count) = args.per_intent {
        if count == 0 {
            return Err(EvalError::Pipeline(
                "--per-intent must be at least 1".into(),
            ));
        }
        data = data.few_shot(count, args.seed);
    }
    let mut options = FitOptions::default();
    if let Some(weight) = args.prototype_weight {
        options.train.prototype_weight = weight;
    }
    let report = evaluate(
        settings,
        &data,
        &path,
        args.oos_examples,
        args.target_oos_recall,
        &options,
    )
    .await?;
    print_summary(&report);
    if let Some(json) = &args.json {
        write_json(json, &report)?;
    }
    if let Some(html) = &args.html {
        crate::tools::eval::report::write_html(html, &page::intents_page(&report))?;
    }
    Ok(())
}

/// Train, choose the threshold and score the test split.
pub async fn evaluate(
    settings: &Settings,
    data: &IntentData,
    path: &Path,
    use_oos_examples: bool,
    target_oos_recall: f64,
    options: &FitOptions,
) -> Result<IntentsReport, EvalError> {
    // The training file, exactly as a business would write it.
    let mut examples: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut train_oos = Vec::new();
    for item in &data.train {
        match &item.label {
            Some(label) => examples
                .entry(label.clone())
                .or_default()
                .push(item.text.clone()),
            None => train_oos.push(item.text.clone()),
        }
    }
    let file = IntentsFile {
        intents: examples
            .into_iter()
            .map(|(name, examples)| IntentSpec {
                name,
                description: None,
                examples,
                skill: "general".into(),
                handoff: HandoffMode::Auto,
                priority: Priority::Normal,
                reply: None,
            })
            .collect(),
        out_of_scope: if use_oos_examples {
            train_oos
        } else {
            Vec::new()
        },
        warnings: Vec::new(),
    };
    if file.intents.len() < 2 {
        return Err(EvalError::data(
            path,
            None,
            "the train split needs at least 2 intents",
        ));
    }
    let index_of: HashMap<&str, usize> = file
        .intents
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let encoder = start_encoder(settings)?;

    let started = Instant::now();
    let (train_texts, _) = training_texts(&file);
    let oos_train_texts = out_of_scope_texts(&file);
    let train_encoded = encode_with_progress(&encoder, &train_texts, "train").await?;
    let oos_train_features =
        intent_features_with_progress(&encoder, &oos_train_texts, "train oos").await?;
    let (val_in, val_labels, val_oos) = match &data.val {
        Some(val) => {
            let split = split_items(val, &index_of, path)?;
            (
                intent_features_with_progress(&encoder, &split.texts, "val").await?,
                split.labels,
                intent_features_with_progress(&encoder, &split.out_of_scope, "val oos").await?,
            )
        }
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    let test_split = split_items(&data.test, &index_of, path)?;
    let test_in = intent_features_with_progress(&encoder, &test_split.texts, "test").await?;
    let test_oos =
        intent_features_with_progress(&encoder, &test_split.out_of_scope, "test oos").await?;
    let test_labels = test_split.labels;
    let embed_seconds = started.elapsed().as_secs_f64();

    let train_started = Instant::now();
    let recognizer = IntentRecognizer::train_embedded(
        file.clone(),
        train_encoded,
        oos_train_features,
        options,
        "evaluation".into(),
        0,
    )
    .await
    .map_err(EvalError::pipeline)?;
    let train_seconds = train_started.elapsed().as_secs_f64();
    let model = recognizer.model();

    // The default threshold: the same rule the server applies, on the validation split when the
    // data has one (as the CLINC150 protocol asks), else the cross-validated one from training.
    let (threshold, threshold_source, held_out) = if data.val.is_some() {
        let held_out = model
            .score_held_out(&val_in, &val_labels, &val_oos)
            .map_err(EvalError::pipeline)?;
        let choice = choose_threshold(&held_out, &options.rule).map_err(EvalError::pipeline)?;
        (choice.threshold, "validation", Some(held_out))
    } else {
        (
            recognizer.info().learned_threshold,
            "cross-validation",
            None,
        )
    };

    let test = model
        .score_held_out(&test_in, &test_labels, &test_oos)
        .map_err(EvalError::pipeline)?;
    let names: Vec<String> = file.intents.iter().map(|i| i.name.clone()).collect();
    let mut report = score(&test, threshold, &names);
    report.data = path.display().to_string();
    report.train_examples = train_texts.len();
    report.train_oos_examples = oos_train_texts.len();
    report.threshold_source = threshold_source;
    report.embed_seconds = embed_seconds;
    report.train_seconds = train_seconds;
    report.in_scope_accuracy_no_threshold =
        threshold_curve(&test, &[f32::NEG_INFINITY])[0].in_scope_accuracy as f64;
    report.recommended = held_out
        .as_ref()
        .filter(|h| !h.out_of_scope.is_empty())
        .map(|held_out| {
            let threshold = threshold_for_recall(held_out, target_oos_recall);
            let at = threshold_curve(&test, &[threshold])[0];
            Recommendation {
                target_oos_recall,
                threshold,
                test_in_scope_accuracy: at.in_scope_accuracy,
                test_oos_recall: at.oos_recall,
            }
        });
    Ok(report)
}

/// A split's in-scope texts with their label indices, and its out-of-scope texts.
struct SplitTexts {
    texts: Vec<String>,
    labels: Vec<usize>,
    out_of_scope: Vec<String>,
}

/// In-scope texts with label indices, and out-of-scope texts. A label the training split never
/// had is a data error.
fn split_items(
    items: &[Item],
    index_of: &HashMap<&str, usize>,
    path: &Path,
) -> Result<SplitTexts, EvalError> {
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    let mut oos = Vec::new();
    for item in items {
        match &item.label {
            Some(label) => {
                let index = index_of.get(label.as_str()).ok_or_else(|| {
                    EvalError::data(
                        path,
                        None,
                        format!("label {label:?} has no training examples"),
                    )
                })?;
                texts.push(item.text.clone());
                labels.push(*index);
            }
            None => oos.push(item.text.clone()),
        }
    }
    Ok(SplitTexts {
        texts,
        labels,
        out_of_scope: oos,
    })
}

/// The lowest threshold whose held-out out-of-scope recall reaches `target` (the most lenient
/// one that does).
fn threshold_for_recall(held_out: &HeldOutScores, target: f64) -> f32 {
    let mut scores = held_out.out_of_scope.clone();
    scores.sort_by(f32::total_cmp);
    let rejected = ((target * scores.len() as f64).ceil() as usize).clamp(1, scores.len());
    scores[rejected - 1].next_up()
}

/// Every figure at one threshold.
fn score(test: &HeldOutScores, threshold: f32, names: &[String]) -> IntentsReport {
    let point: CurvePoint = threshold_curve(test, &[threshold])[0];
    let oos = names.len();
    let label_name = |index: usize| {
        if index == oos {
            OOS_LABEL.to_string()
        } else {
            names[index].clone()
        }
    };
    // Gold and predicted labels over intents + out-of-scope.
    let mut pairs: Vec<(usize, usize)> = test
        .in_scope
        .iter()
        .map(|e: &ScoredExample| {
            (
                e.gold,
                if e.in_scope_score < threshold {
                    oos
                } else {
                    e.predicted
                },
            )
        })
        .collect();
    pairs.extend(
        test.out_of_scope
            .iter()
            .map(|&s| (oos, if s < threshold { oos } else { usize::MAX })),
    );
    // An accepted out-of-scope query was given *some* intent; which one is not recorded in the
    // held-out scores, so it counts as a miss for out-of-scope and a false positive for no intent.
    let classes = names.len() + 1;
    let mut true_positive = vec![0usize; classes];
    let mut predicted = vec![0usize; classes];
    let mut support = vec![0usize; classes];
    let mut confusions: HashMap<(usize, usize), usize> = HashMap::new();
    let mut correct = 0;
    for &(gold, guess) in &pairs {
        support[gold] += 1;
        if guess < classes {
            predicted[guess] += 1;
        }
        if gold == guess {
            true_positive[gold] += 1;
            correct += 1;
        } else {
            *confusions.entry((gold, guess)).or_default() += 1;
        }
    }
    let mut per_intent = BTreeMap::new();
    let mut f1_sum = 0.0;
    for class in 0..classes {
        let precision = if predicted[class] > 0 {
            true_positive[class] as f64 / predicted[class] as f64
        } else {
            0.0
        };
        let recall = if support[class] > 0 {
            true_positive[class] as f64 / support[class] as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        f1_sum += f1;
        per_intent.insert(
            label_name(class),
            ClassMetrics {
                precision,
                recall,
                f1,
                support: support[class],
            },
        );
    }
    let mut confusions: Vec<Confusion> = confusions
        .into_iter()
        .map(|((gold, guess), count)| Confusion {
            gold: label_name(gold),
            predicted: if guess == usize::MAX {
                "(an intent)".into()
            } else {
                label_name(guess)
            },
            count,
        })
        .collect();
    confusions.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.gold.cmp(&b.gold))
            .then(a.predicted.cmp(&b.predicted))
    });
    confusions.truncate(25);
    let curve = threshold_curve(test, &(0..=50).map(|i| i as f32 / 50.0).collect::<Vec<_>>())
        .into_iter()
        .map(|p| CurveRow {
            threshold: p.threshold,
            in_scope_accuracy: p.in_scope_accuracy,
            oos_recall: p.oos_recall,
        })
        .collect();
    IntentsReport {
        kind: "intents",
        data: String::new(),
        intents: names.len(),
        train_examples: 0,
        train_oos_examples: 0,
        test_in_scope: test.in_scope.len(),
        test_oos: test.out_of_scope.len(),
        threshold_source: "",
        threshold,
        accuracy: correct as f64 / pairs.len().max(1) as f64,
        in_scope_accuracy: point.in_scope_accuracy as f64,
        in_scope_accuracy_no_threshold: 0.0,
        oos_recall: point.oos_recall.map(f64::from),
        oos_precision: point.oos_precision.map(f64::from),
        macro_f1: f1_sum / classes as f64,
        per_intent,
        confusions,
        curve,
        recommended: None,
        embed_seconds: 0.0,
        train_seconds: 0.0,
    }
}

fn print_summary(report: &IntentsReport) {
    println!("intent evaluation on {}", report.data);
    println!(
        "  {} intents, {} training examples{}; test: {} in scope, {} out of scope",
        report.intents,
        report.train_examples,
        if report.train_oos_examples > 0 {
            format!(" + {} out-of-scope", report.train_oos_examples)
        } else {
            String::new()
        },
        report.test_in_scope,
        report.test_oos
    );
    println!(
        "  threshold {:.4} (chosen on {})",
        report.threshold, report.threshold_source
    );
    println!(
        "  in-scope accuracy   {}",
        percent(report.in_scope_accuracy)
    );
    if let Some(recall) = report.oos_recall {
        println!("  out-of-scope recall {}", percent(recall));
    }
    if let Some(precision) = report.oos_precision {
        println!("  out-of-scope prec.  {}", percent(precision));
    }
    println!("  accuracy (all)      {}", percent(report.accuracy));
    println!("  macro F1            {:.3}", report.macro_f1);
    println!(
        "  in-scope accuracy with no threshold {}",
        percent(report.in_scope_accuracy_no_threshold)
    );
    if let Some(recommended) = &report.recommended {
        println!(
            "  for {} out-of-scope recall: threshold {:.4} -> test in-scope {} / recall {}",
            percent(recommended.target_oos_recall),
            recommended.threshold,
            percent(recommended.test_in_scope_accuracy as f64),
            recommended
                .test_oos_recall
                .map(|r| percent(r as f64))
                .unwrap_or_else(|| "-".into())
        );
    }
    println!("  top confusions:");
    for confusion in report.confusions.iter().take(5) {
        println!(
            "    {:>3}  {} -> {}",
            confusion.count, confusion.gold, confusion.predicted
        );
    }
    println!(
        "  embedding {:.1} s, training {:.1} s",
        report.embed_seconds, report.train_seconds
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(
            &path,
            "{\"text\": \"hi\", \"label\": \"greet\"}\n{\"text\": \"oops\"}\n",
        )
        .unwrap();
        let err = read_jsonl(&path).unwrap_err().to_string();
        assert!(err.contains("train.jsonl:2"), "{err}");
    }

    #[test]
    fn sampling_is_stable_and_keeps_every_label() {
        let items: Vec<Item> = (0..40)
            .map(|i| Item {
                text: format!("text {i}"),
                label: Some(format!("l{}", i % 4)),
            })
            .collect();
        let data = IntentData {
            train: items.clone(),
            val: None,
            test: items,
        };
        let a = data.clone().sample(0.2);
        let b = data.sample(0.2);
        assert_eq!(a.train.len(), 8);
        let texts = |d: &IntentData| d.train.iter().map(|i| i.text.clone()).collect::<Vec<_>>();
        assert_eq!(texts(&a), texts(&b));
        let labels: std::collections::BTreeSet<_> =
            a.train.iter().map(|i| i.label.clone()).collect();
        assert_eq!(labels.len(), 4);
    }

    #[test]
    fn few_shot_keeps_n_per_label_drops_validation_and_depends_on_the_seed() {
        let items: Vec<Item> = (0..40)
            .map(|i| Item {
                text: format!("text {i}"),
                label: (i % 5 != 4).then(|| format!("l{}", i % 5)),
            })
            .collect();
        let data = IntentData {
            train: items.clone(),
            val: Some(items.clone()),
            test: items,
        };
        let a = data.clone().few_shot(3, 0);
        let again = data.clone().few_shot(3, 0);
        let other = data.few_shot(3, 1);
        assert!(a.val.is_none());
        assert_eq!(a.test.len(), 40);
        assert_eq!(a.train.len(), 15, "3 per label, out of scope included");
        let mut per_label = BTreeMap::new();
        for item in &a.train {
            *per_label.entry(item.label.clone()).or_insert(0) += 1;
        }
        assert!(per_label.values().all(|&n| n == 3), "{per_label:?}");
        let texts = |d: &IntentData| d.train.iter().map(|i| i.text.clone()).collect::<Vec<_>>();
        assert_eq!(texts(&a), texts(&again));
        assert_ne!(texts(&a), texts(&other));
    }

    #[test]
    fn scores_count_rejections_and_confusions() {
        let names = vec!["a".to_string(), "b".to_string()];
        let test = HeldOutScores {
            in_scope: vec![
                ScoredExample {
                    gold: 0,
                    predicted: 0,
                    in_scope_score: 0.9,
                },
                ScoredExample {
                    gold: 1,
                    predicted: 0,
                    in_scope_score: 0.9,
                },
                ScoredExample {
                    gold: 1,
                    predicted: 1,
                    in_scope_score: 0.1,
                },
            ],
            out_of_scope: vec![0.05, 0.95],
        };
        let report = score(&test, 0.5, &names);
        assert!((report.in_scope_accuracy - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(report.oos_recall, Some(0.5));
        assert!((report.accuracy - 2.0 / 5.0).abs() < 1e-9);
        assert_eq!(report.per_intent["oos"].support, 2);
        assert!(report
            .confusions
            .iter()
            .any(|c| c.gold == "b" && c.predicted == "a"));
    }
}
