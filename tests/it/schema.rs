//! `waf-e2e schema`: the JSON Schema of scenario files, generated from the model, committed as
//! `scenarios/scenario.schema.json` and named by every scenario's yaml-language-server modeline.

use std::path::{Path, PathBuf};
use waf_e2e::input::tree;
use waf_e2e::scenario::schema::{MODELINE, SCHEMA_FILE};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed schema file, compiled by the validator crate (not by the loader's own copy).
fn committed_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join(SCHEMA_FILE)).expect("read the committed schema");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the committed schema is JSON");
    jsonschema::validator_for(&schema).expect("the committed schema is a valid JSON Schema")
}

/// A scenario file as the JSON value an editor's schema check sees.
fn as_json(path: &Path, text: &str) -> serde_json::Value {
    tree::parse(path, text).unwrap_or_else(|p| panic!("{p}")).value.to_json()
}

fn shipped_scenarios() -> Vec<PathBuf> {
    let files = waf_e2e::input::yaml_files(&root().join("scenarios")).expect("list scenarios/");
    assert!(files.len() >= 5, "the shipped scenarios are found: {files:?}");
    files
}

#[test]
fn the_schema_command_prints_the_committed_schema() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waf-e2e")).arg("schema").output().expect("run waf-e2e schema");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let committed = std::fs::read_to_string(root().join(SCHEMA_FILE)).expect("read the committed schema");
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "{SCHEMA_FILE} is out of date with the scenario model: regenerate it with `cargo run -- schema > {SCHEMA_FILE}`"
    );
}

#[test]
fn the_committed_schema_accepts_every_shipped_scenario() {
    let validator = committed_validator();
    for file in shipped_scenarios() {
        let text = std::fs::read_to_string(&file).expect("read scenario");
        let errors: Vec<String> = validator.iter_errors(&as_json(&file, &text)).map(|e| format!("{}: {e}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{} breaks the schema: {errors:#?}", file.display());
    }
}

#[test]
fn the_committed_schema_rejects_a_scenario_with_an_unknown_field() {
    let validator = committed_validator();
    let file = root().join("scenarios/sqli-blocked.yaml");
    let text = std::fs::read_to_string(&file).expect("read scenario").replacen("\npolicy:\n", "\nretries: 3\npolicy:\n", 1);
    let errors: Vec<String> = validator.iter_errors(&as_json(&file, &text)).map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("retries"), "{errors:?}");
}

#[test]
fn every_shipped_scenario_names_the_schema_in_its_first_line() {
    for file in shipped_scenarios() {
        let text = std::fs::read_to_string(&file).expect("read scenario");
        assert_eq!(text.lines().next(), Some(MODELINE), "{} lacks the yaml-language-server modeline", file.display());
    }
}
