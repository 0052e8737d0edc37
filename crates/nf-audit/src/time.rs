//! Times: entries carry RFC 3339 UTC with milliseconds (`2026-12-02T03:04:05.678Z`), which
//! sort as strings; `--since`/`--until` values are normalized to the same form.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{AuditError, Result};

/// The current time as an entry's `time`.
pub fn now() -> String {
    nf_protocol::rfc3339_now()
}

/// Normalizes a user-given time to an entry's form (UTC, milliseconds) so it compares with
/// `time` as a string. Accepts `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fff]]` (or a space for
/// `T`) with `Z`, `±HH:MM` or nothing (UTC), and ages `30s`, `15m`, `24h`, `7d` (before now).
pub fn parse_time(s: &str) -> Result<String> {
    let bad = || {
        AuditError::BadInput(format!(
            "`{s}` is not a time: use RFC 3339 (2026-12-01T09:00:00Z), a date (2026-12-01) or an age (24h, 7d)"
        ))
    };
    let t = s.trim();
    if let Some(unit) = t.chars().last().filter(|c| "smhd".contains(*c))
        && let Ok(n) = t[..t.len() - 1].parse::<u64>()
    {
        let mult = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86_400,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let ms = now.as_millis() as i64 - (n.saturating_mul(mult) as i64).saturating_mul(1000);
        return Ok(nf_protocol::rfc3339(
            ms.div_euclid(1000),
            ms.rem_euclid(1000) as u32,
        ));
    }
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = t.get(r)?;
        (!part.is_empty() && part.bytes().all(|c| c.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (y, mo, d) = (
        num(0..4).ok_or_else(bad)?,
        num(5..7).ok_or_else(bad)?,
        num(8..10).ok_or_else(bad)?,
    );
    let (mut h, mut mi, mut sec, mut ms, mut offset_min) = (0, 0, 0, 0i64, 0i64);
    let mut rest = &t[10..];
    if !rest.is_empty() {
        if !(rest.starts_with('T') || rest.starts_with('t') || rest.starts_with(' ')) {
            return Err(bad());
        }
        rest = &rest[1..];
        let two = |s: &str| -> Option<i64> {
            (s.len() >= 2 && s.as_bytes()[..2].iter().all(u8::is_ascii_digit))
                .then(|| s[..2].parse().ok())
                .flatten()
        };
        h = two(rest).ok_or_else(bad)?;
        rest = rest.get(2..).ok_or_else(bad)?;
        rest = rest.strip_prefix(':').ok_or_else(bad)?;
        mi = two(rest).ok_or_else(bad)?;
        rest = &rest[2..];
        if let Some(r) = rest.strip_prefix(':') {
            sec = two(r).ok_or_else(bad)?;
            rest = &r[2..];
            if let Some(r) = rest.strip_prefix('.') {
                let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
                if digits.is_empty() {
                    return Err(bad());
                }
                let three: String = format!("{digits:0<3}").chars().take(3).collect();
                ms = three.parse().map_err(|_| bad())?;
                rest = &r[digits.len()..];
            }
        }
        match rest {
            "" | "Z" | "z" => {}
            o if (o.starts_with('+') || o.starts_with('-')) && o.len() == 6 => {
                let oh = two(&o[1..]).ok_or_else(bad)?;
                let om = two(&o[4..]).ok_or_else(bad)?;
                if &o[3..4] != ":" {
                    return Err(bad());
                }
                offset_min = (oh * 60 + om) * if o.starts_with('-') { -1 } else { 1 };
            }
            _ => return Err(bad()),
        }
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Ok(nf_protocol::rfc3339(secs, ms as u32))
}

/// Howard Hinnant's days-from-civil.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_times() {
        assert_eq!(
            parse_time("2026-12-01").unwrap(),
            "2026-12-01T00:00:00.000Z"
        );
        assert_eq!(
            parse_time("2026-11-23T19:32:03.123Z").unwrap(),
            "2026-11-23T19:32:03.123Z"
        );
        assert_eq!(
            parse_time("2026-11-23 19:32").unwrap(),
            "2026-11-23T19:32:00.000Z"
        );
        assert_eq!(
            parse_time("2026-11-23T21:32:03.5+02:00").unwrap(),
            "2026-11-23T19:32:03.500Z"
        );
        assert_eq!(
            parse_time("2000-03-01T00:30:00-01:00").unwrap(),
            "2000-03-01T01:30:00.000Z"
        );
        let day_ago = parse_time("1d").unwrap();
        assert!(day_ago < now() && day_ago.len() == 24, "{day_ago}");
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-12-01T25:00",
            "2026-12-01X",
            "12h ago",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
