//! Temperature scaling: the ranked probabilities are calibrated on held-out logits.

/// Mean negative log-likelihood of `labels` under `softmax(logits * inverse_temperature)`.
pub(super) fn mean_nll(
    logits: &[f32],
    classes: usize,
    labels: &[usize],
    inverse_temperature: f64,
) -> f64 {
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
pub(super) fn fit_temperature(logits: &[f32], classes: usize, labels: &[usize]) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::super::linear::softmax_in_place;
    use super::super::tests::Lcg;
    use super::*;

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
}
