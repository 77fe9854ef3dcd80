//! Reading YAML input (scenarios, rendered resources, profiles): file discovery and serde-saphyr
//! errors turned into located problems naming file, line, column and field.

pub mod tree;

use crate::error::{InputLocation, InputProblem};
use serde_saphyr::Location;
use std::path::{Path, PathBuf};

/// `path` itself when it is a file, else the `*.yaml`/`*.yml` files in the directory, sorted.
pub fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| format!("cannot list: {e}"))? {
        let p = entry.map_err(|e| format!("cannot list: {e}"))?.path();
        if p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            found.push(p);
        }
    }
    found.sort();
    Ok(found)
}

/// The whole of `path`, for problems not tied to a line.
pub fn whole_file(path: &Path) -> InputLocation {
    InputLocation { file: path.to_path_buf(), line: 0, column: 0 }
}

/// A serde-saphyr location in `path`, its line shifted by `line_offset` (documents after the first in a multi-document file).
pub fn located(path: &Path, line_offset: u64, loc: &Location) -> InputLocation {
    let line = if loc.line() == 0 { 0 } else { loc.line() + line_offset };
    InputLocation { file: path.to_path_buf(), line, column: loc.column() }
}

/// A problem from a serde-saphyr error in `text` (one document of `path`, starting `line_offset` lines in).
pub fn saphyr_problem(path: &Path, line_offset: u64, text: &str, e: &serde_saphyr::Error) -> InputProblem {
    let loc = e.location().unwrap_or(Location::UNKNOWN);
    let message = e.to_string();
    let field = Some(field_of_serde_message(&message)).filter(|f| !f.is_empty()).unwrap_or_else(|| key_at_line(text, loc.line()));
    let first = message.lines().next().unwrap_or_default().to_string();
    InputProblem { at: located(path, line_offset, &loc), field, message: without_location_prefix(first) }
}

/// serde-saphyr starts its messages with `error: line L column C: `; the location is reported separately.
fn without_location_prefix(line: String) -> String {
    let re = regex::Regex::new(r"^(error: )?line \d+ column \d+: ").expect("static regex");
    let message = re.replace(&line, "").into_owned();
    match message.as_str() {
        "invalid u16" | "invalid u32" | "invalid u64" => format!("{message}: must be a whole number, not negative"),
        _ => message,
    }
}

/// The mapping key written on `line` (1-based), for errors serde reports by position only.
fn key_at_line(text: &str, line: u64) -> String {
    let Some(l) = usize::try_from(line).ok().and_then(|n| n.checked_sub(1)).and_then(|i| text.lines().nth(i)) else {
        return String::new();
    };
    let l = l.trim_start().trim_start_matches("- ");
    match l.split_once(':') {
        Some((key, _)) if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => key.to_string(),
        _ => String::new(),
    }
}

/// serde names the offending field in its message (`unknown field `x``, `missing field `y``); lift it out.
fn field_of_serde_message(msg: &str) -> String {
    for marker in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = msg.split(marker).nth(1) {
            return rest.split('`').next().unwrap_or_default().to_string();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_error_is_located_and_names_the_key_on_its_line() {
        let text = "a: 1\nrepeat: -1\n";
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Doc { a: u32, repeat: u32 }
        let err = serde_saphyr::from_str::<Doc>(text).unwrap_err();
        let p = saphyr_problem(Path::new("f.yaml"), 10, text, &err);
        assert_eq!((p.at.line, p.field.as_str()), (12, "repeat"), "{p}");
        assert!(p.message.starts_with("invalid u32") && !p.message.contains("line "), "{p}");
    }
}
