//! The line of a field in the file an object was read from, so that a Calico problem names file,
//! line, object and field like every other input problem.

use crate::input::tree::{self, Node, Value as TreeValue};
use serde_json::Value;
use std::path::Path;

/// 1-based line of `field` (dotted, `[i]` for items: `spec.ingress[0].action`) in the document of
/// `text` that holds `object` (same kind and name); the nearest enclosing field's line when the
/// field itself is absent, 0 when the document is not found.
pub fn line_of(path: &Path, text: &str, object: &Value, field: &str) -> u64 {
    for (offset, doc) in crate::rendered::load::split_documents(text) {
        let Ok(root) = tree::parse(path, doc) else { continue };
        let json = root.value.to_json();
        if json["kind"] != object["kind"] || json["metadata"]["name"] != object["metadata"]["name"] || json["metadata"]["namespace"] != object["metadata"]["namespace"] {
            continue;
        }
        let line = walk(&root, field);
        return if line == 0 { 0 } else { line + offset };
    }
    0
}

fn walk(root: &Node, field: &str) -> u64 {
    let mut node = root;
    let mut line = root.referenced.line();
    for segment in field.split('.').filter(|s| !s.is_empty()) {
        let (key, indexes) = match segment.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').split("][").filter_map(|i| i.parse::<usize>().ok()).collect::<Vec<_>>()),
            None => (segment, Vec::new()),
        };
        let TreeValue::Map(entries) = &node.value else { return line };
        let Some((k, v)) = entries.iter().find(|(k, _)| k.value == key) else { return line };
        line = k.referenced.line();
        node = v;
        for i in indexes {
            let TreeValue::Seq(items) = &node.value else { return line };
            let Some(item) = items.get(i) else { return line };
            line = item.referenced.line();
            node = item;
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_field_is_found_in_the_second_document_of_a_file() {
        let text = "kind: Tier\nmetadata:\n  name: a\n---\nkind: GlobalNetworkPolicy\nmetadata:\n  name: a.p\nspec:\n  ingress:\n    - action: Allow\n    - action: Accept\n";
        let object = json!({"kind": "GlobalNetworkPolicy", "metadata": {"name": "a.p"}});
        assert_eq!(line_of(Path::new("f.yaml"), text, &object, "spec.ingress[1].action"), 11);
        assert_eq!(line_of(Path::new("f.yaml"), text, &object, "spec.ingress[1].source.nets"), 11, "the nearest enclosing field");
        let other = json!({"kind": "GlobalNetworkPolicy", "metadata": {"name": "other"}});
        assert_eq!(line_of(Path::new("f.yaml"), text, &other, "spec"), 0);
    }
}
