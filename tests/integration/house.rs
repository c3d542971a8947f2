//! The house's shape, checked: files of a crate do not import each other in a cycle
//! (a cycle is where a god-file grows back), and the write side keeps side tables out
//! of the store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each module of a crate (`access::tables`, …) and the sibling modules its code (not
/// its tests) names through `crate::` or `super::`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect(src, &mut files);
    let module_of = |path: &Path| {
        let relative = path.strip_prefix(src).unwrap().with_extension("");
        let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        match parts.as_slice() {
            [root] if root == "lib" || root == "main" => "crate".to_string(),
            [.., last] if last == "mod" => parts[..parts.len() - 1].join("::"),
            _ => parts.join("::"),
        }
    };
    let modules: BTreeMap<String, String> = files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            // Tests may reach anywhere; the code may not.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_string();
            (module_of(path), code)
        })
        .collect();
    let mut graph = BTreeMap::new();
    for (module, code) in &modules {
        let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
        let mut edges = BTreeSet::new();
        for (prefix, base) in [("crate::", String::new()), ("super::", parent.to_string())] {
            for (at, _) in code.match_indices(prefix) {
                let path: String = code[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut named: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
                // The longest prefix that is a module of the crate.
                while !named.is_empty() {
                    let candidate =
                        if base.is_empty() { named.join("::") } else { format!("{base}::{}", named.join("::")) };
                    if modules.contains_key(&candidate) {
                        if &candidate != module && !module.starts_with(&format!("{candidate}::")) {
                            edges.insert(candidate);
                        }
                        break;
                    }
                    named.pop();
                }
            }
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// A cycle of the graph, if there is one, as the modules along it.
fn a_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            return Some(path[start..].to_vec());
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name).join("src")
}

#[test]
fn no_two_files_of_a_crate_import_each_other_in_a_cycle() {
    for name in ["domain", "projections", "commands", "api"] {
        let graph = module_graph(&crate_src(name));
        assert!(graph.len() > 5, "{name}: the module graph was not read");
        // `crate` (lib.rs) declares every module; its own imports are edges too, but
        // the modules' use of what it defines is not a cycle through each file.
        let without_root: BTreeMap<_, _> = graph
            .into_iter()
            .filter(|(module, _)| module != "crate")
            .map(|(module, edges)| (module, edges.into_iter().filter(|e| e != "crate").collect()))
            .collect();
        if let Some(cycle) = a_cycle(&without_root) {
            panic!("{name}: files import each other in a cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("store", vec!["append"]), ("append", vec!["guard"]), ("guard", vec!["store"]), ("access", vec!["store"])]
            .into_iter()
            .map(|(m, edges)| (m.to_string(), edges.into_iter().map(String::from).collect()))
            .collect();
    let cycle = a_cycle(&graph).expect("a cycle");
    assert_eq!(cycle.len(), 3, "{cycle:?}");
    assert!(cycle.contains(&"guard".to_string()));
}

#[test]
fn the_store_knows_no_side_table() {
    let store = std::fs::read_to_string(crate_src("commands").join("store.rs")).unwrap();
    let append = std::fs::read_to_string(crate_src("commands").join("append.rs")).unwrap();
    for table in ["user_credentials", "access_tokens", "invitations", "account_memberships", "inbox_memberships"] {
        assert!(!store.contains(table) && !append.contains(table), "the store writes {table} itself");
    }
}
