//! `bench tokenizer`'s measurements: encoding as ingestion encodes (pieces on paragraph
//! boundaries over the compute threads), and one thread's rate as the input grows.

use std::time::Instant;

use nf_tokenizer::Tokenizer;

/// Splits `text` after a paragraph break (or, failing that, a newline or space) once a
/// piece reaches `target` bytes, never inside a UTF-8 character.
pub fn paragraph_pieces(text: &str, target: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > target {
        let mut cut = target;
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let tail = &rest[cut..];
        let end = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| tail.find(sep).map(|i| cut + i + sep.len()))
            .unwrap_or(rest.len());
        pieces.push(&rest[..end]);
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

/// Encodes `pieces` over `threads` with the ordered parallel map ingestion encodes its
/// windows with; returns the token count.
pub fn encode_pieces(
    tok: &Tokenizer,
    pieces: &[&str],
    threads: usize,
) -> nf_tokenizer::Result<usize> {
    crate::parallel::map(
        pieces,
        threads,
        |p| tok.encode(p, false, false).map(|ids| ids.len()),
        |_, _| {},
    )
    .into_iter()
    .sum()
}

/// One input size's measurement.
#[derive(Debug, Clone, Copy)]
pub struct Scaling {
    /// The input's size in bytes.
    pub bytes: usize,
    /// Tokens it encodes to.
    pub tokens: usize,
    /// Seconds per encode.
    pub secs: f64,
    /// Encodes timed (small inputs repeat so each measurement lasts long enough).
    pub reps: usize,
}

/// One thread encoding inputs of 1 kB, 10 kB, ... `max_mb` MB made by repeating `text`.
pub fn scaling(tok: &Tokenizer, text: &str, max_mb: usize) -> nf_tokenizer::Result<Vec<Scaling>> {
    let max = max_mb.max(1) * 1_000_000;
    let mut big = String::with_capacity(max + text.len());
    while big.len() < max {
        big.push_str(text);
    }
    let mut sizes: Vec<usize> = std::iter::successors(Some(1_000), |s| Some(s * 10))
        .take_while(|&s| s <= max)
        .collect();
    if sizes.last() != Some(&max) {
        sizes.push(max);
    }
    let mut out = Vec::new();
    for size in sizes {
        let mut cut = size;
        while !big.is_char_boundary(cut) {
            cut += 1;
        }
        let input = &big[..cut];
        let reps = ((4 << 20) / cut).clamp(1, 4096);
        let t = Instant::now();
        let mut tokens = 0;
        for _ in 0..reps {
            tokens = tok.encode(input, false, false)?.len();
        }
        out.push(Scaling {
            bytes: cut,
            tokens,
            secs: t.elapsed().as_secs_f64() / reps as f64,
            reps,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cut_on_paragraphs_and_cover_the_text() {
        let text = "aaaa bbbb\n\ncccc dddd\neeee ffff gggg";
        let pieces = paragraph_pieces(text, 6);
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces[0], "aaaa bbbb\n\n");
        let multi = "ééééé ééééé";
        assert_eq!(paragraph_pieces(multi, 3).concat(), multi);
    }
}
