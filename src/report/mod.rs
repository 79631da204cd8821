//! Rendering only: turns an [`Analysis`](crate::analysis::Analysis) into text or JSON.

pub mod json;
pub mod namespaces;
pub mod text;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
