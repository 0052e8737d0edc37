//! Token embedding lookup.

/// out: [n, d], ids: [n], table: [vocab, d]. Ids must be `< vocab` (the model checks them
/// against the vocabulary before calling, so a bad id is a bug, not user input).
pub fn embedding(out: &mut [f32], ids: &[u32], table: &[f32], d: usize) {
    assert_eq!(out.len(), ids.len() * d);
    for (row, &id) in out.chunks_exact_mut(d).zip(ids) {
        let id = id as usize;
        row.copy_from_slice(&table[id * d..(id + 1) * d]);
    }
}

/// dtable: [vocab, d] (+=), dout: [n, d], tokens: [n].
///
/// Each token's gradient row is added to its table row. A token that occurs several times
/// gets the sum, added in token order, so the result does not depend on anything but the
/// inputs.
pub fn embedding_backward(dtable: &mut [f32], dout: &[f32], tokens: &[u32], d: usize) {
    assert_eq!(
        dout.len(),
        tokens.len() * d,
        "embedding_backward: dout is not [n, d]"
    );
    assert_eq!(
        dtable.len() % d.max(1),
        0,
        "embedding_backward: dtable rows are not d wide"
    );
    for (row, &id) in dout.chunks_exact(d).zip(tokens) {
        let id = id as usize;
        for (t, g) in dtable[id * d..(id + 1) * d].iter_mut().zip(row) {
            *t += g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_grad_close, finite_diff};

    #[test]
    fn embedding_copies_rows() {
        let table = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
        let mut out = vec![0.0; 6];
        embedding(&mut out, &[2, 0, 1], &table, 2);
        assert_eq!(out, vec![20.0, 21.0, 0.0, 1.0, 10.0, 11.0]);
    }

    #[test]
    fn embedding_backward_sums_repeated_tokens() {
        let mut dtable = vec![1.0; 6];
        embedding_backward(&mut dtable, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 0, 2], 2);
        assert_eq!(dtable, vec![4.0, 5.0, 1.0, 1.0, 7.0, 9.0]);
    }

    #[test]
    fn embedding_backward_matches_finite_differences() {
        let (vocab, d) = (5, 3);
        let tokens = [3u32, 1, 3, 4, 0, 3];
        let mut rng = Rng::new(51);
        let (table, r) = (rng.vec(vocab * d), rng.vec(tokens.len() * d));
        // f64 forward: L = Σ table[tokens] ⊙ r.
        let loss = |table: &[f64]| -> f64 {
            let mut l = 0.0;
            for (t, &id) in tokens.iter().enumerate() {
                for i in 0..d {
                    l += table[id as usize * d + i] * r[t * d + i] as f64;
                }
            }
            l
        };
        let mut dtable = vec![0.0; vocab * d];
        embedding_backward(&mut dtable, &r, &tokens, d);
        assert_grad_close(&dtable, &finite_diff(loss, &table), 1e-6);
        // Token 2 never occurs: its row stays exactly zero.
        assert!(dtable[2 * d..3 * d].iter().all(|&g| g == 0.0));
    }
}
