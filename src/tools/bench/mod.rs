//! `baton bench`: latency baselines, measured the way a customer sees them.
//! - the encoder alone (tokenise + model + pooling), one message at a time;
//! - `POST /v1/conversations/{id}/messages` end to end over loopback HTTP against a real server
//!   started in this process (real store, index, intents), one client, one request at a time.
//!
//! - with `--baseline`, Baton against the reference Python service side by side (see
//!   [`baseline`]).
//!
//! Timings are printed, never asserted: shared machines are noisy.

mod baseline;

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use crate::app::{AppState, StartupError};
use crate::config::Settings;
use crate::nlp::encoder::EncoderError;

/// Messages like the ones customers send: short and long, typos, questions and requests.
pub(crate) const SAMPLE_MESSAGES: &[&str] = &[
    "how do i get a refund",
    "My thermostat is offline again, the light is blinking orange",
    "where is my order??",
    "I was charged twice this month and I want it fixed",
    "can I pay with paypal",
    "reset password pls",
    "how long does delivery to germany take",
    "the app keeps logging me out on android",
    "what's included in brightloop plus",
    "I'd like to talk to a human",
    "my sensor won't pair with the hub",
    "do you ship to canada",
    "how do I change the email on my account",
    "firmware update failed halfway",
    "is the thermostat covered by warranty if it stops heating",
    "hello",
];

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Messages per measurement.
    #[arg(long, default_value_t = 300)]
    pub messages: usize,
    /// Untimed requests first, so caches and allocators settle.
    #[arg(long, default_value_t = 30)]
    pub warmup: usize,
    /// Write the figures as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Compare with the reference Python service (evals/baseline/): one-client latency,
    /// throughput at `--concurrency` clients and resident memory for both, runs alternated.
    #[arg(long)]
    pub baseline: bool,
    /// With --baseline: measurement runs per service.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// With --baseline: concurrent clients for the throughput figure.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// With --baseline: messages sent by the concurrent clients together, per run.
    #[arg(long, default_value_t = 1600)]
    pub concurrent_messages: usize,
    /// With --baseline: the reference service's folder (service.py, setup.sh, requirements.txt).
    #[arg(long, default_value = "evals/baseline")]
    pub baseline_dir: PathBuf,
    /// With --baseline: an HTML page with the figures.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct LatencySummary {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn from_millis(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[index.min(samples.len() - 1)]
        };
        Self {
            samples: samples.len(),
            p50_ms: pick(0.50),
            p90_ms: pick(0.90),
            p95_ms: pick(0.95),
            p99_ms: pick(0.99),
            mean_ms: if samples.is_empty() {
                0.0
            } else {
                samples.iter().sum::<f64>() / samples.len() as f64
            },
            max_ms: samples.last().copied().unwrap_or(0.0),
        }
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  mean {:.2} ms  max {:.2} ms  (n={})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.mean_ms, self.max_ms, self.samples
        )
    }
}

#[derive(Debug, Serialize)]
struct BenchReport {
    encoder: LatencySummary,
    /// The sentiment model alone, through the same workers.
    sentiment: LatencySummary,
    /// Both models for one message, as understanding asks for them (side by side with two
    /// workers or more).
    encoder_and_sentiment: LatencySummary,
    post_message: LatencySummary,
    /// Server-side understanding time (encoder + intent + retrieval) from the responses.
    understanding: LatencySummary,
    build_profile: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("benchmark request failed: {0}")]
    Http(String),
    #[error("cannot write {0}: {1}")]
    Write(String, String),
    #[error("baseline comparison: {0}")]
    Baseline(String),
}

pub(crate) fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The encoder alone (tokenise + model + pooling), one message at a time, after a warm-up.
pub(crate) async fn measure_encoder(
    state: &AppState,
    warmup: usize,
    messages: usize,
) -> Result<LatencySummary, BenchError> {
    let encoder = state.engine.encoder();
    measure_each(warmup, messages, |text| async move {
        encoder.embed(text).await.map(drop)
    })
    .await
}

/// Latency of `step` over the sample messages, one at a time, after `warmup` untimed calls.
async fn measure_each<F, Fut>(
    warmup: usize,
    messages: usize,
    step: F,
) -> Result<LatencySummary, BenchError>
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = Result<(), EncoderError>>,
{
    for text in SAMPLE_MESSAGES.iter().cycle().take(warmup) {
        step(text).await.map_err(StartupError::from)?;
    }
    let mut millis = Vec::with_capacity(messages);
    for text in SAMPLE_MESSAGES.iter().cycle().take(messages) {
        let started = Instant::now();
        step(text).await.map_err(StartupError::from)?;
        millis.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(LatencySummary::from_millis(millis))
}

pub async fn run(settings: Settings, args: BenchArgs) -> Result<(), BenchError> {
    if args.baseline {
        return baseline::run(settings, args).await;
    }
    // A scratch data directory: the benchmark must not need (or disturb) a running server's.
    let scratch = tempfile::tempdir()
        .map_err(|e| BenchError::Write("temporary directory".into(), e.to_string()))?;
    let mut settings = settings;
    settings.paths.data = scratch.path().to_path_buf();
    settings.database.url = None;
    settings.server.bind = "127.0.0.1:0".into();
    // One client address opens a conversation per message: the abuse limit would refuse it
    // (429) long before the measurement ends.
    settings.limits.requests_per_ip_per_second = 0;
    let state = AppState::build(settings).await?;

    let encoder = measure_encoder(&state, args.warmup, args.messages).await?;
    println!("encoder alone        {}", encoder.line());
    let pool = state.engine.encoder();
    let sentiment = measure_each(args.warmup, args.messages, |text| async move {
        pool.sentiment(text).await.map(drop)
    })
    .await?;
    println!("sentiment alone      {}", sentiment.line());
    let encoder_and_sentiment = measure_each(args.warmup, args.messages, |text| async move {
        pool.analyze(text).await.map(drop)
    })
    .await?;
    println!("encoder + sentiment  {}", encoder_and_sentiment.line());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::Http(e.to_string()))?;
    let address = listener
        .local_addr()
        .map_err(|e| BenchError::Http(e.to_string()))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::app::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let base = format!("http://{address}");
    let mut post_ms = Vec::with_capacity(args.messages);
    let mut understanding_ms = Vec::with_capacity(args.messages);
    for (index, text) in SAMPLE_MESSAGES
        .iter()
        .cycle()
        .take(args.warmup + args.messages)
        .enumerate()
    {
        // A fresh conversation per message: after a handoff the bot goes silent, and the
        // baseline is the full understand-decide-reply path.
        let conversation: serde_json::Value = client
            .post(format!("{base}/v1/conversations"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| BenchError::Http(e.to_string()))?
            .json()
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?;
        let id = conversation["id"].as_str().unwrap_or_default();
        let token = conversation["token"].as_str().unwrap_or_default();
        let started = Instant::now();
        let response: serde_json::Value = client
            .post(format!("{base}/v1/conversations/{id}/messages"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "text": text }))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| BenchError::Http(e.to_string()))?
            .json()
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        if index >= args.warmup {
            post_ms.push(elapsed);
            if let Some(total) = response["understanding"]["timings"]["total_ms"].as_f64() {
                understanding_ms.push(total);
            }
        }
    }
    let _ = stop.send(());
    let _ = server.await;
    let post_message = LatencySummary::from_millis(post_ms);
    let understanding = LatencySummary::from_millis(understanding_ms);
    println!("POST .../messages    {}", post_message.line());
    println!("  understanding      {}", understanding.line());
    let report = BenchReport {
        encoder,
        sentiment,
        encoder_and_sentiment,
        post_message,
        understanding,
        build_profile: build_profile(),
    };
    if cfg!(debug_assertions) {
        println!("note: this is a debug build; use a release build (cargo run --release) for baseline figures");
    }
    if let Some(path) = args.json {
        let json = serde_json::to_vec_pretty(&report)
            .map_err(|e| BenchError::Write(path.display().to_string(), e.to_string()))?;
        std::fs::write(&path, json)
            .map_err(|e| BenchError::Write(path.display().to_string(), e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_from_sorted_samples() {
        let summary = LatencySummary::from_millis((1..=100).rev().map(f64::from).collect());
        assert_eq!(summary.p50_ms, 51.0);
        assert_eq!(summary.p99_ms, 99.0);
        assert_eq!(summary.max_ms, 100.0);
        assert_eq!(summary.mean_ms, 50.5);
        assert_eq!(LatencySummary::from_millis(Vec::new()).samples, 0);
    }
}
