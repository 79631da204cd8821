//! deploy/kubernetes/ against the Kubernetes schemas, offline: the DaemonSet, ServiceAccount and
//! Service with `kubernetes-validate --strict` (PyPI; it bundles the API schemas of every
//! Kubernetes minor version) for the oldest version the manifests need (1.30: the AppArmor
//! field) and the newest it knows; the ServiceMonitor with the Prometheus Operator's CRD models
//! (`cloudcoil-models-prometheus-operator`, PyPI), strictly (a field the CRD does not know
//! fails); and the files against each other (selectors, ports, the exporter's arguments).
//! test.sh installs both packages. The capabilities the DaemonSet grants are tested by
//! experiment in tests/namespaces.rs (`daemonset_capabilities_are_the_least_that_work`).

#![cfg(target_os = "linux")]

use std::path::PathBuf;
use std::process::Command;

const VALIDATOR_INSTALL: &str =
    "python3 -m pip install kubernetes-validate==1.37.0 cloudcoil-models-prometheus-operator==0.80.1.0 (test.sh does)";

fn kube_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(kube_dir())
        .expect("deploy/kubernetes exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "manifests: {files:?}");
    files
}

/// The validators are importable, or the test fails saying how to install them.
fn require_validators() {
    let out = Command::new("python3")
        .args([
            "-c",
            "import kubernetes_validate, cloudcoil.models.prometheus_operator",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Kubernetes schema validators are missing: {VALIDATOR_INSTALL}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn builtin_kinds_validate_strictly_against_kubernetes_schemas() {
    require_validators();
    for version in ["1.30.0", "1.37.0"] {
        let out = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .args(manifests())
            .output()
            .expect("python3 -m kubernetes_validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "Kubernetes {version}:\n{text}");
        for resource in [
            "daemonset/portdoctor",
            "serviceaccount/portdoctor",
            "service/portdoctor",
        ] {
            assert!(
                text.contains(&format!("passed for resource {resource} against")),
                "{resource} not validated for {version}:\n{text}"
            );
        }
        assert!(!text.contains("ERROR"), "{text}");
    }
}

/// Validates the ServiceMonitor against the CRD models (a dump of the parsed model must give
/// back the file: nothing unknown was dropped) and checks that the files fit together.
const CHECK_PY: &str = r#"
import sys, yaml
from pathlib import Path
from cloudcoil.models.prometheus_operator import v1

docs = {}
for f in sorted(Path(sys.argv[1]).glob("*.yaml")):
    for d in yaml.safe_load_all(f.read_text()):
        if d:
            docs[d["kind"]] = d

sm = docs["ServiceMonitor"]
back = v1.ServiceMonitor.model_validate(sm).model_dump(by_alias=True, exclude_none=True)
assert back == sm, f"the ServiceMonitor has fields its CRD does not know:\n{sm}\n{back}"

ds, svc = docs["DaemonSet"], docs["Service"]
pod = ds["spec"]["template"]["spec"]
labels = ds["spec"]["template"]["metadata"]["labels"]
assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items(), "DaemonSet selector"
assert svc["spec"]["selector"].items() <= labels.items(), "the Service selects the pods"
assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), "the ServiceMonitor selects the Service"
assert svc["spec"].get("clusterIP") == "None", "headless: one endpoint per node"

c = pod["containers"][0]
args = c["args"]
assert args[0] == "serve" and "--all-namespaces" in args, args
listen = args[args.index("--listen") + 1]
assert listen.startswith("0.0.0.0:"), listen
port = int(listen.rsplit(":", 1)[1])
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
assert ports["metrics"] == port, (ports, listen)
svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
assert svc_ports["metrics"]["targetPort"] == "metrics", svc_ports
assert sm["spec"]["endpoints"][0]["port"] == "metrics"
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"

assert pod["hostPID"] is True and not pod.get("hostNetwork", False)
assert pod["automountServiceAccountToken"] is False
sc = c["securityContext"]
assert sc["capabilities"]["drop"] == ["ALL"], sc
assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and not sc.get("privileged")
mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
for path in ("/run/netns", "/var/log/pods"):
    assert mounts[path]["readOnly"] is True, mounts
assert mounts["/run/netns"]["mountPropagation"] == "HostToContainer"
drops = [r for r in sm["spec"]["endpoints"][0]["relabelings"] if r["action"] == "labeldrop"]
assert drops and "pod" in drops[0]["regex"] and "container" in drops[0]["regex"], drops
print("ok")
"#;

#[test]
fn service_monitor_validates_and_the_files_fit_together() {
    require_validators();
    let out = Command::new("python3")
        .args(["-c", CHECK_PY])
        .arg(kube_dir())
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
