//! Holding out validation data.

/// Splits `tokens` into (train, validation), holding out the **last** `val_fraction` of
/// the tokens as one contiguous block, so no training or validation window straddles the
/// two (a random split of windows would leak overlapping text into validation).
///
/// The rule the CLI follows: when the user passes validation data explicitly
/// (`--val-data`, or a dataset's `val.bin`), that is the validation set and the training
/// tokens are used whole; this split applies only when there is none.
///
/// `val_fraction` is clamped to `[0, 1]` (NaN counts as 0); the held-out length is rounded
/// down, so a small fraction of little data may hold out nothing — the caller checks the
/// validation part is long enough for a window when it needs one.
pub fn split_train_val(mut tokens: Vec<u32>, val_fraction: f32) -> (Vec<u32>, Vec<u32>) {
    let f = if val_fraction.is_nan() {
        0.0
    } else {
        val_fraction.clamp(0.0, 1.0) as f64
    };
    let n_val = ((tokens.len() as f64 * f).floor() as usize).min(tokens.len());
    let val = tokens.split_off(tokens.len() - n_val);
    (tokens, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_out_the_tail() {
        let (t, v) = split_train_val((0..100).collect(), 0.1);
        assert_eq!(t, (0..90).collect::<Vec<_>>());
        assert_eq!(v, (90..100).collect::<Vec<_>>());
        let (t, v) = split_train_val((0..10).collect(), 0.05);
        assert_eq!((t.len(), v.len()), (10, 0));
        let (t, v) = split_train_val((0..10).collect(), f32::NAN);
        assert_eq!((t.len(), v.len()), (10, 0));
        let (t, v) = split_train_val((0..10).collect(), 2.0);
        assert_eq!((t.len(), v.len()), (0, 10));
        assert_eq!(split_train_val(vec![], 0.5), (vec![], vec![]));
    }
}
