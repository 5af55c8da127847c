//! The house rules of src/, checked on the source itself: no import cycles
//! between the library's modules (the stages depend one way, down the
//! pipeline), and every module opens with a comment saying what it owns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every library source file (not the binaries) as (module path, text).
fn library_files() -> Vec<(Vec<String>, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if !path.ends_with("bin") && !path.ends_with("bpf") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .filter(|p| !p.ends_with("main.rs"))
        .map(|p| {
            let rel = p.strip_prefix(&src).expect("under src").with_extension("");
            let mut module: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|l| l == "mod" || l == "lib") {
                module.pop();
            }
            (module, std::fs::read_to_string(&p).expect("readable"))
        })
        .collect()
}

/// The modules `text` (the file of `module`) refers to, as full paths,
/// from `crate::a::b` and `super::x` paths outside its tests.
fn references(module: &[String], is_mod_rs: bool, text: &str) -> BTreeSet<Vec<String>> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut found = BTreeSet::new();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", {
            // `super` of a mod.rs is its directory's parent; of a file, its directory.
            let keep = module.len().saturating_sub(if is_mod_rs { 2 } else { 1 });
            module[..keep.min(module.len())].to_vec()
        }),
    ] {
        for (i, _) in code.match_indices(prefix) {
            if prefix == "super::" && code[..i].ends_with("crate::") {
                continue;
            }
            let rest = &code[i + prefix.len()..];
            let path: Vec<String> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .filter(|s| !s.is_empty())
                .take_while(|s| s.chars().next().is_some_and(|c| c.is_lowercase()))
                .map(str::to_string)
                .collect();
            let mut full = base.clone();
            full.extend(path);
            if !full.is_empty() {
                found.insert(full);
            }
        }
    }
    found
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Module dependencies at one level: between the top-level modules, and
/// between the children of each directory module (a parent and its own
/// children are one unit there).
fn graphs() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let files = library_files();
    let known: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut levels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (module, text) in &files {
        let is_mod_rs = known.iter().any(|k| k.len() > module.len() && k.starts_with(module)) && !module.is_empty();
        for target in references(module, is_mod_rs, text) {
            // The longest known module the path names.
            let Some(target) = (1..=target.len()).rev().map(|n| target[..n].to_vec()).find(|t| known.contains(t))
            else {
                continue;
            };
            // The first level at which the two differ, under their common parent.
            let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            let (Some(from), Some(to)) = (module.get(common), target.get(common)) else {
                continue; // one contains the other
            };
            let parent = module[..common].join("::");
            levels.entry(parent).or_default().entry(from.clone()).or_default().insert(to.clone());
        }
    }
    levels
}

#[test]
fn no_import_cycles_between_modules() {
    let levels = graphs();
    assert!(levels.get("").is_some_and(|g| g.len() > 10), "the top-level graph was read: {levels:?}");
    for (parent, graph) in &levels {
        if let Some(cycle) = find_cycle(graph) {
            panic!("import cycle under `{}`: {}", if parent.is_empty() { "crate" } else { parent }, cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert!(find_cycle(&g).is_some_and(|c| c.len() == 4));
    let r = references(&["track".into(), "tcp".into()], false, "use super::process::X; use crate::decode::Y;");
    assert!(r.contains(&vec!["track".to_string(), "process".to_string()]), "{r:?}");
    assert!(r.contains(&vec!["decode".to_string()]), "{r:?}");
}

#[test]
fn every_module_says_what_it_owns() {
    for (module, text) in library_files() {
        assert!(
            text.trim_start().starts_with("//!"),
            "src/{}: a module opens with a `//!` comment saying what it owns",
            module.join("/")
        );
    }
}

#[test]
#[ignore]
fn print_graphs() {
    for (parent, graph) in graphs() {
        for (from, to) in graph {
            println!("{parent}: {from} -> {to:?}");
        }
    }
}
