//! `baton eval sentiment`: the sentiment model, as the server runs it (same tokenizer, same
//! ONNX file, same worker threads), on TweetEval sentiment (`test_text.txt`, `test_labels.txt`,
//! `mapping.txt`). The official metric is macro-averaged recall over the three classes.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use crate::config::Settings;
use crate::nlp::encoder::SentimentScores;
use crate::tools::eval::{
    percent, resolve_data, sentiment_with_progress, start_encoder, write_json, EvalError,
};

pub const LABELS: [&str; 3] = ["negative", "neutral", "positive"];

#[derive(Debug, Args)]
pub struct SentimentArgs {
    /// A TweetEval folder (e.g. tweeteval/sentiment): test_text.txt, test_labels.txt, mapping.txt.
    #[arg(long)]
    pub data: PathBuf,
    /// Which split to score: test (default) or val.
    #[arg(long, default_value = "test")]
    pub split: String,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct ClassFigures {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Serialize)]
pub struct SentimentReport {
    pub kind: &'static str,
    pub data: String,
    pub split: String,
    pub items: usize,
    pub macro_recall: f64,
    pub accuracy: f64,
    pub negative_f1: f64,
    pub per_class: std::collections::BTreeMap<String, ClassFigures>,
    /// confusion[gold][predicted], in the order negative, neutral, positive.
    pub confusion: [[usize; 3]; 3],
    pub seconds: f64,
}

/// Texts and gold labels (0 negative, 1 neutral, 2 positive) of a TweetEval split.
pub fn load(dir: &Path, split: &str) -> Result<(Vec<String>, Vec<usize>), EvalError> {
    let mapping_path = dir.join("mapping.txt");
    let mapping = std::fs::read_to_string(&mapping_path)
        .map_err(|e| EvalError::data(&mapping_path, None, e.to_string()))?;
    for (index, line) in mapping.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let (Some(id), Some(name)) = (fields.next(), fields.next()) else {
            continue;
        };
        let expected = id.parse::<usize>().ok().and_then(|i| LABELS.get(i));
        if expected != Some(&name) {
            return Err(EvalError::data(
                &mapping_path,
                Some(index + 1),
                format!("expected labels 0 negative, 1 neutral, 2 positive; found {line:?}"),
            ));
        }
    }
    let text_path = dir.join(format!("{split}_text.txt"));
    let label_path = dir.join(format!("{split}_labels.txt"));
    let texts = std::fs::read_to_string(&text_path)
        .map_err(|e| EvalError::data(&text_path, None, e.to_string()))?;
    let labels_text = std::fs::read_to_string(&label_path)
        .map_err(|e| EvalError::data(&label_path, None, e.to_string()))?;
    let texts: Vec<String> = texts.lines().map(str::to_string).collect();
    let mut labels = Vec::with_capacity(texts.len());
    for (index, line) in labels_text.lines().enumerate() {
        let label = line
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|l| *l < 3)
            .ok_or_else(|| {
                EvalError::data(
                    &label_path,
                    Some(index + 1),
                    format!("{line:?} is not 0, 1 or 2"),
                )
            })?;
        labels.push(label);
    }
    if texts.len() != labels.len() {
        return Err(EvalError::data(
            &label_path,
            None,
            format!(
                "{} labels for {} texts in {}",
                labels.len(),
                texts.len(),
                text_path.display()
            ),
        ));
    }
    if texts.is_empty() {
        return Err(EvalError::data(&text_path, None, "no texts"));
    }
    Ok((texts, labels))
}

pub fn predicted_class(scores: &SentimentScores) -> usize {
    match scores.label() {
        "negative" => 0,
        "neutral" => 1,
        _ => 2,
    }
}

pub async fn run(settings: &Settings, args: SentimentArgs) -> Result<(), EvalError> {
    let path = resolve_data(settings, &args.data)?;
    let report = evaluate(settings, &path, &args.split, 1).await?;
    println!(
        "sentiment evaluation on {} ({} split, {} items)",
        report.data, report.split, report.items
    );
    println!(
        "  macro recall {:.4}  accuracy {}  negative F1 {:.4}",
        report.macro_recall,
        percent(report.accuracy),
        report.negative_f1
    );
    println!("  confusion (rows gold, columns predicted: negative, neutral, positive):");
    for (label, row) in LABELS.iter().zip(report.confusion) {
        println!("    {label:<9} {:>6} {:>6} {:>6}", row[0], row[1], row[2]);
    }
    println!("  {:.1} s", report.seconds);
    if let Some(json) = &args.json {
        write_json(json, &report)?;
    }
    Ok(())
}

/// Score the sentiment model on a TweetEval split, keeping every `every`-th item (1: all of
/// them; the CI floors take a fixed sample).
pub async fn evaluate(
    settings: &Settings,
    path: &Path,
    split: &str,
    every: usize,
) -> Result<SentimentReport, EvalError> {
    let (texts, labels) = load(path, split)?;
    let every = every.max(1);
    let (texts, labels): (Vec<String>, Vec<usize>) =
        texts.into_iter().zip(labels).step_by(every).unzip();
    let encoder = start_encoder(settings)?;
    if !encoder.has_sentiment() {
        return Err(EvalError::Pipeline(
            "no sentiment model: models/SHA256SUMS does not list site/baton_sentiment/sentiment-int8.onnx"
                .into(),
        ));
    }
    let started = std::time::Instant::now();
    let predictions = sentiment_with_progress(&encoder, &texts, "tweets")
        .await?
        .into_iter()
        .map(|score| {
            score
                .map(|s| predicted_class(&s))
                .ok_or_else(|| EvalError::Pipeline("the sentiment model returned nothing".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut report = score(&labels, &predictions);
    report.data = path.display().to_string();
    report.split = split.to_string();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Figures from gold and predicted classes.
pub fn score(gold: &[usize], predicted: &[usize]) -> SentimentReport {
    let mut confusion = [[0usize; 3]; 3];
    for (&g, &p) in gold.iter().zip(predicted) {
        confusion[g][p] += 1;
    }
    let mut per_class = std::collections::BTreeMap::new();
    let mut recalls = 0.0;
    for class in 0..3 {
        let support: usize = confusion[class].iter().sum();
        let predicted_as: usize = (0..3).map(|g| confusion[g][class]).sum();
        let hit = confusion[class][class] as f64;
        let precision = if predicted_as > 0 {
            hit / predicted_as as f64
        } else {
            0.0
        };
        let recall = if support > 0 {
            hit / support as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        recalls += recall;
        per_class.insert(
            LABELS[class].to_string(),
            ClassFigures {
                precision,
                recall,
                f1,
                support,
            },
        );
    }
    let correct: usize = (0..3).map(|c| confusion[c][c]).sum();
    SentimentReport {
        kind: "sentiment",
        data: String::new(),
        split: String::new(),
        items: gold.len(),
        macro_recall: recalls / 3.0,
        accuracy: correct as f64 / gold.len().max(1) as f64,
        negative_f1: per_class["negative"].f1,
        per_class,
        confusion,
        seconds: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_recall_averages_class_recalls() {
        // negative: 2/2, neutral: 1/2, positive: 0/1.
        let report = score(&[0, 0, 1, 1, 2], &[0, 0, 1, 0, 1]);
        assert!((report.macro_recall - (1.0 + 0.5 + 0.0) / 3.0).abs() < 1e-9);
        assert!((report.accuracy - 0.6).abs() < 1e-9);
        assert_eq!(report.confusion[1], [1, 1, 0]);
        // negative precision 2/3, recall 1 -> F1 0.8.
        assert!((report.negative_f1 - 0.8).abs() < 1e-9);
    }

    #[test]
    fn bad_labels_are_named_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mapping.txt"),
            "0\tnegative\n1\tneutral\n2\tpositive\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("test_text.txt"), "a\nb\n").unwrap();
        std::fs::write(dir.path().join("test_labels.txt"), "0\n7\n").unwrap();
        let err = load(dir.path(), "test").unwrap_err().to_string();
        assert!(err.contains("test_labels.txt:2"), "{err}");
        std::fs::write(dir.path().join("test_labels.txt"), "0\n").unwrap();
        let err = load(dir.path(), "test").unwrap_err().to_string();
        assert!(err.contains("1 labels for 2 texts"), "{err}");
    }
}
