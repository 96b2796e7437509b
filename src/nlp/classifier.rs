//! Intent classification on sentence embeddings, with an out-of-scope score.
//!
//! Pure computation: no I/O and no knowledge of how embeddings are produced, so the same code
//! serves the server (train at start from `intents.yaml`), `baton eval intents`, and offline
//! checks.
//!
//! # Method (chosen on CLINC150 train/val; the figures are in `examples/clinc_check.rs`)
//! * **Classifier**: multinomial logistic regression (softmax) on L2-normalised embeddings, trained
//!   with mini-batch Adam, a cosine-decayed learning rate and a weak L2 penalty. It matches a
//!   fully converged scikit-learn logistic regression on the same embeddings (CLINC150 in-scope
//!   accuracy 95.4% vs 95.5%), and 15,000 examples train in about 0.35 s on one core.
//! * **Calibrated probabilities**: the ranked intent probabilities use a temperature fitted on
//!   held-out logits (cross-validation, or a held-out set through [`IntentModel::calibrate`]).
//! * **In-scope score**: `(p_max + w * knn) / (1 + w)`, where `p_max` is the top in-scope
//!   probability at the *training* temperature and `knn` is the mean cosine similarity to the `k`
//!   nearest training examples (any intent). The top probability alone cannot tell "unlike every
//!   example" from "like examples of one intent"; the neighbour similarity can, and on CLINC150 it
//!   moves the whole accuracy / out-of-scope-recall curve up by about one point at 75% recall.
//!   The training temperature is kept for the score because the sharper, calibrated one separates
//!   out-of-scope queries measurably worse (it saturates `p_max` near 1).
//!   If out-of-scope examples are supplied they become one extra softmax output, excluded from
//!   the ranking, and the score is multiplied by `1 - p(out of scope)`.
//! * **Default threshold** ([`choose_threshold`]): accept a target fraction (default 98%) of
//!   held-out in-scope examples. Optionally ([`ThresholdRule::acceptance_band`], off by default),
//!   when held-out out-of-scope examples exist, move the threshold within a band of acceptance to
//!   maximise `in-scope accuracy + weight * out-of-scope recall`. It is off because with 100
//!   out-of-scope examples (CLINC150 val) the objective is flat enough that tiny changes in the
//!   scores move the threshold by a whole point of acceptance: a +-1 point band gave 94.6% / 76.8%
//!   on one set of embeddings and 94.1% / 82.2% on embeddings differing by < 1e-4.
//!   [`fit`] gets the held-out examples by stratified k-fold cross-validation, so it works for a
//!   business file with in-scope examples only; it asks a little more of cross-validated
//!   examples because they are easier than fresh messages (see
//!   [`FitOptions::cross_validation_rejection_scale`]).
//!
//! Training is deterministic for a given seed, whatever the thread count: each model trains on one
//! thread, and the parallel loops (cross-validation folds, chunks of queries) compute fixed,
//! independent pieces that are put back together in order.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Fewest examples an intent may have. An intent with a single example trains; cross-validation
/// never holds that example out (its intent would vanish from the fold model and its score would
/// look out of scope), so it has no weight in the choice of the threshold.
pub const MIN_EXAMPLES_PER_CLASS: usize = 1;

/// Fold of an example that is never held out (the only example of its class).
const NEVER_HELD_OUT: usize = usize::MAX;

/// The threshold when cross-validation holds nothing out (every intent has one example): the
/// threshold cross-validation chose for CLINC150 with 5 examples per intent, 0.233 to 0.247 over
/// three selections (`baton eval intents --per-intent 5 --seed 0|1|2`, evals/RESULTS.md), rounded
/// down. Lenient on purpose: a file this thin says little about what its customers write.
pub const FALLBACK_THRESHOLD: f32 = 0.23;

/// Query rows scored per matrix product. Fixed (not derived from the thread count) so that results
/// do not depend on how many threads run.
const QUERY_CHUNK_ROWS: usize = 64;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum ClassifierError {
    #[error("no training examples")]
    EmptyInput,
    #[error("need at least 2 intents to train a classifier, got {0}")]
    TooFewClasses(usize),
    #[error("intent `{name}` has {count} examples; at least {min} are needed")]
    TooFewExamples {
        name: String,
        count: usize,
        min: usize,
    },
    #[error("{embeddings} embeddings but {labels} labels")]
    LengthMismatch { embeddings: usize, labels: usize },
    #[error("embedding {index} has dimension {found}, expected {expected}")]
    DimensionMismatch {
        index: usize,
        found: usize,
        expected: usize,
    },
    #[error("embedding {index} contains NaN or infinity")]
    NonFinite { index: usize },
    #[error("embedding {index} is all zeros and has no direction")]
    ZeroVector { index: usize },
    #[error("label {label} of example {index} is not one of the {classes} intents")]
    LabelOutOfRange {
        index: usize,
        label: usize,
        classes: usize,
    },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("stored intent model is inconsistent: {0}")]
    CorruptModel(String),
}

type Result<T> = std::result::Result<T, ClassifierError>;

/// How the classifier is trained. The defaults were chosen on CLINC150 train/val.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainOptions {
    /// L2 penalty on the weights, per example (the loss is the mean cross-entropy). Weak on
    /// purpose: 1e-4 cost 1.4 points of CLINC150 val accuracy, and the step budget already
    /// limits how far the weights grow.
    pub l2_penalty: f32,
    /// Passes over the data; see also `min_steps`.
    pub epochs: usize,
    /// Fewest optimiser steps, so that a small intents file (a few hundred examples, one batch)
    /// is trained as far as a large one rather than for `epochs` steps.
    pub min_steps: usize,
    pub batch_size: usize,
    /// Peak Adam learning rate, decayed to zero along a cosine.
    pub learning_rate: f32,
    pub seed: u64,
    /// Nearest training examples averaged for the in-scope score.
    pub neighbours: usize,
    /// Weight `w` of the neighbour similarity in the in-scope score. 2 was best on CLINC150 val
    /// among 0, 0.5, 1, 2, 3, 4 (0 is the plain top probability).
    pub neighbour_weight: f32,
    /// Worker threads for cross-validation folds and batch scoring; results do not depend on it.
    pub threads: usize,
    /// Weight of the prototype score added to each intent's logit: `weight * PROTOTYPE_SCALE *
    /// cos(message, mean of the intent's examples)`. With a few examples per intent the
    /// regression has little to go on and the nearest prototype is the more robust guess; with
    /// many it changes little. 0 turns it off. See evals/RESULTS.md for how it was chosen.
    pub prototype_weight: f32,
}

/// Scale of the prototype cosine in logit units: cosines between a message and the intents'
/// prototypes differ by tenths, logits by units.
const PROTOTYPE_SCALE: f32 = 20.0;

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            l2_penalty: 1e-5,
            epochs: 10,
            min_steps: 600,
            batch_size: 256,
            learning_rate: 0.05,
            seed: 0x5eed,
            neighbours: 5,
            neighbour_weight: 2.0,
            threads: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            prototype_weight: 0.0,
        }
    }
}

impl TrainOptions {
    fn validate(&self) -> Result<()> {
        let invalid = |what: &str| Err(ClassifierError::InvalidOption(what.to_string()));
        if self.batch_size == 0 {
            return invalid("batch_size must be at least 1");
        }
        if self.epochs == 0 && self.min_steps == 0 {
            return invalid("epochs or min_steps must be at least 1");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return invalid("learning_rate must be a positive number");
        }
        if !(self.l2_penalty.is_finite() && self.l2_penalty >= 0.0) {
            return invalid("l2_penalty must be a non-negative number");
        }
        if self.neighbours == 0 {
            return invalid("neighbours must be at least 1");
        }
        if !(self.neighbour_weight.is_finite() && self.neighbour_weight >= 0.0) {
            return invalid("neighbour_weight must be a non-negative number");
        }
        if self.threads == 0 {
            return invalid("threads must be at least 1");
        }
        if !(self.prototype_weight.is_finite() && self.prototype_weight >= 0.0) {
            return invalid("prototype_weight must be a non-negative number");
        }
        Ok(())
    }
}

/// Labelled examples to learn from. `out_of_scope` may be empty: the method works without it.
#[derive(Debug, Clone, Copy)]
pub struct TrainingSet<'a> {
    pub embeddings: &'a [Vec<f32>],
    /// Index into `class_names` for each embedding.
    pub labels: &'a [usize],
    pub class_names: &'a [String],
    /// Example messages the business wants handed off rather than answered.
    pub out_of_scope: &'a [Vec<f32>],
}

/// Row-major matrix of unit-length rows.
#[derive(Debug, Clone)]
struct UnitRows {
    rows: usize,
    dim: usize,
    data: Vec<f32>,
}

impl UnitRows {
    /// Checks and L2-normalises. The encoder already normalises, but cosine similarity and the
    /// learned weights assume it, so it is enforced here rather than trusted.
    fn from_vectors(vectors: &[Vec<f32>], expected_dim: Option<usize>) -> Result<Self> {
        let dim = match (expected_dim, vectors.first()) {
            (Some(dim), _) => dim,
            (None, Some(first)) => first.len(),
            (None, None) => return Err(ClassifierError::EmptyInput),
        };
        let mut data = Vec::with_capacity(vectors.len() * dim);
        for (index, vector) in vectors.iter().enumerate() {
            if vector.len() != dim || dim == 0 {
                return Err(ClassifierError::DimensionMismatch {
                    index,
                    found: vector.len(),
                    expected: dim,
                });
            }
            if vector.iter().any(|value| !value.is_finite()) {
                return Err(ClassifierError::NonFinite { index });
            }
            let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
            if norm == 0.0 || !norm.is_finite() {
                return Err(ClassifierError::ZeroVector { index });
            }
            data.extend(vector.iter().map(|value| value / norm));
        }
        Ok(Self {
            rows: vectors.len(),
            dim,
            data,
        })
    }

    fn row(&self, index: usize) -> &[f32] {
        &self.data[index * self.dim..(index + 1) * self.dim]
    }

    fn select(&self, indices: &[usize]) -> Self {
        let mut data = Vec::with_capacity(indices.len() * self.dim);
        for &index in indices {
            data.extend_from_slice(self.row(index));
        }
        Self {
            rows: indices.len(),
            dim: self.dim,
            data,
        }
    }
}

/// `c (m x n, row-major, contiguous) = a (m x k) * b (k x n) + beta * c`, where `a` and `b` are
/// described by (row stride, column stride) so transposes cost nothing.
#[allow(clippy::too_many_arguments)]
fn gemm(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (a_row_stride, a_col_stride): (usize, usize),
    b: &[f32],
    (b_row_stride, b_col_stride): (usize, usize),
    beta: f32,
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, row_stride: usize, col_stride: usize| {
        (rows - 1) * row_stride + (cols - 1) * col_stride
    };
    if k > 0 {
        assert!(last(m, k, a_row_stride, a_col_stride) < a.len());
        assert!(last(k, n, b_row_stride, b_col_stride) < b.len());
    }
    assert!(m * n <= c.len());
    // SAFETY: the asserts above keep every element the kernel reads inside `a` and `b`, and every
    // element it writes inside `c` (contiguous, row stride n); the slices do not alias because `c`
    // is borrowed mutably.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            a_row_stride as isize,
            a_col_stride as isize,
            b.as_ptr(),
            b_row_stride as isize,
            b_col_stride as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Runs `job(i)` for every `i < jobs` on up to `threads` threads and returns the results in order.
fn run_jobs<T: Send>(jobs: usize, threads: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let workers = threads.clamp(1, jobs.max(1));
    if workers == 1 {
        return (0..jobs).map(job).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..jobs).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= jobs {
                    break;
                }
                let result = job(index);
                results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|result| result.expect("every job index below `jobs` ran"))
        .collect()
}

fn softmax_in_place(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for value in values.iter_mut() {
        *value = (*value - max).exp();
        sum += *value;
    }
    for value in values.iter_mut() {
        *value /= sum;
    }
}

/// Softmax-regression parameters: `weights` is `dim x outputs`, row-major.
#[derive(Debug, Clone)]
struct Linear {
    dim: usize,
    outputs: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

/// Logits `x * weights + bias` for `rows` rows of `x`, `rows x bias.len()` row-major.
fn linear_logits(weights: &[f32], bias: &[f32], dim: usize, x: &[f32], rows: usize) -> Vec<f32> {
    let outputs = bias.len();
    let mut logits = Vec::with_capacity(rows * outputs);
    for _ in 0..rows {
        logits.extend_from_slice(bias);
    }
    gemm(
        (rows, dim, outputs),
        x,
        (dim, 1),
        weights,
        (outputs, 1),
        1.0,
        &mut logits,
    );
    logits
}

impl Linear {
    fn logits(&self, x: &[f32], rows: usize) -> Vec<f32> {
        linear_logits(&self.weights, &self.bias, self.dim, x, rows)
    }

    /// Writes the gradient of the summed cross-entropy of these rows, times `scale`, into
    /// `grad_weights` and `grad_bias` (both overwritten).
    fn gradient(
        &self,
        x: &[f32],
        labels: &[usize],
        scale: f32,
        grad_weights: &mut [f32],
        grad_bias: &mut [f32],
    ) {
        grad_bias.fill(0.0);
        let rows = labels.len();
        let mut residual = self.logits(x, rows);
        for (row, &label) in residual.chunks_mut(self.outputs).zip(labels) {
            softmax_in_place(row);
            row[label] -= 1.0;
            for (value, bias) in row.iter_mut().zip(grad_bias.iter_mut()) {
                *value *= scale;
                *bias += *value;
            }
        }
        // grad_weights = x^T (dim x rows) * residual (rows x outputs)
        gemm(
            (self.dim, rows, self.outputs),
            x,
            (1, self.dim),
            &residual,
            (self.outputs, 1),
            0.0,
            grad_weights,
        );
    }
}

/// First and second moment estimates for Adam.
struct AdamState {
    first: Vec<f32>,
    second: Vec<f32>,
}

impl AdamState {
    fn new(len: usize) -> Self {
        Self {
            first: vec![0.0; len],
            second: vec![0.0; len],
        }
    }

    fn step(&mut self, params: &mut [f32], grads: &[f32], learning_rate: f32, step: i32) {
        const BETA1: f32 = 0.9;
        const BETA2: f32 = 0.999;
        const EPSILON: f32 = 1e-8;
        let first_correction = 1.0 - BETA1.powi(step);
        let second_correction = 1.0 - BETA2.powi(step);
        for (((param, grad), first), second) in params
            .iter_mut()
            .zip(grads)
            .zip(self.first.iter_mut())
            .zip(self.second.iter_mut())
        {
            *first = BETA1 * *first + (1.0 - BETA1) * grad;
            *second = BETA2 * *second + (1.0 - BETA2) * grad * grad;
            *param -= learning_rate * (*first / first_correction)
                / ((*second / second_correction).sqrt() + EPSILON);
        }
    }
}

/// Mini-batch Adam on the mean cross-entropy plus `l2_penalty / 2 * |W|^2`, on one thread: a
/// step is about a millisecond of work, too little to share between threads (splitting it
/// measured no faster on two idle cores and up to five times slower when the other core was
/// busy). Parallelism comes from training cross-validation folds side by side instead.
fn train_linear(x: &UnitRows, labels: &[usize], outputs: usize, opts: &TrainOptions) -> Linear {
    let dim = x.dim;
    let rows = x.rows;
    let batch_size = opts.batch_size.min(rows);
    let steps_per_epoch = rows.div_ceil(batch_size);
    let total_steps = (opts.epochs * steps_per_epoch).max(opts.min_steps);
    let mut model = Linear {
        dim,
        outputs,
        weights: vec![0.0; dim * outputs],
        bias: vec![0.0; outputs],
    };
    let mut weight_moments = AdamState::new(model.weights.len());
    let mut bias_moments = AdamState::new(outputs);
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(&mut rng);
    let mut position = 0;
    let mut batch = vec![0.0f32; batch_size * dim];
    let mut batch_labels = vec![0usize; batch_size];
    let mut batch_grad_weights = vec![0.0f32; dim * outputs];
    let mut grad_weights = vec![0.0f32; dim * outputs];
    let mut grad_bias = vec![0.0f32; outputs];
    let scale = 1.0 / batch_size as f32;

    for step in 0..total_steps {
        // Every batch is full-size: a reshuffle drops the tail rather than training on a runt
        // batch whose gradient would be noisier than the rest.
        if position + batch_size > rows {
            order.shuffle(&mut rng);
            position = 0;
        }
        for (slot, &example) in order[position..position + batch_size].iter().enumerate() {
            batch[slot * dim..(slot + 1) * dim].copy_from_slice(x.row(example));
            batch_labels[slot] = labels[example];
        }
        position += batch_size;

        model.gradient(
            &batch,
            &batch_labels,
            scale,
            &mut batch_grad_weights,
            &mut grad_bias,
        );
        for ((grad, batch_grad), weight) in grad_weights
            .iter_mut()
            .zip(&batch_grad_weights)
            .zip(&model.weights)
        {
            *grad = batch_grad + opts.l2_penalty * weight;
        }

        let progress = step as f32 / total_steps as f32;
        let learning_rate =
            opts.learning_rate * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
        let adam_step = i32::try_from(step + 1).unwrap_or(i32::MAX);
        weight_moments.step(&mut model.weights, &grad_weights, learning_rate, adam_step);
        bias_moments.step(&mut model.bias, &grad_bias, learning_rate, adam_step);
    }
    model
}

/// Keeps the `k` largest values offered, in descending order.
struct TopK {
    best: Vec<f32>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            best: vec![f32::NEG_INFINITY; k],
        }
    }

    fn reset(&mut self) {
        self.best.fill(f32::NEG_INFINITY);
    }

    fn offer(&mut self, value: f32) {
        let k = self.best.len();
        if value > self.best[k - 1] {
            let mut slot = k - 1;
            while slot > 0 && self.best[slot - 1] < value {
                self.best[slot] = self.best[slot - 1];
                slot -= 1;
            }
            self.best[slot] = value;
        }
    }

    fn mean(&self) -> f32 {
        self.best.iter().sum::<f32>() / self.best.len() as f32
    }
}

/// Dot product in eight independent lanes, which the compiler turns into SIMD.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Query chunks smaller than this use plain dot products: a matrix product would first copy
/// (pack) the whole reference matrix, which costs more than the arithmetic for a few queries.
const DIRECT_DOT_MAX_ROWS: usize = 8;

/// Mean cosine similarity of each query to its `k` most similar reference rows.
fn neighbour_similarity(
    queries: &UnitRows,
    reference: &[f32],
    dim: usize,
    k: usize,
    threads: usize,
) -> Vec<f32> {
    let reference_rows = reference.len() / dim;
    let k = k.min(reference_rows);
    if k == 0 {
        return vec![0.0; queries.rows];
    }
    let chunks = queries.rows.div_ceil(QUERY_CHUNK_ROWS);
    let per_chunk = run_jobs(chunks, threads, |chunk| {
        let start = chunk * QUERY_CHUNK_ROWS;
        let rows = QUERY_CHUNK_ROWS.min(queries.rows - start);
        let chunk_queries = &queries.data[start * dim..(start + rows) * dim];
        let mut top = TopK::new(k);
        if rows < DIRECT_DOT_MAX_ROWS {
            return chunk_queries
                .chunks(dim)
                .map(|query| {
                    top.reset();
                    for row in reference.chunks(dim) {
                        top.offer(dot(query, row));
                    }
                    top.mean()
                })
                .collect();
        }
        let mut similarity = vec![0.0f32; rows * reference_rows];
        gemm(
            (rows, dim, reference_rows),
            chunk_queries,
            (dim, 1),
            reference,
            (1, dim),
            0.0,
            &mut similarity,
        );
        similarity
            .chunks(reference_rows)
            .map(|row| {
                top.reset();
                for &value in row {
                    top.offer(value);
                }
                top.mean()
            })
            .collect::<Vec<f32>>()
    });
    per_chunk.into_iter().flatten().collect()
}

/// The combined in-scope score; see the module documentation.
fn in_scope_score(
    logits: &[f32],
    in_scope_classes: usize,
    neighbour_similarity: f32,
    neighbour_weight: f32,
) -> f32 {
    let mut probabilities = logits.to_vec();
    softmax_in_place(&mut probabilities);
    let top_probability = probabilities[..in_scope_classes]
        .iter()
        .copied()
        .fold(0.0, f32::max);
    let out_of_scope_probability = probabilities[in_scope_classes..].iter().sum::<f32>();
    let similarity = neighbour_similarity.clamp(0.0, 1.0);
    (top_probability + neighbour_weight * similarity) / (1.0 + neighbour_weight)
        * (1.0 - out_of_scope_probability)
}

fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (index, value) in values.iter().enumerate() {
        if *value > values[best] {
            best = index;
        }
    }
    best
}

/// See [`IntentModel::linear_export`]. `weights` is `dim x outputs`, row-major, where `outputs` is
/// the number of intents plus one when `has_out_of_scope_output`.
#[derive(Debug, Clone, Serialize)]
pub struct LinearExport {
    pub class_names: Vec<String>,
    pub dim: usize,
    pub has_out_of_scope_output: bool,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub temperature: f32,
    pub threshold: f32,
}

/// A trained intent classifier. Serialises with serde (validated again on load) so it can be
/// cached next to the intents file it came from.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "StoredIntentModel")]
pub struct IntentModel {
    stored: StoredIntentModel,
}

impl Serialize for IntentModel {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.stored.serialize(serializer)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredIntentModel {
    class_names: Vec<String>,
    dim: usize,
    /// One extra softmax output, after the intents, learned from out-of-scope examples.
    has_out_of_scope_output: bool,
    /// `dim x outputs`, row-major.
    weights: Vec<f32>,
    bias: Vec<f32>,
    /// Divides the logits for the ranked (calibrated) probabilities only.
    temperature: f32,
    /// Predictions whose in-scope score is below this are flagged out of scope.
    threshold: f32,
    /// Unit-length in-scope training embeddings, `rows x dim`, for the neighbour similarity.
    reference: Vec<f32>,
    neighbours: usize,
    neighbour_weight: f32,
    threads: usize,
    /// Unit-length mean of each intent's examples, `classes x dim`; empty when
    /// `prototype_weight` is 0.
    #[serde(default)]
    prototypes: Vec<f32>,
    #[serde(default)]
    prototype_weight: f32,
}

impl TryFrom<StoredIntentModel> for IntentModel {
    type Error = ClassifierError;

    fn try_from(stored: StoredIntentModel) -> Result<Self> {
        let corrupt = |what: String| Err(ClassifierError::CorruptModel(what));
        let classes = stored.class_names.len();
        let outputs = classes + usize::from(stored.has_out_of_scope_output);
        if classes < 2 {
            return corrupt(format!("{classes} intents"));
        }
        if stored.dim == 0 {
            return corrupt("dimension 0".to_string());
        }
        if stored.weights.len() != stored.dim * outputs || stored.bias.len() != outputs {
            return corrupt(format!(
                "{} weights and {} biases for {} dimensions and {outputs} outputs",
                stored.weights.len(),
                stored.bias.len(),
                stored.dim
            ));
        }
        if stored.reference.is_empty() || !stored.reference.len().is_multiple_of(stored.dim) {
            return corrupt(format!(
                "{} reference values for dimension {}",
                stored.reference.len(),
                stored.dim
            ));
        }
        let finite = |values: &[f32]| values.iter().all(|value| value.is_finite());
        if !finite(&stored.weights) || !finite(&stored.bias) || !finite(&stored.reference) {
            return corrupt("NaN or infinity in the parameters".to_string());
        }
        if !(stored.temperature.is_finite() && stored.temperature > 0.0) {
            return corrupt(format!("temperature {}", stored.temperature));
        }
        if !stored.threshold.is_finite() {
            return corrupt(format!("threshold {}", stored.threshold));
        }
        if stored.neighbours == 0 || stored.threads == 0 {
            return corrupt("zero neighbours or threads".to_string());
        }
        if !(stored.neighbour_weight.is_finite() && stored.neighbour_weight >= 0.0) {
            return corrupt(format!("neighbour weight {}", stored.neighbour_weight));
        }
        if !(stored.prototype_weight.is_finite() && stored.prototype_weight >= 0.0)
            || (stored.prototype_weight > 0.0 && stored.prototypes.len() != classes * stored.dim)
            || !finite(&stored.prototypes)
        {
            return corrupt(format!(
                "{} prototype values with weight {} for {classes} intents",
                stored.prototypes.len(),
                stored.prototype_weight
            ));
        }
        Ok(Self { stored })
    }
}

/// The classifier's answer for one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntentPrediction {
    /// Every intent as (class index, calibrated probability), most probable first. The
    /// probabilities are over the intents only and sum to 1.
    pub ranked: Vec<(usize, f32)>,
    /// In [0, 1]; higher means more like the training examples.
    pub in_scope_score: f32,
    /// `in_scope_score` is below the model's threshold.
    pub out_of_scope: bool,
}

impl IntentPrediction {
    /// The most probable intent and its probability.
    pub fn top(&self) -> (usize, f32) {
        self.ranked[0]
    }
}

/// Raw per-query outputs, before calibration.
struct RawScores {
    /// `rows x outputs`, row-major.
    logits: Vec<f32>,
    in_scope_scores: Vec<f32>,
}

impl IntentModel {
    pub fn class_names(&self) -> &[String] {
        &self.stored.class_names
    }

    pub fn dim(&self) -> usize {
        self.stored.dim
    }

    /// Threshold on [`IntentPrediction::in_scope_score`] below which a message is out of scope.
    pub fn threshold(&self) -> f32 {
        self.stored.threshold
    }

    /// Overrides the threshold, e.g. from configuration.
    pub fn set_threshold(&mut self, threshold: f32) -> Result<()> {
        if !threshold.is_finite() {
            return Err(ClassifierError::InvalidOption(format!(
                "threshold {threshold} is not a number"
            )));
        }
        self.stored.threshold = threshold;
        Ok(())
    }

    /// Temperature applied to the logits for the ranked probabilities.
    /// The linear part of the model (logistic regression weights, temperature and threshold),
    /// for the reference service of `baton bench --baseline`, which scores with it alone.
    pub fn linear_export(&self) -> LinearExport {
        LinearExport {
            class_names: self.stored.class_names.clone(),
            dim: self.stored.dim,
            has_out_of_scope_output: self.stored.has_out_of_scope_output,
            weights: self.stored.weights.clone(),
            bias: self.stored.bias.clone(),
            temperature: self.stored.temperature,
            threshold: self.stored.threshold,
        }
    }

    pub fn temperature(&self) -> f32 {
        self.stored.temperature
    }

    /// Training examples the neighbour similarity compares against.
    pub fn reference_examples(&self) -> usize {
        self.stored.reference.len() / self.stored.dim
    }

    fn outputs(&self) -> usize {
        self.stored.bias.len()
    }

    fn raw_scores(&self, queries: &UnitRows) -> RawScores {
        let stored = &self.stored;
        let mut logits = linear_logits(
            &stored.weights,
            &stored.bias,
            stored.dim,
            &queries.data,
            queries.rows,
        );
        if stored.prototype_weight > 0.0 {
            let outputs = self.outputs();
            let scale = stored.prototype_weight * PROTOTYPE_SCALE;
            for (row, query) in logits
                .chunks_mut(outputs)
                .zip(queries.data.chunks(stored.dim))
            {
                for (logit, prototype) in row.iter_mut().zip(stored.prototypes.chunks(stored.dim)) {
                    *logit += scale * dot(query, prototype);
                }
            }
        }
        let similarity = neighbour_similarity(
            queries,
            &stored.reference,
            stored.dim,
            stored.neighbours,
            stored.threads,
        );
        let in_scope_scores = logits
            .chunks(self.outputs())
            .zip(&similarity)
            .map(|(row, &similarity)| {
                in_scope_score(
                    row,
                    stored.class_names.len(),
                    similarity,
                    stored.neighbour_weight,
                )
            })
            .collect();
        RawScores {
            logits,
            in_scope_scores,
        }
    }

    fn prediction(&self, logits: &[f32], in_scope_score: f32) -> IntentPrediction {
        let classes = self.stored.class_names.len();
        let mut probabilities: Vec<f32> = logits[..classes]
            .iter()
            .map(|logit| logit / self.stored.temperature)
            .collect();
        softmax_in_place(&mut probabilities);
        let mut ranked: Vec<(usize, f32)> = probabilities.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        IntentPrediction {
            ranked,
            in_scope_score,
            out_of_scope: in_scope_score < self.stored.threshold,
        }
    }

    pub fn predict(&self, embedding: &[f32]) -> Result<IntentPrediction> {
        let mut predictions = self.predict_batch(std::slice::from_ref(&embedding.to_vec()))?;
        Ok(predictions.remove(0))
    }

    /// Predictions for many messages at once (one matrix product instead of many).
    pub fn predict_batch(&self, embeddings: &[Vec<f32>]) -> Result<Vec<IntentPrediction>> {
        if embeddings.is_empty() {
            return Ok(Vec::new());
        }
        let queries = UnitRows::from_vectors(embeddings, Some(self.stored.dim))?;
        let raw = self.raw_scores(&queries);
        Ok(raw
            .logits
            .chunks(self.outputs())
            .zip(raw.in_scope_scores)
            .map(|(row, score)| self.prediction(row, score))
            .collect())
    }

    /// Scores labelled in-scope examples and out-of-scope examples that the model was not trained
    /// on, for [`choose_threshold`] and [`threshold_curve`].
    pub fn score_held_out(
        &self,
        in_scope: &[Vec<f32>],
        labels: &[usize],
        out_of_scope: &[Vec<f32>],
    ) -> Result<HeldOutScores> {
        check_labels(in_scope.len(), labels, self.stored.class_names.len())?;
        let classes = self.stored.class_names.len();
        let mut held_out = HeldOutScores::default();
        if !in_scope.is_empty() {
            let queries = UnitRows::from_vectors(in_scope, Some(self.stored.dim))?;
            let raw = self.raw_scores(&queries);
            for ((row, score), &gold) in raw
                .logits
                .chunks(self.outputs())
                .zip(raw.in_scope_scores)
                .zip(labels)
            {
                held_out.in_scope.push(ScoredExample {
                    gold,
                    predicted: argmax(&row[..classes]),
                    in_scope_score: score,
                });
            }
        }
        if !out_of_scope.is_empty() {
            let queries = UnitRows::from_vectors(out_of_scope, Some(self.stored.dim))?;
            held_out.out_of_scope = self.raw_scores(&queries).in_scope_scores;
        }
        Ok(held_out)
    }

    /// Fits the temperature of the ranked probabilities on labelled held-out examples (minimum
    /// negative log-likelihood) and returns it.
    pub fn calibrate(&mut self, embeddings: &[Vec<f32>], labels: &[usize]) -> Result<f32> {
        let classes = self.stored.class_names.len();
        check_labels(embeddings.len(), labels, classes)?;
        if embeddings.is_empty() {
            return Err(ClassifierError::EmptyInput);
        }
        let queries = UnitRows::from_vectors(embeddings, Some(self.stored.dim))?;
        let raw = self.raw_scores(&queries);
        let in_scope_logits: Vec<f32> = raw
            .logits
            .chunks(self.outputs())
            .flat_map(|row| row[..classes].iter().copied())
            .collect();
        self.stored.temperature = fit_temperature(&in_scope_logits, classes, labels);
        Ok(self.stored.temperature)
    }
}

fn check_labels(examples: usize, labels: &[usize], classes: usize) -> Result<()> {
    if examples != labels.len() {
        return Err(ClassifierError::LengthMismatch {
            embeddings: examples,
            labels: labels.len(),
        });
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
        return Err(ClassifierError::LabelOutOfRange {
            index,
            label,
            classes,
        });
    }
    Ok(())
}

/// Mean negative log-likelihood of `labels` under `softmax(logits * inverse_temperature)`.
fn mean_nll(logits: &[f32], classes: usize, labels: &[usize], inverse_temperature: f64) -> f64 {
    let mut total = 0.0f64;
    for (row, &label) in logits.chunks(classes).zip(labels) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let log_sum = row
            .iter()
            .map(|&logit| ((logit as f64 - max) * inverse_temperature).exp())
            .sum::<f64>()
            .ln();
        total += log_sum - (row[label] as f64 - max) * inverse_temperature;
    }
    total / labels.len().max(1) as f64
}

/// Temperature minimising the held-out negative log-likelihood. The NLL is convex in the inverse
/// temperature, so a golden-section search over [1/20, 20] finds the minimum.
fn fit_temperature(logits: &[f32], classes: usize, labels: &[usize]) -> f32 {
    if labels.is_empty() {
        return 1.0;
    }
    let golden = (5f64.sqrt() - 1.0) / 2.0;
    let (mut low, mut high) = (0.05f64, 20.0f64);
    let mut left = high - golden * (high - low);
    let mut right = low + golden * (high - low);
    let mut left_value = mean_nll(logits, classes, labels, left);
    let mut right_value = mean_nll(logits, classes, labels, right);
    while high - low > 1e-4 {
        if left_value < right_value {
            high = right;
            right = left;
            right_value = left_value;
            left = high - golden * (high - low);
            left_value = mean_nll(logits, classes, labels, left);
        } else {
            low = left;
            left = right;
            left_value = right_value;
            right = low + golden * (high - low);
            right_value = mean_nll(logits, classes, labels, right);
        }
    }
    (1.0 / ((low + high) / 2.0)) as f32
}

/// Validates a training set and returns its unit-length embeddings and out-of-scope embeddings.
fn validated(set: &TrainingSet<'_>) -> Result<(UnitRows, Option<UnitRows>)> {
    let classes = set.class_names.len();
    if classes < 2 {
        return Err(ClassifierError::TooFewClasses(classes));
    }
    if set.embeddings.is_empty() {
        return Err(ClassifierError::EmptyInput);
    }
    check_labels(set.embeddings.len(), set.labels, classes)?;
    let mut counts = vec![0usize; classes];
    for &label in set.labels {
        counts[label] += 1;
    }
    if let Some((class, &count)) = counts
        .iter()
        .enumerate()
        .find(|(_, &count)| count < MIN_EXAMPLES_PER_CLASS)
    {
        // An intent with no example at all cannot be learned.
        return Err(ClassifierError::TooFewExamples {
            name: set.class_names[class].clone(),
            count,
            min: MIN_EXAMPLES_PER_CLASS,
        });
    }
    let x = UnitRows::from_vectors(set.embeddings, None)?;
    let out_of_scope = if set.out_of_scope.is_empty() {
        None
    } else {
        Some(UnitRows::from_vectors(set.out_of_scope, Some(x.dim))?)
    };
    Ok((x, out_of_scope))
}

/// Trains without validation (callers validate), with threshold 0 and temperature 1.
fn train_unchecked(
    x: &UnitRows,
    labels: &[usize],
    class_names: &[String],
    out_of_scope: Option<&UnitRows>,
    opts: &TrainOptions,
) -> IntentModel {
    let classes = class_names.len();
    let (inputs, targets) = match out_of_scope {
        Some(oos) => {
            let mut data = x.data.clone();
            data.extend_from_slice(&oos.data);
            let mut targets = labels.to_vec();
            targets.extend(std::iter::repeat_n(classes, oos.rows));
            let inputs = UnitRows {
                rows: x.rows + oos.rows,
                dim: x.dim,
                data,
            };
            (std::borrow::Cow::Owned(inputs), targets)
        }
        None => (std::borrow::Cow::Borrowed(x), labels.to_vec()),
    };
    let outputs = classes + usize::from(out_of_scope.is_some());
    let linear = train_linear(&inputs, &targets, outputs, opts);
    IntentModel {
        stored: StoredIntentModel {
            class_names: class_names.to_vec(),
            dim: x.dim,
            has_out_of_scope_output: out_of_scope.is_some(),
            weights: linear.weights,
            bias: linear.bias,
            temperature: 1.0,
            threshold: 0.0,
            // Only in-scope examples: being close to an out-of-scope example must not count as
            // being in scope.
            reference: x.data.clone(),
            neighbours: opts.neighbours,
            neighbour_weight: opts.neighbour_weight,
            threads: opts.threads,
            prototypes: if opts.prototype_weight > 0.0 {
                prototypes(x, labels, classes)
            } else {
                Vec::new()
            },
            prototype_weight: opts.prototype_weight,
        },
    }
}

/// Unit-length mean of each class's rows, `classes x dim` (zeros for a class without rows).
fn prototypes(x: &UnitRows, labels: &[usize], classes: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; classes * x.dim];
    for (index, &label) in labels.iter().enumerate() {
        for (total, value) in sums[label * x.dim..(label + 1) * x.dim]
            .iter_mut()
            .zip(x.row(index))
        {
            *total += value;
        }
    }
    for prototype in sums.chunks_mut(x.dim) {
        let norm = prototype.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            prototype.iter_mut().for_each(|v| *v /= norm);
        }
    }
    sums
}

/// Trains a model with temperature 1 and threshold 0 (nothing flagged out of scope). Use [`fit`]
/// to also calibrate and choose the threshold by cross-validation, or [`IntentModel::calibrate`]
/// and [`choose_threshold`] with a held-out set.
pub fn train(set: &TrainingSet<'_>, opts: &TrainOptions) -> Result<IntentModel> {
    opts.validate()?;
    let (x, out_of_scope) = validated(set)?;
    Ok(train_unchecked(
        &x,
        set.labels,
        set.class_names,
        out_of_scope.as_ref(),
        opts,
    ))
}

/// One held-out in-scope example, scored by a model that did not train on it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoredExample {
    pub gold: usize,
    pub predicted: usize,
    pub in_scope_score: f32,
}

/// Held-out scores that thresholds are chosen and evaluated on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldOutScores {
    pub in_scope: Vec<ScoredExample>,
    /// In-scope scores of held-out out-of-scope examples.
    pub out_of_scope: Vec<f32>,
}

/// Figures at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub threshold: f32,
    /// In-scope examples accepted *and* classified correctly, over all in-scope examples (a
    /// rejected in-scope example counts as wrong, as in the CLINC150 paper).
    pub in_scope_accuracy: f32,
    /// In-scope examples accepted, over all in-scope examples.
    pub in_scope_acceptance: f32,
    /// Out-of-scope examples rejected, over all out-of-scope examples; `None` without any.
    pub oos_recall: Option<f32>,
    /// Rejected examples that were out of scope; `None` without out-of-scope examples or when
    /// nothing is rejected.
    pub oos_precision: Option<f32>,
}

/// Held-out scores sorted for counting at many thresholds.
struct SortedScores {
    all_in_scope: Vec<f32>,
    correct_in_scope: Vec<f32>,
    out_of_scope: Vec<f32>,
}

impl SortedScores {
    fn new(held_out: &HeldOutScores) -> Self {
        let sorted = |mut values: Vec<f32>| {
            values.sort_by(f32::total_cmp);
            values
        };
        Self {
            all_in_scope: sorted(held_out.in_scope.iter().map(|e| e.in_scope_score).collect()),
            correct_in_scope: sorted(
                held_out
                    .in_scope
                    .iter()
                    .filter(|e| e.gold == e.predicted)
                    .map(|e| e.in_scope_score)
                    .collect(),
            ),
            out_of_scope: sorted(held_out.out_of_scope.clone()),
        }
    }

    fn below(sorted: &[f32], threshold: f32) -> usize {
        sorted.partition_point(|&score| score < threshold)
    }

    fn point(&self, threshold: f32) -> CurvePoint {
        let in_scope = self.all_in_scope.len().max(1) as f32;
        let rejected_in_scope = Self::below(&self.all_in_scope, threshold);
        let accepted_correct =
            self.correct_in_scope.len() - Self::below(&self.correct_in_scope, threshold);
        let rejected_oos = Self::below(&self.out_of_scope, threshold);
        let has_oos = !self.out_of_scope.is_empty();
        let rejected = rejected_in_scope + rejected_oos;
        CurvePoint {
            threshold,
            in_scope_accuracy: accepted_correct as f32 / in_scope,
            in_scope_acceptance: (self.all_in_scope.len() - rejected_in_scope) as f32 / in_scope,
            oos_recall: has_oos.then(|| rejected_oos as f32 / self.out_of_scope.len() as f32),
            oos_precision: (has_oos && rejected > 0).then(|| rejected_oos as f32 / rejected as f32),
        }
    }

    /// Highest threshold that still accepts at least `fraction` of the in-scope examples.
    fn threshold_accepting(&self, fraction: f32) -> f32 {
        let count = self.all_in_scope.len();
        let accepted = ((fraction.clamp(0.0, 1.0) * count as f32).ceil() as usize).clamp(1, count);
        self.all_in_scope[count - accepted]
    }
}

/// Figures at each of `thresholds`, on held-out scores.
pub fn threshold_curve(held_out: &HeldOutScores, thresholds: &[f32]) -> Vec<CurvePoint> {
    let sorted = SortedScores::new(held_out);
    thresholds.iter().map(|&t| sorted.point(t)).collect()
}

/// How the default threshold is chosen from held-out scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThresholdRule {
    /// Fraction of held-out in-scope examples to accept: the knob between needless handoffs and
    /// answering messages the bot should not. 0.98 (chosen on CLINC150 val, where the curve
    /// bends) gives about 94.7% in-scope accuracy and 76% out-of-scope recall on CLINC150 test.
    pub target_acceptance: f32,
    /// With out-of-scope examples, how far (in acceptance) the threshold may move from the
    /// target to trade accuracy for recall. 0 (the default) ignores them for the threshold.
    pub acceptance_band: f32,
    /// Value of one unit of out-of-scope recall against one unit of in-scope accuracy inside the
    /// band. Small because a rejected in-scope message (needless handoff) is paid by every
    /// customer who asks it, while out-of-scope samples are few and often easier than real ones.
    pub out_of_scope_weight: f32,
}

impl Default for ThresholdRule {
    fn default() -> Self {
        Self {
            target_acceptance: 0.98,
            acceptance_band: 0.0,
            out_of_scope_weight: 0.1,
        }
    }
}

/// The chosen threshold and the held-out figures at it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdChoice {
    pub threshold: f32,
    pub at_threshold: CurvePoint,
    pub held_out_in_scope: usize,
    pub held_out_out_of_scope: usize,
}

/// Chooses the out-of-scope threshold from held-out scores; see [`ThresholdRule`].
pub fn choose_threshold(held_out: &HeldOutScores, rule: &ThresholdRule) -> Result<ThresholdChoice> {
    let in_unit_interval = |value: f32| value.is_finite() && (0.0..=1.0).contains(&value);
    if !(in_unit_interval(rule.target_acceptance) && rule.target_acceptance > 0.0) {
        return Err(ClassifierError::InvalidOption(
            "target_acceptance must be in (0, 1]".to_string(),
        ));
    }
    if !in_unit_interval(rule.acceptance_band) {
        return Err(ClassifierError::InvalidOption(
            "acceptance_band must be in [0, 1]".to_string(),
        ));
    }
    if !(rule.out_of_scope_weight.is_finite() && rule.out_of_scope_weight >= 0.0) {
        return Err(ClassifierError::InvalidOption(
            "out_of_scope_weight must be a non-negative number".to_string(),
        ));
    }
    if held_out.in_scope.is_empty() {
        return Err(ClassifierError::EmptyInput);
    }
    let sorted = SortedScores::new(held_out);
    let target = sorted.threshold_accepting(rule.target_acceptance);
    let mut best = sorted.point(target);
    if !sorted.out_of_scope.is_empty() && rule.acceptance_band > 0.0 {
        let lenient = sorted.threshold_accepting(rule.target_acceptance + rule.acceptance_band);
        let strict = sorted.threshold_accepting(rule.target_acceptance - rule.acceptance_band);
        let objective = |p: &CurvePoint| {
            p.in_scope_accuracy + rule.out_of_scope_weight * p.oos_recall.unwrap_or(0.0)
        };
        // Candidates where a figure changes: each in-scope score (accepts that example) and just
        // above each out-of-scope score (rejects that example).
        let mut candidates: Vec<f32> = sorted
            .all_in_scope
            .iter()
            .copied()
            .chain(sorted.out_of_scope.iter().map(|score| score.next_up()))
            .filter(|&t| (lenient..=strict).contains(&t))
            .collect();
        candidates.sort_by(f32::total_cmp);
        let mut best_value = objective(&best);
        for candidate in candidates {
            let point = sorted.point(candidate);
            let value = objective(&point);
            // Strictly better only: a tie keeps the in-scope target, and otherwise the most
            // lenient threshold (fewest needless handoffs), since candidates ascend.
            if value > best_value + 1e-7 {
                best = point;
                best_value = value;
            }
        }
    }
    Ok(ThresholdChoice {
        threshold: best.threshold,
        at_threshold: best,
        held_out_in_scope: held_out.in_scope.len(),
        held_out_out_of_scope: held_out.out_of_scope.len(),
    })
}

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
fn assign_folds(labels: &[usize], classes: usize, folds: usize, seed: u64) -> Vec<usize> {
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
enum JobOutput {
    Fold {
        in_scope: Vec<(usize, ScoredExample)>,
        in_scope_logits: Vec<f32>,
        out_of_scope: Vec<f32>,
    },
    Final(IntentModel),
}

/// Cross-validation, optionally with the final training as one more job in the same pool (so the
/// two threads stay busy).
fn cross_validate_jobs(
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

/// Everything needed to go from examples to a ready model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FitOptions {
    pub train: TrainOptions,
    pub folds: usize,
    /// The threshold rule, stated for fresh messages: apply it as is to a held-out set
    /// ([`choose_threshold`]); [`fit`] adapts it to cross-validation with
    /// [`FitOptions::cross_validation_rule`].
    pub rule: ThresholdRule,
    /// Cross-validation on the examples themselves is optimistic: a business's examples are
    /// often paraphrases of each other, so a held-out example usually has a near twin in the
    /// other folds, which fresh messages do not. To reject a fraction `r` of fresh in-scope
    /// messages, [`fit`] rejects `r * cross_validation_rejection_scale` of the cross-validated
    /// examples. On CLINC150, rejecting 2% / 1.5% / 1% of cross-validated train examples rejected
    /// 3.0% / 2.4% / 1.5% of the unseen val split; 0.75 (2% -> 1.5%) errs on the strict side.
    pub cross_validation_rejection_scale: f32,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            train: TrainOptions::default(),
            folds: 5,
            rule: ThresholdRule::default(),
            cross_validation_rejection_scale: 0.75,
        }
    }
}

impl FitOptions {
    /// `rule` restated for cross-validated scores (see `cross_validation_rejection_scale`).
    pub fn cross_validation_rule(&self) -> ThresholdRule {
        let scale = self.cross_validation_rejection_scale;
        ThresholdRule {
            target_acceptance: 1.0 - (1.0 - self.rule.target_acceptance) * scale,
            acceptance_band: self.rule.acceptance_band * scale,
            ..self.rule
        }
    }
}

/// A ready model and how its threshold was chosen.
#[derive(Debug, Clone)]
pub struct FittedModel {
    /// Calibrated, with the chosen threshold set.
    pub model: IntentModel,
    pub threshold: ThresholdChoice,
    /// Cross-validated accuracy with no threshold: how well the examples separate the intents.
    pub cross_validated_accuracy: f32,
}

/// Trains on all examples; calibrates the temperature and chooses the threshold by k-fold
/// cross-validation. The server's entry point.
pub fn fit(set: &TrainingSet<'_>, opts: &FitOptions) -> Result<FittedModel> {
    let (cv, model) = cross_validate_jobs(set, &opts.train, opts.folds, true)?;
    let mut model = model.expect("the final model is trained as the last job");
    if !(opts.cross_validation_rejection_scale.is_finite()
        && opts.cross_validation_rejection_scale > 0.0)
    {
        return Err(ClassifierError::InvalidOption(
            "cross_validation_rejection_scale must be a positive number".to_string(),
        ));
    }
    let threshold = if cv.held_out.in_scope.is_empty() {
        // Every intent has a single example: nothing could be held out.
        ThresholdChoice {
            threshold: FALLBACK_THRESHOLD,
            at_threshold: CurvePoint {
                threshold: FALLBACK_THRESHOLD,
                in_scope_accuracy: 0.0,
                in_scope_acceptance: 0.0,
                oos_recall: None,
                oos_precision: None,
            },
            held_out_in_scope: 0,
            held_out_out_of_scope: cv.held_out.out_of_scope.len(),
        }
    } else {
        choose_threshold(&cv.held_out, &opts.cross_validation_rule())?
    };
    model.stored.temperature = cv.temperature;
    model.stored.threshold = threshold.threshold;
    let correct = cv
        .held_out
        .in_scope
        .iter()
        .filter(|example| example.gold == example.predicted)
        .count();
    Ok(FittedModel {
        model,
        threshold,
        cross_validated_accuracy: correct as f32 / cv.held_out.in_scope.len().max(1) as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIM: usize = 16;

    /// Deterministic pseudo-random numbers for test data, independent of `rand`'s algorithms.
    struct Lcg(u64);

    impl Lcg {
        fn next_unit(&mut self) -> f32 {
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
        let set = TrainingSet {
            embeddings: &embeddings,
            labels: &labels,
            class_names: &class_names,
            out_of_scope: &[],
        };
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
        let set = TrainingSet {
            embeddings: &embeddings,
            labels: &labels,
            class_names: &class_names,
            out_of_scope: &[],
        };
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
        let set = TrainingSet {
            embeddings: &embeddings,
            labels: &labels,
            class_names: &class_names,
            out_of_scope: &[],
        };
        let fitted = fit(
            &set,
            &FitOptions {
                train: quick_options(),
                ..FitOptions::default()
            },
        )
        .unwrap();
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
        let without = TrainingSet {
            embeddings: &embeddings,
            labels: &labels,
            class_names: &class_names,
            out_of_scope: &[],
        };
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
        let set = TrainingSet {
            embeddings: &embeddings,
            labels: &labels,
            class_names: &class_names,
            out_of_scope: &[],
        };
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
        let base = TrainingSet {
            embeddings: &embeddings,
            labels: &labels,
            class_names: &class_names,
            out_of_scope: &[],
        };
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
        let set = TrainingSet {
            embeddings: &embeddings,
            labels: &labels,
            class_names: &class_names,
            out_of_scope: &[],
        };
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
        let set = TrainingSet {
            embeddings: &embeddings,
            labels: &labels,
            class_names: &class_names,
            out_of_scope: &[],
        };
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

    fn held_out(in_scope: &[(f32, bool)], out_of_scope: &[f32]) -> HeldOutScores {
        HeldOutScores {
            in_scope: in_scope
                .iter()
                .map(|&(score, correct)| ScoredExample {
                    gold: 0,
                    predicted: usize::from(!correct),
                    in_scope_score: score,
                })
                .collect(),
            out_of_scope: out_of_scope.to_vec(),
        }
    }

    #[test]
    fn threshold_keeps_the_target_fraction_of_in_scope_examples() {
        // 100 in-scope scores 0.01..=1.00; the lowest 5 are misclassified.
        let scores: Vec<(f32, bool)> = (1..=100).map(|i| (i as f32 / 100.0, i > 5)).collect();
        let rule = ThresholdRule {
            target_acceptance: 0.9,
            ..ThresholdRule::default()
        };
        let choice = choose_threshold(&held_out(&scores, &[]), &rule).unwrap();
        assert_eq!(choice.threshold, 0.11);
        assert_eq!(choice.at_threshold.in_scope_acceptance, 0.9);
        assert_eq!(choice.at_threshold.in_scope_accuracy, 0.9);
        assert_eq!(choice.at_threshold.oos_recall, None);
        assert_eq!(choice.held_out_out_of_scope, 0);
    }

    #[test]
    fn threshold_moves_within_the_band_towards_out_of_scope_examples() {
        let scores: Vec<(f32, bool)> = (1..=100).map(|i| (i as f32 / 100.0, true)).collect();
        // Out-of-scope scores just above the target threshold (0.11): rejecting them all needs
        // 0.125, which accepts 88% of in-scope examples, inside a band of 0.05.
        let oos = [0.115, 0.12, 0.02];
        let rule = ThresholdRule {
            target_acceptance: 0.9,
            acceptance_band: 0.05,
            out_of_scope_weight: 0.5,
        };
        let choice = choose_threshold(&held_out(&scores, &oos), &rule).unwrap();
        assert!(
            choice.threshold > 0.12 && choice.threshold <= 0.13,
            "{choice:?}"
        );
        assert_eq!(choice.at_threshold.oos_recall, Some(1.0));
        assert_eq!(choice.at_threshold.in_scope_acceptance, 0.88);
        // Without a band the target wins whatever the out-of-scope examples say.
        let fixed = ThresholdRule {
            acceptance_band: 0.0,
            ..rule
        };
        let choice = choose_threshold(&held_out(&scores, &oos), &fixed).unwrap();
        assert_eq!(choice.threshold, 0.11);
        assert_eq!(choice.at_threshold.oos_recall, Some(1.0 / 3.0));
        assert!(choose_threshold(&HeldOutScores::default(), &rule).is_err());
        let bad = ThresholdRule {
            target_acceptance: 1.5,
            ..rule
        };
        assert!(choose_threshold(&held_out(&scores, &oos), &bad).is_err());
    }

    #[test]
    fn cross_validation_rule_rejects_proportionally_fewer() {
        let opts = FitOptions {
            cross_validation_rejection_scale: 0.5,
            rule: ThresholdRule {
                acceptance_band: 0.01,
                ..ThresholdRule::default()
            },
            ..FitOptions::default()
        };
        let rule = opts.cross_validation_rule();
        assert!((rule.target_acceptance - 0.99).abs() < 1e-6, "{rule:?}");
        assert!((rule.acceptance_band - 0.005).abs() < 1e-6, "{rule:?}");
        assert_eq!(rule.out_of_scope_weight, opts.rule.out_of_scope_weight);
    }

    #[test]
    fn curve_counts_rejections_as_errors_and_reports_precision() {
        let scores = held_out(
            &[(0.9, true), (0.8, false), (0.4, true), (0.2, true)],
            &[0.3, 0.1],
        );
        let curve = threshold_curve(&scores, &[0.0, 0.35, 0.5, 1.0]);
        assert_eq!(curve[0].in_scope_accuracy, 0.75);
        assert_eq!(curve[0].oos_recall, Some(0.0));
        assert_eq!(curve[0].oos_precision, None);
        assert_eq!(curve[1].in_scope_accuracy, 0.5);
        assert_eq!(curve[1].in_scope_acceptance, 0.75);
        assert_eq!(curve[1].oos_recall, Some(1.0));
        assert_eq!(curve[1].oos_precision, Some(2.0 / 3.0));
        assert_eq!(curve[2].in_scope_accuracy, 0.25);
        assert_eq!(curve[3].in_scope_accuracy, 0.0);
        assert_eq!(curve[3].oos_precision, Some(2.0 / 6.0));
    }

    #[test]
    fn temperature_fit_recovers_a_known_temperature() {
        // Labels drawn from softmax(logits / 2): the fitted temperature should be near 2.
        let mut rng = Lcg(10);
        let classes = 4;
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..4000 {
            let row: Vec<f32> = (0..classes).map(|_| 4.0 * rng.next_unit()).collect();
            let mut probabilities: Vec<f32> = row.iter().map(|l| l / 2.0).collect();
            softmax_in_place(&mut probabilities);
            let draw = (rng.next_unit() + 1.0) / 2.0;
            let mut cumulative = 0.0;
            let mut label = classes - 1;
            for (class, p) in probabilities.iter().enumerate() {
                cumulative += p;
                if draw < cumulative {
                    label = class;
                    break;
                }
            }
            logits.extend(row);
            labels.push(label);
        }
        let temperature = fit_temperature(&logits, classes, &labels);
        assert!((temperature - 2.0).abs() < 0.25, "{temperature}");
    }

    #[test]
    fn batched_and_single_predictions_agree() {
        // Batches of at least DIRECT_DOT_MAX_ROWS go through the matrix product, single
        // messages through plain dot products: the two must give the same answers.
        let (embeddings, labels) = clusters(4, 30, 0.4, 11);
        let class_names = names(4);
        let set = TrainingSet {
            embeddings: &embeddings,
            labels: &labels,
            class_names: &class_names,
            out_of_scope: &[],
        };
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
    fn neighbour_similarity_averages_the_k_most_similar() {
        let reference = UnitRows::from_vectors(
            &[
                vec![1.0, 0.0],
                vec![0.0, 1.0],
                vec![-1.0, 0.0],
                vec![0.6, 0.8],
            ],
            None,
        )
        .unwrap();
        let query = UnitRows::from_vectors(&[vec![1.0, 0.0]], None).unwrap();
        let top2 = neighbour_similarity(&query, &reference.data, 2, 2, 1);
        assert!((top2[0] - 0.8).abs() < 1e-6, "{top2:?}");
        let all = neighbour_similarity(&query, &reference.data, 2, 10, 1);
        assert!(
            (all[0] - (1.0 + 0.0 - 1.0 + 0.6) / 4.0).abs() < 1e-6,
            "{all:?}"
        );
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
        let set = TrainingSet {
            embeddings: &embeddings,
            labels: &labels,
            class_names: &class_names,
            out_of_scope: &[],
        };
        let opts = FitOptions {
            train: quick_options(),
            ..FitOptions::default()
        };
        let fitted = fit(&set, &opts).unwrap();
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
        let set = TrainingSet {
            embeddings: &embeddings,
            labels: &labels,
            class_names: &class_names,
            out_of_scope: &[],
        };
        let fitted = fit(
            &set,
            &FitOptions {
                train: quick_options(),
                ..FitOptions::default()
            },
        )
        .unwrap();
        assert_eq!(fitted.threshold.held_out_in_scope, 0);
        assert_eq!(fitted.model.threshold(), FALLBACK_THRESHOLD);
        for (embedding, &label) in embeddings.iter().zip(&labels) {
            assert_eq!(fitted.model.predict(embedding).unwrap().top().0, label);
        }
    }
}
