//! Reads ModSecurity's rule log text (`... [id "942100"] [msg "..."] [tag "..."] ...`) into audit messages,
//! for the reference proxy, a STAND-IN for Envoy's Coraza WAF filter (local stack only).
//!
//! Values are not escaped by ModSecurity (matched data may contain `"` or `]`), so a value runs
//! from its `[key "` marker to the last `"]` before the next known marker.

use crate::audit::{AuditMessage, AuditMessageData};

/// The bracketed keys ModSecurity v3 writes in a rule message.
const KEYS: &[&str] = &[
    "client", "file", "line", "id", "rev", "msg", "data", "severity", "ver", "maturity", "accuracy", "tag", "hostname", "uri",
    "unique_id", "ref",
];

/// Every `(key, value)` pair of a log line, in order.
pub fn fields(text: &str) -> Vec<(&'static str, &str)> {
    // Marker positions: (start of `[key "`, key, start of value).
    let mut markers: Vec<(usize, &'static str, usize)> = Vec::new();
    for key in KEYS {
        let needle = format!("[{key} \"");
        let mut from = 0;
        while let Some(pos) = text[from..].find(&needle) {
            let start = from + pos;
            markers.push((start, key, start + needle.len()));
            from = start + needle.len();
        }
    }
    markers.sort_by_key(|m| m.0);
    // Drop markers that sit inside an earlier value (a quoted `[id "` in matched data): keep a
    // marker only when the text just before it closes the previous value.
    let mut kept: Vec<(usize, &'static str, usize)> = Vec::new();
    for m in markers {
        let closes_previous = match kept.last() {
            None => true,
            Some(_) => text[..m.0].trim_end().ends_with("\"]"),
        };
        if closes_previous {
            kept.push(m);
        }
    }
    let mut out = Vec::with_capacity(kept.len());
    for (i, (_, key, value_start)) in kept.iter().enumerate() {
        let limit = kept.get(i + 1).map(|n| n.0).unwrap_or(text.len());
        let region = &text[*value_start..limit.max(*value_start)];
        let value = match region.rfind("\"]") {
            Some(end) => &region[..end],
            None => region.trim_end(),
        };
        out.push((*key, value));
    }
    out
}

/// The first value of `key` in a log line.
pub fn field<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    fields(text).into_iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// Converts one ModSecurity rule log line into a Coraza-shaped audit message; `None` without a rule id.
pub fn to_message(text: &str) -> Option<AuditMessage> {
    let fields = fields(text);
    let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_string());
    let id: u64 = get("id")?.trim().parse().ok()?;
    let msg = get("msg").unwrap_or_default();
    let data = AuditMessageData {
        file: get("file").unwrap_or_default(),
        line: get("line").and_then(|l| l.trim().parse().ok()).unwrap_or(0),
        id,
        rev: get("rev").unwrap_or_default(),
        msg: msg.clone(),
        data: get("data").unwrap_or_default(),
        severity: get("severity").and_then(|s| s.trim().parse().ok()).unwrap_or(0),
        ver: get("ver").unwrap_or_default(),
        maturity: get("maturity").and_then(|s| s.trim().parse().ok()).unwrap_or(0),
        accuracy: get("accuracy").and_then(|s| s.trim().parse().ok()).unwrap_or(0),
        tags: fields.iter().filter(|(k, _)| *k == "tag").map(|(_, v)| (*v).to_string()).collect(),
        raw: text.to_string(),
    };
    Some(AuditMessage { actionset: String::new(), message: msg, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"ModSecurity: Warning. detected SQLi using libinjection with fingerprint 's&sos' [file "/usr/share/modsecurity-crs/rules/REQUEST-942-APPLICATION-ATTACK-SQLI.conf"] [line "65"] [id "942100"] [rev ""] [msg "SQL Injection Attack Detected via libinjection"] [data "Matched Data: s&sos found within ARGS:id: 1' OR "1"]="1 [id "7"]"] [severity "2"] [ver "OWASP_CRS/3.3.4"] [maturity "0"] [accuracy "0"] [tag "application-multi"] [tag "attack-sqli"] [hostname "127.0.0.1"] [uri "/"] [unique_id "170"] [ref "v6,10"]"#;

    #[test]
    fn a_crs_log_line_becomes_a_message_with_its_id_severity_and_tags() {
        let m = to_message(LINE).expect("a message");
        assert_eq!(m.data.id, 942100);
        assert_eq!(m.data.line, 65);
        assert_eq!(m.data.severity, 2);
        assert_eq!(m.data.msg, "SQL Injection Attack Detected via libinjection");
        assert_eq!(m.message, m.data.msg);
        assert_eq!(m.data.tags, vec!["application-multi", "attack-sqli"]);
        assert_eq!(m.data.ver, "OWASP_CRS/3.3.4");
    }

    #[test]
    fn quotes_and_brackets_inside_matched_data_do_not_end_the_value() {
        let m = to_message(LINE).expect("a message");
        assert_eq!(m.data.data, r#"Matched Data: s&sos found within ARGS:id: 1' OR "1"]="1 [id "7"]"#);
    }

    #[test]
    fn a_line_without_a_rule_id_is_no_message() {
        for text in ["", "ModSecurity: Warning. nothing here", "[id \"abc\"]", "[id \"", "[msg \"x\"] [id"] {
            assert!(to_message(text).is_none(), "{text:?}");
        }
    }
}
