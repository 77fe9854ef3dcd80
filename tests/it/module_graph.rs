//! The crate's top-level modules depend on each other in one direction (DESIGN: runner -> stacks ->
//! shared pieces): no cycle may run between any of them.
//!
//! The graph is read from the source: every `crate::<module>` path in code (comments are left
//! out, as they do not make one module need another) is an edge from the file's top-level module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// `text` without its `//` comments (doc comments included); string literals are kept whole.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        // A quote as a character literal opens no string.
        let line = line.replace("'\"'", "' '").replace("'\\\"'", "' '");
        let mut in_string = false;
        let mut prev = '\0';
        let mut cut = line.len();
        for (i, c) in line.char_indices() {
            if c == '"' && prev != '\\' {
                in_string = !in_string;
            }
            if !in_string && c == '/' && prev == '/' {
                cut = i - 1;
                break;
            }
            prev = c;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

/// The top-level modules `code` names through `crate::`, including each of a group `crate::{a, b::c}`.
fn modules_named(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut named = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start => {
                        named.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            named.insert(ident(rest));
        }
    }
    named.retain(|m| !m.is_empty() && m != "self");
    named
}

/// The top-level module a file under `src/` belongs to (`None` for the crate root files).
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(stem) => Some(stem.to_string()),
        None => Some(first.to_string()),
    }
}

/// The dependency graph of `files` (path below `src/`, text).
fn graph_of<'a>(files: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Graph {
    let mut graph = Graph::new();
    for (rel, text) in files {
        let Some(from) = top_module(rel) else { continue };
        let edges = graph.entry(from.clone()).or_default();
        edges.extend(modules_named(&code_of(text)).into_iter().filter(|to| *to != from));
    }
    graph
}

/// The strongly connected components of more than one module: each is a cycle (Tarjan's algorithm).
fn cycles(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w.as_str()]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w.as_str()) {
                    let low = self.low[v].min(self.index[w.as_str()]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    component.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

/// The cycles of `graph`, each with the edges that close it.
fn forbidden_cycles(graph: &Graph) -> Vec<String> {
    cycles(graph)
        .into_iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|from| graph[from].iter().filter(|to| c.contains(*to)).map(move |to| format!("{from} -> {to}")))
                .collect();
            edges.join(", ")
        })
        .collect()
}

fn rust_files(dir: &Path, root: &Path, out: &mut Vec<(std::path::PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            out.push((path.strip_prefix(root).expect("below src").to_path_buf(), text));
        }
    }
}

#[test]
fn no_dependency_cycle_runs_between_the_crates_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    let graph = graph_of(files.iter().map(|(p, t)| (p.as_path(), t.as_str())));
    assert!(graph.contains_key("runner") && graph["runner"].contains("stack"), "the graph was not read: {graph:?}");
    assert_eq!(forbidden_cycles(&graph), Vec::<String>::new());
}

#[test]
fn a_cycle_between_two_modules_is_found_and_named_by_its_edges() {
    let files = [
        (Path::new("report/mod.rs"), "use crate::runner::Outcome;\n"),
        (Path::new("runner/mod.rs"), "use crate::report::Progress;\nuse crate::stack::Stack;\n"),
        (Path::new("stack/mod.rs"), "pub trait Stack {}\n"),
    ];
    assert_eq!(forbidden_cycles(&graph_of(files)), ["report -> runner, runner -> report"]);
}

#[test]
fn a_cycle_through_a_grouped_import_is_found() {
    let files = [
        (Path::new("k8s/audit.rs"), "use crate::{contract, profile::Profile};\n"),
        (Path::new("profile/mod.rs"), "fn f() { crate::k8s::apply(); }\n"),
        (Path::new("contract.rs"), "\n"),
    ];
    assert_eq!(forbidden_cycles(&graph_of(files)), ["k8s -> profile, profile -> k8s"]);
}

#[test]
fn a_path_named_only_in_a_comment_is_no_dependency() {
    let files = [
        (Path::new("report/mod.rs"), "//! See [`crate::runner::Outcome`].\nlet url = \"http://x\"; // crate::runner\n"),
        (Path::new("runner/mod.rs"), "use crate::report::Progress;\n"),
    ];
    assert_eq!(forbidden_cycles(&graph_of(files)), Vec::<String>::new());
}

#[test]
fn a_cycle_through_test_code_counts_like_any_other() {
    // A unit test inside `container` naming `crate::envoy` made `container -> envoy` here once.
    let files = [(Path::new("envoy/mod.rs"), "use crate::container::X;\n"), (Path::new("container/mod.rs"), "#[cfg(test)]\nmod tests { fn f() { crate::envoy::Y; } }\n")];
    assert_eq!(forbidden_cycles(&graph_of(files)), ["container -> envoy, envoy -> container"]);
}
