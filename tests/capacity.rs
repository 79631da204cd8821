//! `portdoctor capacity` end to end: the text and JSON answers (insta), exit codes, usage errors,
//! the domain.md figures through the CLI, and `--from-host` inside a network namespace.

mod common;

use common::portdoctor;
#[cfg(target_os = "linux")]
use common::{require_root, Netns};
use serde_json::Value;

fn json(args: &[&str]) -> (Value, i32) {
    let run = portdoctor(&[&["capacity", "--json"][..], args].concat());
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", run.stdout, run.stderr));
    assert_eq!(v["schema"], "portdoctor.capacity/v1");
    (v, run.code)
}

#[test]
fn text_answer_for_the_issue_example() {
    let run = portdoctor(&["capacity", "--rate", "3000", "--lifetime", "50ms"]);
    assert_eq!(run.code, 2, "does not fit: {}", run.stderr);
    insta::assert_snapshot!(run.stdout);
}

#[test]
fn json_answer_windows_2019() {
    let (v, code) = json(&["--os", "windows-2019", "--rate", "200"]);
    assert_eq!(code, 2);
    insta::assert_snapshot!(serde_json::to_string_pretty(&v).unwrap());
}

#[test]
fn presets_match_domain_md_through_the_cli() {
    for (os, per_s) in [
        ("linux-default", 470.5),
        ("windows-2019", 136.5),
        ("windows-legacy", 68.3),
        ("windows-tuned", 1092.3),
    ] {
        let (v, code) = json(&["--os", os]);
        assert_eq!(code, 0, "{os}: no demand, exit 0");
        let got = v["outcome"]["per_pool_per_s"].as_f64().unwrap();
        assert!((got - per_s).abs() < 0.1, "{os}: {got}");
        assert_eq!(v["changes"], Value::Array(vec![]));
    }
}

#[test]
fn exit_codes_follow_the_fit() {
    // 300/s of 470/s: fits, 64 % full → 0.
    assert_eq!(json(&["--rate", "300"]).1, 0);
    // 400/s: 85 % full → 1.
    assert_eq!(json(&["--rate", "400"]).1, 1);
    // tcp_tw_reuse=1 on loopback-free traffic: 28,232 / 1 s.
    let (v, code) = json(&["--rate", "10000", "--tw-reuse", "1"]);
    assert_eq!(code, 0);
    assert_eq!(v["outcome"]["hold_reason"], "tw_reuse");
    let (v, code) = json(&[
        "--rate",
        "1000",
        "--destinations",
        "8",
        "--bind-before-connect",
    ]);
    assert_eq!(code, 2);
    assert_eq!(v["outcome"]["scope"], "local_address");
    assert_eq!(v["recommended"], "app.keepalive");
    assert!(v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == "app.ip_bind_address_no_port" && c["fits"] == true));
}

#[test]
fn usage_errors_exit_4() {
    for args in [
        &["capacity", "--rate", "fast"][..],
        &["capacity", "--range", "5000", "4000"],
        &["capacity", "--tw-reuse", "3"],
        &["capacity", "--os", "windows-95"],
        &["capacity", "--netns", "x"],
        &["capacity", "--keepalive", "150%"],
    ] {
        let run = portdoctor(args);
        assert_eq!(run.code, 4, "{args:?}: {}", run.stderr);
    }
}

#[cfg(target_os = "linux")]
#[test]
fn from_host_reads_the_namespace() {
    if !require_root("from_host_reads_the_namespace") {
        return;
    }
    let ns = Netns::new("cap");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    ns.sysctl("net.ipv4.ip_local_reserved_ports", "40000-40009");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "1");
    let (v, code) = json(&["--from-host", "--netns", &ns.name, "--rate", "50"]);
    assert_eq!(v["source"], format!("netns:{}", ns.name));
    assert_eq!(v["scenario"]["range"]["low"], 40000);
    assert_eq!(v["outcome"]["usable_ports"], 90);
    assert_eq!(v["outcome"]["hold_reason"], "tw_reuse");
    // 90 ports / 1 s reuse delay = 90/s ≥ 50/s, but 56 % full → fits, exit 0.
    assert_eq!(code, 0, "{v}");
}

#[test]
fn cloud_nat_model_compares_open_flows_per_destination_with_the_quota() {
    // 400/s over 2 destinations, 0.5 s each: 100 open flows per destination.
    let base = [
        "--rate",
        "400",
        "--lifetime",
        "500ms",
        "--destinations",
        "2",
    ];
    let (v, code) = json(&[&base[..], &["--cloud-nat", "azure-lb:64"]].concat());
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["cloud_nat"]["flows_per_destination"], 100.0);
    assert_eq!(v["cloud_nat"]["quota"], 64);
    assert_eq!(v["cloud_nat"]["fits"], false);
    let (v, code) = json(&[&base[..], &["--cloud-nat", "aws-natgw"]].concat());
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["cloud_nat"]["fits"], true);
    // 100 of 128 (78 %): fits, but over --warn's 70 % → 1, as a pool that full would be.
    let (v, code) = json(&[&base[..], &["--cloud-nat", "azure-lb:128"]].concat());
    assert_eq!(v["cloud_nat"]["fits"], true);
    assert_eq!(code, 1, "{v}");
    let (v, _) = json(&base);
    assert!(
        v.get("cloud_nat").is_none(),
        "absent without --cloud-nat: {v}"
    );
}
