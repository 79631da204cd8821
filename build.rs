//! Build metadata for `portdoctor --version`: the commit and the target triple.
//!
//! The commit comes from `PORTDOCTOR_COMMIT` if set (a build from a source tarball can pass it),
//! else from `git rev-parse` when the source is a git checkout and git is installed, else it is
//! "unknown". Nothing here fails the build.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=PORTDOCTOR_COMMIT");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown-target".to_owned());
    let manifest = std::env::var("CARGO_MANIFEST_DIR").map(PathBuf::from).ok();

    let from_env = std::env::var("PORTDOCTOR_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty());
    // Only ask git when this crate is the top of its checkout: a tarball unpacked inside some
    // other repository must not report that repository's commit.
    let in_checkout = manifest.as_ref().is_some_and(|dir| {
        git(&["-C", &dir.to_string_lossy(), "rev-parse", "--show-toplevel"])
            .and_then(|top| std::fs::canonicalize(top).ok())
            .is_some_and(|top| std::fs::canonicalize(dir).is_ok_and(|d| d == top))
    });
    let commit = from_env.or_else(|| {
        if !in_checkout {
            return None;
        }
        let dir = manifest.as_ref()?.to_string_lossy().into_owned();
        // Rebuild when HEAD moves: HEAD itself, the branch it points to, and packed refs (only
        // files that exist: cargo reruns a script on every build for a missing one).
        let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
        watch.extend(git(&["-C", &dir, "symbolic-ref", "-q", "HEAD"]));
        for path in &watch {
            if let Some(p) = git(&["-C", &dir, "rev-parse", "--git-path", path]) {
                let p = PathBuf::from(&dir).join(p);
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
        }
        git(&["-C", &dir, "rev-parse", "--short=12", "HEAD"])
    });
    let commit = commit.unwrap_or_else(|| "unknown".to_owned());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=PORTDOCTOR_COMMIT={commit}");
    println!("cargo:rustc-env=PORTDOCTOR_TARGET={target}");
    println!("cargo:rustc-env=PORTDOCTOR_VERSION_LINE={version} (commit {commit}, {target})");
}
