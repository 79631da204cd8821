//! Parsers for user-supplied values (durations, ratios) with messages that say what is wanted.

/// `60`, `60s`, `1.5m`, `2h`, `500ms` → seconds.
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
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v * mult),
        _ => Err(format!(
            "{s:?} is not a duration: use seconds or a unit, e.g. 60, 60s, 2m, 500ms"
        )),
    }
}

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
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_seconds("60"), Ok(60.0));
        assert_eq!(parse_duration_seconds("60s"), Ok(60.0));
        assert_eq!(parse_duration_seconds("2m"), Ok(120.0));
        assert_eq!(parse_duration_seconds("500ms"), Ok(0.5));
        assert!(parse_duration_seconds("soon").is_err());
        assert!(parse_duration_seconds("-1").is_err());
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
