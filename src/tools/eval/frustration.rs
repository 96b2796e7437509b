//! `baton eval frustration`: how well frustration finds dissatisfied users, on the USS dialogues
//! (user turns rated 1-5 by several annotators; a turn whose mean rating is at most 2 is
//! dissatisfied). Every user turn is scored with the dialogue so far, by message sentiment alone
//! and by Baton's conversation-level frustration score; the figures are ROC-AUC and precision at
//! 50% recall, per source file and overall.
//!
//! The dialogues are split in two by position (even: tuning, odd: evaluation). Figures are
//! reported on the evaluation half only; `--fit` fits the frustration weights on the tuning half
//! and reports the fitted model on the evaluation half too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use crate::config::Settings;
use crate::nlp::frustration::{bot_text_failed, FrustrationModel, HistoryTurn, SIGNALS};
use crate::nlp::keywords::KeywordEncoder;
use crate::tools::eval::{
    resolve_data, sentiment_with_progress, start_encoder, write_json, EvalError,
};

#[derive(Debug, Args)]
pub struct FrustrationArgs {
    /// The USS folder (one .txt per source: SGD, MWOZ, ReDial, CCPE).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also fit the frustration weights on the tuning half and report them.
    #[arg(long)]
    pub fit: bool,
}

#[derive(Debug, Clone)]
pub struct Turn {
    pub user: bool,
    pub text: String,
    /// User turns: the mean annotator rating.
    pub rating: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Dialogue {
    pub source: String,
    pub turns: Vec<Turn>,
}

/// Parse one USS file: `ROLE<TAB>text<TAB>action<TAB>ratings`, a blank line between dialogues,
/// `OVERALL` lines skipped.
pub fn parse(path: &Path) -> Result<Vec<Dialogue>, EvalError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| EvalError::data(path, None, e.to_string()))?;
    let source = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut dialogues = Vec::new();
    let mut turns = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !turns.is_empty() {
                dialogues.push(Dialogue {
                    source: source.clone(),
                    turns: std::mem::take(&mut turns),
                });
            }
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < 2 {
            return Err(EvalError::data(
                path,
                Some(index + 1),
                "expected ROLE<TAB>text<TAB>action<TAB>ratings",
            ));
        }
        let role = fields[0].trim();
        match role {
            "USER" if fields[1] == "OVERALL" => continue,
            "OVERALL" => continue,
            "USER" => {
                let ratings: Vec<f64> = fields
                    .get(3)
                    .map(|r| {
                        r.split(',')
                            .filter_map(|x| x.trim().parse::<f64>().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                if ratings.is_empty() {
                    return Err(EvalError::data(
                        path,
                        Some(index + 1),
                        "a user turn without ratings",
                    ));
                }
                turns.push(Turn {
                    user: true,
                    text: fields[1].to_string(),
                    rating: Some(ratings.iter().sum::<f64>() / ratings.len() as f64),
                });
            }
            "SYSTEM" => turns.push(Turn {
                user: false,
                text: fields[1].to_string(),
                rating: None,
            }),
            other => {
                return Err(EvalError::data(
                    path,
                    Some(index + 1),
                    format!("unknown role {other:?}"),
                ));
            }
        }
    }
    if !turns.is_empty() {
        dialogues.push(Dialogue { source, turns });
    }
    Ok(dialogues)
}

/// ROC-AUC: the probability that a random positive scores above a random negative (ties 1/2).
pub fn roc_auc(scored: &[(f32, bool)]) -> Option<f64> {
    let positives = scored.iter().filter(|(_, y)| *y).count();
    let negatives = scored.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut sorted: Vec<(f32, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Rank-sum with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += sorted[i..=j].iter().filter(|(_, y)| *y).count() as f64 * average_rank;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Precision at the highest threshold that still finds half of the positives.
pub fn precision_at_recall_half(scored: &[(f32, bool)]) -> Option<f64> {
    let positives = scored.iter().filter(|(_, y)| *y).count();
    if positives == 0 {
        return None;
    }
    let mut sorted: Vec<(f32, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let needed = positives.div_ceil(2);
    let mut found = 0;
    for (index, (score, y)) in sorted.iter().enumerate() {
        found += usize::from(*y);
        if found >= needed {
            // Everything scoring at least this much is flagged.
            let flagged = sorted
                .iter()
                .skip(index + 1)
                .take_while(|(s, _)| s == score)
                .count()
                + index
                + 1;
            let true_flags = sorted[..flagged].iter().filter(|(_, y)| *y).count();
            return Some(true_flags as f64 / flagged as f64);
        }
    }
    None
}

#[derive(Debug, Serialize, Clone)]
pub struct Figures {
    pub turns: usize,
    pub dissatisfied: usize,
    pub message_auc: Option<f64>,
    pub conversation_auc: Option<f64>,
    pub message_precision_at_recall_50: Option<f64>,
    pub precision_at_recall_50: Option<f64>,
    /// With weights fitted on the tuning half (`--fit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fitted_conversation_auc: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct FrustrationReport {
    pub kind: &'static str,
    pub data: String,
    /// Evaluation half (odd dialogues of each file); weights never saw it.
    pub split: &'static str,
    pub message_auc: Option<f64>,
    pub conversation_auc: Option<f64>,
    pub precision_at_recall_50: Option<f64>,
    pub overall: Figures,
    pub per_source: BTreeMap<String, Figures>,
    pub weights: FrustrationModel,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fitted_weights: Option<FrustrationModel>,
}

/// One scored user turn.
struct Scored {
    source: String,
    evaluation: bool,
    dissatisfied: bool,
    message: f32,
    signals: [f32; 8],
}

pub async fn run(settings: &Settings, args: FrustrationArgs) -> Result<(), EvalError> {
    let path = resolve_data(settings, &args.data)?;
    let report = evaluate(settings, &path, args.fit).await?;
    let overall = &report.overall;
    let show = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    println!(
        "frustration evaluation on {} (evaluation half: {} user turns, {} dissatisfied)",
        report.data, overall.turns, overall.dissatisfied
    );
    println!(
        "  {:<8} {:>7} {:>7} {:>12} {:>12} {:>10}",
        "source", "msg AUC", "conv AUC", "msg P@R50", "conv P@R50", "fitted AUC"
    );
    for (source, f) in report
        .per_source
        .iter()
        .chain(std::iter::once((&"overall".to_string(), overall)))
    {
        println!(
            "  {:<8} {:>7} {:>7} {:>12} {:>12} {:>10}",
            source,
            show(f.message_auc),
            show(f.conversation_auc),
            show(f.message_precision_at_recall_50),
            show(f.precision_at_recall_50),
            show(f.fitted_conversation_auc)
        );
    }
    if let Some(fitted) = &report.fitted_weights {
        println!("  fitted weights (tuning half): bias {:.3}", fitted.bias);
        for (name, weight) in SIGNALS.iter().zip(fitted.weights) {
            println!("    {name:<20} {weight:>7.3}");
        }
    }
    if let Some(json) = &args.json {
        write_json(json, &report)?;
    }
    Ok(())
}

/// Score every user turn of the evaluation half (and, with `fit`, fit the weights on the
/// tuning half, whose turns are then scored too).
pub async fn evaluate(
    settings: &Settings,
    path: &Path,
    fit: bool,
) -> Result<FrustrationReport, EvalError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| EvalError::data(path, None, e.to_string()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EvalError::data(path, None, "no .txt dialogue files"));
    }
    let mut dialogues = Vec::new();
    for file in &files {
        dialogues.push(parse(file)?);
    }
    let encoder = start_encoder(settings)?;
    if !encoder.has_sentiment() {
        return Err(EvalError::Pipeline(
            "no sentiment model installed (models/sentiment)".into(),
        ));
    }
    let model = FrustrationModel::default();
    let keywords = KeywordEncoder::default();

    // The dialogues to score, each marked with its half: odd positions in each file are the
    // evaluation half; the even (tuning) half is only read when weights are fitted on it.
    let selected: Vec<(bool, &Dialogue)> = dialogues
        .iter()
        .flat_map(|file| file.iter().enumerate())
        .map(|(index, dialogue)| (index % 2 == 1, dialogue))
        .filter(|(evaluation, _)| fit || *evaluation)
        .collect();

    // Sentiment of every user turn, in one pass.
    let user_texts: Vec<String> = selected
        .iter()
        .flat_map(|(_, d)| d.turns.iter().filter(|t| t.user).map(|t| t.text.clone()))
        .collect();
    let negatives = sentiment_with_progress(&encoder, &user_texts, "user turns").await?;

    let mut scored = Vec::new();
    let mut next_negative = negatives
        .into_iter()
        .map(|score| score.map(|s| s.negative).unwrap_or(0.0));
    for &(evaluation, dialogue) in &selected {
        let mut history: Vec<HistoryTurn> = Vec::new();
        for turn in &dialogue.turns {
            if turn.user {
                let negative = next_negative.next().unwrap_or(0.0);
                let sentiment = crate::nlp::encoder::SentimentScores {
                    negative,
                    neutral: 0.0,
                    positive: 1.0 - negative,
                };
                let signals = model.signals(&keywords, &turn.text, Some(&sentiment), &history);
                scored.push(Scored {
                    source: dialogue.source.clone(),
                    evaluation,
                    dissatisfied: turn.rating.is_some_and(|r| r <= 2.0),
                    message: negative,
                    signals,
                });
                history.push(HistoryTurn {
                    from_customer: true,
                    text: turn.text.clone(),
                    negative: Some(negative),
                    failed: false,
                });
            } else {
                history.push(HistoryTurn {
                    from_customer: false,
                    text: turn.text.clone(),
                    negative: None,
                    failed: bot_text_failed(&turn.text),
                });
            }
        }
    }

    let fitted = fit.then(|| {
        let tuning: Vec<([f32; 8], bool)> = scored
            .iter()
            .filter(|s| !s.evaluation)
            .map(|s| (s.signals, s.dissatisfied))
            .collect();
        FrustrationModel::fit(&tuning, 2000)
    });
    let figures = |rows: &[&Scored]| -> Figures {
        let message: Vec<(f32, bool)> = rows.iter().map(|s| (s.message, s.dissatisfied)).collect();
        let conversation: Vec<(f32, bool)> = rows
            .iter()
            .map(|s| (model.score_signals(&s.signals), s.dissatisfied))
            .collect();
        Figures {
            turns: rows.len(),
            dissatisfied: rows.iter().filter(|s| s.dissatisfied).count(),
            message_auc: roc_auc(&message),
            conversation_auc: roc_auc(&conversation),
            message_precision_at_recall_50: precision_at_recall_half(&message),
            precision_at_recall_50: precision_at_recall_half(&conversation),
            fitted_conversation_auc: fitted.as_ref().and_then(|f| {
                roc_auc(
                    &rows
                        .iter()
                        .map(|s| (f.score_signals(&s.signals), s.dissatisfied))
                        .collect::<Vec<_>>(),
                )
            }),
        }
    };
    let evaluation: Vec<&Scored> = scored.iter().filter(|s| s.evaluation).collect();
    let overall = figures(&evaluation);
    let mut per_source = BTreeMap::new();
    for source in files
        .iter()
        .filter_map(|f| f.file_stem())
        .map(|s| s.to_string_lossy().to_string())
    {
        let rows: Vec<&Scored> = evaluation
            .iter()
            .copied()
            .filter(|s| s.source == source)
            .collect();
        per_source.insert(source, figures(&rows));
    }
    let report = FrustrationReport {
        kind: "frustration",
        data: path.display().to_string(),
        split: "odd dialogues of each file (even ones are the tuning half)",
        message_auc: overall.message_auc,
        conversation_auc: overall.conversation_auc,
        precision_at_recall_50: overall.precision_at_recall_50,
        overall,
        per_source,
        weights: model,
        fitted_weights: fitted,
    };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_and_precision_at_half_recall() {
        let perfect = [(0.9, true), (0.8, true), (0.2, false), (0.1, false)];
        assert_eq!(roc_auc(&perfect), Some(1.0));
        assert_eq!(precision_at_recall_half(&perfect), Some(1.0));
        let inverted = [(0.1, true), (0.2, true), (0.8, false), (0.9, false)];
        assert_eq!(roc_auc(&inverted), Some(0.0));
        let ties = [(0.5, true), (0.5, false)];
        assert_eq!(roc_auc(&ties), Some(0.5));
        assert_eq!(precision_at_recall_half(&ties), Some(0.5));
        let mixed = [(0.9, true), (0.8, false), (0.7, true), (0.1, false)];
        assert_eq!(roc_auc(&mixed), Some(0.75));
        assert_eq!(roc_auc(&[(0.3, true)]), None);
    }

    #[test]
    fn parses_dialogues_and_skips_overall_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("SGD.txt");
        std::fs::write(
            &path,
            "USER\thello\tINFORM\t3,3,3\nSYSTEM\thi\tGREET\t\nUSER\tno, wrong\tINFORM\t2,1,2\nUSER\tOVERALL\t\t3,3\n\nUSER\tagain\tINFORM\t4\n",
        )
        .unwrap();
        let dialogues = parse(&path).unwrap();
        assert_eq!(dialogues.len(), 2);
        assert_eq!(dialogues[0].turns.len(), 3);
        assert!((dialogues[0].turns[2].rating.unwrap() - 5.0 / 3.0).abs() < 1e-9);
        std::fs::write(&path, "USER\thello\tINFORM\t\n").unwrap();
        let err = parse(&path).unwrap_err().to_string();
        assert!(err.contains("SGD.txt:1"), "{err}");
    }
}
