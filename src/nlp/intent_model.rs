//! The trained intent recogniser: the business's intents (`intents.yaml`) plus the classifier
//! trained on their examples. Training embeds every example with the same encoder the server uses,
//! fits the classifier with cross-validated calibration and threshold (see `classifier`), and
//! caches the result under the data directory, keyed by a hash of the intents file, the encoder
//! model and the training options: a restart with an unchanged file loads in milliseconds.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::assets::sha256_hex;
use crate::nlp::classifier::{self, ClassifierError, FitOptions, IntentModel, TrainingSet};
use crate::nlp::encoder::{Embedding, Encoded, EncoderError, EncoderPool, IntentFeatures};
use crate::nlp::intents::{IntentSpec, IntentsError, IntentsFile};

/// Bump when the cached format or the training recipe changes meaning.
const CACHE_VERSION: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum IntentModelError {
    #[error(transparent)]
    Intents(#[from] IntentsError),
    #[error("embedding the intent examples failed: {0}")]
    Encoder(#[from] EncoderError),
    #[error("training the intent classifier failed: {0}")]
    Training(#[from] ClassifierError),
    #[error("intent model cache {path}: {reason}")]
    Cache { path: String, reason: String },
}

/// How the current model came about; shown by `baton intents train` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrainingInfo {
    pub intents: usize,
    pub examples: usize,
    pub out_of_scope_examples: usize,
    /// The learned default out-of-scope threshold on the in-scope score.
    pub learned_threshold: f32,
    /// Cross-validated accuracy with no threshold (how separable the examples are).
    pub cross_validated_accuracy: f32,
    /// Share of held-out in-scope examples accepted at the learned threshold.
    pub held_out_acceptance: f32,
    /// Held-out out-of-scope recall at the learned threshold, when out-of-scope examples exist.
    pub held_out_oos_recall: Option<f32>,
    pub embed_millis: u64,
    pub train_millis: u64,
    /// sha256 of the cache key material.
    pub key: String,
}

#[derive(Serialize, Deserialize)]
struct CachedModel {
    version: u32,
    key: String,
    info: TrainingInfo,
    model: IntentModel,
    centroids: Vec<Embedding>,
}

/// One intent with its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntentScore {
    pub name: String,
    pub confidence: f32,
}

/// The classifier's reading of one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntentResult {
    pub intent: IntentScore,
    pub alternatives: Vec<IntentScore>,
    pub in_scope_score: f32,
    pub out_of_scope: bool,
}

pub struct IntentRecognizer {
    file: IntentsFile,
    model: IntentModel,
    info: TrainingInfo,
    from_cache: bool,
    /// Per intent, the normalised mean of its examples' embeddings: what a message "about" the
    /// intent looks like, used to steer retrieval when the intent is clear but the message's own
    /// words find little.
    centroids: Vec<Embedding>,
}

impl IntentRecognizer {
    /// Load the cached model for this intents file, or train (and cache) one.
    pub async fn load_or_train(
        intents_path: &Path,
        cache_dir: &Path,
        encoder: &EncoderPool,
        encoder_digest: &str,
        options: &FitOptions,
    ) -> Result<Self, IntentModelError> {
        let (file, bytes) = IntentsFile::read(intents_path)?;
        let origin = intents_path.display().to_string();
        for warning in &file.warnings {
            tracing::warn!("{}", warning.display(&origin));
        }
        let key = cache_key(&bytes, encoder_digest, options);
        let cache_path = cache_dir.join(format!("intents-{}.json", &key[..16]));
        if let Some(cached) = read_cache(&cache_path, &key) {
            tracing::info!(path = %cache_path.display(), "loaded cached intent model");
            return Ok(Self {
                file,
                model: cached.model,
                info: cached.info,
                from_cache: true,
                centroids: cached.centroids,
            });
        }
        let recognizer = Self::train(file, encoder, options, key).await?;
        recognizer.write_cache(&cache_path)?;
        Ok(recognizer)
    }

    /// Train from a parsed intents file (no cache).
    pub async fn train(
        file: IntentsFile,
        encoder: &EncoderPool,
        options: &FitOptions,
        key: String,
    ) -> Result<Self, IntentModelError> {
        let started = Instant::now();
        let (texts, _) = training_texts(&file);
        let out_of_scope_texts = out_of_scope_texts(&file);
        let examples = texts.len();
        let mut all = texts;
        all.extend(out_of_scope_texts);
        let mut encoded = encoder.encode_many(all).await?;
        let out_of_scope = encoded
            .split_off(examples)
            .into_iter()
            .map(|text| text.intent_features)
            .collect();
        let embed_millis = started.elapsed().as_millis() as u64;
        Self::train_embedded(file, encoded, out_of_scope, options, key, embed_millis).await
    }

    /// Train from examples already encoded, in the order of [`training_texts`] and
    /// [`out_of_scope_texts`]: the classifier reads their intent features, the centroids that
    /// steer retrieval their embeddings. Evaluations use this to encode with a progress bar; the
    /// training is exactly the server's.
    pub async fn train_embedded(
        file: IntentsFile,
        encoded: Vec<Encoded>,
        out_of_scope: Vec<IntentFeatures>,
        options: &FitOptions,
        key: String,
        embed_millis: u64,
    ) -> Result<Self, IntentModelError> {
        let (_, labels) = training_texts(&file);
        let examples = labels.len();
        let out_of_scope_count = out_of_scope.len();
        let class_names: Vec<String> = file.intents.iter().map(|i| i.name.clone()).collect();
        let (embeddings, features): (Vec<Embedding>, Vec<IntentFeatures>) = encoded
            .into_iter()
            .map(|text| (text.embedding, text.intent_features))
            .unzip();
        let centroids = class_centroids(&embeddings, &labels, class_names.len());
        drop(embeddings);
        let options = options.clone();
        let trained = Instant::now();
        // Training is CPU-bound for a second or more: keep it off the async runtime.
        let fitted = tokio::task::spawn_blocking(move || {
            let set = TrainingSet {
                embeddings: &features,
                labels: &labels,
                class_names: &class_names,
                out_of_scope: &out_of_scope,
            };
            classifier::fit(&set, &options)
        })
        .await
        .map_err(|e| ClassifierError::InvalidOption(format!("training task failed: {e}")))??;
        let at = fitted.threshold.at_threshold;
        let info = TrainingInfo {
            intents: file.intents.len(),
            examples,
            out_of_scope_examples: out_of_scope_count,
            learned_threshold: fitted.threshold.threshold,
            cross_validated_accuracy: fitted.cross_validated_accuracy,
            held_out_acceptance: at.in_scope_acceptance,
            held_out_oos_recall: at.oos_recall,
            embed_millis,
            train_millis: trained.elapsed().as_millis() as u64,
            key,
        };
        tracing::info!(
            intents = info.intents,
            examples = info.examples,
            threshold = info.learned_threshold,
            embed_ms = info.embed_millis,
            train_ms = info.train_millis,
            "trained intent classifier"
        );
        Ok(Self {
            file,
            model: fitted.model,
            info,
            from_cache: false,
            centroids,
        })
    }

    fn write_cache(&self, path: &Path) -> Result<(), IntentModelError> {
        let cache_error = |reason: String| IntentModelError::Cache {
            path: path.display().to_string(),
            reason,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| cache_error(e.to_string()))?;
        }
        let cached = CachedModel {
            version: CACHE_VERSION,
            key: self.info.key.clone(),
            info: self.info.clone(),
            model: self.model.clone(),
            centroids: self.centroids.clone(),
        };
        let json = serde_json::to_vec(&cached).map_err(|e| cache_error(e.to_string()))?;
        // Write then rename, so a crash never leaves a half-written cache behind.
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, json).map_err(|e| cache_error(e.to_string()))?;
        std::fs::rename(&temporary, path).map_err(|e| cache_error(e.to_string()))?;
        Ok(())
    }

    pub fn info(&self) -> &TrainingInfo {
        &self.info
    }

    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    pub fn intents(&self) -> &IntentsFile {
        &self.file
    }

    pub fn spec(&self, name: &str) -> Option<&IntentSpec> {
        self.file.get(name)
    }

    /// Classify one embedding. `threshold` overrides the learned out-of-scope threshold.
    pub fn classify(
        &self,
        embedding: &[f32],
        alternatives: usize,
        threshold: Option<f32>,
    ) -> Result<IntentResult, ClassifierError> {
        let prediction = self.model.predict(embedding)?;
        let names = self.model.class_names();
        let score = |(index, probability): (usize, f32)| IntentScore {
            name: names[index].clone(),
            confidence: probability,
        };
        let out_of_scope = match threshold {
            Some(threshold) => prediction.in_scope_score < threshold,
            None => prediction.out_of_scope,
        };
        Ok(IntentResult {
            intent: score(prediction.top()),
            alternatives: prediction
                .ranked
                .iter()
                .skip(1)
                .take(alternatives)
                .copied()
                .map(score)
                .collect(),
            in_scope_score: prediction.in_scope_score,
            out_of_scope,
        })
    }

    /// Whether one classification is small enough to run without the blocking pool
    /// (`crate::cpu`): on the encoder thread after a message's embedding, or on the async
    /// runtime for a sentence of a longer message. A few hundred examples are; CLINC150's
    /// 15,000 are not.
    pub fn classifies_inline(&self) -> bool {
        self.model.multiply_adds_per_prediction() <= crate::cpu::INLINE_BUDGET_MULTIPLY_ADDS
    }

    /// The normalised mean embedding of an intent's examples.
    pub fn centroid(&self, name: &str) -> Option<&Embedding> {
        let index = self.file.intents.iter().position(|i| i.name == name)?;
        self.centroids.get(index)
    }

    /// The model itself, for evaluations.
    pub fn model(&self) -> &IntentModel {
        &self.model
    }
}

/// Per class, the normalised mean of its examples' embeddings.
pub(crate) fn class_centroids(
    embeddings: &[Embedding],
    labels: &[usize],
    classes: usize,
) -> Vec<Embedding> {
    let dimension = embeddings.first().map(Vec::len).unwrap_or(0);
    let mut sums = vec![vec![0f32; dimension]; classes];
    for (embedding, &label) in embeddings.iter().zip(labels) {
        if let Some(sum) = sums.get_mut(label) {
            for (total, value) in sum.iter_mut().zip(embedding) {
                *total += value;
            }
        }
    }
    for sum in &mut sums {
        crate::nlp::encoder::normalise(sum);
    }
    sums
}

/// The in-scope examples of an intents file (blank ones skipped) and each one's intent index.
pub fn training_texts(file: &IntentsFile) -> (Vec<String>, Vec<usize>) {
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for (label, intent) in file.intents.iter().enumerate() {
        for example in intent.examples.iter().filter(|e| !e.trim().is_empty()) {
            texts.push(example.clone());
            labels.push(label);
        }
    }
    (texts, labels)
}

/// The out-of-scope examples of an intents file (blank ones skipped).
pub fn out_of_scope_texts(file: &IntentsFile) -> Vec<String> {
    file.out_of_scope
        .iter()
        .filter(|e| !e.trim().is_empty())
        .cloned()
        .collect()
}

fn cache_key(intents_bytes: &[u8], encoder_digest: &str, options: &FitOptions) -> String {
    let mut material = Vec::new();
    material.extend_from_slice(
        format!("baton-intents-v{CACHE_VERSION}\n{encoder_digest}\n").as_bytes(),
    );
    // Thread count does not change results (training is deterministic across thread counts).
    let mut options = options.clone();
    options.train.threads = 1;
    material.extend_from_slice(
        serde_json::to_string(&options)
            .unwrap_or_default()
            .as_bytes(),
    );
    material.push(b'\n');
    material.extend_from_slice(intents_bytes);
    sha256_hex(&material)
}

fn read_cache(path: &Path, key: &str) -> Option<CachedModel> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<CachedModel>(&bytes) {
        Ok(cached) if cached.version == CACHE_VERSION && cached.key == key => Some(cached),
        Ok(_) => None,
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "ignoring an unreadable intent model cache");
            None
        }
    }
}

/// Where cached intent models live under the data directory.
pub fn cache_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("cache")
}
