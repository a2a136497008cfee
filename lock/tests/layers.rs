//! The runtime's layer rule, checked: every module of `lock/src` imports (`crate::…`) only
//! modules on layers below its own, as the layer table in ARCHITECTURE.md says. The table is
//! read from ARCHITECTURE.md itself, so the document and the code cannot drift apart: a new
//! module missing from the table fails here, and so does an import up (or across) the layers.
//! (rust-analyzer keeps such rules in its own tidy test.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const BEGIN: &str = "<!-- layers:begin -->";
const END: &str = "<!-- layers:end -->";

#[test]
fn every_module_imports_only_from_layers_below_it() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layers = layer_table(&crate_dir.join("../ARCHITECTURE.md"));
    let src = crate_dir.join("src");
    let reexports = root_reexports(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut violations = Vec::new();
    let mut unlisted = Vec::new();
    for file in rust_files(&src) {
        let module = module_of(&src, &file);
        if module == "lib" {
            continue; // declares the modules and re-exports: above every layer
        }
        let Some(&layer) = layers.get(&module) else {
            unlisted.push(module);
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for target in crate_references(&text) {
            let target = reexports.get(&target).cloned().unwrap_or(target);
            if target == module {
                continue;
            }
            match layers.get(&target) {
                Some(&below) if below < layer => {}
                Some(&other) => violations.push(format!(
                    "{} (layer {layer}) imports {target} (layer {other})",
                    file.strip_prefix(crate_dir).unwrap().display()
                )),
                None => unlisted.push(target),
            }
        }
    }
    unlisted.sort();
    unlisted.dedup();
    assert!(
        unlisted.is_empty(),
        "modules missing from the layer table in ARCHITECTURE.md: {unlisted:?}"
    );
    assert!(
        violations.is_empty(),
        "imports that go up or across the layers (see ARCHITECTURE.md):\n{}",
        violations.join("\n")
    );
}

/// The checker itself finds what it must: an import up the layers, a grouped import, a path
/// used in code, a re-exported root name — and ignores comments.
#[test]
fn the_checker_reads_every_form_of_import() {
    let text = "use crate::guard::Guard;\nuse crate::{observe, quorum::{self, drift},\n    LockError};\n// crate::locker in a comment\nlet x = crate::node::Call::new();\n";
    assert_eq!(
        crate_references(text),
        ["guard", "observe", "quorum", "LockError", "node"]
    );
    let reexports =
        root_reexports("pub use error::{LockError, NodeError};\npub use guard::Guard;\n");
    assert_eq!(reexports["LockError"], "error");
    assert_eq!(reexports["Guard"], "guard");
}

/// Module name → layer number (0 is the bottom), from the table between the markers.
/// Rows look like `| 3 | what the layer is | `a`, `b` |`.
fn layer_table(architecture: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(architecture).unwrap();
    let start = text
        .find(BEGIN)
        .expect("ARCHITECTURE.md has the layer table's begin marker");
    let end = text
        .find(END)
        .expect("ARCHITECTURE.md has the layer table's end marker");
    let mut layers = BTreeMap::new();
    for row in text[start..end].lines() {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Some(Ok(layer)) = cells.get(1).map(|cell| cell.parse::<usize>()) else {
            continue;
        };
        let modules = cells.get(3).expect("a layer row names its modules");
        for module in modules.split(',') {
            let module = module.trim().trim_matches('`');
            let previous = layers.insert(module.to_string(), layer);
            assert!(previous.is_none(), "{module} is listed twice");
        }
    }
    assert!(!layers.is_empty(), "the layer table has rows");
    layers
}

/// `pub use module::{A, B};` in lib.rs: the root names and the module each comes from.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in lib.lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_end_matches(';');
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            let item = item.trim();
            if !item.is_empty() {
                names.insert(item.to_string(), module.to_string());
            }
        }
    }
    names
}

/// The first segment of every `crate::` path in code (comments skipped), in order; a grouped
/// `crate::{a, b::c}` gives each of its top-level names.
fn crate_references(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|line| match line.find("//") {
            Some(comment) => &line[..comment],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue; // `fencelock_crate::` or the like: not this crate's root
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        found.push(first_segment(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
                if depth == 0 {
                    found.push(first_segment(&group[start..i]));
                    break;
                }
            }
        } else {
            found.push(first_segment(rest));
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// `src/guard.rs` → `guard`; `src/local/model.rs` → `local` (a submodule belongs to its
/// parent's layer).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    Path::new(first)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}
