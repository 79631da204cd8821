//! OpenMetrics text → Prometheus text format 0.0.4, for node_exporter's textfile collector and
//! clients that do not ask for OpenMetrics. The two differ, for what we emit, only in three
//! ways: counter families are named with `_total` in the classic format, there are no `# UNIT`
//! lines, and no `# EOF` terminator.

use std::collections::HashSet;

/// The `Content-Type` of [`to_classic`] text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Converts OpenMetrics text as written by prometheus-client to the classic text format.
pub fn to_classic(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_classic;

    #[test]
    fn counters_get_total_unit_and_eof_go() {
        let om = "# HELP x_collections Collections.\n# TYPE x_collections counter\nx_collections_total 3\n# HELP x_d Duration.\n# TYPE x_d gauge\n# UNIT x_d seconds\nx_d 0.5\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP x_collections_total Collections.\n# TYPE x_collections_total counter\nx_collections_total 3\n# HELP x_d Duration.\n# TYPE x_d gauge\nx_d 0.5\n"
        );
    }
}
