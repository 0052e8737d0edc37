//! Numbers for people, one formatter each: sizes in binary units, counts with k/M/G, and
//! durations as minutes and seconds or hours and minutes.

/// A size for people: `512 B`, `1.5 KiB`, `12.3 MiB`, `1.07 GiB`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A count for people: `950`, `12.3k`, `1.50M`, `7.00G`.
pub fn human_count(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2}G", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e4 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// A duration for people: `4m05s`, `2h07m`.
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.00 GiB");
    }

    #[test]
    fn counts_and_durations() {
        assert_eq!(human_count(950.0), "950");
        assert_eq!(human_count(12_300.0), "12.3k");
        assert_eq!(human_count(1.5e6), "1.50M");
        assert_eq!(human_duration(245.0), "4m05s");
        assert_eq!(human_duration(7620.0), "2h07m");
    }
}
