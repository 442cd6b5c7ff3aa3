//! The shape of the code: no import circles between the files of `src/`.
//!
//! Each file is a module; a file that names an item of another module (in a `use`, or in a path
//! such as `crate::store::Reader` or `super::error::code`) depends on the file that module lives
//! in. The dependencies must form no circle: when a handler imports the application that mounts
//! it, or two modules lean on each other, every change to one is a change to both, and a
//! newcomer can no longer read the code from the bottom up. Code under `#[cfg(test)]` does not
//! count. Doc comments do not either (a link to another module is not a dependency). Nor does a
//! module's use of its own submodules: they are its parts (`store/mod.rs` calls
//! `store::orders`, which returns `store`'s error type), not modules it leans on.
//!
//! The scan is a small tokenizer rather than a Rust parser: it sees `use` trees and every path
//! that starts with `crate`, `super`, `self` or a child module's name, inside macros too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

#[test]
fn the_files_of_src_import_each_other_without_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&src);
    assert!(files.len() > 40, "the scan found the modules ({} of them)", files.len());
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    let mut edges: BTreeMap<Module, BTreeMap<Module, String>> = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).expect("readable");
        for (target, via) in dependencies(module, &text, &known) {
            if !target.starts_with(module) {
                edges.entry(module.clone()).or_default().entry(target).or_insert(via);
            }
        }
    }
    let circles = circles(&known, &edges);
    let name = |m: &Module| if m.is_empty() { "crate".to_owned() } else { m.join("::") };
    let report: Vec<String> = circles
        .iter()
        .map(|circle| {
            let members: BTreeSet<&Module> = circle.iter().collect();
            let links: Vec<String> = circle
                .iter()
                .flat_map(|from| {
                    edges
                        .get(from)
                        .into_iter()
                        .flatten()
                        .filter(|(to, _)| members.contains(to))
                        .map(move |(to, via)| format!("    {} -> {} (`{via}`)", name(from), name(to)))
                })
                .collect();
            format!("a circle of {} files:\n{}", circle.len(), links.join("\n"))
        })
        .collect();
    assert!(report.is_empty(), "import circles in src/:\n{}", report.join("\n"));
}

/// Every file of the library (not `main.rs`, the binary), by module path.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let mut module: Module = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                Some("main") if module.len() == 1 => continue,
                Some("lib") if module.len() == 1 => module.clear(),
                Some("mod") => {
                    module.pop();
                }
                _ => {}
            }
            found.insert(module, path);
        }
    }
    found
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Path, // `::`
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Hash,
    Other,
}

/// The tokens of Rust source, without comments, strings or character literals.
fn tokens(text: &str) -> Vec<Token> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
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
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'#') || b.get(i + 1) == Some(&b'"'))
            && raw_string(b, i).is_some()
        {
            i = raw_string(b, i).expect("checked");
        } else if c == b'b' && b.get(i + 1) == Some(&b'"') {
            i = string(b, i + 1);
        } else if c == b'"' {
            i = string(b, i);
        } else if c == b'\'' {
            // A character literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Token::Ident(text[start..i].to_owned()));
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push(Token::Path);
            i += 2;
        } else {
            out.push(match c {
                b'{' => Token::Open,
                b'}' => Token::Close,
                b',' => Token::Comma,
                b';' => Token::Semi,
                b'*' => Token::Star,
                b'#' => Token::Hash,
                _ => Token::Other,
            });
            i += 1;
        }
    }
    out
}

/// The end of a raw string starting at `i` (`r"…"`, `r#"…"#`), if it is one.
fn raw_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let mut hashes = 0;
    while b.get(j) == Some(&b'#') {
        hashes += 1;
        j += 1;
    }
    if b.get(j) != Some(&b'"') {
        return None;
    }
    j += 1;
    while j < b.len() {
        if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(b.len())
}

/// The end of a string starting at the quote at `i`.
fn string(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// The modules `module`'s source names, each with one path that names it.
fn dependencies(module: &Module, text: &str, known: &BTreeSet<Module>) -> Vec<(Module, String)> {
    let tokens = tokens(text);
    // Child modules declared in this file (`mod x;`): bare paths may start with their names.
    let children: BTreeSet<String> = tokens
        .windows(3)
        .filter_map(|w| match w {
            [Token::Ident(m), Token::Ident(name), Token::Semi] if m == "mod" => Some(name.clone()),
            _ => None,
        })
        .collect();
    let mut found = Vec::new();
    // Inline modules around the current token: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            // `#[cfg(test)]` on the next item: skip the item (a test module, a test helper).
            Token::Hash if is_cfg_test(&tokens, i) => {
                i = skip_item(&tokens, i);
                continue;
            }
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d > depth) {
                    inline.pop();
                }
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Open)) = (tokens.get(i + 1), tokens.get(i + 2)) {
                    inline.push((name.clone(), depth + 1));
                }
            }
            Token::Ident(word) if word == "use" => {
                let here = current(module, &inline);
                let (paths, end) = use_tree(&tokens, i + 1);
                for path in paths {
                    if let Some(target) = resolve(&here, &path, &children, known) {
                        found.push((target, path.join("::")));
                    }
                }
                i = end;
                continue;
            }
            Token::Ident(first) if i == 0 || tokens[i - 1] != Token::Path => {
                let mut path = vec![first.clone()];
                let mut j = i + 1;
                while tokens.get(j) == Some(&Token::Path) {
                    match tokens.get(j + 1) {
                        Some(Token::Ident(next)) => path.push(next.clone()),
                        _ => break,
                    }
                    j += 2;
                }
                if path.len() > 1 {
                    let here = current(module, &inline);
                    if let Some(target) = resolve(&here, &path, &children, known) {
                        found.push((target, path.join("::")));
                    }
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

fn current(module: &Module, inline: &[(String, usize)]) -> Module {
    module.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect()
}

fn is_cfg_test(tokens: &[Token], i: usize) -> bool {
    matches!(
        &tokens[i..tokens.len().min(i + 6)],
        [Token::Hash, Token::Other, Token::Ident(cfg), Token::Other, Token::Ident(test), Token::Other]
            if cfg == "cfg" && test == "test"
    )
}

/// The index after the item that the attribute at `i` is on.
fn skip_item(tokens: &[Token], i: usize) -> usize {
    let mut j = i + 6; // past `#[cfg(test)]`
    let mut depth = 0;
    while j < tokens.len() {
        match tokens[j] {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            Token::Semi if depth == 0 => return j + 1,
            _ => {}
        }
        j += 1;
    }
    j
}

/// The paths a `use` tree starting at `i` names, and the index after its `;`.
fn use_tree(tokens: &[Token], i: usize) -> (Vec<Vec<String>>, usize) {
    fn tree(tokens: &[Token], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
        let mut path = prefix.to_vec();
        if tokens.get(i) == Some(&Token::Path) {
            i += 1; // a leading `::`: an external crate
            path.push("::".into());
        }
        loop {
            match tokens.get(i) {
                Some(Token::Ident(segment)) => {
                    path.push(segment.clone());
                    i += 1;
                }
                Some(Token::Open) => {
                    i += 1;
                    loop {
                        match tokens.get(i) {
                            Some(Token::Close) => return i + 1,
                            Some(Token::Comma) => i += 1,
                            None => return i,
                            _ => i = tree(tokens, i, &path, out),
                        }
                    }
                }
                Some(Token::Star) => {
                    out.push(path);
                    return i + 1;
                }
                _ => {
                    out.push(path);
                    return i;
                }
            }
            match tokens.get(i) {
                Some(Token::Path) => i += 1,
                Some(Token::Ident(word)) if word == "as" => {
                    out.push(path);
                    return i + 2;
                }
                _ => {
                    out.push(path);
                    return i;
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut end = tree(tokens, i, &[], &mut out);
    while end < tokens.len() && tokens[end] != Token::Semi {
        end += 1;
    }
    (out, end + 1)
}

/// The file module a path used in module `here` names, if it names one of ours.
fn resolve(here: &Module, path: &[String], children: &BTreeSet<String>, known: &BTreeSet<Module>) -> Option<Module> {
    let mut absolute: Module = match path.first()?.as_str() {
        "crate" => Vec::new(),
        "self" => here.clone(),
        "super" => {
            let mut at = here.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                at.pop()?;
                rest = &rest[1..];
            }
            let mut absolute = at;
            absolute.extend(rest.iter().cloned());
            return longest_known(&absolute, known);
        }
        first if children.contains(first) => {
            let mut child = here.clone();
            child.push(first.to_owned());
            child
        }
        _ => return None,
    };
    let skip = usize::from(matches!(path[0].as_str(), "crate" | "self"));
    let from = if children.contains(&path[0]) { 1 } else { skip };
    absolute.extend(path[from..].iter().cloned());
    longest_known(&absolute, known)
}

fn longest_known(path: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|prefix| known.contains(prefix))
}

/// The strongly connected components of more than one module (Tarjan's algorithm).
fn circles(nodes: &BTreeSet<Module>, edges: &BTreeMap<Module, BTreeMap<Module, String>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeMap<Module, String>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        next: usize,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(v: &'a Module, s: &mut State<'a>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let edges = s.edges;
        for w in edges.get(v).into_iter().flat_map(|m| m.keys()) {
            if !s.index.contains_key(w) {
                visit(w, s);
                let low = s.low[w].min(s.low[v]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.index[w].min(s.low[v]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in nodes {
        if !state.index.contains_key(node) {
            visit(node, &mut state);
        }
    }
    state.found
}

#[test]
fn the_scan_sees_use_trees_paths_and_circles() {
    let known: BTreeSet<Module> =
        [vec![], vec!["a".to_owned()], vec!["a".into(), "b".into()], vec!["c".into()]].into_iter().collect();
    let text = r#"
        //! see crate::c in a comment
        mod b;
        use crate::{c::{self, X}, a::b::Y as Z};
        use b::Thing;
        fn f() { let s = "crate::c::no"; super::a::g(); }
        #[cfg(test)]
        mod tests { use crate::c::Only; }
    "#;
    let found: BTreeSet<Module> =
        dependencies(&vec!["a".to_owned()], text, &known).into_iter().map(|(m, _)| m).collect();
    let expected: BTreeSet<Module> = [vec!["c".to_owned()], vec!["a".into(), "b".into()], vec!["a".into()]].into();
    assert_eq!(found, expected);
    let mut edges: BTreeMap<Module, BTreeMap<Module, String>> = BTreeMap::new();
    edges.entry(vec!["a".into()]).or_default().insert(vec!["c".into()], String::new());
    edges.entry(vec!["c".into()]).or_default().insert(vec!["a".into()], String::new());
    assert_eq!(circles(&known, &edges).len(), 1);
}
