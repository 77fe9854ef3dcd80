//! FTW (Framework for Testing WAFs) YAML, version 1 of the format, as the OWASP CRS regression
//! corpus writes it: `meta`, then `tests[]` with `test_title`, `desc` and `stages[].stage.{input,output}`.
//!
//! Every field of the format is either mapped or refused: an unknown field is an input error naming
//! file, line and field (exit 2), never silently ignored. `dest_addr`, `port` and `protocol: http`
//! are replaced by the gateway the harness runs (the corpus targets a local server); any other
//! protocol is refused.

use crate::error::{InputProblem, InvalidInput};
use crate::input::{saphyr_problem, whole_file};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::{Path, PathBuf};

/// One FTW test: a title and its stages, each one request with expectations.
#[derive(Debug, Clone)]
pub struct FtwTest {
    /// The file it was read from.
    pub file: PathBuf,
    /// The line of its `test_title`.
    pub line: u64,
    /// `test_title` (e.g. `942100-1`).
    pub title: String,
    /// `desc`, when given.
    pub desc: String,
    /// The rule family of the file's directory (`942` for `REQUEST-942-...`), else the title's first three digits.
    pub family: String,
    /// `meta.enabled: false` in its file: upstream does not run it either.
    pub disabled: bool,
    /// The stages, in order.
    pub stages: Vec<FtwStage>,
}

impl FtwTest {
    /// `file:line test <title>`, the way failures name a test.
    pub fn locator(&self) -> String {
        format!("{}:{} test {}", self.file.display(), self.line, self.title)
    }
}

/// One stage: the request to send and what must be observed for it.
#[derive(Debug, Clone)]
pub struct FtwStage {
    /// The request.
    pub input: Input,
    /// The expectations.
    pub output: Output,
}

/// The request of a stage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Where upstream sent it; the harness sends to its gateway instead.
    #[serde(default)]
    pub dest_addr: Option<String>,
    /// Upstream's port; replaced by the gateway's.
    #[serde(default)]
    pub port: Option<u16>,
    /// `http` (the only protocol the harness sends).
    #[serde(default)]
    pub protocol: Option<String>,
    /// The request method, sent as written (default `GET`).
    #[serde(default)]
    pub method: Option<String>,
    /// The request target, sent as written (default `/`).
    #[serde(default)]
    pub uri: Option<String>,
    /// The protocol version of the request line, sent as written (default `HTTP/1.1`).
    #[serde(default)]
    pub version: Option<String>,
    /// Header lines in file order.
    #[serde(default)]
    pub headers: Headers,
    /// The body: a string, or a list of lines joined with CRLF.
    #[serde(default)]
    pub data: Option<Data>,
    /// `true`: send exactly the given headers (no Content-Length added).
    #[serde(default)]
    pub stop_magic: Option<bool>,
    /// The whole request as text, sent byte for byte.
    #[serde(default)]
    pub raw_request: Option<String>,
    /// The whole request, base64-encoded.
    #[serde(default)]
    pub encoded_request: Option<String>,
}

/// What a stage expects.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// A regex that must match the log of the request (its audit record's messages, `[id "N"] [msg "..."]`).
    #[serde(default)]
    pub log_contains: Option<String>,
    /// A regex that must not match it.
    #[serde(default)]
    pub no_log_contains: Option<String>,
    /// The response status (one code or a list of acceptable codes).
    #[serde(default)]
    pub status: Option<Status>,
    /// `true`: the request must end without an HTTP response (the connection fails or closes).
    #[serde(default)]
    pub expect_error: Option<bool>,
}

/// Acceptable response codes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Status {
    /// One code.
    One(u16),
    /// Any of these.
    Any(Vec<u16>),
}

impl Status {
    /// Whether `code` is acceptable.
    pub fn accepts(&self, code: u16) -> bool {
        match self {
            Status::One(c) => *c == code,
            Status::Any(cs) => cs.contains(&code),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::One(c) => write!(f, "{c}"),
            Status::Any(cs) => write!(f, "one of {cs:?}"),
        }
    }
}

/// A body: one string, or lines.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Data {
    /// Sent as written.
    Text(String),
    /// Joined with CRLF, as FTW does.
    Lines(Vec<String>),
}

impl Data {
    /// The body's text.
    pub fn text(&self) -> String {
        match self {
            Data::Text(t) => t.clone(),
            Data::Lines(lines) => lines.join("\r\n"),
        }
    }
}

/// Header lines in the order the file writes them (a map would reorder them, and the order is
/// part of what some rules inspect).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Headers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of header names to values")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Headers, E> {
                Ok(Headers::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut out = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, ScalarText>()? {
                    out.push((name, value.0));
                }
                Ok(Headers(out))
            }
        }
        d.deserialize_any(Ordered)
    }
}

/// A header value written as any scalar (`Content-Length: 11`, `Keep-Alive: 300`), as its text.
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'v> Visitor<'v> for Text {
            type Value = ScalarText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a header value (a string or number)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ScalarText, E> {
                Ok(ScalarText(String::new()))
            }
        }
        d.deserialize_any(Text)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    meta: RawMeta,
    #[serde(default)]
    tests: Vec<RawTest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    #[serde(default)]
    #[allow(dead_code)] // read so that it is a known field; reports name tests by file and title
    author: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    test_title: Spanned<String>,
    #[serde(default)]
    desc: Option<String>,
    stages: Vec<RawStageItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStageItem {
    stage: RawStage,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    input: Input,
    output: Output,
}

/// Reads every FTW file under `paths` (files, or directories searched recursively for `*.yaml`):
/// every problem of every file at once, each with file, line and field.
pub fn load(paths: &[PathBuf]) -> Result<Vec<FtwTest>, InvalidInput> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match yaml_files_recursive(path) {
            Ok(found) if found.is_empty() => problems.push(InputProblem { at: whole_file(path), field: String::new(), message: "holds no FTW *.yaml file".into() }),
            Ok(found) => files.extend(found),
            Err(e) => problems.push(InputProblem { at: whole_file(path), field: String::new(), message: e }),
        }
    }
    let mut tests = Vec::new();
    for file in &files {
        match std::fs::read_to_string(file) {
            Ok(text) => match parse(file, &text) {
                Ok(t) => tests.extend(t),
                Err(mut p) => problems.append(&mut p),
            },
            Err(e) => problems.push(InputProblem { at: whole_file(file), field: String::new(), message: format!("cannot read: {e}") }),
        }
    }
    if problems.is_empty() { Ok(tests) } else { Err(InvalidInput(problems)) }
}

/// `path` itself when it is a file, else every `*.yaml`/`*.yml` below it, sorted.
fn yaml_files_recursive(path: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = crate::input::yaml_files(path)?;
    if path.is_dir() {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(path).map_err(|e| format!("cannot list: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for d in dirs {
            out.extend(yaml_files_recursive(&d)?);
        }
    }
    Ok(out)
}

/// Reads one FTW file's text; the problems name `file`, the line and the field.
pub fn parse(file: &Path, text: &str) -> Result<Vec<FtwTest>, Vec<InputProblem>> {
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| vec![saphyr_problem(file, 0, text, &e)])?;
    let family = family_of(file);
    let disabled = raw.meta.enabled == Some(false);
    let mut problems = Vec::new();
    let mut tests = Vec::new();
    for t in raw.tests {
        let line = t.test_title.referenced.line();
        let at = crate::input::located(file, 0, &t.test_title.referenced);
        let mut bad = |field: &str, message: String| problems.push(InputProblem { at: at.clone(), field: field.into(), message });
        if t.stages.is_empty() {
            bad("stages", format!("test {} has no stage", t.test_title.value));
        }
        for (i, s) in t.stages.iter().enumerate() {
            if let Some(p) = s.stage.input.protocol.as_deref().filter(|p| !p.eq_ignore_ascii_case("http")) {
                bad(&format!("stages[{i}].stage.input.protocol"), format!("`{p}`: the harness sends plain HTTP to its gateway only"));
            }
            if s.stage.input.raw_request.is_some() && s.stage.input.encoded_request.is_some() {
                bad(&format!("stages[{i}].stage.input"), "both raw_request and encoded_request: give one".into());
            }
            if let Some(e) = s.stage.input.encoded_request.as_deref().and_then(|e| decode_base64(e).err()) {
                bad(&format!("stages[{i}].stage.input.encoded_request"), format!("not base64: {e}"));
            }
            if let Some(Err(e)) = [&s.stage.output.log_contains, &s.stage.output.no_log_contains].into_iter().flatten().map(|r| regex::Regex::new(r)).find(Result::is_err) {
                bad(&format!("stages[{i}].stage.output"), format!("log regex does not compile: {e}"));
            }
        }
        let title = t.test_title.value.clone();
        tests.push(FtwTest {
            file: file.to_path_buf(),
            line,
            family: if family.is_empty() { title.chars().take(3).collect() } else { family.clone() },
            title,
            desc: t.desc.unwrap_or_default(),
            disabled,
            stages: t.stages.into_iter().map(|s| FtwStage { input: s.stage.input, output: s.stage.output }).collect(),
        });
    }
    if problems.is_empty() { Ok(tests) } else { Err(problems) }
}

/// `942` for a file under `REQUEST-942-APPLICATION-ATTACK-SQLI/`; empty when no directory says it.
fn family_of(file: &Path) -> String {
    file.parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('-').nth(1))
        .filter(|n| n.len() == 3 && n.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or_default()
        .to_string()
}

/// Decodes `encoded_request` (standard base64, padding optional).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.trim_end_matches('=')).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"---
meta:
  author: "someone"
  enabled: true
  name: "942100.yaml"
tests:
  - test_title: 942100-1
    desc: "SQLi"
    stages:
      - stage:
          input:
            dest_addr: "127.0.0.1"
            port: 80
            method: POST
            headers:
              User-Agent: "ModSecurity CRS 3 Tests"
              Host: localhost
              Content-Length: 11
            data:
              - "a=1"
              - "b=2"
          output:
            log_contains: id "942100"
            status: [403, 400]
"#;

    #[test]
    fn a_test_is_read_with_its_line_family_ordered_headers_and_joined_data() {
        let tests = parse(Path::new("REQUEST-942-APPLICATION-ATTACK-SQLI/942100.yaml"), ONE).unwrap();
        let t = &tests[0];
        assert_eq!((t.title.as_str(), t.line, t.family.as_str(), t.disabled), ("942100-1", 7, "942", false));
        let input = &t.stages[0].input;
        let names: Vec<&str> = input.headers.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["User-Agent", "Host", "Content-Length"]);
        assert_eq!(input.headers.0[2].1, "11");
        assert_eq!(input.data.as_ref().unwrap().text(), "a=1\r\nb=2");
        assert_eq!(t.stages[0].output.status, Some(Status::Any(vec![403, 400])));
    }

    #[test]
    fn an_unknown_field_is_refused_naming_file_line_and_field() {
        let text = ONE.replace("            status: [403, 400]\n", "            response_contains: \"x\"\n");
        let problems = parse(Path::new("f.yaml"), &text).unwrap_err();
        let p = &problems[0];
        assert_eq!(p.field, "response_contains", "{p}");
        assert_eq!(p.at.line, 24, "{p}");
        assert!(p.to_string().starts_with("f.yaml:24"), "{p}");
    }

    #[test]
    fn a_protocol_other_than_http_and_a_bad_regex_are_refused_naming_the_field() {
        let text = ONE.replace("            port: 80\n", "            port: 80\n            protocol: https\n").replace("id \"942100\"", "id (\"942100\"");
        let problems = parse(Path::new("f.yaml"), &text).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["stages[0].stage.input.protocol", "stages[0].stage.output"], "{problems:?}");
    }

    #[test]
    fn a_disabled_file_marks_its_tests_disabled() {
        let tests = parse(Path::new("x/942100.yaml"), &ONE.replace("enabled: true", "enabled: false")).unwrap();
        assert!(tests[0].disabled);
        assert_eq!(tests[0].family, "942", "from the title when the directory does not say");
    }
}
