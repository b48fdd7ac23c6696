//! No module of the library imports a module that imports it.
//!
//! Reads every library source file (`src/**/*.rs` but `src/bin`), strips
//! comments, strings and test code (`tests.rs` files and `#[cfg(test)]`
//! items: fixtures may use any module), and collects the `crate::…` and
//! `super::…` paths. A path through a re-export (`crate::Window`,
//! `crate::error::DumpError`) counts for the module that defines the item; a
//! parent's `pub use child::…` (its facade) is not a dependency of the parent.
//!
//! Two graphs are checked for cycles: the top-level modules (a file under
//! `src/m/` belongs to `m`), and the files of `src/export/`. A cycle fails
//! the test, printed as `a -> b -> a`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Directories whose files must not form a cycle among themselves either.
const FILE_LEVEL: &[&str] = &["export", "analysis", "dump"];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                source_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source with comments, string and char literals blanked out.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'r' && matches!(b.get(i + 1), Some(b'"' | b'#')) && !ident_byte(b, i) {
            // A raw string: r"…" or r#"…"#.
            let hashes = b[i + 1..].iter().take_while(|&&h| h == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                out.push(c as char);
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            i += 2 + hashes;
            while i < b.len() && !b[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' && is_char_literal(b, i) {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            // Keep multi-byte characters whole.
            let ch = src[i..].chars().next().expect("a char");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Whether the byte before `i` continues an identifier.
fn ident_byte(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// `'x'`, `'\n'`, `'\u{..}'` (not a lifetime such as `'a`).
fn is_char_literal(b: &[u8], i: usize) -> bool {
    match b.get(i + 1) {
        Some(b'\\') => true,
        Some(_) => {
            // One character (possibly multi-byte), then a quote.
            let rest = &b[i + 1..];
            let len = match rest[0] {
                x if x < 0x80 => 1,
                x if x >= 0xf0 => 4,
                x if x >= 0xe0 => 3,
                _ => 2,
            };
            rest.get(len) == Some(&b'\'')
        }
        None => false,
    }
}

/// The source without `#[cfg(test)]` items (the attribute and the item after
/// it, up to its `;` or its matching `}`).
fn without_test_items(src: &str) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let mut depth = 0usize;
        let mut parens = 0usize;
        let mut end = item.len();
        for (k, ch) in item.char_indices() {
            match ch {
                '(' | '[' => parens += 1,
                ')' | ']' => parens = parens.saturating_sub(1),
                '{' => depth += 1,
                // The end of the enclosing block: the item was a field or
                // a statement without `;` (nothing of it to skip past).
                '}' if depth == 0 => {
                    end = k;
                    break;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                // A struct field, or a field of a struct expression (not a
                // comma of a signature's generics or arguments).
                ',' if depth == 0
                    && parens == 0
                    && !item[..k].contains('<')
                    && !item[..k].contains("fn ") =>
                {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The paths following each `prefix` (`crate::`, `super::`), as lists of up
/// to two segments; a `{…}` group gives one path per item. The flag says
/// whether the path is in a `pub use` (a re-export).
fn paths_after(src: &str, prefix: &str) -> Vec<(Vec<String>, bool)> {
    let mut out = Vec::new();
    let b = src.as_bytes();
    let mut from = 0;
    while let Some(k) = src[from..].find(prefix) {
        let at = from + k;
        from = at + prefix.len();
        if ident_byte(b, at) || (at > 0 && b[at - 1] == b'$') {
            continue;
        }
        // A re-export when the statement began with `pub use` / `pub(crate) use`.
        let stmt_start = src[..at].rfind([';', '{', '}']).map_or(0, |p| p + 1);
        let stmt = src[stmt_start..at].trim_start();
        let reexport = stmt.starts_with("pub use") || stmt.starts_with("pub(crate) use");
        let rest = &src[from..];
        if let Some(group) = rest.strip_prefix('{') {
            for item in split_group(group) {
                out.push((segments(item.trim()), reexport));
            }
        } else {
            out.push((segments(rest), reexport));
        }
    }
    out
}

/// The top-level items of a `{…}` group (its text after the `{`).
fn split_group(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (k, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..k]);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    items.into_iter().filter(|i| !i.trim().is_empty()).collect()
}

/// Up to two `::`-separated identifiers (a group in second place gives its
/// first item, which is enough to name a submodule or item).
fn segments(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(first) = ident_at(s) else {
        return out;
    };
    out.push(first.to_owned());
    if let Some(next) = s[first.len()..].strip_prefix("::") {
        let next = next.strip_prefix('{').map_or(next, str::trim_start);
        if let Some(second) = ident_at(next) {
            out.push(second.to_owned());
        }
    }
    out
}

/// One library file.
struct File {
    /// `config`, `export/json`, `export` (for `export/mod.rs`), `recorder/capture_thread`.
    key: String,
    code: String,
}

impl File {
    /// The module `super::` names: the parent directory's module.
    fn parent(&self) -> Option<&str> {
        self.key.rsplit_once('/').map(|(p, _)| p)
    }
}

struct Library {
    files: Vec<File>,
    /// Module key -> (re-exported name -> module key it comes from).
    reexports: BTreeMap<String, BTreeMap<String, String>>,
}

impl Library {
    fn load() -> Library {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut paths = Vec::new();
        source_files(&src, &mut paths);
        let mut files = Vec::new();
        for path in paths {
            let rel = path.strip_prefix(&src).expect("under src");
            let rel = rel.to_str().expect("utf-8 path").trim_end_matches(".rs");
            if rel.ends_with("/tests") {
                continue; // test code may use any module
            }
            let key = rel.strip_suffix("/mod").unwrap_or(rel).to_owned();
            let text = std::fs::read_to_string(&path).expect("read source");
            let code = without_test_items(&strip(&text));
            files.push(File { key, code });
        }
        let mut lib = Library {
            files,
            reexports: BTreeMap::new(),
        };
        lib.reexports = lib.collect_reexports();
        lib
    }

    fn is_module(&self, key: &str) -> bool {
        self.files.iter().any(|f| f.key == key)
    }

    /// `pub use` items of each file, by the name they are visible under.
    fn collect_reexports(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut all = BTreeMap::new();
        for f in &self.files {
            let mut names = BTreeMap::new();
            for stmt in f.code.split(';') {
                let stmt = stmt.trim();
                let Some(body) = stmt
                    .strip_prefix("pub use ")
                    .or_else(|| stmt.strip_prefix("pub(crate) use "))
                else {
                    continue;
                };
                let (base, items) = match body.split_once("::{") {
                    Some((base, items)) => (
                        base.trim(),
                        items
                            .trim_end_matches('}')
                            .split(',')
                            .map(str::trim)
                            .collect::<Vec<_>>(),
                    ),
                    None => match body.rsplit_once("::") {
                        Some((base, item)) => (base.trim(), vec![item.trim()]),
                        None => continue,
                    },
                };
                let from = self.module_of_use_base(f, base);
                for item in items {
                    let name = item.rsplit(" as ").next().unwrap_or(item).trim();
                    let name = name.rsplit("::").next().unwrap_or(name);
                    if let Some(m) = &from
                        && !name.is_empty()
                    {
                        names.insert(name.to_owned(), m.clone());
                    }
                }
            }
            all.insert(f.key.clone(), names);
        }
        all
    }

    /// The module a `use` base path names, relative to file `f`.
    fn module_of_use_base(&self, f: &File, base: &str) -> Option<String> {
        let parts: Vec<&str> = base.split("::").map(str::trim).collect();
        let mut key: Vec<&str> = match parts.first() {
            Some(&"crate") => Vec::new(),
            Some(&"super") => f.parent().map_or(Vec::new(), |p| p.split('/').collect()),
            Some(&"self") => f.key.split('/').collect(),
            _ if f.key == "lib" => Vec::new(),
            // A child of this module (`pub use json::…` in export/mod.rs).
            _ => f.key.split('/').collect(),
        };
        let skip = usize::from(matches!(parts.first(), Some(&"crate" | &"super" | &"self")));
        for p in &parts[skip..] {
            key.push(p);
            if !self.is_module(&key.join("/")) {
                key.pop();
                break;
            }
        }
        let key = key.join("/");
        (!key.is_empty() && self.is_module(&key)).then_some(key)
    }

    /// The file a path (`crate::` segments) reaches: a submodule named by
    /// the second segment, or the module re-exporting the item, resolved
    /// through re-exports; `None` for a name that is no module's.
    fn resolve(&self, segments: &[String]) -> Option<String> {
        let first = segments.first()?;
        let (module, item) = if self.is_module(first) {
            let sub = segments.get(1).map(|s| format!("{first}/{s}"));
            match sub {
                Some(sub) if self.is_module(&sub) => return Some(sub),
                _ => (first.clone(), segments.get(1).cloned()),
            }
        } else {
            ("lib".to_owned(), Some(first.clone()))
        };
        let mut module = module;
        let Some(item) = item else {
            return Some(module);
        };
        // Follow re-exports to the defining module (a few hops at most).
        for _ in 0..8 {
            match self.reexports.get(&module).and_then(|r| r.get(&item)) {
                Some(next) if *next != module => module = next.clone(),
                _ => break,
            }
        }
        (module != "lib").then_some(module)
    }

    /// Edges between files: (from file, to file).
    fn file_edges(&self) -> BTreeSet<(String, String)> {
        let mut edges = BTreeSet::new();
        for f in self.files.iter().filter(|f| f.key != "lib") {
            let mut paths = paths_after(&f.code, "crate::");
            if let Some(parent) = f.parent() {
                let parent: Vec<String> = parent.split('/').map(str::to_owned).collect();
                for (p, re) in paths_after(&f.code, "super::") {
                    paths.push((parent.iter().cloned().chain(p).collect(), re));
                }
            }
            // (`super::` in a top-level file's inline module is the file itself.)
            // A parent's `pub use child::…` and `mod child` are its facade.
            let children: Vec<String> = self
                .files
                .iter()
                .filter_map(|c| c.parent().filter(|p| *p == f.key).map(|_| c.key.clone()))
                .collect();
            for child in &children {
                let name = child.rsplit('/').next().expect("a name");
                for (p, re) in paths_after(&f.code, &format!("{name}::")) {
                    if !re {
                        let mut segs: Vec<String> = f.key.split('/').map(str::to_owned).collect();
                        segs.push(name.to_owned());
                        segs.extend(p);
                        paths.push((segs, false));
                    }
                }
            }
            for (segs, reexport) in paths {
                let segs: Vec<String> = if segs.len() > 2 && self.is_module(&segs[..2].join("/")) {
                    vec![segs[..2].join("/"), segs[2].clone()]
                        .into_iter()
                        .flat_map(|s| s.split('/').map(str::to_owned).collect::<Vec<_>>())
                        .collect()
                } else {
                    segs
                };
                let Some(to) = self.resolve_file(&segs) else {
                    continue;
                };
                // A facade: the parent re-exporting its child's item.
                if reexport && to.starts_with(&format!("{}/", f.key)) {
                    continue;
                }
                if to != f.key {
                    edges.insert((f.key.clone(), to));
                }
            }
        }
        edges
    }

    /// Like [`resolve`](Library::resolve), for paths whose first segments
    /// may name a submodule (`export`, `json`, `Item`).
    fn resolve_file(&self, segs: &[String]) -> Option<String> {
        if segs.len() >= 2 {
            let sub = format!("{}/{}", segs[0], segs[1]);
            if self.is_module(&sub) {
                // `crate::export::json::Item`: the submodule, or what it re-exports.
                return match segs.get(2) {
                    Some(item) => match self.reexports.get(&sub).and_then(|r| r.get(item)) {
                        Some(m) => Some(m.clone()),
                        None => Some(sub),
                    },
                    None => Some(sub),
                };
            }
        }
        self.resolve(segs)
    }
}

/// The cycles of a graph: its strongly connected components of more than
/// one node, each printed as a closed path.
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<(Vec<String>, String)> {
    let nodes: BTreeSet<&String> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for (a, b) in edges {
                if *a == n && seen.insert(b.clone()) {
                    stack.push(b.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reaches[n].contains(*n) {
            continue;
        }
        let scc: Vec<String> = nodes
            .iter()
            .filter(|m| reaches[n].contains(**m) && reaches[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        done.extend(scc.iter().cloned());
        // A shortest path back from n to itself, for the message.
        let path = shortest_cycle(n, edges);
        out.push((scc, path.join(" -> ")));
    }
    out
}

fn shortest_cycle(start: &String, edges: &BTreeSet<(String, String)>) -> Vec<String> {
    // Breadth first from `start`; the first edge back to it closes the cycle.
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(n) = queue.pop_front() {
        for (_, b) in edges.iter().filter(|(a, _)| *a == n) {
            if b == start {
                let mut chain = vec![n.clone()];
                while chain.last() != Some(start) {
                    let p = prev[chain.last().expect("a node")].clone();
                    chain.push(p);
                }
                chain.reverse();
                let mut path = chain;
                path.push(start.clone());
                return path;
            }
            if !prev.contains_key(b) {
                prev.insert(b.clone(), n.clone());
                queue.push_back(b.clone());
            }
        }
    }
    vec![start.clone()]
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let lib = Library::load();
    let file_edges = lib.file_edges();
    assert!(
        file_edges.len() > 20,
        "the parser found the imports: {file_edges:?}"
    );
    let top = |k: &str| k.split('/').next().expect("a key").to_owned();
    let module_edges: BTreeSet<(String, String)> = file_edges
        .iter()
        .map(|(a, b)| (top(a), top(b)))
        .filter(|(a, b)| a != b)
        .collect();
    // Known dependencies, so a parser that finds nothing cannot pass.
    for (a, b) in [
        ("layer", "shared"),
        ("recorder", "shared"),
        ("builder", "config"),
        ("capture", "segments"),
        ("error", "dump"),
        ("export", "window"),
    ] {
        assert!(
            module_edges.contains(&(a.to_owned(), b.to_owned())),
            "{a} -> {b} not found in {module_edges:?}"
        );
    }
    let mut failures = Vec::new();
    for (scc, path) in cycles(&module_edges) {
        failures.push(format!("modules {scc:?}: {path}"));
    }
    for dir in FILE_LEVEL {
        let inside: BTreeSet<(String, String)> = file_edges
            .iter()
            .filter(|(a, b)| top(a) == *dir && top(b) == *dir)
            .cloned()
            .collect();
        for (scc, path) in cycles(&inside) {
            failures.push(format!("files of {dir}/ {scc:?}: {path}"));
        }
    }
    assert!(
        failures.is_empty(),
        "import cycles:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_parser_reads_groups_reexports_and_skips_comments() {
    let src = "use crate::{a::B, c}; // crate::d\n/* crate::e */ let s = \"crate::f\";\n\
               pub use crate::g::H;\n#[cfg(test)]\nmod tests { use crate::i; }\nfn x() { crate::j::k(); }";
    let code = without_test_items(&strip(src));
    let paths: Vec<_> = paths_after(&code, "crate::");
    let got: Vec<(String, bool)> = paths.iter().map(|(p, r)| (p.join("::"), *r)).collect();
    assert_eq!(
        got,
        [
            ("a::B".to_owned(), false),
            ("c".to_owned(), false),
            ("g::H".to_owned(), true),
            ("j::k".to_owned(), false)
        ]
    );
}
