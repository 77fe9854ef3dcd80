//! coraza-proxy-wasm's plugin configuration (`wasmplugin/config.go`), read by the reference WAF service.
//!
//! Keys: `directives_map` (name -> SecLang lines), `default_directives` (a name), `metric_labels`
//! (k -> v, stat-name suffixes), `per_authority_directives` (request `:authority` -> name). Any other key
//! is an error naming it. Each directive set is read the way Coraza reads it: the LAST `SecRuleEngine`
//! and audit setting wins; the includes coraza-proxy-wasm embeds map to Debian's files. The engine and
//! audit lines are taken out of the text ModSecurity compiles (the service applies them itself).

use super::engine::{crs_rule_files, include_line, CRS_RULES_DIR, CRS_SETUP, ENGINE_PREAMBLE};
use super::record::DEFAULT_PARTS;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// waf-e2e's ModSecurity 3.0.9 reading of coraza-proxy-wasm's `@recommended-conf`
/// (`wasmplugin/rules/coraza.conf-recommended.conf`): detection only, request and response bodies
/// inspected, XML/JSON body processors, body errors denied, and the audit engine OFF (what upstream
/// measurably does, design 1.3; Coraza's own coraza.conf-recommended has RelevantOnly).
pub const RECOMMENDED_CONF: &str = r#"SecRuleEngine DetectionOnly
SecRequestBodyAccess On
SecRule REQUEST_HEADERS:Content-Type "@rx ^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/[a-z0-9.-]+[+]json" "id:200006,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRequestBodyLimit 131072
SecRequestBodyInMemoryLimit 131072
SecRequestBodyLimitAction Reject
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',logdata:'%{reqbody_error_msg}',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:200003,phase:2,t:none,log,deny,status:400,msg:'Multipart request body failed strict validation.'"
SecResponseBodyAccess On
SecResponseBodyMimeType text/plain text/html text/xml
SecResponseBodyLimit 524288
SecResponseBodyLimitAction ProcessPartial
SecAuditEngine Off
SecAuditLogRelevantStatus "^(?:(5|4)(0|1)[0-9])$"
SecAuditLogParts ABIJDEFHZ
SecAuditLogType Serial
SecAuditLog /dev/stdout
SecAuditLogFormat JSON
"#;

/// The policy's engine mode, as Coraza reads its directives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineMode {
    /// Interrupt.
    On,
    /// Evaluate, count would_block, never interrupt.
    DetectionOnly,
    /// No evaluation at all.
    Off,
}

/// `SecAuditEngine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditEngine {
    /// No records.
    Off,
    /// `On`: a record per decision.
    On,
    /// `RelevantOnly`: a record per decision (the feature records would_block too, design 1.2).
    RelevantOnly,
}

/// One directive set, read.
#[derive(Debug)]
pub struct Policy {
    /// Its name in `directives_map`.
    pub name: String,
    /// The last `SecRuleEngine` (Coraza's default: On).
    pub mode: EngineMode,
    /// The last `SecAuditEngine` (default Off).
    pub audit: AuditEngine,
    /// The last `SecAuditLogParts` (default `ABCFHZ`).
    pub parts: String,
    /// Whether a CRS rule file is included.
    pub crs: bool,
    /// What ModSecurity compiles: `SecRuleEngine On` first, the set's lines with includes resolved, engine and audit lines removed.
    pub modsec_text: String,
}

/// A plugin configuration, read and checked.
#[derive(Debug)]
pub struct PluginConfig {
    default: Arc<Policy>,
    per_authority: BTreeMap<String, Arc<Policy>>,
    /// `metric_labels` in this policy's order (see [`super::stats::label_order`]).
    pub labels: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    directives_map: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    default_directives: Option<String>,
    #[serde(default)]
    metric_labels: BTreeMap<String, String>,
    #[serde(default)]
    per_authority_directives: BTreeMap<String, String>,
}

impl PluginConfig {
    /// Reads a plugin configuration (the bytes Envoy hands the filter); every error names the key or directive.
    pub fn parse(bytes: &[u8]) -> Result<PluginConfig> {
        let raw: Raw = serde_json::from_slice(bytes).context("reading the plugin configuration (coraza-proxy-wasm's JSON)")?;
        let Some(default) = raw.default_directives.clone() else {
            bail!("plugin configuration: `default_directives` is missing (the stand-in needs the name of the directive set to apply)");
        };
        let mut sets = BTreeMap::new();
        for (name, lines) in &raw.directives_map {
            let policy = read_set(name, &lines.join("\n")).with_context(|| format!("plugin configuration: directives_map.{name}"))?;
            sets.insert(name.clone(), Arc::new(policy));
        }
        let Some(default_set) = sets.get(&default).cloned() else {
            bail!("plugin configuration: default_directives names `{default}`, which directives_map does not define");
        };
        let mut per_authority = BTreeMap::new();
        for (authority, name) in raw.per_authority_directives {
            let Some(set) = sets.get(&name).cloned() else {
                bail!("plugin configuration: per_authority_directives.{authority} names `{name}`, which directives_map does not define");
            };
            per_authority.insert(authority, set);
        }
        let seed = raw.metric_labels.get("policy").cloned().unwrap_or(default);
        let labels = super::stats::label_order(&seed, raw.metric_labels);
        Ok(PluginConfig { default: default_set, per_authority, labels })
    }

    /// The directive set for a request's `:authority` (exact match), else the default set.
    pub fn for_authority(&self, authority: &str) -> Arc<Policy> {
        self.per_authority.get(authority).unwrap_or(&self.default).clone()
    }
}

/// Reads one directive set (its lines joined by newlines, as Coraza joins them).
pub fn read_set(name: &str, directives: &str) -> Result<Policy> {
    let mut reader = SetReader { mode: EngineMode::On, audit: AuditEngine::Off, parts: DEFAULT_PARTS.to_string(), crs: false, text: ENGINE_PREAMBLE.to_string() };
    reader.read(directives, 0)?;
    Ok(Policy { name: name.to_string(), mode: reader.mode, audit: reader.audit, parts: reader.parts, crs: reader.crs, modsec_text: reader.text })
}

struct SetReader {
    mode: EngineMode,
    audit: AuditEngine,
    parts: String,
    crs: bool,
    text: String,
}

fn unquote(arg: &str) -> &str {
    let arg = arg.trim();
    arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')).unwrap_or(arg)
}

impl SetReader {
    fn read(&mut self, directives: &str, depth: usize) -> Result<()> {
        let mut logical = String::new();
        for (number, physical) in directives.lines().enumerate() {
            logical.push_str(physical);
            // ModSecurity reads the continuation itself: keep the backslash and the newline.
            if logical.trim_end().ends_with('\\') {
                logical.push('\n');
                continue;
            }
            let line = std::mem::take(&mut logical);
            self.directive(&line, depth).with_context(|| format!("line {} `{}`", number + 1, line.trim()))?;
        }
        if !logical.trim().is_empty() {
            self.directive(&logical, depth).context("the last line (ends with a continuation)")?;
        }
        Ok(())
    }

    fn directive(&mut self, line: &str, depth: usize) -> Result<()> {
        let trimmed = line.trim();
        let (name, arg) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
        let value = unquote(arg);
        match name.to_ascii_lowercase().as_str() {
            "secruleengine" => {
                self.mode = match value.to_ascii_lowercase().as_str() {
                    "on" => EngineMode::On,
                    "detectiononly" => EngineMode::DetectionOnly,
                    "off" => EngineMode::Off,
                    _ => bail!("SecRuleEngine takes On, DetectionOnly or Off, not `{value}`"),
                }
            }
            "secauditengine" => {
                self.audit = match value.to_ascii_lowercase().as_str() {
                    "on" => AuditEngine::On,
                    "off" => AuditEngine::Off,
                    "relevantonly" => AuditEngine::RelevantOnly,
                    _ => bail!("SecAuditEngine takes On, Off or RelevantOnly, not `{value}`"),
                }
            }
            "secauditlogparts" => {
                if value.is_empty() || !value.chars().all(|c| "ABCDEFGHIJKZ".contains(c)) {
                    bail!("SecAuditLogParts takes letters of ABCDEFGHIJKZ, not `{value}`");
                }
                self.parts = value.to_string();
            }
            "secauditlogtype" => {
                if !value.eq_ignore_ascii_case("serial") {
                    bail!("SecAuditLogType `{value}` is not available in coraza-proxy-wasm, which registers only the `serial` writer (design 1.2: an unknown writer makes the plugin fail to start)");
                }
            }
            "secauditlogformat" => {
                if !value.eq_ignore_ascii_case("json") {
                    bail!("SecAuditLogFormat `{value}`: the stand-in writes only Coraza's JSON record (design 1.2)");
                }
            }
            // Where and under which status Coraza would write do not change what the filter logs: every
            // record goes to the proxy log, one per decision.
            "secauditlog" | "secauditlogrelevantstatus" | "secauditlogstoragedir" | "secauditlogdirmode" | "secauditlogfilemode" => {}
            // Coraza uses it only to choose memory or a temporary file for a body, never for a decision;
            // libmodsecurity 3 refuses the directive.
            "secrequestbodyinmemorylimit" => {}
            "include" => self.include(value, depth)?,
            "includeoptional" => bail!("IncludeOptional is not supported (libmodsecurity 3.0.9 cannot load it; use Include @owasp_crs/...)"),
            _ => {
                self.text.push_str(line);
                self.text.push('\n');
            }
        }
        Ok(())
    }

    fn include(&mut self, target: &str, depth: usize) -> Result<()> {
        if target == "@recommended-conf" {
            anyhow::ensure!(depth == 0, "@recommended-conf cannot include itself");
            return self.read(RECOMMENDED_CONF, depth + 1).context("in @recommended-conf");
        }
        if target == "@crs-setup-conf" {
            return self.push_include(Path::new(CRS_SETUP));
        }
        if let Some(pattern) = target.strip_prefix("@owasp_crs/") {
            let files = crs_rule_files()?;
            let matcher = globset::Glob::new(pattern).with_context(|| format!("Include {target}: bad file pattern"))?.compile_matcher();
            let chosen: Vec<_> = files.iter().filter(|f| f.file_name().is_some_and(|n| matcher.is_match(n))).collect();
            if chosen.is_empty() {
                bail!("Include {target}: no CRS rule file in {CRS_RULES_DIR} matches `{pattern}`");
            }
            self.crs = true;
            for file in chosen {
                self.push_include(file)?;
            }
            return Ok(());
        }
        if target.starts_with('@') {
            bail!("Include {target}: unknown include (the stand-in provides @recommended-conf, @crs-setup-conf and @owasp_crs/<file pattern>)");
        }
        bail!("Include {target}: coraza-proxy-wasm reads only its embedded files (@recommended-conf, @crs-setup-conf, @owasp_crs/...), not paths on disk")
    }

    fn push_include(&mut self, file: &Path) -> Result<()> {
        self.text.push_str(&include_line(file)?);
        self.text.push('\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Result<PluginConfig> {
        PluginConfig::parse(serde_json::to_vec(&json).unwrap().as_slice())
    }

    #[test]
    fn the_oss_template_reads_as_engine_on_with_crs_and_no_engine_lines_for_modsecurity() {
        let c = config(serde_json::json!({
            "directives_map": {"default": ["Include @recommended-conf", "SecRuleEngine On", "SecAuditEngine RelevantOnly",
                "Include @crs-setup-conf", "Include @owasp_crs/*.conf", "SecRule ARGS:probe \"@streq yes\" \"id:10001,phase:1,deny,status:403\""]},
            "default_directives": "default",
            "metric_labels": {"policy": "block-sqli", "namespace": "shop"}
        }))
        .unwrap();
        let p = c.for_authority("anything");
        assert_eq!((p.mode, p.audit, p.parts.as_str(), p.crs), (EngineMode::On, AuditEngine::RelevantOnly, "ABIJDEFHZ", true));
        assert!(p.modsec_text.starts_with(ENGINE_PREAMBLE));
        let engine_lines = p.modsec_text.lines().filter(|l| l.starts_with("SecRuleEngine") || l.starts_with("SecAudit")).count();
        assert_eq!(engine_lines, 2, "only the preamble's two lines: {}", p.modsec_text);
        assert!(p.modsec_text.contains("REQUEST-949-BLOCKING-EVALUATION.conf"));
        assert_eq!(c.labels.len(), 2);
    }

    #[test]
    fn the_last_engine_line_wins_and_recommended_alone_is_detection_only_without_audit() {
        assert_eq!(read_set("d", "Include @recommended-conf").unwrap().mode, EngineMode::DetectionOnly);
        assert_eq!(read_set("d", "Include @recommended-conf").unwrap().audit, AuditEngine::Off);
        assert_eq!(read_set("d", "SecRuleEngine DetectionOnly\nSecRuleEngine Off").unwrap().mode, EngineMode::Off);
        assert_eq!(read_set("d", "").unwrap().mode, EngineMode::On, "Coraza's default engine mode");
    }

    #[test]
    fn unknown_keys_includes_and_values_are_errors_naming_them() {
        let cases = [
            (serde_json::json!({"directives_map": {"d": []}, "default_directives": "d", "rules": []}), "rules"),
            (serde_json::json!({"directives_map": {"d": ["Include @ftw-conf"]}, "default_directives": "d"}), "@ftw-conf"),
            (serde_json::json!({"directives_map": {"d": ["Include /etc/passwd"]}, "default_directives": "d"}), "/etc/passwd"),
            (serde_json::json!({"directives_map": {"d": ["SecAuditLogType wasmserial"]}, "default_directives": "d"}), "wasmserial"),
            (serde_json::json!({"directives_map": {"d": ["SecRuleEngine Maybe"]}, "default_directives": "d"}), "Maybe"),
            (serde_json::json!({"directives_map": {"d": []}, "default_directives": "x"}), "`x`"),
            (serde_json::json!({"directives_map": {"d": []}}), "default_directives"),
            (serde_json::json!({"directives_map": {"d": []}, "default_directives": "d", "per_authority_directives": {"a.example": "y"}}), "a.example"),
            (serde_json::json!({"directives_map": {"d": ["Include @owasp_crs/NOPE-*.conf"]}, "default_directives": "d"}), "NOPE-*"),
        ];
        for (json, needle) in cases {
            let err = format!("{:#}", config(json.clone()).unwrap_err());
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn per_authority_directives_choose_a_set_by_exact_authority() {
        let c = config(serde_json::json!({
            "directives_map": {"d": ["SecRuleEngine On"], "quiet": ["SecRuleEngine DetectionOnly"]},
            "default_directives": "d",
            "per_authority_directives": {"quiet.example": "quiet"}
        }))
        .unwrap();
        assert_eq!(c.for_authority("quiet.example").mode, EngineMode::DetectionOnly);
        assert_eq!(c.for_authority("other.example").mode, EngineMode::On);
    }

    #[test]
    fn continuation_lines_stay_one_directive() {
        let p = read_set("d", "SecRule ARGS \"@rx a\" \\\n  \"id:5,phase:1,deny\"\nSecRuleEngine DetectionOnly").unwrap();
        assert_eq!(p.mode, EngineMode::DetectionOnly);
        assert!(p.modsec_text.contains("SecRule ARGS \"@rx a\" \\\n  \"id:5,phase:1,deny\"\n"), "{}", p.modsec_text);
    }
}
