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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_copies_rows() {
        let table = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
        let mut out = vec![0.0; 6];
        embedding(&mut out, &[2, 0, 1], &table, 2);
        assert_eq!(out, vec![20.0, 21.0, 0.0, 1.0, 10.0, 11.0]);
    }
}
