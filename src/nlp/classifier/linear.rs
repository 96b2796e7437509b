//! The linear model: unit-normalised rows, the matrix product, and multinomial logistic
//! regression trained with mini-batch Adam.

use super::*;

/// Row-major matrix of unit-length rows.
#[derive(Debug, Clone)]
pub(super) struct UnitRows {
    pub(super) rows: usize,
    pub(super) dim: usize,
    pub(super) data: Vec<f32>,
}

impl UnitRows {
    /// Checks and L2-normalises. The encoder already normalises, but cosine similarity and the
    /// learned weights assume it, so it is enforced here rather than trusted.
    pub(super) fn from_vectors(vectors: &[Vec<f32>], expected_dim: Option<usize>) -> Result<Self> {
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

    pub(super) fn row(&self, index: usize) -> &[f32] {
        &self.data[index * self.dim..(index + 1) * self.dim]
    }

    pub(super) fn select(&self, indices: &[usize]) -> Self {
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
pub(super) fn gemm(
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
pub(super) fn run_jobs<T: Send>(
    jobs: usize,
    threads: usize,
    job: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
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

pub(super) fn softmax_in_place(values: &mut [f32]) {
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
pub(super) struct Linear {
    pub(super) dim: usize,
    pub(super) outputs: usize,
    pub(super) weights: Vec<f32>,
    pub(super) bias: Vec<f32>,
}

/// Logits `x * weights + bias` for `rows` rows of `x`, `rows x bias.len()` row-major.
pub(super) fn linear_logits(
    weights: &[f32],
    bias: &[f32],
    dim: usize,
    x: &[f32],
    rows: usize,
) -> Vec<f32> {
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
    pub(super) fn logits(&self, x: &[f32], rows: usize) -> Vec<f32> {
        linear_logits(&self.weights, &self.bias, self.dim, x, rows)
    }

    /// Writes the gradient of the summed cross-entropy of these rows, times `scale`, into
    /// `grad_weights` and `grad_bias` (both overwritten).
    pub(super) fn gradient(
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
pub(super) struct AdamState {
    pub(super) first: Vec<f32>,
    pub(super) second: Vec<f32>,
}

impl AdamState {
    pub(super) fn new(len: usize) -> Self {
        Self {
            first: vec![0.0; len],
            second: vec![0.0; len],
        }
    }

    pub(super) fn step(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        learning_rate: f32,
        step: i32,
    ) {
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
pub(super) fn train_linear(
    x: &UnitRows,
    labels: &[usize],
    outputs: usize,
    opts: &TrainOptions,
) -> Linear {
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
