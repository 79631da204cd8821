//! Running the portdoctor binary under test (bounded) and reading its `check --json` report.

use std::process::{Command, Output};

use serde_json::Value;

use super::netns::Netns;
use super::process::{run_bounded, CMD_TIMEOUT};

/// The binary under test.
pub const PORTDOCTOR: &str = env!("CARGO_BIN_EXE_portdoctor");

/// One run of the binary.
pub struct PdRun {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl PdRun {
    /// The stdout as a `portdoctor.check/v1` report; panics with the whole run otherwise.
    pub fn json(&self) -> Value {
        assert!(
            (0..=2).contains(&self.code),
            "portdoctor {:?} exited {} (want 0, 1 or 2):\nstderr: {}\nstdout: {}",
            self.args,
            self.code,
            self.stderr,
            self.stdout
        );
        let v: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "portdoctor {:?}: stdout is not JSON ({e}):\n{}\nstderr: {}",
                self.args, self.stdout, self.stderr
            )
        });
        assert_eq!(v["schema"], "portdoctor.check/v1", "{v}");
        v
    }
}

/// Runs the portdoctor binary with ARGS (bounded).
pub fn portdoctor(args: &[&str]) -> PdRun {
    run_program(Command::new(PORTDOCTOR).args(args), args)
}

/// Runs a prepared command that ends in a portdoctor invocation; ARGS label the run in messages.
pub fn run_program(cmd: &mut Command, args: &[&str]) -> PdRun {
    cmd.env_remove("NO_COLOR");
    let out = run_bounded(cmd, CMD_TIMEOUT);
    PdRun {
        args: args.iter().map(ToString::to_string).collect(),
        code: out
            .status
            .code()
            .unwrap_or_else(|| panic!("portdoctor {args:?} was killed: {}", out.status)),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the binary with ARGS and extra environment (bounded); unlike [`portdoctor`] the process
/// may end by a signal (fault injection aborts it), so the raw output comes back.
pub fn portdoctor_raw(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(PORTDOCTOR);
    cmd.args(args).env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(&mut cmd, CMD_TIMEOUT)
}

impl Netns {
    /// `portdoctor check --netns NAME --json EXTRA...`: asserts the schema and an exit code of
    /// 0, 1 or 2 and returns the report and the code.
    pub fn check_json(&self, extra: &[&str]) -> (Value, i32) {
        let run = portdoctor(&[&["check", "--netns", &self.name, "--json"][..], extra].concat());
        let report = run.json();
        assert_eq!(report["host"]["netns"], self.name.as_str(), "{report}");
        (report, run.code)
    }
}
