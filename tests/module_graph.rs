//! The top-level modules of `src/` form an acyclic graph.
//!
//! Goal: keep the arrows between the folders of `src/` pointing one way, as
//! docs/architecture.md draws them, so a newcomer can tell what may call what.
//! Method: read every non-test `.rs` file under `src/`, collect the `crate::<module>`
//! paths it names (in `use` lines and inline), build the graph between top-level
//! modules and fail with the cycle, spelled out with a file behind each arrow, if there is
//! one. Test code (`mod tests` blocks at the end of a file, files named `tests.rs`) may
//! reach anywhere. The layered drawing in docs/architecture.md ("Which module may use
//! which") must list exactly these arrows, so the document cannot drift from the code.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Each module's arrows, each with one file whose code draws it.
type Edges = BTreeMap<String, BTreeMap<String, PathBuf>>;

#[test]
fn top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = module_edges(&src);
    let graph = graph_of(&edges);
    assert!(
        graph.len() > 5,
        "found only {} top-level modules under {}",
        graph.len(),
        src.display()
    );
    if let Some(cycle) = find_cycle(&graph) {
        let mut evidence = String::new();
        for pair in cycle.windows(2) {
            let file = &edges[&pair[0]][&pair[1]];
            evidence.push_str(&format!(
                "\n  {} -> {}  ({})",
                pair[0],
                pair[1],
                file.display()
            ));
        }
        panic!(
            "the top-level modules of src/ form a cycle: {}{evidence}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_checker_finds_a_cycle_it_is_shown() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    let cycle = find_cycle(&graph).expect("a -> b -> c -> a is a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    graph.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&graph), None);
    assert_eq!(
        crate_refs("use crate::{a::X, b};\nfn f() { crate::c::g(); }\n#[cfg(test)]\nmod tests { use crate::d; }"),
        ["a", "b", "c"].into_iter().map(String::from).collect::<BTreeSet<_>>()
    );
}

/// Each top-level module to the top-level modules its non-test code names, with the
/// first file (in path order) that names each.
fn module_edges(src: &Path) -> Edges {
    let mut edges = Edges::new();
    for entry in fs::read_dir(src).expect("src/ is readable") {
        let path = entry.expect("src/ entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_owned();
        if name == "main" || name == "lib" || (path.is_file() && !is_rust(&path)) {
            continue;
        }
        let deps = edges.entry(name.clone()).or_default();
        let mut files = rust_files(&path);
        files.sort();
        for file in files {
            let text = fs::read_to_string(&file).expect("source is readable");
            for dep in crate_refs(&text) {
                if dep != name {
                    deps.entry(dep).or_insert_with(|| file.clone());
                }
            }
        }
    }
    edges
}

fn graph_of(edges: &Edges) -> Graph {
    edges
        .iter()
        .map(|(module, deps)| (module.clone(), deps.keys().cloned().collect()))
        .collect()
}

fn is_rust(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "rs")
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        let is_test = path.file_name().is_some_and(|n| n == "tests.rs");
        return if is_rust(path) && !is_test {
            vec![path.to_owned()]
        } else {
            vec![]
        };
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).expect("source folder is readable") {
        files.extend(rust_files(&entry.expect("source entry").path()));
    }
    files
}

/// The top-level modules named as `crate::<module>` (or inside `use crate::{...}`) in
/// the non-test part of one file: everything before its `#[cfg(test)]` + `mod tests`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(end) => &text[..end],
        None => text,
    };
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut refs = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                refs.extend(leading_ident(item.trim()));
            }
        } else {
            refs.extend(leading_ident(rest));
        }
    }
    refs
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

fn leading_ident(text: &str) -> Option<String> {
    let ident: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let is_module = ident.chars().next().is_some_and(|c| c.is_lowercase());
    let is_macro = text[ident.len()..].starts_with('!');
    (is_module && !is_macro && ident != "self").then_some(ident)
}

/// One cycle as a closed walk (first == last), or None: depth-first search with colours.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'g>(
        node: &'g str,
        graph: &'g Graph,
        marks: &mut BTreeMap<&'g str, Mark>,
        stack: &mut Vec<&'g str>,
    ) -> Option<Vec<String>> {
        marks.insert(node, Mark::Open);
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let from = stack
                        .iter()
                        .position(|n| *n == next)
                        .expect("open nodes are on the stack");
                    let mut cycle: Vec<String> =
                        stack[from..].iter().map(|s| s.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node.as_str()) {
            if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

/// Prints the graph (`cargo test --test module_graph -- --nocapture print`), one line per
/// module, for docs/architecture.md and for finding where a cycle comes from.
#[test]
fn print_the_graph() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (module, deps) in graph_of(&module_edges(&src)) {
        println!(
            "{module} -> {}",
            deps.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
}

#[test]
fn the_documented_graph_is_the_real_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/architecture.md")).expect("docs/architecture.md");
    let documented = documented_graph(&doc);
    let real = graph_of(&module_edges(&root.join("src")));
    let mut wrong = String::new();
    for module in real
        .keys()
        .chain(documented.keys())
        .collect::<BTreeSet<_>>()
    {
        let (have, drawn) = (real.get(module), documented.get(module));
        if have != drawn {
            let show = |g: Option<&BTreeSet<String>>| {
                g.map_or("(missing)".to_string(), |d| {
                    d.iter().cloned().collect::<Vec<_>>().join(", ")
                })
            };
            wrong.push_str(&format!(
                "\n  {module}: code -> [{}], docs -> [{}]",
                show(have),
                show(drawn)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/architecture.md (\"Which module may use which\") differs from the code; \
         print the real graph with `cargo test --release --test module_graph -- --nocapture \
         print_the_graph`:{wrong}"
    );
}

/// The arrows drawn in the fenced block under "Which module may use which": lines
/// `[layer N] module ───► a, b, c` (continued on following lines) and the bottom layer's
/// `a, b, c   (use no other module)`.
fn documented_graph(doc: &str) -> Graph {
    let section = doc
        .split_once("### Which module may use which")
        .expect("docs/architecture.md has the section \"Which module may use which\"")
        .1;
    let block = section
        .split("```")
        .nth(1)
        .expect("the section draws the graph in a fenced block");
    let names = |list: &str| -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect()
    };
    let mut graph = Graph::new();
    let mut last: Option<String> = None;
    for line in block.lines() {
        let mut line = line.trim();
        if let Some(rest) = line.strip_prefix("layer ") {
            line = rest.trim_start_matches(|c: char| c.is_ascii_digit()).trim();
        }
        if let Some((module, deps)) = line.split_once('►') {
            let module = module.trim_end_matches(['─', ' ']).to_string();
            graph.entry(module.clone()).or_default().extend(names(deps));
            last = Some(module);
        } else if let Some((modules, _)) = line.split_once("(use no other module)") {
            for module in names(modules) {
                graph.entry(module).or_default();
            }
            last = None;
        } else if let (Some(module), false) = (&last, line.is_empty()) {
            graph.get_mut(module).expect("seen").extend(names(line));
        }
    }
    graph
}
