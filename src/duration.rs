//! Durations as the contract writes them: whole numbers with `s`, `m`, `h`, `d`, `w` units,
//! concatenated (`90d`, `12h`, `1w2d`).

use std::time::Duration;

/// Parses a contract duration. Stricter than `humantime` on purpose: only the five units of
/// the contract, no spaces, no zero, so `1M` (months? minutes?) is refused rather than guessed.
pub fn parse(text: &str) -> Result<Duration, String> {
    let mut rest = text;
    if rest.is_empty() {
        return Err("expected a duration such as 90d, 12h or 1w2d, got an empty string".into());
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let unit = rest[digits..].chars().next();
        if digits == 0 || !matches!(unit, Some('s' | 'm' | 'h' | 'd' | 'w')) {
            return Err("expected whole numbers with the units s, m, h, d or w, such as 90d, 12h or 1w2d".into());
        }
        rest = &rest[digits + 1..];
    }
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("expected a duration such as 90d, 12h or 1w2d ({e})"))?;
    if duration.is_zero() {
        return Err("a duration must be longer than zero".into());
    }
    // Ten thousand years keeps every later timestamp addition far from overflow.
    if duration > Duration::from_secs(10_000 * 366 * 86_400) {
        return Err("a duration must be shorter than 10000 years".into());
    }
    Ok(duration)
}

/// Formats a duration back in contract units, largest first (`1w2d`, `90d`, `1h30m`).
pub fn format(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_contract_unit_and_combinations() {
        assert_eq!(parse("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse("1w2d"), Ok(Duration::from_secs(9 * 86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn refuses_what_the_contract_does_not_allow() {
        for bad in ["", "0s", "0d", "10", "d", "3x", "1M", "1y", "1.5h", "1 h", "-1d", "1d ", "1ms", "１d"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn refuses_durations_that_would_overflow_timestamps() {
        assert!(parse("99999999999999w").is_err());
        assert!(parse("5000000d").is_err());
    }

    #[test]
    fn formats_largest_unit_first() {
        assert_eq!(format(Duration::from_secs(9 * 86_400)), "1w2d");
        assert_eq!(format(Duration::from_secs(90 * 86_400)), "12w6d");
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(parse(&format(Duration::from_secs(1_234_567))), Ok(Duration::from_secs(1_234_567)));
    }
}
