//! Numbers in and out, for every layer: parsers for user-supplied values (durations, ratios,
//! rates) with messages that say what is wanted, and the formatting of counts, durations and
//! times that reports, findings, `top` and `capacity` share; text from other processes or the
//! system (process and host names) made safe to print.

use std::fmt::Write as _;

/// The longest duration any option accepts: a year. Longer values are typos or attacks, and
/// they overflow timers (`Duration::from_secs_f64` panics past u64 seconds).
pub const MAX_DURATION_SECONDS: f64 = 365.0 * 86_400.0;

/// `60`, `60s`, `1.5m`, `2h`, `500ms` → seconds, from 0 to [`MAX_DURATION_SECONDS`]. Every
/// duration option goes through here.
pub fn parse_duration_seconds(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>().map(|v| v * mult) {
        Ok(v) if (0.0..=MAX_DURATION_SECONDS).contains(&v) => Ok(v),
        Ok(v) if v > MAX_DURATION_SECONDS => {
            Err(format!("{s:?} is too long: at most 365 days (8760h)"))
        }
        _ => Err(format!(
            "{s:?} is not a duration: use seconds or a unit, e.g. 60, 60s, 2m, 500ms"
        )),
    }
}

/// The highest connection rate any option accepts (per second). A Linux host tops out around a
/// few hundred thousand connects per second; past this the arithmetic only produces nonsense.
pub const MAX_RATE_PER_S: f64 = 10_000_000.0;

/// `0.7`, `70%` → 0.7; must lie in (0, 1].
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    };
    match v {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a utilization threshold: use a fraction in (0, 1] or a percentage, e.g. 0.7 or 70%"
        )),
    }
}

/// Text from another process or the system (process names, host names) made safe to print:
/// control characters (C0, DEL, C1) and Unicode bidi overrides become visible escapes (`\x1b`,
/// `\u{202e}`), so a name cannot move the cursor, retitle the terminal or reorder a line.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
        if c.is_control() || bidi {
            let v = u32::from(c);
            let _ = if v < 0x80 {
                write!(out, "\\x{v:02x}")
            } else {
                write!(out, "\\u{{{v:x}}}")
            };
        } else {
            out.push(c);
        }
    }
    out
}

/// `2000`, `2000/s` → 2000.0 new connections per second, above 0 and at most
/// [`MAX_RATE_PER_S`]. Every rate option goes through here.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    match t.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= MAX_RATE_PER_S => Ok(v),
        _ => Err(format!(
            "{s:?} is not a rate: use a positive number of connections per second up to 10,000,000, e.g. 2000 or 2000/s"
        )),
    }
}

/// 28232 → "28,232".
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count and its noun, grouped: "1 port", "1,234 ports".
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{} {many}", group(n))
    }
}

/// Seconds as a short human duration: "0 s", "18 s", "4 min", "2.5 h", "3 d".
pub fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "—".into();
    }
    if seconds < 1.0 {
        "<1 s".into()
    } else if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7200.0 {
        format!("{:.0} min", seconds / 60.0)
    } else if seconds < 172_800.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.0} d", seconds / 86400.0)
    }
}

/// `1795814043512` → "2026-11-27 21:14:03 UTC".
pub fn format_utc(unix_ms: u64) -> String {
    let t = UtcTime::from_unix_ms(unix_ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// A UTC calendar time, for timestamps in reports and backup names (no time crate needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

impl UtcTime {
    /// From Unix milliseconds, proleptic Gregorian (H. Hinnant's civil_from_days).
    pub fn from_unix_ms(unix_ms: u64) -> Self {
        let secs = unix_ms / 1000;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        UtcTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(super::count(1, "port", "ports"), "1 port");
        assert_eq!(super::count(0, "port", "ports"), "0 ports");
        assert_eq!(super::count(28_232, "port", "ports"), "28,232 ports");
    }

    use super::*;

    #[test]
    fn printable_escapes_what_a_terminal_would_obey() {
        assert_eq!(printable("nginx"), "nginx");
        assert_eq!(printable("w3wp.exe ünïcode"), "w3wp.exe ünïcode");
        assert_eq!(
            printable("\u{1b}]0;PWNED\u{7}\u{1b}[2J"),
            "\\x1b]0;PWNED\\x07\\x1b[2J"
        );
        assert_eq!(printable("a\nb\tc\u{7f}"), "a\\x0ab\\x09c\\x7f");
        assert_eq!(printable("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_seconds("60"), Ok(60.0));
        assert_eq!(parse_duration_seconds("60s"), Ok(60.0));
        assert_eq!(parse_duration_seconds("2m"), Ok(120.0));
        assert_eq!(parse_duration_seconds("500ms"), Ok(0.5));
        assert!(parse_duration_seconds("soon").is_err());
        assert!(parse_duration_seconds("-1").is_err());
        assert_eq!(parse_duration_seconds("8760h"), Ok(MAX_DURATION_SECONDS));
        for absurd in [
            "1e308h",
            "1e20",
            "inf",
            "NaN",
            "8761h",
            "99999999999999999999ms",
        ] {
            assert!(parse_duration_seconds(absurd).is_err(), "{absurd}");
        }
    }

    proptest::proptest! {
        /// Whatever the text, the result is an error or a duration a timer can hold.
        #[test]
        fn durations_are_bounded(s in "\\PC{0,24}", n in proptest::num::f64::ANY, unit in "(ms|s|m|h|)") {
            for text in [s, format!("{n}{unit}")] {
                if let Ok(v) = parse_duration_seconds(&text) {
                    proptest::prop_assert!((0.0..=MAX_DURATION_SECONDS).contains(&v), "{text} -> {v}");
                    let _ = std::time::Duration::from_secs_f64(v);
                }
            }
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2000"), Ok(2000.0));
        assert_eq!(parse_rate("2000/s"), Ok(2000.0));
        assert_eq!(parse_rate(" 2.5 /s "), Ok(2.5));
        for bad in ["0", "-1", "fast", "inf", "NaN", "2000/s/s", "/s", ""] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grouping_and_durations() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(28232), "28,232");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(human_duration(18.2), "18 s");
        assert_eq!(human_duration(0.3), "<1 s");
        assert_eq!(human_duration(600.0), "10 min");
        assert_eq!(human_duration(9000.0), "2.5 h");
        assert_eq!(human_duration(f64::NAN), "—");
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_795_814_043_512), "2026-11-27 21:14:03 UTC");
        assert_eq!(format_utc(951_868_800_000), "2000-03-01 00:00:00 UTC");
    }

    #[test]
    fn ratios() {
        assert_eq!(parse_ratio("0.7"), Ok(0.7));
        assert_eq!(parse_ratio("90%"), Ok(0.9));
        assert!(parse_ratio("0").is_err());
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("x").is_err());
    }
}
