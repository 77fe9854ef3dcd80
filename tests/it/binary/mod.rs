//! The built `waf-e2e` binary, run from the crate root (so `scenarios/` and `fixtures/` resolve).

use std::process::{Command, Output};

/// Runs `waf-e2e args` to its end and returns its exit status and output.
pub fn waf_e2e(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_waf-e2e"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run waf-e2e")
}
