//! Who lives in a network namespace, from files only: the container runtime and id and the
//! Kubernetes pod UID from a process's `/proc/PID/cgroup`, and the pod's namespace and name from
//! the kubelet's `/var/log/pods/<namespace>_<name>_<uid>` directories. Pure parsers; the reads
//! are in `collect::linux::namespaces`.

use crate::snapshot::{Container, Pod};

/// Runtime prefixes of systemd scope units (`<prefix>-<id>.scope`) and the runtime they name.
const SCOPE_PREFIXES: &[(&str, &str)] = &[
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

/// The container and pod a `/proc/PID/cgroup` text names, when it names any. Handles cgroup v2
/// (`0::/path`) and v1 (`N:controllers:/path`) lines, the systemd driver
/// (`kubepods-besteffort-pod<uid with _>.slice/cri-containerd-<id>.scope`,
/// `docker-<id>.scope`) and the cgroupfs driver (`/kubepods/<qos>/pod<uid>/<id>`,
/// `/docker/<id>`).
pub fn from_cgroup(text: &str) -> (Option<Container>, Option<String>) {
    let mut container = None;
    let mut pod_uid = None;
    for line in text.lines() {
        // hierarchy-ID:controller-list:cgroup-path; the path may itself contain ':'.
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let (c, p) = from_cgroup_path(path);
        container = container.or(c);
        pod_uid = pod_uid.or(p);
        if container.is_some() && pod_uid.is_some() {
            break;
        }
    }
    (container, pod_uid)
}

fn from_cgroup_path(path: &str) -> (Option<Container>, Option<String>) {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut container = None;
    let mut pod_uid = None;
    for (i, part) in parts.iter().enumerate() {
        // systemd driver: pod slice and runtime scope.
        if let Some(rest) = part.strip_suffix(".slice") {
            if let Some(uid) = rest.rsplit_once("-pod").map(|(_, u)| u) {
                if rest.starts_with("kubepods") && is_uid(&uid.replace('_', "-")) {
                    pod_uid = Some(uid.replace('_', "-"));
                }
            }
        }
        if let Some(unit) = part.strip_suffix(".scope") {
            for (prefix, runtime) in SCOPE_PREFIXES {
                if let Some(id) = unit.strip_prefix(prefix) {
                    if is_container_id(id) {
                        container = Some(Container {
                            runtime: (*runtime).to_string(),
                            id: id.to_string(),
                        });
                    }
                }
            }
        }
        // cgroupfs driver: /kubepods[/qos]/pod<uid>/<id> and /docker/<id>. Read from inside a
        // cgroup namespace (a DaemonSet's container) the path is relative to the reader's own
        // cgroup, `/../../burstable/pod<uid>/<id>`, and `kubepods` may be among the hidden parts.
        if let Some(uid) = part.strip_prefix("pod") {
            let above = &parts[..i];
            if (above.contains(&"kubepods") || above.contains(&"..")) && is_uid(uid) {
                pod_uid = Some(uid.to_string());
                if let Some(id) = parts.get(i + 1).filter(|id| is_container_id(id)) {
                    container = Some(Container {
                        runtime: "kubernetes".to_string(),
                        id: (*id).to_string(),
                    });
                }
            }
        }
        if *part == "docker" {
            if let Some(id) = parts.get(i + 1).filter(|id| is_container_id(id)) {
                container = Some(Container {
                    runtime: "docker".to_string(),
                    id: (*id).to_string(),
                });
            }
        }
    }
    (container, pod_uid)
}

/// Container ids are 64 lowercase hex digits (docker, containerd, CRI-O, podman).
fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pod UID: a UUID (8-4-4-4-12 hex).
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The pod a kubelet log directory name (`<namespace>_<name>_<uid>`) stands for, if it is one.
/// Kubernetes names cannot contain `_`, so the split is unambiguous.
pub fn pod_from_log_dir(dir_name: &str) -> Option<Pod> {
    let mut it = dir_name.splitn(3, '_');
    let (namespace, name, uid) = (it.next()?, it.next()?, it.next()?);
    (!namespace.is_empty() && !name.is_empty() && is_uid(uid)).then(|| Pod {
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c1b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";
    const UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

    #[test]
    fn systemd_driver_kubernetes_v2() {
        let text = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope\n",
            UID.replace('-', "_")
        );
        let (c, p) = from_cgroup(&text);
        assert_eq!(
            c,
            Some(Container {
                runtime: "containerd".into(),
                id: ID.into()
            })
        );
        assert_eq!(p.as_deref(), Some(UID));
    }

    #[test]
    fn guaranteed_pod_has_no_qos_slice_and_crio() {
        let text = format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
            UID.replace('-', "_")
        );
        let (c, p) = from_cgroup(&text);
        assert_eq!(c.map(|c| c.runtime), Some("cri-o".into()));
        assert_eq!(p.as_deref(), Some(UID));
    }

    #[test]
    fn cgroupfs_driver_v1_lines() {
        let text = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{ID}\n11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n0::/\n"
        );
        let (c, p) = from_cgroup(&text);
        assert_eq!(c.map(|c| c.id), Some(ID.to_string()));
        assert_eq!(p.as_deref(), Some(UID));
    }

    /// Inside a cgroup namespace (a DaemonSet's container) other pods' paths are relative to
    /// the reader's cgroup.
    #[test]
    fn paths_relative_to_a_cgroup_namespace() {
        let systemd = format!(
            "0::/../../kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let cgroupfs = format!("0::/../../burstable/pod{UID}/{ID}");
        for text in [systemd, cgroupfs] {
            let (c, p) = from_cgroup(&text);
            assert_eq!(c.map(|c| c.id), Some(ID.to_string()), "{text}");
            assert_eq!(p.as_deref(), Some(UID), "{text}");
        }
        assert_eq!(
            from_cgroup(&format!("0::/burstable/pod{UID}/{ID}")),
            (None, None)
        );
    }

    #[test]
    fn docker_both_drivers_and_podman() {
        for text in [
            format!("0::/system.slice/docker-{ID}.scope"),
            format!("3:memory:/docker/{ID}"),
        ] {
            let (c, p) = from_cgroup(&text);
            assert_eq!(c.map(|c| c.runtime), Some("docker".into()), "{text}");
            assert_eq!(p, None);
        }
        let (c, _) = from_cgroup(&format!("0::/machine.slice/libpod-{ID}.scope/container"));
        assert_eq!(c.map(|c| c.runtime), Some("podman".into()));
    }

    #[test]
    fn plain_processes_name_nothing() {
        for text in [
            "0::/user.slice/user-0.slice/session-3.scope",
            "0::/system.slice/nginx.service",
            "0::/",
            "",
            "garbage",
            "0::/kubepods.slice/kubepods-podnot_a_uid.slice/docker-short.scope",
        ] {
            assert_eq!(from_cgroup(text), (None, None), "{text}");
        }
    }

    #[test]
    fn kubelet_log_dirs() {
        assert_eq!(
            pod_from_log_dir(&format!("default_web-1_{UID}")),
            Some(Pod {
                namespace: "default".into(),
                name: "web-1".into(),
                uid: UID.into()
            })
        );
        assert_eq!(pod_from_log_dir("default_web-1"), None);
        assert_eq!(pod_from_log_dir(&format!("_web_{UID}")), None);
        assert_eq!(pod_from_log_dir("a_b_notauid"), None);
    }
}
