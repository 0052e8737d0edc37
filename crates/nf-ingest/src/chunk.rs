//! Cutting a document into training windows on paragraph boundaries.
//!
//! A window holds whole units (paragraphs, table rows) up to a token budget, usually the
//! training sequence length; the next window starts a little before the previous one
//! ended, repeating its last units up to an overlap budget, so a fact stated across a cut
//! is seen whole at least once. A unit longer than the budget is first split at sentence
//! or word boundaries ([`split_long`]) so every window fits.

/// Groups units with token counts `tokens` into windows, each a range of unit indices.
///
/// Every unit is in at least one window; a window's units add up to at most `budget`
/// tokens unless a single unit is larger; consecutive windows share trailing units of
/// at most `overlap` tokens (never a whole window, so the cut always moves forward).
pub fn windows(tokens: &[usize], budget: usize, overlap: usize) -> Vec<std::ops::Range<usize>> {
    let budget = budget.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < tokens.len() {
        let mut end = start;
        let mut sum = 0;
        while end < tokens.len() && (end == start || sum + tokens[end] <= budget) {
            sum += tokens[end];
            end += 1;
        }
        out.push(start..end);
        if end == tokens.len() {
            break;
        }
        // Back up over trailing units that fit in the overlap, keeping at least one new
        // unit in the next window.
        let mut next = end;
        let mut shared = 0;
        while next > start + 1 && shared + tokens[next - 1] <= overlap {
            shared += tokens[next - 1];
            next -= 1;
        }
        start = next;
    }
    out
}

/// Splits `text` into pieces of at most about `max_chars` bytes, preferring to cut after
/// a sentence end (`. `, `? `, `! `, a newline), else at a space, else anywhere on a
/// character boundary.
pub fn split_long(text: &str, max_chars: usize) -> Vec<String> {
    let max = max_chars.max(16);
    let mut out = Vec::new();
    let mut rest = text.trim();
    while rest.len() > max {
        let mut limit = max;
        while !rest.is_char_boundary(limit) {
            limit -= 1;
        }
        let window = &rest[..limit];
        let half = limit / 2;
        let sentence = ["\n", ". ", "? ", "! ", "; "]
            .iter()
            .filter_map(|p| window.rfind(p).map(|i| i + p.len()))
            .filter(|&i| i >= half)
            .max();
        let cut = sentence
            .or_else(|| window.rfind(' ').filter(|&i| i >= half).map(|i| i + 1))
            .unwrap_or(limit);
        out.push(rest[..cut].trim().to_string());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_fill_the_budget_and_overlap() {
        assert_eq!(windows(&[3, 3, 3, 3], 6, 0), [0..2, 2..4]);
        assert_eq!(windows(&[3, 3, 3, 3], 6, 3), [0..2, 1..3, 2..4]);
        // A unit over budget is a window on its own; overlap never stalls progress.
        assert_eq!(windows(&[2, 10, 2], 5, 100), [0..1, 1..2, 2..3]);
        assert_eq!(windows(&[1, 1, 1], 100, 10), vec![0..3usize]);
        assert!(windows(&[], 10, 2).is_empty());
    }

    #[test]
    fn long_text_splits_at_sentences_then_words() {
        let t = "One sentence here. Another one follows it. And a third.";
        let parts = split_long(t, 30);
        assert_eq!(
            parts,
            [
                "One sentence here.",
                "Another one follows it.",
                "And a third."
            ]
        );
        let parts = split_long(&"word ".repeat(20), 22);
        assert!(
            parts.iter().all(|p| p.len() <= 22 && !p.ends_with(' ')),
            "{parts:?}"
        );
        assert_eq!(parts.join(" "), "word ".repeat(20).trim());
        let parts = split_long(&"é".repeat(40), 17);
        assert_eq!(parts.concat(), "é".repeat(40));
    }
}
