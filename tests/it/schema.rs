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

/// Prints the YAML file `argv[1]` as JSON, read by PyYAML (YAML 1.1); exits 3 without PyYAML.
const PYYAML_TO_JSON: &str = "import json, sys
try:
    import yaml
except ImportError:
    sys.exit(3)
print(json.dumps(yaml.safe_load(open(sys.argv[1], encoding='utf-8'))))";

/// `file` read by PyYAML, as JSON; `None` after telling the terminal that `test` did not run (no PyYAML).
fn read_by_pyyaml(test: &str, file: &Path) -> Option<serde_json::Value> {
    let out = std::process::Command::new("python3").args(["-c", PYYAML_TO_JSON]).arg(file).output();
    let not_run = |why: &str| {
        use std::io::Write;
        let line = format!("NOT RUN: {test}: {why} (scripts/install-deps.sh installs python3-yaml)\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
        None
    };
    match out {
        Err(e) => not_run(&format!("python3 cannot be run: {e}")),
        Ok(out) if out.status.code() == Some(3) => not_run("python3 has no PyYAML"),
        Ok(out) => {
            assert!(out.status.success(), "PyYAML cannot read {} as JSON: {}", file.display(), String::from_utf8_lossy(&out.stderr));
            Some(serde_json::from_slice(&out.stdout).expect("the script prints JSON"))
        }
    }
}

/// The committed schema's complaints about `file` as PyYAML reads it; `None`: PyYAML is absent.
fn pyyaml_schema_errors(test: &str, file: &Path) -> Option<Vec<String>> {
    let value = read_by_pyyaml(test, file)?;
    Some(committed_validator().iter_errors(&value).map(|e| format!("{}: {e}", e.instance_path())).collect())
}

#[test]
fn every_shipped_scenario_read_by_pyyaml_as_yaml_1_1_passes_the_committed_schema() {
    for file in shipped_scenarios() {
        let Some(errors) = pyyaml_schema_errors("every_shipped_scenario_read_by_pyyaml_as_yaml_1_1_passes_the_committed_schema", &file) else { return };
        assert!(errors.is_empty(), "{} read as YAML 1.1 breaks the schema (quote the value): {errors:#?}", file.display());
    }
}

#[test]
fn a_plain_on_read_by_pyyaml_is_a_boolean_the_schema_rejects_and_waf_e2e_still_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("plain-on.yaml");
    let text = std::fs::read_to_string(root().join("scenarios/sqli-blocked.yaml")).expect("read scenario");
    assert!(text.contains("  mode: \"On\"\n"), "the shipped scenario quotes On");
    std::fs::write(&file, text.replacen("  mode: \"On\"\n", "  mode: On\n", 1)).expect("write scenario");
    waf_e2e::scenario::load_file(&file).unwrap_or_else(|e| panic!("waf-e2e reads YAML 1.2, where a plain On is text: {e}"));
    let Some(errors) = pyyaml_schema_errors("a_plain_on_read_by_pyyaml_is_a_boolean_the_schema_rejects_and_waf_e2e_still_accepts", &file) else { return };
    assert!(errors.iter().any(|e| e.starts_with("/policy/mode: true")), "{errors:#?}");
}

#[test]
fn the_schema_warns_about_a_plain_on() {
    let schema = std::fs::read_to_string(root().join(SCHEMA_FILE)).expect("read the committed schema");
    assert!(schema.contains("Write `\\\"On\\\"` quoted: YAML 1.1 readers (PyYAML"), "the Mode description names the pitfall");
}
