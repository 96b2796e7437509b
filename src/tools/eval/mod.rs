//! `baton eval`: measuring the bot on data, through the same tokenizer, encoder, training,
//! retrieval and policy as `baton serve`. Each command prints a summary a person can read and can
//! write a JSON report (`--json OUT`) for machines and for `baton eval compare`, and an HTML page
//! for people (`--html OUT`).

pub mod answers;
pub mod compare;
pub mod conversations;
pub mod frustration;
pub mod intents;
pub mod report;
pub mod retrieval;
pub mod sentiment;

use std::path::{Path, PathBuf};

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::assets::ModelFiles;
use crate::config::Settings;
use crate::nlp::encoder::{Embedding, Encoded, EncoderPool, IntentFeatures, SentimentScores};

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Intent classification and out-of-scope detection (CLINC150 JSON, or a folder with
    /// train.jsonl / test.jsonl / val.jsonl of {"text", "label"}; label "oos" = out of scope).
    Intents(intents::IntentsArgs),
    /// Knowledge retrieval (the StackFAQ folder, or a folder with knowledge/ and queries.jsonl).
    Retrieval(retrieval::RetrievalArgs),
    /// Scripted conversations (YAML, see docs/evals.md) against a knowledge folder (--knowledge).
    Conversations(conversations::ConversationsArgs),
    /// Answer quality per answer writer (extractive, and the LLM when configured or --llm-url):
    /// facts found, sources cited, declines on uncovered questions, citation validity, latency.
    Answers(answers::AnswersArgs),
    /// What got better or worse between two reports of the same kind (--json outputs).
    Compare(compare::CompareArgs),
    /// The sentiment model on TweetEval (test_text.txt, test_labels.txt, mapping.txt).
    Sentiment(sentiment::SentimentArgs),
    /// Frustration against user satisfaction ratings (the USS folder).
    Frustration(frustration::FrustrationArgs),
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Bad evaluation data: names the file and, when known, the line.
    #[error("{path}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Data {
        path: String,
        line: Option<usize>,
        reason: String,
    },
    #[error("{0}")]
    Pipeline(String),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

impl EvalError {
    pub fn data(path: &Path, line: Option<usize>, reason: impl Into<String>) -> Self {
        EvalError::Data {
            path: path.display().to_string(),
            line,
            reason: reason.into(),
        }
    }

    pub fn pipeline(err: impl std::fmt::Display) -> Self {
        EvalError::Pipeline(err.to_string())
    }
}

pub async fn run(settings: Settings, command: EvalCommand) -> Result<(), EvalError> {
    match command {
        EvalCommand::Intents(args) => intents::run(&settings, args).await,
        EvalCommand::Retrieval(args) => retrieval::run(&settings, args).await,
        EvalCommand::Conversations(args) => conversations::run(&settings, args).await,
        EvalCommand::Answers(args) => answers::run(&settings, args).await,
        EvalCommand::Compare(args) => compare::run(args),
        EvalCommand::Sentiment(args) => sentiment::run(&settings, args).await,
        EvalCommand::Frustration(args) => frustration::run(&settings, args).await,
    }
}

/// Resolve `--data`: as given when it exists, else relative to `paths.eval_data`.
pub fn resolve_data(settings: &Settings, data: &Path) -> Result<PathBuf, EvalError> {
    if data.exists() {
        return Ok(data.to_path_buf());
    }
    let under_eval_data = settings.paths.eval_data.join(data);
    if under_eval_data.exists() {
        return Ok(under_eval_data);
    }
    Err(EvalError::data(
        data,
        None,
        "no such file or folder (also looked under paths.eval_data)",
    ))
}

/// The encoder, started from the verified model files.
pub fn start_encoder(settings: &Settings) -> Result<EncoderPool, EvalError> {
    let files = ModelFiles::verify(&settings.paths.models, settings.encoder.precision)
        .map_err(EvalError::pipeline)?;
    EncoderPool::start(&files, &settings.encoder).map_err(EvalError::pipeline)
}

/// Embed many texts with a progress bar (hidden when stderr is not a terminal).
pub async fn embed_with_progress(
    encoder: &EncoderPool,
    texts: &[String],
    what: &str,
) -> Result<Vec<Embedding>, EvalError> {
    Ok(encode_with_progress(encoder, texts, what)
        .await?
        .into_iter()
        .map(|text| text.embedding)
        .collect())
}

/// Encode many texts with a progress bar (hidden when stderr is not a terminal): each text's
/// embedding and intent features.
pub async fn encode_with_progress(
    encoder: &EncoderPool,
    texts: &[String],
    what: &str,
) -> Result<Vec<Encoded>, EvalError> {
    let bar = progress_bar(texts.len() as u64, what);
    let mut encoded = Vec::with_capacity(texts.len());
    for batch in texts.chunks(256) {
        encoded.extend(
            encoder
                .encode_many(batch.to_vec())
                .await
                .map_err(EvalError::pipeline)?,
        );
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    Ok(encoded)
}

/// What the intent classifier reads of many texts, with a progress bar.
pub async fn intent_features_with_progress(
    encoder: &EncoderPool,
    texts: &[String],
    what: &str,
) -> Result<Vec<IntentFeatures>, EvalError> {
    Ok(encode_with_progress(encoder, texts, what)
        .await?
        .into_iter()
        .map(|text| text.intent_features)
        .collect())
}

/// Sentiment of many texts (one run per text, as the server does it) with a progress bar; `None`
/// where the encoder has no sentiment model.
pub async fn sentiment_with_progress(
    encoder: &EncoderPool,
    texts: &[String],
    what: &str,
) -> Result<Vec<Option<SentimentScores>>, EvalError> {
    let bar = progress_bar(texts.len() as u64, what);
    let mut scores = Vec::with_capacity(texts.len());
    for batch in texts.chunks(256) {
        scores.extend(
            encoder
                .sentiment_many(batch.to_vec())
                .await
                .map_err(EvalError::pipeline)?,
        );
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    Ok(scores)
}

pub fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

pub fn write_json(path: &Path, report: &impl Serialize) -> Result<(), EvalError> {
    let write_error = |reason: String| EvalError::Write {
        path: path.display().to_string(),
        reason,
    };
    let json = serde_json::to_vec_pretty(report).map_err(|e| write_error(e.to_string()))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| write_error(e.to_string()))?;
    }
    std::fs::write(path, json).map_err(|e| write_error(e.to_string()))?;
    println!("report written to {}", path.display());
    Ok(())
}

pub fn percent(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}
