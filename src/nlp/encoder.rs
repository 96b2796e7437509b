//! The sentence encoder: all-MiniLM-L6-v2 through `tokenizers` + `ort`, mean-pooled over the
//! attention mask and L2-normalised to a 384-d embedding. One embedding per customer message feeds
//! both intent classification and retrieval.
//!
//! Inference is CPU-bound, so it never runs on the async runtime: [`EncoderPool`] owns dedicated
//! worker threads (each with its own ONNX session, since `Session::run` takes `&mut self`) and
//! micro-batches requests that arrive while a worker is busy.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;
use serde::{Deserialize, Serialize};
use tokenizers::{Tokenizer, TruncationParams};
use tokio::sync::oneshot;

use crate::assets::{EncoderPrecision, ModelFiles};

/// Width of the all-MiniLM-L6-v2 embedding.
pub const EMBEDDING_DIM: usize = 384;

pub type Embedding = Vec<f32>;

/// What the intent classifier reads of a text: the mean of the encoder's fourth layer beside the
/// mean of its last (the embedding), each normalised, the pair scaled to unit length, so
/// 2 x [`EMBEDDING_DIM`] long. The fourth layer keeps more of the wording than the last; reading
/// both lifts CLINC150 at 10 examples per intent by about a point of in-scope accuracy and
/// several of out-of-scope recall (evals/RESULTS.md). An encoder file without that output (the
/// fp32 file as its package ships it) gives the embedding alone.
pub type IntentFeatures = Vec<f32>;

/// The encoder file's extra output read for [`IntentFeatures`] (models/encoder/quantize.py).
const LAYER_4_OUTPUT: &str = "hidden_state_layer_4";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EncoderOptions {
    /// Which encoder file runs: `int8` (the default) computes in int8, `fp32` is the file as its
    /// package ships it. The two give slightly different embeddings (cosine about 0.99), so a
    /// change re-embeds the knowledge base and retrains the intents at the next start. Only the
    /// int8 file has the layer-4 output the intent classifier reads beside the embedding; with
    /// `fp32` it reads the embedding alone (about a point less on few examples per intent).
    pub precision: EncoderPrecision,
    /// Inputs are truncated to this many tokens (the model was trained on 128).
    pub max_tokens: usize,
    /// ONNX Runtime intra-op threads per worker. One per worker by default: with two workers on
    /// two cores, a message's embedding and its sentiment run side by side, and under load each
    /// worker keeps its core busy without the threads of one session waiting on each other.
    pub intra_threads: usize,
    /// Let ONNX Runtime threads spin while waiting: lower latency on an idle machine, but it burns
    /// a core and degrades badly when other work competes for it, so it is off by default.
    pub spinning: bool,
    /// Worker threads, each with its own session.
    pub workers: usize,
    /// Most texts run through the fp32 model in one batch. The int8 model always runs one text at
    /// a time (see [`Encoder::embed`]).
    pub max_batch: usize,
    /// Scheduling niceness of the worker threads (0-19; higher yields more). Inference is the
    /// one long CPU task here; at 19 the short steps every message also needs (sockets, the
    /// SQLite writer's turn, which all other writes queue behind) run first whenever they
    /// contend with it, and inference takes every cycle they leave. 0 runs it like every other
    /// thread; that suits a machine where other programs must not crowd out Baton's inference.
    pub nice: i32,
    /// Run the sentiment model on customer messages when it is installed.
    pub sentiment: bool,
    /// Customer messages are truncated to this many tokens for the sentiment model (the length
    /// it was fine-tuned on).
    pub sentiment_max_tokens: usize,
    /// Let ONNX Runtime fuse each residual `Add` and the `LayerNormalization` after it into one
    /// `SkipLayerNormalization` node, as its highest optimisation level does. Off by default:
    /// with the pinned ONNX Runtime (1.31.1) on CPU the fused node is the slower one. ONNX
    /// Runtime's profiler on the sentiment model, one 14-token message: its nine fused nodes
    /// take 225 us, the nine `LayerNormalization` and ten `Add` nodes they replace 62 us. Left
    /// apart, a run of either model takes about a quarter less time (evals/RESULTS.md, stop 40).
    /// The outputs move by rounding, which the int8 models can carry into the next integer step
    /// (see [`embedding_identity`]): a change of this setting re-embeds the knowledge base at
    /// the next start. Turn it on for an ONNX Runtime library whose fused kernel is the faster
    /// one.
    pub fuse_skip_layer_norm: bool,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            precision: EncoderPrecision::Int8,
            max_tokens: 128,
            intra_threads: 1,
            spinning: false,
            workers: 2,
            max_batch: 32,
            nice: 19,
            sentiment: true,
            sentiment_max_tokens: 64,
            fuse_skip_layer_norm: false,
        }
    }
}

impl EncoderOptions {
    /// Most texts per run of the encoder model. A dynamically quantised model picks the scale of
    /// each layer's input from the whole batch (DynamicQuantizeLinear), so an embedding would
    /// depend on which other texts, and how much padding, shared its batch (cosine as low as 0.97
    /// against the same text alone): int8 runs one text at a time, which is also how it is fast.
    fn model_batch(&self) -> usize {
        match self.precision {
            EncoderPrecision::Int8 => 1,
            EncoderPrecision::Fp32 => self.max_batch.max(1),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EncoderError {
    #[error("ONNX Runtime library {path} could not be loaded: {reason}")]
    Runtime { path: String, reason: String },
    #[error("encoder model {path} could not be loaded: {reason}")]
    Model { path: String, reason: String },
    #[error("tokenizer {path} could not be loaded: {reason}")]
    Tokenizer { path: String, reason: String },
    #[error("tokenising input failed: {0}")]
    Tokenize(String),
    #[error("encoder inference failed: {0}")]
    Inference(String),
    #[error("the encoder workers have stopped")]
    WorkersGone,
}

/// ONNX Runtime is loaded once per process (ort keeps the library in a global), so the environment
/// is created once and every later caller must agree on the library path.
fn runtime_environment(library: &Path) -> Result<ort::environment::Environment, EncoderError> {
    type Loaded = Result<(ort::environment::Environment, PathBuf), EncoderError>;
    static RUNTIME: OnceLock<Loaded> = OnceLock::new();
    let loaded = RUNTIME.get_or_init(|| {
        let runtime_error = |reason: String| EncoderError::Runtime {
            path: library.display().to_string(),
            reason,
        };
        let environment = ort::init_from(library)
            .map_err(|e| runtime_error(e.to_string()))?
            .with_name("baton")
            .with_telemetry(false)
            .build()
            .map_err(|e| runtime_error(e.to_string()))?;
        Ok((environment, library.to_path_buf()))
    });
    match loaded {
        Ok((environment, path)) if path == library => Ok(environment.clone()),
        Ok((_, path)) => Err(EncoderError::Runtime {
            path: library.display().to_string(),
            reason: format!(
                "this process already loaded ONNX Runtime from {}",
                path.display()
            ),
        }),
        Err(err) => Err(err.clone()),
    }
}

/// Sentiment probabilities of one text (negative, neutral, positive; they sum to 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SentimentScores {
    pub negative: f32,
    pub neutral: f32,
    pub positive: f32,
}

impl SentimentScores {
    fn from_logits(logits: &[f32]) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum::<f32>().max(f32::MIN_POSITIVE);
        Self {
            negative: exp[0] / sum,
            neutral: exp[1] / sum,
            positive: exp[2] / sum,
        }
    }

    /// The most probable label.
    pub fn label(&self) -> &'static str {
        if self.negative >= self.neutral && self.negative >= self.positive {
            "negative"
        } else if self.positive >= self.neutral {
            "positive"
        } else {
            "neutral"
        }
    }
}

/// What one pass over a text yields: its embedding (what retrieval reads), the intent
/// classifier's features, and its sentiment when asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub embedding: Embedding,
    pub intent_features: IntentFeatures,
    pub sentiment: Option<SentimentScores>,
}

/// A text read for both of the encoder's uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub embedding: Embedding,
    pub intent_features: IntentFeatures,
}

/// The optional sentiment classifier: a fine-tuned MiniLM sharing the encoder's vocabulary.
struct SentimentHead {
    session: Session,
    /// The tokenizer truncating to the length the model was trained on.
    tokenizer: Arc<Tokenizer>,
}

/// A synchronous encoder: one ONNX session and the tokenizer (plus the sentiment model when
/// installed). Worker threads own one each; batch jobs may use one directly.
pub struct Encoder {
    session: Session,
    tokenizer: Arc<Tokenizer>,
    sentiment: Option<SentimentHead>,
    /// Most texts per model run: 1 for the int8 model (see [`Encoder::embed`]).
    model_batch: usize,
    /// Whether the model file has the layer-4 output [`IntentFeatures`] read.
    has_layer_4: bool,
}

/// ONNX Runtime's name for the graph transformer that fuses `Add` + `LayerNormalization`.
const SKIP_LAYER_NORM_FUSION: &str = "SkipLayerNormFusion";

fn build_session(
    environment: &ort::environment::Environment,
    path: &Path,
    options: &EncoderOptions,
) -> Result<Session, EncoderError> {
    let model_error = |reason: String| EncoderError::Model {
        path: path.display().to_string(),
        reason,
    };
    // Builder errors carry the builder and are not Send/Sync, so they become strings here.
    let mut builder = Session::builder(environment)
        .map_err(|e| model_error(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| model_error(e.to_string()))?;
    if !options.fuse_skip_layer_norm {
        // See `EncoderOptions::fuse_skip_layer_norm`: the unfused pair is the faster one here.
        builder = builder
            .with_disabled_optimizers(SKIP_LAYER_NORM_FUSION)
            .map_err(|e| model_error(e.to_string()))?;
    }
    builder
        .with_intra_threads(options.intra_threads.max(1))
        .map_err(|e| model_error(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| model_error(e.to_string()))?
        .with_intra_op_spinning(options.spinning)
        .map_err(|e| model_error(e.to_string()))?
        .commit_from_file(path)
        .map_err(|e| model_error(e.to_string()))
}

/// Token ids, attention mask and token types of a batch, padded to its longest item.
fn padded_inputs(batch: &[&tokenizers::Encoding]) -> (Vec<i64>, Vec<i64>, Vec<i64>, usize, usize) {
    let rows = batch.len();
    let width = batch
        .iter()
        .map(|e| e.get_ids().len())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut input_ids = vec![0i64; rows * width];
    let mut attention_mask = vec![0i64; rows * width];
    for (row, encoding) in batch.iter().enumerate() {
        for (col, (&id, &mask)) in encoding
            .get_ids()
            .iter()
            .zip(encoding.get_attention_mask())
            .enumerate()
        {
            input_ids[row * width + col] = i64::from(id);
            attention_mask[row * width + col] = i64::from(mask);
        }
    }
    (
        input_ids,
        attention_mask,
        vec![0i64; rows * width],
        rows,
        width,
    )
}

impl Encoder {
    pub fn load(files: &ModelFiles, options: &EncoderOptions) -> Result<Self, EncoderError> {
        let tokenizer = Arc::new(load_tokenizer(
            &files.encoder_tokenizer,
            options.max_tokens,
        )?);
        let sentiment_tokenizer = Arc::new(load_tokenizer(
            &files.encoder_tokenizer,
            options.sentiment_max_tokens,
        )?);
        Self::with_tokenizers(files, options, tokenizer, sentiment_tokenizer)
    }

    fn with_tokenizers(
        files: &ModelFiles,
        options: &EncoderOptions,
        tokenizer: Arc<Tokenizer>,
        sentiment_tokenizer: Arc<Tokenizer>,
    ) -> Result<Self, EncoderError> {
        let environment = runtime_environment(&files.runtime_library)?;
        let session = build_session(&environment, &files.encoder_model, options)?;
        let has_layer_4 = session
            .outputs()
            .iter()
            .any(|output| output.name() == LAYER_4_OUTPUT);
        let sentiment = match &files.sentiment_model {
            Some(path) if options.sentiment => Some(SentimentHead {
                session: build_session(&environment, path, options)?,
                tokenizer: sentiment_tokenizer,
            }),
            _ => None,
        };
        Ok(Self {
            session,
            tokenizer,
            sentiment,
            model_batch: options.model_batch(),
            has_layer_4,
        })
    }

    /// Whether a sentiment model is loaded.
    pub fn has_sentiment(&self) -> bool {
        self.sentiment.is_some()
    }

    /// Embed texts and, where `with_sentiment[i]` is set and a sentiment model is loaded, classify
    /// their sentiment, in order.
    pub fn analyze(
        &mut self,
        texts: &[&str],
        with_sentiment: &[bool],
        with_embedding: &[bool],
    ) -> Result<Vec<Analysis>, EncoderError> {
        // Embed only the texts that need it, then put the results back in place.
        let to_embed: Vec<usize> = (0..texts.len())
            .filter(|&i| with_embedding.get(i).copied().unwrap_or(true))
            .collect();
        let embedded = self.encode(&to_embed.iter().map(|&i| texts[i]).collect::<Vec<_>>())?;
        let mut encoded = vec![
            Encoded {
                embedding: Vec::new(),
                intent_features: Vec::new(),
            };
            texts.len()
        ];
        for (index, text) in to_embed.into_iter().zip(embedded) {
            encoded[index] = text;
        }
        let mut sentiments: Vec<Option<SentimentScores>> = vec![None; texts.len()];
        if let Some(head) = &mut self.sentiment {
            let wanted: Vec<usize> = (0..texts.len())
                .filter(|&i| with_sentiment.get(i).copied().unwrap_or(false))
                .collect();
            let mut encodings = Vec::with_capacity(wanted.len());
            for &index in &wanted {
                encodings.push(
                    head.tokenizer
                        .encode(texts[index], true)
                        .map_err(|e| EncoderError::Tokenize(e.to_string()))?,
                );
            }
            // One text per run, never batched: the model is dynamically quantised, and
            // DynamicQuantizeLinear picks its scale from the whole input tensor, so a message's
            // scores would otherwise depend on which other messages (and how much padding) shared
            // its batch. Batch 1 is how the model was calibrated and how `reference.json` was made.
            for (encoding, &index) in encodings.iter().zip(&wanted) {
                let scores = run_sentiment(&mut head.session, &[encoding])?;
                sentiments[index] = scores.into_iter().next();
            }
        }
        Ok(encoded
            .into_iter()
            .zip(sentiments)
            .map(|(encoded, sentiment)| Analysis {
                embedding: encoded.embedding,
                intent_features: encoded.intent_features,
                sentiment,
            })
            .collect())
    }

    /// Embed texts, in order. The fp32 model runs them grouped by length in batches of
    /// `max_batch`, so padding stays small; the int8 model runs each alone, so a text's embedding
    /// never depends on its neighbours (see [`EncoderOptions::model_batch`]).
    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Embedding>, EncoderError> {
        Ok(self
            .encode(texts)?
            .into_iter()
            .map(|encoded| encoded.embedding)
            .collect())
    }

    /// [`Encoder::embed`], with the intent classifier's features of each text.
    pub fn encode(&mut self, texts: &[&str]) -> Result<Vec<Encoded>, EncoderError> {
        let mut encodings = Vec::with_capacity(texts.len());
        for text in texts {
            let encoding = self
                .tokenizer
                .encode(*text, true)
                .map_err(|e| EncoderError::Tokenize(e.to_string()))?;
            encodings.push(encoding);
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut encoded = vec![None; texts.len()];
        for group in order.chunks(self.model_batch) {
            let batch: Vec<&tokenizers::Encoding> = group.iter().map(|&i| &encodings[i]).collect();
            for (text, &index) in self.run_batch(&batch)?.into_iter().zip(group) {
                encoded[index] = Some(text);
            }
        }
        // Every index belongs to exactly one group.
        Ok(encoded.into_iter().flatten().collect())
    }

    fn run_batch(&mut self, batch: &[&tokenizers::Encoding]) -> Result<Vec<Encoded>, EncoderError> {
        let (input_ids, attention_mask, token_type_ids, rows, width) = padded_inputs(batch);
        let shape = [rows, width];
        let inference = |e: ort::Error| EncoderError::Inference(e.to_string());
        let inputs = ort::inputs![
            "input_ids" => Tensor::from_array((shape, input_ids)).map_err(inference)?,
            "attention_mask" => Tensor::from_array((shape, attention_mask.clone())).map_err(inference)?,
            "token_type_ids" => Tensor::from_array((shape, token_type_ids)).map_err(inference)?,
        ];
        let outputs = self.session.run(inputs).map_err(inference)?;
        let (hidden_shape, hidden) = outputs["last_hidden_state"]
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        let dims: Vec<i64> = hidden_shape.iter().copied().collect();
        if dims != [rows as i64, width as i64, EMBEDDING_DIM as i64] {
            return Err(EncoderError::Inference(format!(
                "unexpected output shape {dims:?}, wanted [{rows}, {width}, {EMBEDDING_DIM}]"
            )));
        }
        let layer_4 = if self.has_layer_4 {
            let (_, layer_4) = outputs[LAYER_4_OUTPUT]
                .try_extract_tensor::<f32>()
                .map_err(inference)?;
            if layer_4.len() != hidden.len() {
                return Err(EncoderError::Inference(format!(
                    "{LAYER_4_OUTPUT} has {} values, wanted {} like last_hidden_state",
                    layer_4.len(),
                    hidden.len()
                )));
            }
            Some(layer_4)
        } else {
            None
        };
        let tokens = |row: usize| row * width * EMBEDDING_DIM..(row + 1) * width * EMBEDDING_DIM;
        Ok((0..rows)
            .map(|row| {
                let mask = &attention_mask[row * width..(row + 1) * width];
                let embedding = mean_pool(&hidden[tokens(row)], mask);
                let intent_features = match layer_4 {
                    Some(layer_4) => intent_features(
                        &mean_pool(&layer_4[tokens(row)], &words_only(mask)),
                        &embedding,
                    ),
                    None => embedding.clone(),
                };
                Encoded {
                    embedding,
                    intent_features,
                }
            })
            .collect())
    }
}

fn run_sentiment(
    session: &mut Session,
    batch: &[&tokenizers::Encoding],
) -> Result<Vec<SentimentScores>, EncoderError> {
    let (input_ids, attention_mask, token_type_ids, rows, width) = padded_inputs(batch);
    let shape = [rows, width];
    let inference = |e: ort::Error| EncoderError::Inference(format!("sentiment model: {e}"));
    let inputs = ort::inputs![
        "input_ids" => Tensor::from_array((shape, input_ids)).map_err(inference)?,
        "attention_mask" => Tensor::from_array((shape, attention_mask)).map_err(inference)?,
        "token_type_ids" => Tensor::from_array((shape, token_type_ids)).map_err(inference)?,
    ];
    let outputs = session.run(inputs).map_err(inference)?;
    let (logits_shape, logits) = outputs["logits"]
        .try_extract_tensor::<f32>()
        .map_err(inference)?;
    let dims: Vec<i64> = logits_shape.iter().copied().collect();
    if dims != [rows as i64, 3] {
        return Err(EncoderError::Inference(format!(
            "sentiment model: unexpected output shape {dims:?}, wanted [{rows}, 3]"
        )));
    }
    Ok(logits
        .chunks_exact(3)
        .map(SentimentScores::from_logits)
        .collect())
}

/// Mean of the token vectors where the mask is 1, then L2-normalised (the sentence-transformers
/// recipe for this model).
fn mean_pool(hidden: &[f32], mask: &[i64]) -> Embedding {
    let mut pooled = vec![0f32; EMBEDDING_DIM];
    let mut count = 0f32;
    for (token, &m) in hidden.chunks_exact(EMBEDDING_DIM).zip(mask) {
        if m == 0 {
            continue;
        }
        count += 1.0;
        for (sum, value) in pooled.iter_mut().zip(token) {
            *sum += value;
        }
    }
    let count = count.max(1e-9);
    pooled.iter_mut().for_each(|v| *v /= count);
    normalise(&mut pooled);
    pooled
}

/// The attention mask without the `[CLS]` and `[SEP]` that open and close every text (when words
/// are left between them): at the fourth layer those two still weigh as much as any word, and in
/// a one-word message ("help", "thanks") they are two thirds of the mean, so every short message
/// would read alike.
fn words_only(mask: &[i64]) -> Vec<i64> {
    let length = mask.iter().filter(|&&m| m != 0).count();
    let mut words = mask.to_vec();
    if length > 2 {
        words[0] = 0;
        words[length - 1] = 0;
    }
    words
}

/// The layer-4 mean and the embedding (both normalised) side by side, scaled to unit length.
fn intent_features(layer_4: &[f32], embedding: &[f32]) -> IntentFeatures {
    layer_4
        .iter()
        .chain(embedding)
        .map(|value| value * std::f32::consts::FRAC_1_SQRT_2)
        .collect()
}

/// Scale to unit length (a zero vector stays zero).
pub fn normalise(vector: &mut [f32]) {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 1e-12 {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
}

/// Dot product; the cosine similarity of two normalised embeddings.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn load_tokenizer(path: &Path, max_tokens: usize) -> Result<Tokenizer, EncoderError> {
    let tokenizer_error = |reason: String| EncoderError::Tokenizer {
        path: path.display().to_string(),
        reason,
    };
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| tokenizer_error(e.to_string()))?;
    // tokenizer.json pads every input to 128 tokens, which makes a short chat message ~6x slower;
    // batches are padded to their own longest item instead.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            ..Default::default()
        }))
        .map_err(|e| tokenizer_error(e.to_string()))?;
    Ok(tokenizer)
}

/// What a knowledge base's embeddings and the trained intents depend on: the encoder file's
/// sha256, and whether ONNX Runtime fuses its skip-layer-norms. The fusion changes only float
/// rounding, but the int8 model quantises each layer's input from the values it sees, so a
/// rounding step can move a value into the next integer: embeddings of longer texts move to a
/// cosine of 0.995 at worst (0.9997 median over the demo's sections; evals/RESULTS.md, stop 40). A
/// query embedded one way and sections the other would be compared across that gap, so changing
/// the setting re-embeds the knowledge base and retrains the intents at the next start, as a new
/// model file does. The fused form keeps the plain digest that indexes built before it recorded.
pub fn embedding_identity(file_digest: &str, options: &EncoderOptions) -> String {
    if options.fuse_skip_layer_norm {
        file_digest.to_string()
    } else {
        format!("{file_digest}+unfused-skip-layer-norm")
    }
}

/// Work a caller hands the encoder thread with a text's [`IntentFeatures`], run there once the
/// text's analysis has been sent back (see [`EncoderPool::analyze_with`]).
pub type FeaturesFollowUp = Box<dyn FnOnce(&IntentFeatures) + Send>;

/// One request to the worker threads: texts to embed (and classify) and where to send the result.
struct EmbedJob {
    texts: Vec<String>,
    sentiment: bool,
    embedding: bool,
    reply: oneshot::Sender<Result<Vec<Analysis>, EncoderError>>,
    /// Only on a job of one text with `embedding`: run on the worker after `reply` is sent.
    follow_up: Option<FeaturesFollowUp>,
}

/// Counters the metrics endpoint and benchmarks read.
#[derive(Debug, Default)]
pub struct EncoderStats {
    pub batches: AtomicU64,
    pub texts: AtomicU64,
    pub busy_micros: AtomicU64,
}

/// The encoder as the server uses it: a cheap-to-clone async handle over dedicated worker threads.
/// Requests that queue up while a worker is busy are run together in one batch (micro-batching):
/// under load this trades a little latency for several times the throughput.
#[derive(Clone)]
pub struct EncoderPool {
    jobs: Sender<EmbedJob>,
    stats: Arc<EncoderStats>,
    /// Worker threads: a request is split into this many jobs so they run side by side.
    workers: usize,
    /// sha256 of the encoder model file (see [`embedding_identity`]): embeddings from another
    /// model are not comparable.
    model_digest: Arc<str>,
    has_sentiment: bool,
    /// The workers' operating-system thread ids (Linux; 0 elsewhere).
    thread_ids: Arc<[i64]>,
    /// The whole words the tokenizer knows (its vocabulary without word pieces): the words the
    /// encoder reads as themselves, which spelling correction leaves alone.
    whole_words: Arc<HashSet<String>>,
}

impl EncoderPool {
    /// Start the workers, each loading its own sessions, and wait until they have. Fails if a
    /// model file cannot be loaded; the workers that did load it then stop.
    pub fn start(files: &ModelFiles, options: &EncoderOptions) -> Result<Self, EncoderError> {
        let tokenizer = Arc::new(load_tokenizer(
            &files.encoder_tokenizer,
            options.max_tokens,
        )?);
        let sentiment_tokenizer = Arc::new(load_tokenizer(
            &files.encoder_tokenizer,
            options.sentiment_max_tokens,
        )?);
        let whole_words = Arc::new(
            tokenizer
                .get_vocab(false)
                .into_keys()
                .filter(|word| word.len() > 1 && word.chars().all(|c| c.is_ascii_lowercase()))
                .collect(),
        );
        // Bounded, so a flood of requests waits in the async callers rather than in memory here.
        let (jobs, receiver) = crossbeam_channel::bounded::<EmbedJob>(1024);
        let stats = Arc::new(EncoderStats::default());
        let workers = options.workers.max(1);
        // A worker takes as many waiting texts as one model run holds: with the int8 model that
        // is one job at a time, so the jobs a request is split into go to different workers.
        let max_batch = options.model_batch();
        // Each worker reports whether its sessions loaded (and with a sentiment model).
        let (loaded, load_results) =
            std::sync::mpsc::channel::<Result<(bool, i64), EncoderError>>();
        for index in 0..workers {
            let (files, options) = (files.clone(), options.clone());
            let (tokenizer, sentiment_tokenizer) = (tokenizer.clone(), sentiment_tokenizer.clone());
            let (receiver, stats, loaded) = (receiver.clone(), stats.clone(), loaded.clone());
            std::thread::Builder::new()
                .name(format!("baton-encoder-{index}"))
                .spawn(move || {
                    // Before the sessions load, so that the threads ONNX Runtime starts for them
                    // (intra_threads > 1) inherit it.
                    yield_to_other_threads(options.nice);
                    let encoder = match Encoder::with_tokenizers(
                        &files,
                        &options,
                        tokenizer,
                        sentiment_tokenizer,
                    ) {
                        Ok(encoder) => encoder,
                        Err(error) => {
                            let _ = loaded.send(Err(error));
                            return;
                        }
                    };
                    let _ = loaded.send(Ok((encoder.has_sentiment(), current_thread_id())));
                    drop(loaded);
                    run_worker(encoder, receiver, stats, max_batch)
                })
                .map_err(|e| {
                    EncoderError::Inference(format!("could not start an encoder thread: {e}"))
                })?;
        }
        drop(loaded);
        let mut has_sentiment = true;
        let mut thread_ids = Vec::with_capacity(workers);
        for _ in 0..workers {
            // On an error `jobs` is dropped on return, which stops the workers that loaded.
            match load_results.recv() {
                Ok(Ok((with_sentiment, thread_id))) => {
                    has_sentiment &= with_sentiment;
                    thread_ids.push(thread_id);
                }
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    return Err(EncoderError::Inference(
                        "an encoder thread stopped while loading its model".into(),
                    ))
                }
            }
        }
        Ok(Self {
            jobs,
            stats,
            workers,
            model_digest: embedding_identity(&files.encoder_digest, options).into(),
            has_sentiment,
            thread_ids: thread_ids.into(),
            whole_words,
        })
    }

    /// Whether the sentiment model is loaded.
    pub fn has_sentiment(&self) -> bool {
        self.has_sentiment
    }

    /// The worker threads' operating-system ids (Linux; 0 elsewhere), to find them in
    /// `/proc/<pid>/task` or `top -H`.
    pub fn worker_thread_ids(&self) -> &[i64] {
        &self.thread_ids
    }

    /// What the workers' embeddings depend on: the sha256 of the encoder model, marked when ONNX
    /// Runtime runs it without the skip-layer-norm fusion (see [`embedding_identity`]).
    pub fn model_digest(&self) -> &str {
        &self.model_digest
    }

    pub fn whole_words(&self) -> &Arc<HashSet<String>> {
        &self.whole_words
    }

    /// Embed one text.
    pub async fn embed(&self, text: &str) -> Result<Embedding, EncoderError> {
        let mut embeddings = self.embed_many(vec![text.to_string()]).await?;
        embeddings.pop().ok_or(EncoderError::WorkersGone)
    }

    /// Embed many texts (ingestion, evaluations), in order, shared among the workers.
    pub async fn embed_many(&self, texts: Vec<String>) -> Result<Vec<Embedding>, EncoderError> {
        Ok(self
            .encode_many(texts)
            .await?
            .into_iter()
            .map(|encoded| encoded.embedding)
            .collect())
    }

    /// [`EncoderPool::embed_many`] with the intent classifier's features of each text (intent
    /// training, evaluations, a message read sentence by sentence).
    pub async fn encode_many(&self, texts: Vec<String>) -> Result<Vec<Encoded>, EncoderError> {
        let parts = split_evenly(texts, self.workers);
        let jobs = parts.into_iter().map(|part| self.submit(part, false, true));
        let mut encoded = Vec::new();
        for part in futures::future::try_join_all(jobs).await? {
            encoded.extend(part.into_iter().map(|analysis| Encoded {
                embedding: analysis.embedding,
                intent_features: analysis.intent_features,
            }));
        }
        Ok(encoded)
    }

    /// Embed a customer message and classify its sentiment (when the model is installed). With
    /// two workers or more the two models run side by side, so the sentiment costs no latency.
    pub async fn analyze(&self, text: &str) -> Result<Analysis, EncoderError> {
        self.analyze_with(text, None).await
    }

    /// [`EncoderPool::analyze`], and then `follow_up` (when given) with the text's intent
    /// features, run on the encoder thread that computed them right after it has sent the
    /// analysis back. The caller can then work on the embedding (retrieval) while the thread
    /// works on the features (intent classification): side by side, without a hop to another
    /// thread. `follow_up` must be small (it holds up that worker's next model run) and report
    /// through a channel of its own; if it panics, the worker carries on and the channel's
    /// sender is dropped. It does not run when the analysis fails.
    pub async fn analyze_with(
        &self,
        text: &str,
        follow_up: Option<FeaturesFollowUp>,
    ) -> Result<Analysis, EncoderError> {
        let texts = vec![text.to_string()];
        let mut analyses = if !self.has_sentiment || self.workers < 2 {
            self.submit_job(texts, self.has_sentiment, true, follow_up)
                .await?
        } else {
            let (mut embedded, sentiments) = tokio::try_join!(
                self.submit_job(texts.clone(), false, true, follow_up),
                self.submit(texts, true, false)
            )?;
            if let (Some(analysis), Some(scored)) =
                (embedded.first_mut(), sentiments.into_iter().next())
            {
                analysis.sentiment = scored.sentiment;
            }
            embedded
        };
        analyses.pop().ok_or(EncoderError::WorkersGone)
    }

    /// [`EncoderPool::analyze`] for many texts (evaluations), in order.
    pub async fn analyze_many(&self, texts: Vec<String>) -> Result<Vec<Analysis>, EncoderError> {
        if !self.has_sentiment || self.workers < 2 {
            return self.submit(texts, self.has_sentiment, true).await;
        }
        let (embedded, sentiments) = tokio::try_join!(
            self.encode_many(texts.clone()),
            self.submit(texts, true, false)
        )?;
        Ok(embedded
            .into_iter()
            .zip(sentiments)
            .map(|(encoded, scored)| Analysis {
                embedding: encoded.embedding,
                intent_features: encoded.intent_features,
                sentiment: scored.sentiment,
            })
            .collect())
    }

    /// The sentiment of one text, without embedding it (None when no sentiment model is
    /// installed).
    pub async fn sentiment(&self, text: &str) -> Result<Option<SentimentScores>, EncoderError> {
        if !self.has_sentiment {
            return Ok(None);
        }
        let mut scores = self.sentiment_many(vec![text.to_string()]).await?;
        scores.pop().ok_or(EncoderError::WorkersGone)
    }

    /// Sentiment only (no embeddings), for evaluations of the sentiment model.
    pub async fn sentiment_many(
        &self,
        texts: Vec<String>,
    ) -> Result<Vec<Option<SentimentScores>>, EncoderError> {
        Ok(self
            .submit(texts, true, false)
            .await?
            .into_iter()
            .map(|a| a.sentiment)
            .collect())
    }

    async fn submit(
        &self,
        texts: Vec<String>,
        sentiment: bool,
        embedding: bool,
    ) -> Result<Vec<Analysis>, EncoderError> {
        self.submit_job(texts, sentiment, embedding, None).await
    }

    async fn submit_job(
        &self,
        texts: Vec<String>,
        sentiment: bool,
        embedding: bool,
        follow_up: Option<FeaturesFollowUp>,
    ) -> Result<Vec<Analysis>, EncoderError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        debug_assert!(follow_up.is_none() || (texts.len() == 1 && embedding));
        let (reply, result) = oneshot::channel();
        let job = EmbedJob {
            texts,
            sentiment,
            embedding,
            reply,
            follow_up,
        };
        // `send` blocks only while the bounded queue is full; do that waiting off the runtime.
        let jobs = self.jobs.clone();
        match jobs.try_send(job) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || jobs.send(job))
                    .await
                    .map_err(|_| EncoderError::WorkersGone)?
                    .map_err(|_| EncoderError::WorkersGone)?;
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                return Err(EncoderError::WorkersGone)
            }
        }
        result.await.map_err(|_| EncoderError::WorkersGone)?
    }

    pub fn stats(&self) -> &EncoderStats {
        &self.stats
    }
}

/// Split `items` into at most `parts` runs of nearly equal length, in order (none empty).
fn split_evenly<T>(mut items: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let parts = parts.clamp(1, items.len().max(1));
    let mut runs = Vec::with_capacity(parts);
    for remaining_parts in (1..=parts).rev() {
        let take = items.len().div_ceil(remaining_parts);
        let rest = items.split_off(take);
        runs.push(std::mem::replace(&mut items, rest));
    }
    runs.retain(|run| !run.is_empty());
    runs
}

/// Lower the calling thread's scheduling priority to `nice` (see [`EncoderOptions::nice`]). A
/// thread that cannot keeps its priority, with a warning: inference works the same.
fn yield_to_other_threads(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // On Linux the nice value belongs to a thread, and PRIO_PROCESS with a thread id sets
        // that thread's alone.
        let thread = current_thread_id() as libc::id_t;
        // SAFETY: setpriority takes plain integers and touches no memory of ours.
        let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, thread, nice) };
        if result != 0 {
            tracing::warn!(
                nice,
                error = %std::io::Error::last_os_error(),
                "could not lower an encoder thread's priority"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    tracing::warn!(nice, "encoder.nice is applied on Linux only");
}

/// The calling thread's operating-system id (Linux; 0 elsewhere).
fn current_thread_id() -> i64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes nothing and cannot fail.
        i64::from(unsafe { libc::gettid() })
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

fn run_worker(
    mut encoder: Encoder,
    jobs: Receiver<EmbedJob>,
    stats: Arc<EncoderStats>,
    max_batch: usize,
) {
    // Ends when every EncoderPool handle is dropped.
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        let mut queued_texts = batch[0].texts.len();
        // Micro-batching: take whatever else is already waiting, up to one model batch.
        while queued_texts < max_batch {
            match jobs.try_recv() {
                Ok(job) => {
                    queued_texts += job.texts.len();
                    batch.push(job);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let started = Instant::now();
        let texts: Vec<&str> = batch
            .iter()
            .flat_map(|job| job.texts.iter().map(String::as_str))
            .collect();
        let with_sentiment: Vec<bool> = batch
            .iter()
            .flat_map(|job| std::iter::repeat_n(job.sentiment, job.texts.len()))
            .collect();
        let with_embedding: Vec<bool> = batch
            .iter()
            .flat_map(|job| std::iter::repeat_n(job.embedding, job.texts.len()))
            .collect();
        let result = encoder.analyze(&texts, &with_sentiment, &with_embedding);
        record(&stats, texts.len(), started.elapsed());
        match result {
            Ok(mut analyses) => {
                // Hand each job its slice, in order; follow-ups run once every reply is out.
                let mut follow_ups = Vec::new();
                for job in batch.into_iter().rev() {
                    let tail = analyses.split_off(analyses.len() - job.texts.len());
                    if let (Some(follow_up), Some(analysis)) = (job.follow_up, tail.first()) {
                        follow_ups.push((follow_up, analysis.intent_features.clone()));
                    }
                    let _ = job.reply.send(Ok(tail));
                }
                for (follow_up, features) in follow_ups.into_iter().rev() {
                    // A panic stays in the follow-up (its channel reports it to its caller);
                    // the worker goes on to the next job.
                    if let Err(panic) = crate::cpu::run_inline(|| follow_up(&features)) {
                        tracing::warn!(error = %panic, "encoder follow-up failed");
                    }
                }
            }
            Err(err) => {
                for job in batch {
                    let _ = job.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

fn record(stats: &EncoderStats, texts: usize, elapsed: Duration) {
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.texts.fetch_add(texts as u64, Ordering::Relaxed);
    stats
        .busy_micros
        .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn own_nice() -> i32 {
        // SAFETY: plain integers in and out.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    /// The encoder's threads yield; the rest of the process does not, and a thread an encoder
    /// thread starts (ONNX Runtime's, with intra_threads > 1) yields as it does.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_lowered_priority_is_the_calling_threads_and_its_childrens_only() {
        let before = own_nice();
        let (own, child) = std::thread::spawn(move || {
            yield_to_other_threads((before + 3).min(19));
            let child = std::thread::spawn(own_nice).join().unwrap();
            (own_nice(), child)
        })
        .join()
        .unwrap();
        let lowered = (before + 3).min(19);
        assert_eq!((own, child), (lowered, lowered));
        assert_eq!(own_nice(), before, "the test's own thread is untouched");
        let unchanged = std::thread::spawn(|| {
            yield_to_other_threads(0);
            own_nice()
        })
        .join()
        .unwrap();
        assert_eq!(unchanged, before);
    }

    #[test]
    fn mean_pool_ignores_padding_and_normalises() {
        let mut hidden = vec![0f32; 3 * EMBEDDING_DIM];
        hidden[0] = 1.0; // token 0
        hidden[EMBEDDING_DIM + 1] = 1.0; // token 1
        hidden[2 * EMBEDDING_DIM + 2] = 100.0; // padding: must not count
        let pooled = mean_pool(&hidden, &[1, 1, 0]);
        let expected = 1.0 / 2f32.sqrt();
        assert!((pooled[0] - expected).abs() < 1e-6);
        assert!((pooled[1] - expected).abs() < 1e-6);
        assert_eq!(pooled[2], 0.0);
        assert!((cosine(&pooled, &pooled) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn requests_are_split_evenly_in_order() {
        assert_eq!(
            split_evenly(vec![1, 2, 3, 4, 5], 2),
            vec![vec![1, 2, 3], vec![4, 5]]
        );
        assert_eq!(split_evenly(vec![1], 2), vec![vec![1]]);
        assert_eq!(split_evenly(Vec::<u8>::new(), 2), Vec::<Vec<u8>>::new());
        assert_eq!(split_evenly(vec![1, 2, 3], 1), vec![vec![1, 2, 3]]);
        assert_eq!(split_evenly(vec![1, 2], 0), vec![vec![1, 2]]);
    }

    #[test]
    fn layer_4_is_pooled_over_the_words_between_cls_and_sep() {
        // [CLS] help [SEP] pad: only "help" counts.
        assert_eq!(words_only(&[1, 1, 1, 0]), vec![0, 1, 0, 0]);
        assert_eq!(words_only(&[1, 1, 1, 1, 1]), vec![0, 1, 1, 1, 0]);
        // Nothing between them (an empty text): the two stay, so the mean is not empty.
        assert_eq!(words_only(&[1, 1]), vec![1, 1]);
    }

    #[test]
    fn intent_features_put_layer_4_beside_the_embedding_at_unit_length() {
        let layer_4 = vec![1.0, 0.0];
        let embedding = vec![0.0, 1.0];
        let features = intent_features(&layer_4, &embedding);
        let half = std::f32::consts::FRAC_1_SQRT_2;
        assert_eq!(features, vec![half, 0.0, 0.0, half]);
        assert!((cosine(&features, &features) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn normalise_leaves_zero_vectors_alone() {
        let mut zero = vec![0f32; 4];
        normalise(&mut zero);
        assert_eq!(zero, vec![0.0; 4]);
    }
}
