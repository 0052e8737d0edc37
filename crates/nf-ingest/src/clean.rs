//! Cleaning extracted text: whitespace, hyphenation across line breaks, and the running
//! headers and footers that PDF pages repeat.

use std::collections::HashMap;

/// Normalizes whitespace: CRLF and CR become LF; no-break and other Unicode spaces become
/// spaces; zero-width characters, soft hyphens and control characters (except tab and
/// newline) are dropped; runs of spaces become one; lines lose trailing spaces; more than
/// one blank line becomes one; the text is trimmed. Tabs are kept (table cells are joined
/// with them).
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let c = match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    continue;
                }
                '\n'
            }
            '\u{0c}' | '\u{0b}' | '\u{2028}' | '\u{2029}' | '\u{85}' => '\n',
            '\u{00a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}' => ' ',
            '\u{00ad}' | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' => continue,
            c if c.is_control() && c != '\t' && c != '\n' => continue,
            c => c,
        };
        match c {
            ' ' if out.ends_with(' ')
                || out.ends_with('\t')
                || out.ends_with('\n')
                || out.is_empty() => {}
            '\n' => {
                while out.ends_with(' ') || out.ends_with('\t') {
                    out.pop();
                }
                if !out.ends_with("\n\n") && !out.is_empty() {
                    out.push('\n');
                }
            }
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

/// Joins words hyphenated across a line break: `exam-\nple` becomes `example` when a
/// lowercase letter stands on both sides (so `Jean-\nPaul` and `1990-\n1995` keep theirs).
/// Compounds that are hyphenated anyway (`well-\nknown`) lose the hyphen too: the usual
/// price of this rule, and rarer in running text than hyphenated line ends.
pub fn dehyphenate(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("-\n") {
        let (head, tail) = (&rest[..i], &rest[i + 2..]);
        let before = head.chars().next_back();
        let after_ws = tail.trim_start_matches([' ', '\t']);
        let after = after_ws.chars().next();
        out.push_str(head);
        if before.is_some_and(char::is_lowercase) && after.is_some_and(char::is_lowercase) {
            rest = after_ws;
        } else {
            out.push_str("-\n");
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// Joins the hard-wrapped lines of one paragraph into one line (PDF text), after
/// de-hyphenation, with single spaces.
pub fn join_lines(paragraph: &str) -> String {
    let text = dehyphenate(paragraph);
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

/// How many lines at the top and at the bottom of a page can be a running header/footer.
const EDGE_LINES: usize = 3;

/// Removes running headers and footers: a line among the first or last `EDGE_LINES`
/// non-empty lines of a page that recurs in that zone on at least half the pages (and on
/// at least 3 pages) is removed from every page where it so appears. Digits are ignored
/// when comparing, so `Page 3 of 19` matches `Page 4 of 19`. Returns the distinct lines
/// removed (with the digits of their first occurrence), for the report.
pub fn strip_repeated_lines(pages: &mut [String]) -> Vec<String> {
    let n = pages.len();
    if n < 3 {
        return Vec::new();
    }
    let key = |l: &str| -> String {
        l.chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect()
    };
    let edge = |page: &str| -> Vec<(usize, String)> {
        let lines: Vec<(usize, &str)> = page
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .collect();
        let mut idx: Vec<usize> = (0..lines.len().min(EDGE_LINES)).collect();
        idx.extend(lines.len().saturating_sub(EDGE_LINES).max(idx.len())..lines.len());
        idx.into_iter()
            .map(|i| (lines[i].0, key(lines[i].1)))
            .collect()
    };
    let mut pages_with: HashMap<String, usize> = HashMap::new();
    for page in pages.iter() {
        let mut seen: Vec<String> = edge(page).into_iter().map(|(_, k)| k).collect();
        seen.sort();
        seen.dedup();
        for k in seen {
            *pages_with.entry(k).or_default() += 1;
        }
    }
    let threshold = n.div_ceil(2).max(3);
    let mut removed: Vec<String> = Vec::new();
    for page in pages.iter_mut() {
        let drop: Vec<usize> = edge(page)
            .into_iter()
            .filter(|(_, k)| !k.is_empty() && pages_with.get(k).is_some_and(|&c| c >= threshold))
            .map(|(i, _)| i)
            .collect();
        if drop.is_empty() {
            continue;
        }
        let mut kept = String::with_capacity(page.len());
        for (i, line) in page.lines().enumerate() {
            if drop.contains(&i) {
                let t = line.trim().to_string();
                if !removed.iter().any(|r| key(r) == key(&t)) {
                    removed.push(t);
                }
            } else {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        *page = kept;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_normalized() {
        assert_eq!(
            normalize("  a\u{a0}\u{a0}b \t\r\nc\u{200b}d\u{ad}e  \n\n\n\nf\u{7}  "),
            "a b\ncde\n\nf"
        );
        assert_eq!(normalize("x\ty\r\rz"), "x\ty\n\nz");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn hyphens_across_line_breaks() {
        assert_eq!(dehyphenate("an exam-\nple of it"), "an example of it");
        assert_eq!(dehyphenate("an exam-\n   ple"), "an example");
        assert_eq!(dehyphenate("Jean-\nPaul"), "Jean-\nPaul");
        assert_eq!(dehyphenate("1990-\n1995"), "1990-\n1995");
        assert_eq!(dehyphenate("end-\n"), "end-\n");
        assert_eq!(
            join_lines("a long exam-\nple\n  wrapped\nhere"),
            "a long example wrapped here"
        );
    }

    #[test]
    fn running_headers_and_footers_are_removed() {
        let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
        let mut pages: Vec<String> = (1..=6)
            .map(|i| {
                let w = words[i - 1];
                format!(
                    "ACME Handbook\n{w} begins\n{w} middle\n{w} more\n{w} ends\nPage {i} of 6\n"
                )
            })
            .collect();
        pages[2].push_str("Confidential\n"); // once only: kept
        let removed = strip_repeated_lines(&mut pages);
        assert_eq!(removed, ["ACME Handbook", "Page 1 of 6"]);
        assert!(!pages[0].contains("ACME") && !pages[5].contains("Page 6"));
        assert!(pages[2].contains("Confidential") && pages[3].contains("delta middle"));
        assert!(pages[0].starts_with("alpha begins\n"), "{}", pages[0]);
        // Two pages are too few to tell a running header from a coincidence.
        let mut two = vec!["Header\nx".to_string(), "Header\ny".to_string()];
        assert!(strip_repeated_lines(&mut two).is_empty());
    }
}
