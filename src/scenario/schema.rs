//! The JSON Schema of scenario files, generated from the model (`waf-e2e schema`). Editors use the
//! committed copy (`scenarios/scenario.schema.json`, named in each scenario's
//! `# yaml-language-server: $schema=...` line) to complete and check scenarios; the loader checks
//! every file against it, so that it reports all unknown, missing and mistyped fields at once.

use super::model::Scenario;
use std::sync::OnceLock;

/// Where the generated schema is committed, relative to the crate root.
pub const SCHEMA_FILE: &str = "scenarios/scenario.schema.json";

/// The modeline that points yaml-language-server at the schema, from a file in `scenarios/`.
pub const MODELINE: &str = "# yaml-language-server: $schema=./scenario.schema.json";

/// The scenario file schema, as a JSON value. Draft 7: the draft every JSON Schema tool and
/// editor plugin (yaml-language-server included) understands.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<Scenario>().to_value();
    if let Some(root) = schema.as_object_mut() {
        root.insert("title".into(), "waf-e2e scenario".into());
    }
    schema
}

/// The schema as `waf-e2e schema` prints it (and as it is committed): pretty JSON and a newline.
pub fn json_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// The compiled schema, built once per process.
pub fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    // The schema is generated from our own types: failing to compile it is a bug, caught by every test.
    VALIDATOR.get_or_init(|| jsonschema::validator_for(&json_schema()).expect("the generated scenario schema compiles"))
}
