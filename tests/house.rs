//! The house rules, checked on the source: every `crate::` import between top-level modules runs
//! down the layers (README, "Architecture"), so there is no import circle and nothing imports
//! upward; and inside each module, its rooms (the files and folders beside `mod.rs`) import each
//! other without a circle. There is no exception.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top. A module may import only modules of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["model", "cpu"],
    &["assets", "privacy"],
    &["index", "metrics"],
    &["nlp"],
    &["store"],
    &["knowledge"],
    &["config"],
    &["limits", "telemetry", "templates"],
    &["bot"],
    &["handoff"],
    &["cluster"],
    &["state"],
    &["http"],
    &["app"],
    &["tools"],
    &["cli"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
}

/// Files that hold only tests (declared `#[cfg(test)] mod tests;` or `mod properties;` beside
/// the code): they may reach anywhere, like the test modules inside files.
fn is_test_file(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "tests")
        || path
            .file_stem()
            .is_some_and(|stem| stem == "tests" || stem == "properties")
}

/// Top-level module -> the top-level modules its non-test code names through `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(&src).unwrap();
        if is_test_file(relative) {
            continue;
        }
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if ["lib", "main", "test_support"].contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        // Tests beside the code may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                graph.entry(module.clone()).or_default().insert(name);
            }
        }
    }
    graph
}

#[test]
fn imports_run_down_the_layers() {
    let graph = imports();
    assert!(graph.len() > 10, "the scan found the modules: {graph:?}");
    let mut upward = Vec::new();
    for (module, targets) in &graph {
        for target in targets {
            if layer_of(target) >= layer_of(module) {
                upward.push(format!("{module} -> {target}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run up or sideways: {upward:?} (layers in tests/house.rs)"
    );
}

/// The rooms of every module at every depth (its files and folders other than `mod.rs`) and, for
/// each, the rooms of the same module its non-test code names: through `crate::path::room` or
/// as many `super::` as it sits below the module.
fn room_imports() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graphs: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        if is_test_file(path.strip_prefix(&src).unwrap()) {
            continue;
        }
        let parts: Vec<String> = path
            .strip_prefix(&src)
            .unwrap()
            .components()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .collect();
        let text = std::fs::read_to_string(path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let is_mod_file = parts.last().is_some_and(|p| p == "mod");
        // The module parts[..k] has this file inside its room parts[k].
        for k in 1..parts.len() {
            let room = &parts[k];
            if room == "mod" {
                continue;
            }
            let module = parts[..k].join("::");
            let depth = parts.len() - 1 - k + usize::from(!is_mod_file);
            let absolute = format!("crate::{module}::");
            let relative = "super::".repeat(depth);
            let mut named = BTreeSet::new();
            for prefix in [absolute.as_str(), relative.as_str()] {
                for (at, _) in code.match_indices(prefix) {
                    // Only the whole run of `super::`, not a tail of a longer one.
                    if prefix.starts_with("super::") && code[..at].ends_with("super::") {
                        continue;
                    }
                    let name: String = code[at + prefix.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if !name.is_empty() && &name != room {
                        named.insert(name);
                    }
                }
            }
            graphs
                .entry(module)
                .or_default()
                .entry(room.clone())
                .or_default()
                .extend(named);
        }
    }
    // Keep only names that are rooms of the same module (not items of its mod.rs).
    for rooms in graphs.values_mut() {
        let names: BTreeSet<String> = rooms.keys().cloned().collect();
        for targets in rooms.values_mut() {
            targets.retain(|t| names.contains(t));
        }
    }
    graphs
}

/// A circle in `graph`, if there is one, as the rooms along it.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut circle = path[start..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(circle);
        }
    }
    None
}

#[test]
fn rooms_of_a_module_import_each_other_without_a_circle() {
    let graphs = room_imports();
    assert!(
        graphs.get("handoff").is_some_and(|rooms| rooms.len() > 5)
            && graphs.contains_key("tools::eval"),
        "the scan found the rooms: {graphs:?}"
    );
    let circles: Vec<String> = graphs
        .iter()
        .filter_map(|(module, rooms)| {
            find_circle(rooms).map(|circle| format!("{module}: {}", circle.join(" -> ")))
        })
        .collect();
    assert!(
        circles.is_empty(),
        "import circles inside modules: {circles:?}"
    );
}

#[test]
fn the_circle_finder_finds_circles() {
    let graph = |edges: &[(&str, &str)]| {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in edges {
            graph
                .entry(from.to_string())
                .or_default()
                .insert(to.to_string());
            graph.entry(to.to_string()).or_default();
        }
        graph
    };
    assert_eq!(
        find_circle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    let circle = find_circle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])).unwrap();
    assert_eq!(circle.len(), 4, "{circle:?}");
    assert_eq!(circle.first(), circle.last());
}
