//! Did a request reach the backend? The echo backend records each correlation id it receives, and
//! whether the body arrived complete; a scenario may require it per filter (design: a blocked GET
//! reaches the backend with some filter builds and not with others).

use crate::assert::audit::{ExpectedRecord, SentRequest};
use crate::stack::{BackendReach, Stack};
use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// Checks `required` (request name -> must arrive complete) against what the backend recorded;
/// returns failures, and notes that report the reach of every request with a decision or a requirement.
pub async fn check(stack: &dyn Stack, sent: &[SentRequest], required: &BTreeMap<String, bool>, audited: &[ExpectedRecord]) -> Result<(Vec<String>, Vec<String>)> {
    let interesting: Vec<&SentRequest> = sent.iter().filter(|s| required.contains_key(&s.name) || audited.iter().any(|a| a.request == s.name)).collect();
    if interesting.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let ids: Vec<String> = interesting.iter().map(|s| s.correlation_id.clone()).collect();
    let Some(reach) = stack.backend_reach(&ids).await.context("read what the backend received")? else {
        let note = if required.is_empty() { None } else { Some(format!("`reaches_backend` not checked: the {} stack cannot see what its backend received", stack.name())) };
        return Ok((Vec::new(), note.into_iter().collect()));
    };
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    for s in interesting {
        let got = reach.get(&s.correlation_id).copied().unwrap_or(BackendReach::Never);
        let who = format!("request `{}` #{}", s.name, s.repeat + 1);
        match required.get(&s.name) {
            Some(true) if got != BackendReach::Complete => failures.push(format!("{who}: expected to reach the backend complete, but {got}")),
            Some(false) if got == BackendReach::Complete => failures.push(format!("{who}: expected never to reach the backend complete, but {got}")),
            _ => notes.push(format!("{who}: {got}")),
        }
    }
    Ok((failures, notes))
}
