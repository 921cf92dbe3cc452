//! Exact integer shares: a total split over intervals in proportion to weights, adding up
//! to the total exactly (largest remainder), so estimates never drift from the register
//! difference they come from, whatever the scaler or the number of intervals.

/// Splits `total` (≥ 0) into `weights.len()` non-negative shares proportional to
/// `weights` whose sum is exactly `total`. All-zero (or no positive) weights split evenly.
/// Ties in the remainders go to the earlier interval, so the result is deterministic.
/// Returns `None` for no intervals, a negative total, or a share that does not fit `i64`.
pub fn distribute(total: i128, weights: &[u64]) -> Option<Vec<i64>> {
    if weights.is_empty() || total < 0 {
        return None;
    }
    let even;
    let weights = if weights.iter().any(|&w| w > 0) {
        weights
    } else {
        even = vec![1u64; weights.len()];
        &even
    };
    // Σ weights fits u128; total × weight fits i128 for totals below 2^63 and weights
    // below 2^63 only when checked, so every product is checked
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let sum = i128::try_from(sum).ok()?;
    let mut shares = Vec::with_capacity(weights.len());
    let mut rems = Vec::with_capacity(weights.len());
    let mut given: i128 = 0;
    for (i, &w) in weights.iter().enumerate() {
        let p = total.checked_mul(i128::from(w))?;
        let (q, r) = (p / sum, p % sum);
        given += q;
        shares.push(q);
        rems.push((r, i));
    }
    let left = total - given; // < number of intervals, since each remainder < sum
    rems.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in rems.iter().take(usize::try_from(left).ok()?) {
        shares[i] += 1;
    }
    shares.into_iter().map(|s| i64::try_from(s).ok()).collect()
}

/// Weights from profile means (unit-free, ≥ 0): the means scaled to integers with enough
/// resolution to shape, capped so that sums cannot overflow.
pub fn weights_from_means(means: &[f64]) -> Vec<u64> {
    means
        .iter()
        .map(|m| {
            if m.is_finite() && *m > 0.0 {
                (m * 1000.0).round().min(1e15) as u64
            } else {
                0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn shares_follow_weights_and_add_up() {
        assert_eq!(distribute(10, &[1, 1, 1]), Some(vec![4, 3, 3]));
        assert_eq!(distribute(100, &[1, 3]), Some(vec![25, 75]));
        assert_eq!(
            distribute(7, &[0, 0]),
            Some(vec![4, 3]),
            "even when no weight"
        );
        assert_eq!(distribute(0, &[5, 1]), Some(vec![0, 0]));
        assert_eq!(distribute(5, &[]), None);
        assert_eq!(distribute(-1, &[1]), None);
        assert_eq!(distribute(i128::from(i64::MAX) * 2, &[1]), None);
        assert_eq!(
            weights_from_means(&[f64::NAN, -1.0, 0.5, f64::INFINITY]),
            [0, 0, 500, 0]
        );
    }

    proptest! {
        /// Register proration's invariant: the shares add up to the register difference
        /// exactly, none is negative, and each is within 1 of its exact proportion.
        #[test]
        fn shares_add_up_exactly(
            total in 0i64..=i64::MAX,
            weights in prop::collection::vec(0u64..=1_000_000_000_000_000, 1..700),
        ) {
            let shares = distribute(i128::from(total), &weights).unwrap();
            prop_assert_eq!(shares.len(), weights.len());
            prop_assert_eq!(shares.iter().map(|&s| i128::from(s)).sum::<i128>(), i128::from(total));
            prop_assert!(shares.iter().all(|&s| s >= 0));
            let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
            if sum > 0 {
                for (s, w) in shares.iter().zip(&weights) {
                    let exact = i128::from(total) * i128::from(*w) / sum as i128;
                    prop_assert!((i128::from(*s) - exact).abs() <= 1);
                }
            }
        }
    }
}
