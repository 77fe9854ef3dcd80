//! Sorting audit lines by the requests of a run: the records that carry one of its correlation ids,
//! records of its policy that carry none, and lines of the run that do not parse.

use super::{parse_line, AuditLine};
use std::collections::HashSet;

/// Audit lines sorted for one run (a scenario, or a corpus mode).
#[derive(Debug, Default)]
pub struct SortedLines {
    /// (source, correlation id, line) of every record carrying an id of the run, in log order.
    pub matched: Vec<(String, String, AuditLine)>,
    /// Failures: records of the run's policy without an id of the run, and lines of the run that do not parse.
    pub problems: Vec<String>,
}

/// Sorts `(source, line)` pairs by `ids`; `policy` is the run's `(namespace, name)` and `run` names
/// the run in messages (`this scenario`, `this run`).
pub fn sort_lines(lines: &[(String, String)], ids: &HashSet<&str>, policy: (&str, &str), run: &str) -> SortedLines {
    let mut out = SortedLines::default();
    for (source, line) in lines {
        match parse_line(line) {
            None => {}
            Some(Ok(parsed)) => match parsed.correlation_id().filter(|id| ids.contains(id)).map(str::to_string) {
                Some(id) => out.matched.push((source.clone(), id, parsed)),
                None if parsed.is_of_policy(policy.0, policy.1) => out.problems.push(format!(
                    "[{source}] audit record of policy {}/{} without a correlation id of {run} ({}={:?}): uri={}",
                    policy.0, policy.1, crate::contract::CORRELATION_HEADER, parsed.correlation_id(), parsed.record.transaction.request.uri)),
                None => {}
            },
            Some(Err(e)) if ids.iter().any(|id| line.contains(id)) => {
                out.problems.push(format!("[{source}] audit line of {run} does not parse: {e}: {}", line.chars().take(300).collect::<String>()));
            }
            Some(Err(_)) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(policy: &str, id: Option<&str>) -> (String, String) {
        let headers = id.map_or(serde_json::json!({}), |id| serde_json::json!({"x-waf-e2e-id": [id]}));
        let record = serde_json::json!({"transaction": {"request": {"uri": "/x", "headers": headers}}, "messages": []});
        ("f".into(), format!("[info][wasm] wasm log envoyextensionpolicy/shop/{policy}/wasm/0: AuditLog:{record}"))
    }

    #[test]
    fn records_are_matched_by_id_and_the_policys_records_without_one_and_broken_lines_of_the_run_are_problems() {
        let lines = vec![
            line("p", Some("run-1")),
            line("p", None),
            line("other", None),
            ("f".into(), "[info][wasm] wasm log envoyextensionpolicy/shop/p/wasm/0: AuditLog:{\"transaction\":{\"x\": run-2".into()),
            ("f".into(), "[warn][http] unrelated".into()),
        ];
        let ids: HashSet<&str> = ["run-1", "run-2"].into();
        let sorted = sort_lines(&lines, &ids, ("shop", "p"), "this run");
        assert_eq!(sorted.matched.len(), 1);
        assert_eq!(sorted.matched[0].1, "run-1");
        assert_eq!(sorted.problems.len(), 2, "{:?}", sorted.problems);
        assert!(sorted.problems[0].contains("audit record of policy shop/p without a correlation id of this run"), "{:?}", sorted.problems);
        assert!(sorted.problems[1].contains("audit line of this run does not parse"), "{:?}", sorted.problems);
    }
}
