//! The corpus' WAF policies: the CRS as upstream's regression setup runs it (SOURCES.md of the
//! corpus): paranoia level 4, `tx.crs_validate_utf8_encoding=1`, `tx.arg_name_length=100`,
//! `tx.arg_length=400`, IP reputation (910000) off; once in DetectionOnly, once in On.
//!
//! The settings must be in place before CRS' initialisation (REQUEST-901) reads them, so the
//! policy loads the CRS itself, in its directives, with the settings between `crs-setup.conf`
//! and the rules (a policy with `crs: true` would put its directives after the rules).
//!
//! One deliberate difference: upstream read every matched rule from the error log, whatever the
//! anomaly score. The feature writes an audit record only for a decision, so the inbound anomaly
//! threshold is 1: every request that matches any scoring rule becomes a decision, and its record
//! names every rule that matched (the counterpart of upstream's log).

use super::Mode;
use crate::scenario::Scenario;
use anyhow::{Context, Result};
use std::path::Path;

/// The rules of these policies that can interrupt a transaction, in evaluation order: the
/// recommended configuration's body-error rules (phase 2, before the CRS), CRS' inbound and
/// outbound blocking evaluation. The first of them a record names is its interrupting rule.
pub const INTERRUPTING_RULES: [u64; 4] = [200002, 200003, 949110, 959100];

/// The SecLang every corpus policy loads (after the profile's preamble, which sets the mode).
pub const DIRECTIVES: &str = r#"Include @crs-setup-conf
SecAction "id:900000,phase:1,pass,nolog,t:none,setvar:tx.paranoia_level=4,setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400,setvar:tx.inbound_anomaly_score_threshold=1"
Include @owasp_crs/*.conf
SecRuleRemoveById 910000"#;

/// The policy's name in `mode` (also its scenario's name and the `policy` label).
pub fn policy_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Detection => "crs-corpus-detect",
        Mode::Blocking => "crs-corpus-block",
    }
}

/// The policy of `mode` as a scenario (the form the stacks install); its traffic is never sent,
/// the corpus sends its own.
pub fn scenario(mode: Mode) -> Result<Scenario> {
    let engine = match mode {
        Mode::Detection => "DetectionOnly",
        Mode::Blocking => "On",
    };
    let name = policy_name(mode);
    let indented: String = DIRECTIVES.lines().map(|l| format!("      {l}\n")).collect();
    let text = format!(
        "name: {name}\npolicy:\n  name: {name}\n  mode: {engine}\n  rules:\n    crs: false\n    directives: |\n{indented}traffic:\n  - name: ftw\n    path: /\n    expect_status: 200\nexpect: {{}}\n"
    );
    crate::scenario::load::parse(Path::new("(the corpus policy, built in)"), &text).map_err(anyhow::Error::new).with_context(|| format!("build the corpus policy {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_sit_between_the_crs_setup_and_the_rules_and_ip_reputation_is_removed() {
        let s = scenario(Mode::Blocking).unwrap();
        let directives = s.policy.rules.directives.unwrap().value;
        let setup = directives.find("@crs-setup-conf").unwrap();
        let pl = directives.find("tx.paranoia_level=4").unwrap();
        let rules = directives.find("@owasp_crs/").unwrap();
        assert!(setup < pl && pl < rules, "{directives}");
        assert!(directives.trim_end().ends_with("SecRuleRemoveById 910000"));
        assert!(!s.policy.rules.crs, "crs: true would load the rules before the settings");
        assert_eq!(s.policy.mode, crate::scenario::Mode::On);
        assert_eq!(scenario(Mode::Detection).unwrap().policy.mode, crate::scenario::Mode::DetectionOnly);
    }

    #[test]
    fn the_directives_compile_with_modsecurity_and_run_at_paranoia_level_four() {
        let policy = crate::waf::config::read_set("corpus", DIRECTIVES).unwrap();
        assert!(policy.crs);
        crate::waf::engine::compile_text(&policy.modsec_text).expect("ModSecurity compiles the corpus policy");
    }
}
