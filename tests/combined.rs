//! One namespace with a TCP pool, a UDP pool and SNAT pools at once, with connect() failures
//! traced: the seams between the kinds of pool in `check` (text and JSON), snapshot files and
//! `top`. The fixture `tests/fixtures/snapshot/linux-tcp-udp-snat.json` was saved with
//! `check --netns node --observe 6s --save` on a real NAT (pod → node → remote, nft
//! `masquerade to :50000-50099`, node range 40000–40099): the node's TCP pool to :9090 full with
//! 5 EADDRNOTAVAIL, its 70 UDP sockets, SNAT pools to :8080 (the pod's flows) and :9090 (the
//! node's own, masqueraded) at 100 of 100 with `insert_failed` 12.

use portdoctor::analysis::{analyze, Thresholds};
use portdoctor::report::{json, text};
use portdoctor::snapshot::file;
use portdoctor::snapshot::Snapshot;
use serde_json::Value;
use std::path::Path;

fn fixture() -> Snapshot {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/snapshot/linux-tcp-udp-snat.json");
    file::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn text_report(s: &Snapshot, top: Option<usize>) -> String {
    let a = analyze(s, Thresholds::default());
    text::render(s, &a, &text::TextOptions { color: false, top })
}

fn json_report(s: &Snapshot, top: Option<usize>) -> Value {
    let out = json::render(s, &analyze(s, Thresholds::default()), top);
    serde_json::from_str(&out).expect("check JSON")
}

fn kinds(v: &Value) -> Vec<(String, f64)> {
    v["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .map(|p| {
            (
                format!("{}/{}", p["protocol"].as_str().unwrap_or("?"), p["scope"]),
                p["utilization"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect()
}

/// The text report's `pools:` line counts what `verdict.pools` counts: TCP, UDP and SNAT.
#[test]
fn text_pool_counts_match_json_for_every_kind() {
    let s = fixture();
    let v = json_report(&s, None);
    let n = |l: &str| v["verdict"]["pools"][l].as_u64().expect("verdict.pools");
    assert_eq!((n("critical"), n("warning"), n("ok")), (3, 1, 0), "{v}");
    let t = text_report(&s, Some(20));
    assert!(
        t.contains("pools: 3 critical, 1 warning, 0 ok"),
        "text counts differ from JSON:\n{t}"
    );
    // Findings of every kind write a percentage the same way.
    assert!(t.contains("UDP ipv4 is 70% full"), "{t}");
    assert!(
        t.contains("10.241.2.2:9090 (tcp): 100 of 100 NAT ports in use (100%"),
        "{t}"
    );
    for section in ["POOL local → remote", "UDP POOL", "SNAT POOL"] {
        assert!(t.contains(section), "{section} missing:\n{t}");
    }
}

/// `pools` is sorted by utilization whatever the kind, and `--top N` keeps N pools in all:
/// the fullest ones, SNAT rows included.
#[test]
fn json_top_limits_all_kinds_together() {
    let s = fixture();
    let all = kinds(&json_report(&s, None));
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(
        all.windows(2).all(|w| w[0].1 >= w[1].1),
        "pools not sorted by utilization: {all:?}"
    );
    for top in 1..=4 {
        let some = kinds(&json_report(&s, Some(top)));
        assert_eq!(some, all[..top], "--top {top}");
    }
    // The UDP pool (70 %) is the least used, so it is the one --top 3 leaves out.
    assert!(kinds(&json_report(&s, Some(3)))
        .iter()
        .all(|(k, _)| !k.starts_with("udp")));
}

#[test]
fn one_hidden_pool_is_singular() {
    let t = text_report(&fixture(), Some(1));
    assert!(t.contains("… 1 more SNAT pool (--top 0 shows all)"), "{t}");
    assert!(!t.contains("1 more SNAT pools"), "{t}");
}

/// Saved and loaded, the snapshot (UDP sockets, conntrack, connect failures) gives the same
/// report and the same bytes.
#[test]
fn snapshot_file_round_trips_udp_conntrack_and_failures() {
    let s = fixture();
    assert!(!s.udp_sockets.is_empty() && s.conntrack.is_some() && s.connect_failures.is_some());
    let bytes = file::to_vec(&s);
    let back = file::from_slice(&bytes, Path::new("t.json")).expect("load");
    assert_eq!(back, s);
    assert_eq!(json_report(&back, None), json_report(&s, None));
    assert_eq!(text_report(&back, Some(20)), text_report(&s, Some(20)));
    assert_eq!(file::to_vec(&back), bytes);
}

#[cfg(feature = "top")]
mod top {
    use std::time::{Duration, Instant};

    use portdoctor::analysis::Thresholds;
    use portdoctor::snapshot::FailureError;
    use portdoctor::top::failures::{Failures, TracedFailure};
    use portdoctor::top::{render, App, ViewOptions};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::fixture;

    /// `top`: the UDP row, the SNAT header and the FAIL/s column together.
    #[test]
    fn top_shows_udp_row_snat_header_and_fail_column() {
        let s = fixture();
        let t0 = Instant::now();
        let mut app = App::new(Duration::from_secs(1), Thresholds::default());
        app.failures = Some(Failures::new(t0));
        app.ingest(t0, s.clone());
        let f = app.failures.as_mut().expect("failures");
        for _ in 0..6 {
            f.add(TracedFailure {
                unix_ms: 1_795_814_043_512,
                pid: 23_306,
                process: Some("python3".into()),
                netns: Some(0),
                local_ip: Some("10.241.2.1".parse().expect("ip")),
                remote_ip: Some("10.241.2.2".parse().expect("ip")),
                remote_port: Some(9090),
                error: FailureError::AddrNotAvail,
            });
        }
        app.ingest(t0 + Duration::from_secs(2), s);
        let mut term = Terminal::new(TestBackend::new(120, 14)).expect("test backend");
        term.draw(|fr| {
            render(
                &app,
                ViewOptions { color: false },
                fr.area(),
                fr.buffer_mut(),
            );
        })
        .expect("draw");
        let frame = portdoctor::top::view::buffer_text(term.backend().buffer());
        assert!(frame.contains("FAIL/s"), "{frame}");
        // The pools line counts what check's does: TCP, UDP and SNAT.
        assert!(
            frame.contains("pools 3 critical, 1 warning, 0 ok"),
            "{frame}"
        );
        assert!(
            frame.contains("SNAT 10.241.2.1 → 10.241.2.2:8080 tcp 100/100 (100%) +1 pool")
                && !frame.contains("+1 pools"),
            "{frame}"
        );
        let row = |start: &str| {
            frame
                .lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no row {start}:\n{frame}"))
                .to_string()
        };
        assert!(
            row("10.241.2.1 →").split_whitespace().any(|w| w == "3"),
            "6 failures over 2 s are 3/s:\n{frame}"
        );
        assert!(row("UDP ipv4").contains("70%"), "{frame}");
        // No TIME_WAIT, NEW/s or FAIL/s for UDP (nor FULL IN): dashes, not zeros.
        let dashes = row("UDP ipv4")
            .split_whitespace()
            .filter(|w| *w == "—")
            .count();
        assert_eq!(dashes, 4, "{frame}");
        // A label wider than its column loses its middle, not the remote port.
        assert!(
            row("10.241.2.1 →")
                .split_whitespace()
                .any(|w| w.ends_with(":9090")),
            "{frame}"
        );
    }
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The README's contents line links every `##` section (UDP and NAT included), every `#anchor`
/// link resolves, and the UDP and NAT sections say which privileges they need.
#[test]
fn readme_contents_reach_every_section_with_udp_and_nat() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut in_code = false;
    let mut headings = Vec::new();
    for l in readme.lines() {
        if l.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && l.starts_with('#') {
            headings.push((
                l.chars().take_while(|c| *c == '#').count(),
                l.trim_start_matches('#').trim(),
            ));
        }
    }
    let anchors: Vec<String> = headings.iter().map(|(_, h)| anchor(h)).collect();
    let contents = readme
        .lines()
        .skip_while(|l| !l.starts_with("Contents:"))
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(!contents.is_empty(), "README has no Contents line");
    for (level, h) in &headings {
        if *level == 2 {
            assert!(
                contents.contains(&format!("(#{})", anchor(h))),
                "the contents do not link ## {h}"
            );
        }
    }
    for link in readme.split("](#").skip(1) {
        let target = link.split(')').next().unwrap_or_default();
        assert!(
            anchors.iter().any(|a| a == target),
            "#{target} is no heading"
        );
    }
    for (h, needs) in [
        ("UDP pools", "any user"),
        ("NAT hosts: SNAT pools and conntrack", "CAP_NET_ADMIN"),
    ] {
        let body = readme
            .split_once(&format!("\n## {h}\n"))
            .unwrap_or_else(|| panic!("README has no ## {h}"))
            .1;
        let body = body.split("\n## ").next().unwrap_or_default();
        assert!(
            body.contains("Privileges") && body.contains(needs),
            "## {h}: {body}"
        );
    }
}

/// Under -A a quiet namespace is one line: its pools of every kind counted (singular for one),
/// the busiest of them all.
#[test]
fn quiet_namespace_line_counts_udp_pools() {
    use portdoctor::fixture::SnapshotBuilder;
    use portdoctor::report::namespaces::{render_text, Inspected};
    use portdoctor::snapshot::{NamespaceIdentity, NetnsId, UdpSocket};
    let tcp_only = SnapshotBuilder::linux()
        .range(40000, 40099)
        .pool("10.0.0.5", "10.0.0.9", 80, 10, 0, (0, 0))
        .build();
    let mut with_udp = tcp_only.clone();
    with_udp.udp_sockets = std::sync::Arc::new(
        (0..40u16)
            .map(|i| UdpSocket {
                local_ip: "0.0.0.0".parse().expect("ip"),
                local_port: 40000 + i,
                remote_ip: "0.0.0.0".parse().expect("ip"),
                remote_port: 0,
                ipv6_socket: false,
                v6only: None,
                inode: u64::from(i) + 1,
                uid: None,
                pid: None,
            })
            .collect(),
    );
    let id = |ino: u64, name: &str| NamespaceIdentity {
        id: NetnsId { dev: 4, ino },
        name: Some(name.into()),
        found_in: Vec::new(),
        pids: Vec::new(),
        container: None,
        pod: None,
        own: false,
    };
    let ids = [id(4_026_532_101, "tcp-only"), id(4_026_532_102, "with-udp")];
    let analyses = [
        analyze(&tcp_only, Thresholds::default()),
        analyze(&with_udp, Thresholds::default()),
    ];
    let snaps = [&tcp_only, &with_udp];
    let all: Vec<Inspected<'_>> = (0..2)
        .map(|i| Inspected {
            identity: &ids[i],
            snapshot: snaps[i],
            analysis: &analyses[i],
        })
        .collect();
    let text = render_text(
        &all,
        &[],
        &text::TextOptions {
            color: false,
            top: Some(20),
        },
    );
    let line = |name: &str| {
        text.lines()
            .find(|l| l.contains(&format!("netns {name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
            .to_string()
    };
    assert!(
        line("tcp-only").contains("· 1 pool · busiest 10%"),
        "{text}"
    );
    assert!(
        line("with-udp").contains("· 2 pools · busiest 40%"),
        "{text}"
    );
}
