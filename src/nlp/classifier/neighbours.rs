//! Nearest-example similarity and the in-scope score that fuses it with the top probability.

use super::linear::{gemm, run_jobs, softmax_in_place};
use super::*;

/// Keeps the `k` largest values offered, in descending order.
pub(super) struct TopK {
    pub(super) best: Vec<f32>,
}

impl TopK {
    pub(super) fn new(k: usize) -> Self {
        Self {
            best: vec![f32::NEG_INFINITY; k],
        }
    }

    pub(super) fn reset(&mut self) {
        self.best.fill(f32::NEG_INFINITY);
    }

    pub(super) fn offer(&mut self, value: f32) {
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

    pub(super) fn mean(&self) -> f32 {
        self.best.iter().sum::<f32>() / self.best.len() as f32
    }
}

/// Dot product in eight independent lanes, which the compiler turns into SIMD.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
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
pub(super) const DIRECT_DOT_MAX_ROWS: usize = 8;

/// Mean cosine similarity of each query to its `k` most similar reference rows.
pub(super) fn neighbour_similarity(
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
pub(super) fn in_scope_score(
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

pub(super) fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (index, value) in values.iter().enumerate() {
        if *value > values[best] {
            best = index;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
