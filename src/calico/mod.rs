//! Calico, offline: its validation of the projectcalico.org/v3 objects a run applies (`validate`),
//! its selector language (`selector`), one model of tiers and policies (`model`), the tiered
//! evaluator with a trace (`tiers`), and the rendered GlobalNetworkPolicy's job as flows
//! (`flows`). What only a cluster can prove (the data plane really enforcing it) stays with the
//! kind stack's later-tier deny.

pub mod flows;
pub mod locate;
pub mod model;
pub mod selector;
pub mod tiers;
pub mod validate;

use crate::schema::{object_name, Problem, Subject};
use std::path::Path;

/// Calico's problems with every projectcalico.org/v3 object among `subjects`, located in their
/// files (read relative to `root` when relative; generated objects have no line).
pub fn problems(subjects: &[Subject], root: &Path) -> Vec<Problem> {
    let mut out = Vec::new();
    for s in subjects.iter().filter(|s| validate::is_calico_object(&s.value)) {
        let text = std::fs::read_to_string(if s.file.is_absolute() { s.file.clone() } else { root.join(&s.file) }).unwrap_or_default();
        for f in validate::check_object(&s.value) {
            let line = locate::line_of(&s.file, &text, &s.value, &f.field);
            out.push(Problem { object: object_name(&s.value), file: s.file.clone(), line, field: f.field, rule: f.rule, message: f.message });
        }
    }
    out
}

/// How many of `subjects` Calico validates.
pub fn count(subjects: &[Subject]) -> usize {
    subjects.iter().filter(|s| validate::is_calico_object(&s.value)).count()
}
