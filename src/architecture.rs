//! ARCHITECTURE.md's invariants, as tests: the module graph of `src/` has no cycle, and the
//! modules that must not depend on each other do not, not even through a third one.
//!
//! The graph is read from the source text, as a reviewer reads it: every `crate::…`,
//! `super::…` and `self::…` path (`use` trees with their `{…}` groups included) is an edge from
//! the file it is written in to the deepest module it names. Comments, string and char
//! literals and `#[cfg(test)]` modules (inline, declared so, and `tests.rs` files) are left
//! out: tests may reach anywhere. A child using its parent's items is how modules nest, not an
//! edge. An inline module's `super` is read as its file's.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// A module by its path from the crate root (`["checks", "database"]`); the root is `[]`.
type Module = Vec<String>;

/// The modules each module's code names (itself left out).
struct Graph {
    uses: BTreeMap<Module, BTreeSet<Module>>,
}

impl Graph {
    /// From the sources of a crate: each file's path under `src/` and its text.
    fn of(files: &BTreeMap<String, String>) -> Graph {
        let mut code = BTreeMap::new();
        let mut test_only = Vec::new();
        for (path, text) in files {
            let Some(module) = module_of(path) else {
                continue;
            };
            let (kept, test_files) = without_tests(&tokens(text));
            test_only.extend(
                test_files
                    .into_iter()
                    .map(|name| [&module[..], &[name]].concat()),
            );
            code.insert(module, kept);
        }
        code.retain(|m, _| !test_only.iter().any(|t| m.starts_with(t)));
        let uses = code
            .iter()
            .map(|(m, tokens)| {
                let named = paths(tokens, m)
                    .into_iter()
                    .filter_map(|mut path| {
                        path.retain(|s| s != "self");
                        // The deepest module the path names; the root names them all.
                        (0..=path.len())
                            .rev()
                            .map(|k| path[..k].to_vec())
                            .find(|prefix| code.contains_key(prefix))
                    })
                    .filter(|target| target != m)
                    .collect();
                (m.clone(), named)
            })
            .collect();
        Graph { uses }
    }

    /// The edges between files: what each module uses, less its ancestors.
    fn edges(&self) -> BTreeMap<&Module, BTreeSet<&Module>> {
        self.uses
            .iter()
            .map(|(m, targets)| (m, targets.iter().filter(|t| !m.starts_with(t)).collect()))
            .collect()
    }

    /// A cycle of the file graph, its first module repeated at its end, or `None`.
    fn cycle(&self) -> Option<Vec<Module>> {
        // Depth-first; a module met again while still on the path closes a cycle.
        fn visit<'a>(
            m: &'a Module,
            edges: &BTreeMap<&'a Module, BTreeSet<&'a Module>>,
            path: &mut Vec<&'a Module>,
            done: &mut BTreeSet<&'a Module>,
        ) -> Option<Vec<Module>> {
            if let Some(at) = path.iter().position(|p| *p == m) {
                return Some(path[at..].iter().chain([&m]).map(|p| p.to_vec()).collect());
            }
            if !done.insert(m) {
                return None;
            }
            path.push(m);
            let cycle = edges
                .get(m)
                .into_iter()
                .flatten()
                .find_map(|next| visit(next, edges, path, done));
            path.pop();
            cycle
        }
        let edges = self.edges();
        let mut done = BTreeSet::new();
        edges
            .keys()
            .find_map(|m| visit(m, &edges, &mut Vec::new(), &mut done))
    }

    /// The top-level modules (`lib` for the root's own items) each top-level module uses.
    fn top_level(&self) -> BTreeMap<String, BTreeSet<String>> {
        let top = |m: &Module| m.first().cloned().unwrap_or_else(|| "lib".into());
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (m, targets) in &self.uses {
            let from = top(m);
            let to: Vec<String> = targets.iter().map(top).filter(|t| *t != from).collect();
            out.entry(from).or_default().extend(to);
        }
        out
    }
}

/// The module a file under `src/` defines; `None` for the binary's `main.rs` and `tests.rs`.
fn module_of(path: &str) -> Option<Module> {
    let mut parts: Module = path
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    match parts.last().map(String::as_str) {
        Some("main") if parts.len() == 1 => return None,
        Some("tests") => return None,
        Some("lib" | "mod") => _ = parts.pop(),
        _ => {}
    }
    Some(parts)
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || !b.is_ascii()
}

/// The tokens of Rust source that can make a path or a block: words, `::` and single
/// punctuation. Comments and string and char literals are dropped, so neither a brace nor a
/// path inside one is read as code.
fn tokens(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let at = |i: usize, s: &str| {
        b.get(i..)
            .is_some_and(|rest| rest.starts_with(s.as_bytes()))
    };
    // Where a literal or comment ends: after `end`, skipping backslash escapes if `escapes`.
    let past = |mut i: usize, end: &str, escapes: bool| {
        while i < b.len() && !at(i, end) {
            i += if escapes && b[i] == b'\\' { 2 } else { 1 };
        }
        i + end.len()
    };
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        let start = i;
        if is_ident(b[i]) {
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            let hashes = b[i..].iter().take_while(|c| **c == b'#').count();
            if matches!(&text[start..i], "r" | "br") && at(i + hashes, "\"") {
                i = past(i + hashes + 1, &format!("\"{}", "#".repeat(hashes)), false);
            } else {
                out.push(&text[start..i]);
            }
        } else if at(i, "//") {
            i = past(i, "\n", false);
        } else if at(i, "/*") {
            i = past(i + 2, "*/", false);
        } else if b[i] == b'"' {
            i = past(i + 1, "\"", true);
        } else if at(i, "'\\") {
            i = past(i + 3, "'", false); // '\'', '\n', '\u{9b}'
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3; // a char literal ('{'), not a lifetime ('a)
        } else if at(i, "::") {
            out.push("::");
            i += 2;
        } else {
            if !b[i].is_ascii_whitespace() {
                out.push(&text[i..i + 1]);
            }
            i += 1;
        }
    }
    out
}

/// The tokens without their `#[cfg(test)] mod name { … }` blocks, and the names of the
/// modules declared `#[cfg(test)] mod name;` (test-only files).
fn without_tests<'a>(t: &[&'a str]) -> (Vec<&'a str>, Vec<String>) {
    const MARK: [&str; 7] = ["#", "[", "cfg", "(", "test", ")", "]"];
    let (mut kept, mut files, mut i) = (Vec::new(), Vec::new(), 0);
    while i < t.len() {
        let mut j = i + MARK.len();
        if t.get(j) == Some(&"pub") {
            j += 1;
            if t.get(j) == Some(&"(") {
                j += t[j..].iter().position(|x| *x == ")").unwrap_or(0) + 1;
            }
        }
        let test_mod = t[i..].starts_with(&MARK) && t.get(j) == Some(&"mod");
        match (test_mod, t.get(j + 1), t.get(j + 2)) {
            (true, Some(name), Some(&";")) => {
                files.push(name.to_string());
                i = j + 3;
            }
            (true, Some(_), Some(&"{")) => {
                let mut depth = 0;
                i = j + 2;
                while i < t.len() {
                    depth += match t[i] {
                        "{" => 1,
                        "}" => -1,
                        _ => 0,
                    };
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
            _ => {
                kept.push(t[i]);
                i += 1;
            }
        }
    }
    (kept, files)
}

/// Every path the tokens of `module`'s file name from `crate`, `self` or `super`, from the
/// root; a `use` tree gives one path per leaf.
fn paths(t: &[&str], module: &Module) -> Vec<Module> {
    let mut out = Vec::new();
    for i in 0..t.len() {
        let mut base = match t[i] {
            _ if i > 0 && t[i - 1] == "::" => continue,
            "crate" => Vec::new(),
            "self" => module.clone(),
            "super" => module[..module.len().saturating_sub(1)].to_vec(),
            _ => continue,
        };
        let mut j = i + 1;
        while t.get(j) == Some(&"::") && t.get(j + 1) == Some(&"super") {
            base.pop();
            j += 2;
        }
        if t.get(j) == Some(&"::") {
            use_tree(t, &mut (j + 1), base, &mut out);
        }
    }
    out
}

/// Reads `a::b::{c, d::e}` from `t[*i]` on: a path per leaf, each after `prefix`.
fn use_tree(t: &[&str], i: &mut usize, prefix: Module, out: &mut Vec<Module>) {
    match t.get(*i) {
        Some(&"{") => {
            *i += 1;
            while let Some(token) = t.get(*i) {
                match *token {
                    "}" => break,
                    "," => *i += 1,
                    _ => use_tree(t, i, prefix.clone(), out),
                }
            }
            *i += 1;
        }
        Some(word) if word.bytes().all(is_ident) => {
            let mut path = prefix;
            path.push(word.to_string());
            *i += 1;
            if t.get(*i) == Some(&"::") {
                *i += 1;
                use_tree(t, i, path, out);
            } else {
                out.push(path);
            }
        }
        // `*`, or the end of the path (`crate::a::<T>`, `crate::a::b()`).
        _ => {
            out.push(prefix);
            *i += 1;
        }
    }
}

/// The graph of this crate's `src/`.
fn crate_graph() -> Graph {
    fn read(dir: &Path, under: &str, files: &mut BTreeMap<String, String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for path in entries.map(|e| e.expect("a directory entry").path()) {
            let rel = format!(
                "{under}{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            if path.is_dir() {
                read(&path, &format!("{rel}/"), files);
            } else if rel.ends_with(".rs") {
                let text = std::fs::read_to_string(&path);
                files.insert(
                    rel,
                    text.unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                );
            }
        }
    }
    let mut files = BTreeMap::new();
    read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut files,
    );
    Graph::of(&files)
}

/// How `from` comes to depend on `to` through the top-level graph (`cli → plan → runner`), or
/// `None` when it does not.
fn dependency(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<String> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(m) = queue.pop_front() {
        for next in graph.get(m).into_iter().flatten() {
            if next == from || came_from.contains_key(next.as_str()) {
                continue;
            }
            came_from.insert(next, m);
            if next == to {
                let mut chain = vec![to];
                while let Some(prev) = chain.last().and_then(|last| came_from.get(last)) {
                    chain.push(prev);
                }
                chain.reverse();
                return Some(chain.join(" → "));
            }
            queue.push_back(next);
        }
    }
    None
}

#[test]
fn the_module_graph_of_src_has_no_cycle() {
    if let Some(cycle) = crate_graph().cycle() {
        let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
        panic!("src/ has an import cycle: {}", names.join(" → "));
    }
}

#[test]
fn modules_depend_only_on_what_architecture_md_allows() {
    let graph = crate_graph().top_level();
    assert!(
        graph.contains_key("outcome") && graph.contains_key("cli"),
        "the graph is read from src/: {graph:?}"
    );
    // Architecture invariants (ARCHITECTURE.md): none of these, not even through another module.
    let running = [
        "checks", "check", "context", "cluster", "http", "runner", "report", "verify",
    ];
    let forbidden: &[(&str, &[&str])] = &[
        ("cli", &running),
        ("plan", &[&running[..], &["cli"]].concat()),
        ("report", &["runner", "verify", "checks", "check"]),
        ("checks", &["report", "runner", "verify"]),
        ("runner", &["report", "checks", "verify", "cli"]),
        ("verify", &["report", "cli"]),
    ];
    // The leaves, and what the few modules close to them may use at all.
    let only: &[(&str, &[&str])] = &[
        ("outcome", &[]),
        ("text", &[]),
        ("suite", &[]),
        ("secret", &[]),
        ("proxy_config", &[]),
        ("once", &[]),
        ("events", &["outcome"]),
    ];
    let mut broken = Vec::new();
    for (from, tos) in forbidden {
        for to in *tos {
            if let Some(chain) = dependency(&graph, from, to) {
                broken.push(format!("{from} must not depend on {to}: {chain}"));
            }
        }
    }
    for (from, allowed) in only {
        for to in graph.get(*from).into_iter().flatten() {
            if !allowed.contains(&to.as_str()) {
                broken.push(format!(
                    "{from} may use only {allowed:?} of the crate, not {to}"
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

// `cfg(test)` although the whole file is: line-based tools (the hooks' modgraph.py) then skip
// these sample crates' paths too.
#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> Graph {
        Graph::of(
            &files
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
        )
    }

    fn module(path: &str) -> Module {
        path.split("::").map(String::from).collect()
    }

    /// A crate of four modules; `d` names its edge back to `a` or not.
    fn crate_with(d: &str) -> Graph {
        graph(&[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;"),
            (
                "a.rs",
                "use crate::{b::{self, Thing}, c::d};\npub fn f() {}",
            ),
            // Each of these would close a cycle b → a → b if it were read as code.
            (
                "b.rs",
                "pub struct Thing; // crate::a::f\n\
                 const S: &str = \"crate::a::f\";\n\
                 const R: &str = r#\"use crate::a\"#;\n\
                 const C: char = '{';\n\
                 /* use crate::a; */\n\
                 #[cfg(test)]\nmod fixture;\n\
                 #[cfg(test)]\nmod tests {\n    fn t() { let _ = '}'; crate::a::f(); }\n}\n",
            ),
            ("b/fixture.rs", "use crate::a::f;"),
            ("b/tests.rs", "use crate::a::f;"),
            ("c/mod.rs", "pub mod d;"),
            ("c/d.rs", d),
        ])
    }

    #[test]
    fn a_cycle_through_use_groups_and_super_is_found_and_named() {
        // From c/d.rs, `super::super` is the root: d → a, and a → d through the use group.
        let g = crate_with("fn g() { super::super::a::f(); }");
        assert_eq!(
            g.cycle(),
            Some(vec![module("a"), module("c::d"), module("a")])
        );
    }

    #[test]
    fn comments_strings_and_test_code_make_no_edge() {
        let g = crate_with("use super::super::b::Thing;");
        assert_eq!(g.cycle(), None);
        assert_eq!(
            g.uses.get(&module("b")),
            Some(&BTreeSet::new()),
            "b names nothing outside comments, strings and tests"
        );
        let top = g.top_level();
        assert_eq!(dependency(&top, "a", "b").as_deref(), Some("a → b"));
        assert_eq!(dependency(&top, "c", "b").as_deref(), Some("c → b"));
        assert_eq!(dependency(&top, "b", "a"), None);
    }

    #[test]
    fn a_dependency_through_another_module_is_named_with_its_chain() {
        let g = graph(&[
            ("lib.rs", "pub mod cli;\npub mod plan;\npub mod runner;"),
            ("cli.rs", "use crate::plan::Plan;"),
            ("plan.rs", "pub struct Plan(crate::runner::Options);"),
            (
                "runner/mod.rs",
                "pub struct Options;\nuse self::stop::Stop;\nmod stop;",
            ),
            ("runner/stop.rs", "pub struct Stop;\nuse super::Options;"),
        ]);
        assert_eq!(g.cycle(), None);
        let top = g.top_level();
        assert_eq!(
            dependency(&top, "cli", "runner").as_deref(),
            Some("cli → plan → runner")
        );
        // runner → runner::stop is a parent using its child; stop → runner its parent.
        assert_eq!(
            g.uses.get(&module("runner")),
            Some(&BTreeSet::from([module("runner::stop")]))
        );
        assert_eq!(
            g.edges().get(&module("runner::stop")),
            Some(&BTreeSet::new())
        );
    }
}
