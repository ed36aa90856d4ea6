//! The crate's layers, read from the sources: the module graph of `src/` (its `crate::…`
//! paths outside `#[cfg(test)]`) has no cycle, and the pure core never names an I/O module.
//!
//! Layers, lowest first: `domain, fsutil, http, telemetry → history, parse → policy → plan →
//! config, render, report → azure, graph → deliver, ledger, source → job → app → functions`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The pure core: no clock, no environment, no I/O, so none of the modules that do I/O.
const CORE: &[&str] = &[
    "domain",
    "end_of_support",
    "history",
    "insights",
    "parse",
    "policy",
    "plan",
    "report",
    "render",
];

/// Modules that read settings, touch storage or the network, or wire and run the job.
const IO: &[&str] = &[
    "app",
    "azure",
    "config",
    "deliver",
    "fsutil",
    "functions",
    "graph",
    "http",
    "job",
    "ledger",
    "source",
    "telemetry",
];

/// Plumbing every layer may use; it must use nothing of the crate but `domain`.
const PLUMBING: &[&str] = &["fsutil", "http", "telemetry"];

/// Top-level module → the top-level modules it names, each with one `file:line` as evidence.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Removes the items marked `#[cfg(test)]` (a `mod tests { … }` or a single `use …;`), so
/// test-only imports do not count. Keeps line numbers by blanking, not deleting.
fn without_test_items(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with("#[cfg(test)]") {
            // Skip the attribute and the item after it: up to its closing brace, or to `;`
            // when the item has no body.
            let mut depth = 0i32;
            let mut opened = false;
            let mut j = i + 1;
            while j < lines.len() {
                let code = code_of(lines[j]);
                depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
                opened |= code.contains('{');
                if (opened && depth <= 0) || (!opened && code.trim_end().ends_with(';')) {
                    break;
                }
                j += 1;
            }
            for _ in i..=j.min(lines.len() - 1) {
                kept.push(String::new());
            }
            i = j + 1;
            continue;
        }
        kept.push(lines[i].to_string());
        i += 1;
    }
    kept
}

/// The code of a line without a `//` comment (doc comments included); string literals that
/// contain `//` (URLs) are kept whole.
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let mut prev = ' ';
    for (at, c) in line.char_indices() {
        match c {
            '"' if prev != '\\' => in_string = !in_string,
            '/' if !in_string && prev == '/' => return &line[..at - 1],
            _ => {}
        }
        prev = c;
    }
    line
}

/// The top-level modules a line names through `crate::x…` or `crate::{x…, y…}`.
fn named_modules(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        // `lookout_crate::x` or `$crate::x` are not this crate's paths.
        if matches!(before, Some(c) if c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            for item in split_top_level(group) {
                let name = ident(item);
                if !name.is_empty() {
                    names.push(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names
}

/// The comma-separated items of a `{…}` group (its text after `{`), nested groups kept whole.
fn split_top_level(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..at]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

/// The files of the modules `rel` declares as `#[cfg(test)] mod name;` (test-only files).
fn test_only_files(rel: &str, text: &str) -> Vec<String> {
    let dir = if rel == "lib.rs" || rel == "main.rs" {
        String::new()
    } else if let Some(parent) = rel.strip_suffix("/mod.rs") {
        format!("{parent}/")
    } else {
        format!("{}/", rel.trim_end_matches(".rs"))
    };
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut files = Vec::new();
    for pair in lines.windows(2) {
        if pair[0].starts_with("#[cfg(test)]") {
            let item = pair[1]
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            if let Some(name) = item.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                files.push(format!("{dir}{name}.rs"));
                files.push(format!("{dir}{name}/mod.rs"));
            }
        }
    }
    files
}

/// The module graph of the files under `src`, keyed by top-level module (`src/x.rs` and
/// `src/x/…` are `x`); `lib.rs` and the binary's `main.rs` are the roots and are left out,
/// and so are files of `#[cfg(test)]` modules.
fn graph_of(files: &[(String, String)]) -> Graph {
    let test_only: BTreeSet<String> = files
        .iter()
        .flat_map(|(rel, text)| test_only_files(rel, text))
        .collect();
    let mut graph = Graph::new();
    for (rel, text) in files {
        if rel == "lib.rs" || rel == "main.rs" || test_only.contains(rel) {
            continue;
        }
        let module = rel
            .split('/')
            .next()
            .unwrap_or(rel)
            .trim_end_matches(".rs")
            .to_string();
        let edges = graph.entry(module.clone()).or_default();
        for (n, line) in without_test_items(text).iter().enumerate() {
            for name in named_modules(code_of(line)) {
                if name != module {
                    edges
                        .entry(name)
                        .or_insert_with(|| format!("src/{rel}:{}", n + 1));
                }
            }
        }
    }
    graph
}

fn rust_files(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, root, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let rel = path
                .strip_prefix(root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((rel, text));
        }
    }
}

fn source_graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &root, &mut files);
    graph_of(&files)
}

/// One cycle of the graph as `a → b → … → a`, if there is any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[from..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

/// Every edge from one of `from` to one of `to`, as readable lines with their evidence.
fn edges_between(graph: &Graph, from: &[&str], to: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (module, edges) in graph {
        if !from.contains(&module.as_str()) {
            continue;
        }
        for (target, at) in edges {
            if to.contains(&target.as_str()) {
                found.push(format!("{module} → {target} ({at})"));
            }
        }
    }
    found
}

#[test]
fn the_module_graph_of_src_has_no_cycle() {
    let graph = source_graph();
    assert!(graph.len() >= 15, "too few modules found: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        let evidence: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("{} → {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
            .collect();
        panic!("import cycle:\n  {}", evidence.join("\n  "));
    }
}

#[test]
fn the_pure_core_names_no_io_module() {
    let graph = source_graph();
    for core in CORE {
        assert!(
            graph.contains_key(*core),
            "core module {core} not found in src/"
        );
    }
    let bad = edges_between(&graph, CORE, IO);
    assert!(
        bad.is_empty(),
        "the core must stay pure:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn the_plumbing_names_nothing_of_the_crate_but_the_domain() {
    let graph = source_graph();
    let others: Vec<&str> = graph
        .keys()
        .map(String::as_str)
        .filter(|m| *m != "domain")
        .collect();
    let bad = edges_between(&graph, PLUMBING, &others);
    assert!(
        bad.is_empty(),
        "plumbing must stay low:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn history_depends_on_the_domain_alone() {
    let graph = source_graph();
    let names: BTreeSet<&str> = graph["history"].keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["domain"]), "{:?}", graph["history"]);
}

// The checker itself, attacked with the forms it must see and the ones it must ignore.

fn graph_of_one(rel: &str, text: &str) -> BTreeMap<String, String> {
    graph_of(&[(rel.to_string(), text.to_string())])
        .remove(rel.split('/').next().unwrap().trim_end_matches(".rs"))
        .unwrap_or_default()
}

#[test]
fn the_checker_sees_plain_grouped_nested_and_inline_paths() {
    let text = "use crate::ledger::LedgerStore;\n\
                use crate::{azure::Tokens, deliver::{a, b}, job};\n\
                fn f() { let _ = crate::app::build(); }\n\
                impl From<X> for crate::functions::E {}\n";
    let names: BTreeSet<String> = graph_of_one("plan.rs", text).into_keys().collect();
    let expected: BTreeSet<String> = ["ledger", "azure", "deliver", "job", "app", "functions"]
        .map(String::from)
        .into();
    assert_eq!(names, expected);
    assert_eq!(
        graph_of_one("plan.rs", "\n\nuse crate::ledger::X;\n")["ledger"],
        "src/plan.rs:3"
    );
}

#[test]
fn the_checker_ignores_test_modules_comments_strings_and_its_own_module() {
    let text = "//! Uses crate::ledger in prose only.\n\
                /// See crate::azure::X.\n\
                use crate::plan::Stage; // not crate::job\n\
                const URL: &str = \"https://x//crate::app\"; \n\
                #[cfg(test)]\n\
                use crate::source::Fake;\n\
                #[cfg(test)]\n\
                mod tests {\n    use crate::deliver::Outbox;\n    fn f() { if true { } }\n    use crate::http::X;\n}\n\
                use crate::domain::OwnerEmail;\n";
    let names: BTreeSet<String> = graph_of_one("plan.rs", text).into_keys().collect();
    // The string literal is code, so its `crate::app` counts; a checker that may over-count
    // fails loudly rather than letting an edge through.
    let expected: BTreeSet<String> = ["app", "domain"].map(String::from).into();
    assert_eq!(names, expected);
}

#[test]
fn the_checker_skips_files_of_test_only_modules() {
    let files = [
        (
            "render/mod.rs".to_string(),
            "#[cfg(test)]\nmod cases;\nmod templates;\n".to_string(),
        ),
        (
            "render/cases.rs".to_string(),
            "use crate::deliver::X;".to_string(),
        ),
        (
            "render/templates.rs".to_string(),
            "use crate::plan::Y;".to_string(),
        ),
    ];
    let names: BTreeSet<String> = graph_of(&files)["render"].keys().cloned().collect();
    assert_eq!(names, BTreeSet::from(["plan".to_string()]));
}

#[test]
fn the_checker_reports_a_cycle_and_a_core_file_that_names_io() {
    let files = [
        ("plan.rs".to_string(), "use crate::ledger::X;".to_string()),
        (
            "ledger/mod.rs".to_string(),
            "use crate::plan::Stage;".to_string(),
        ),
        ("domain.rs".to_string(), String::new()),
    ];
    let graph = graph_of(&files);
    let cycle = find_cycle(&graph).expect("plan ↔ ledger is a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert!(cycle.contains(&"ledger".to_string()) && cycle.contains(&"plan".to_string()));
    assert_eq!(
        edges_between(&graph, CORE, IO),
        ["plan → ledger (src/plan.rs:1)"]
    );
    let acyclic = graph_of(&files[1..]);
    assert_eq!(find_cycle(&acyclic), None);
}
