//! ARCHITECTURE.md's structural invariants, checked from the source text:
//!
//! 1. No circular imports between modules, in `broker`, `protocol` and `client`.
//! 2. Only the `thruster-runtime` crate (`runtime/`) names glommio: nothing in the broker does
//!    (nor may its manifest depend on glommio), and in the client only `client/src/glommio/` (and
//!    the feature gate in `client/src/lib.rs`).
//! 3. The store (`thruster-store`, `store/`) never touches the network: its manifest has no
//!    broker, client or tokio, and it names none of the runtime's socket items.
//! 4. `thruster-protocol` depends on no runtime and nothing of broker/client; the broker depends
//!    on neither the client crate nor tokio.
//!
//! No parser dependency: a small lexer drops comments, string and char literals and
//! `#[cfg(test)]` items (test-only imports do not count), then `use` trees and `a::b::c` paths
//! are read from the tokens.
//!
//! **Granularity of the module graph.** A node is a module that is a file or a directory
//! (`store`, i.e. `store/mod.rs`, and `store::commit_log` are two nodes; the crate root is
//! `crate`; inline `mod x { .. }` blocks belong to their file). An edge A -> B means that A's
//! non-test code names a path that resolves into B: `crate::`, `super::` and `self::` are
//! resolved, so are names bound by `use` (`use crate::store; store::commit_log::X` reaches
//! `store::commit_log`) and child modules named bare in a `mod.rs`; `crate::x::y::Z` goes to the
//! deepest of `x::y`, `x` that is a module file, and then through re-exports: if that module
//! only re-exports `Z` (`pub use child::Z`, `use sibling::Z`, `pub use child::*`), the edge goes
//! where `Z` is defined. So `super::Z` in `remoting/connection.rs`, where `remoting/mod.rs` says
//! `pub use server::Z`, is the edge `remoting::connection -> remoting::server`, and two sibling
//! files that name each other are a circle even when they do it through their parent. A
//! parent's re-export of its own descendants (`pub use child::X`, the `mod` declarations) is not
//! an edge: it is the parent presenting its children, not depending on them. A parent that uses
//! the item in its own code (or imports it privately) does depend on the child, and that counts.
//! Paths that leave the crate (`std::`, `thruster_protocol::`, or a re-export of them such as the
//! client's `crate::protocol`) are no edges. Method calls name no module (`processor.on_shard()`
//! may run code of another file): the graph is of imports, what a reader sees at the top of a
//! file and in its paths, not of calls.
//!
//! No check has an exception.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// A string, char or number literal (contents dropped).
    Lit,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Skips a `"..."` body starting after the opening quote; returns the index after the closing one.
fn skip_string(c: &[char], mut i: usize, line: &mut usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => {
                if c.get(i + 1) == Some(&'\n') {
                    *line += 1;
                }
                i += 2;
            }
            '"' => return i + 1,
            '\n' => {
                *line += 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    i
}

/// Tokens of Rust source without comments; literals are reduced to [`Tok::Lit`].
fn lex(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let push = |out: &mut Vec<Token>, tok, line| out.push(Token { tok, line });
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            let at = line;
            i = skip_string(&c, i + 1, &mut line);
            push(&mut out, Tok::Lit, at);
        } else if ch == '\'' {
            if c.get(i + 1) == Some(&'\\') {
                // '\n', '\'', '\u{..}'
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
                push(&mut out, Tok::Lit, line);
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
                push(&mut out, Tok::Lit, line);
            } else {
                // A lifetime or a label.
                i += 1;
                while i < c.len() && is_ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if is_ident_start(ch) {
            let start = i;
            while i < c.len() && is_ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = c.get(i).copied();
            // A literal's prefix: `b"..", c"..", r"..", r#".."#, br#".."#`.
            let raw = matches!(word.as_str(), "r" | "br" | "cr");
            if (raw && next == Some('#')) || next == Some('"') {
                if matches!(word.as_str(), "b" | "c") {
                    let at = line;
                    i = skip_string(&c, i + 1, &mut line);
                    push(&mut out, Tok::Lit, at);
                    continue;
                }
                if raw {
                    let mut hashes = 0;
                    while c.get(i + hashes) == Some(&'#') {
                        hashes += 1;
                    }
                    if c.get(i + hashes) == Some(&'"') {
                        let at = line;
                        i += hashes + 1;
                        while i < c.len() {
                            if c[i] == '"' && (0..hashes).all(|k| c.get(i + 1 + k) == Some(&'#')) {
                                i += 1 + hashes;
                                break;
                            }
                            if c[i] == '\n' {
                                line += 1;
                            }
                            i += 1;
                        }
                        push(&mut out, Tok::Lit, at);
                        continue;
                    }
                }
            }
            push(&mut out, Tok::Ident(word), line);
        } else if ch.is_ascii_digit() {
            while i < c.len() && is_ident_char(c[i]) {
                i += 1;
            }
            push(&mut out, Tok::Lit, line);
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            push(&mut out, Tok::PathSep, line);
            i += 2;
        } else {
            push(&mut out, Tok::Punct(ch), line);
            i += 1;
        }
    }
    out
}

fn is_ident(t: &Token, s: &str) -> bool {
    matches!(&t.tok, Tok::Ident(w) if w == s)
}

fn is_punct(t: &Token, ch: char) -> bool {
    t.tok == Tok::Punct(ch)
}

/// Index after the bracket group opening at `i` (`(`, `[` or `{`), nested groups included.
fn skip_group(t: &[Token], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < t.len() {
        match t[j].tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

/// Drops every item under `#[cfg(test)]` (or `#[cfg(doctest)]`); returns the remaining tokens
/// and the names of test-only `mod x;` declarations (their files are test code too).
fn strip_test_items(t: &[Token]) -> (Vec<Token>, BTreeSet<String>) {
    let mut out = Vec::new();
    let mut test_mods = BTreeSet::new();
    let mut i = 0;
    while i < t.len() {
        if is_punct(&t[i], '#') && i + 1 < t.len() && is_punct(&t[i + 1], '[') {
            let end = skip_group(t, i + 1);
            let attr = &t[i + 2..end - 1];
            let is_cfg = attr.first().is_some_and(|a| is_ident(a, "cfg"));
            let test_only = is_cfg
                && attr
                    .iter()
                    .any(|a| is_ident(a, "test") || is_ident(a, "doctest"))
                && !attr.iter().any(|a| is_ident(a, "not"));
            if test_only {
                // Skip further attributes, then the item: up to `;` or its `{ .. }` body.
                let mut j = end;
                while j + 1 < t.len() && is_punct(&t[j], '#') && is_punct(&t[j + 1], '[') {
                    j = skip_group(t, j + 1);
                }
                let item_start = j;
                while j < t.len() {
                    match t[j].tok {
                        Tok::Punct(';') => {
                            j += 1;
                            break;
                        }
                        Tok::Punct('{') => {
                            j = skip_group(t, j);
                            break;
                        }
                        Tok::Punct('(' | '[') => j = skip_group(t, j),
                        _ => j += 1,
                    }
                }
                let item = &t[item_start..j];
                if let Some(k) = item.iter().position(|x| is_ident(x, "mod")) {
                    if let (Some(Tok::Ident(name)), Some(last)) =
                        (item.get(k + 1).map(|x| &x.tok), item.last())
                    {
                        if is_punct(last, ';') {
                            test_mods.insert(name.clone());
                        }
                    }
                }
                i = j;
                continue;
            }
            out.extend_from_slice(&t[i..end]);
            i = end;
            continue;
        }
        out.push(t[i].clone());
        i += 1;
    }
    (out, test_mods)
}

// ---------------------------------------------------------------------------------------------
// Crates, modules, `use` trees and paths
// ---------------------------------------------------------------------------------------------

/// `["store", "commit_log"]`; the crate root is `[]`.
type ModPath = Vec<String>;

fn mod_name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_string()
    } else {
        m.join("::")
    }
}

/// One name bound by a `use` declaration.
#[derive(Clone, Debug)]
struct UseLeaf {
    /// As written, `self` leaves folded into their prefix.
    path: Vec<String>,
    /// The name it binds (`None` for `*` and `as _`).
    bound: Option<String>,
    glob: bool,
    public: bool,
    line: usize,
    /// Inline modules around the declaration.
    inline: usize,
}

struct Module {
    path: ModPath,
    /// Workspace-relative, for messages.
    display: String,
    tokens: Vec<Token>,
    /// Brace depth of inline (non-test) `mod x { .. }` blocks around each token.
    inline_depth: Vec<usize>,
    /// Token indices that belong to `use` declarations.
    in_use: Vec<bool>,
    uses: Vec<UseLeaf>,
    /// Child modules declared with `mod x;` (not test-only).
    children: BTreeSet<String>,
    /// Names of items defined here (fn, struct, enum, trait, type, const, static, mod, macro).
    defined: BTreeSet<String>,
}

fn parse_use_tree(
    t: &[Token],
    mut i: usize,
    mut prefix: Vec<String>,
    public: bool,
    out: &mut Vec<UseLeaf>,
) -> usize {
    loop {
        let Some(tok) = t.get(i) else { return i };
        match &tok.tok {
            Tok::PathSep => i += 1,
            Tok::Punct('*') => {
                out.push(UseLeaf {
                    path: prefix,
                    bound: None,
                    glob: true,
                    public,
                    line: tok.line,
                    inline: 0,
                });
                return i + 1;
            }
            Tok::Punct('{') => {
                i += 1;
                loop {
                    match t.get(i) {
                        None => return i,
                        Some(x) if is_punct(x, '}') => return i + 1,
                        Some(x) if is_punct(x, ',') => i += 1,
                        Some(_) => {
                            let next = parse_use_tree(t, i, prefix.clone(), public, out);
                            i = if next > i { next } else { i + 1 };
                        }
                    }
                }
            }
            Tok::Ident(s) => {
                let line = tok.line;
                i += 1;
                if t.get(i).is_some_and(|x| x.tok == Tok::PathSep) {
                    prefix.push(s.clone());
                    i += 1;
                    continue;
                }
                let mut bound = if s == "self" {
                    prefix.last().cloned()
                } else {
                    prefix.push(s.clone());
                    Some(s.clone())
                };
                if t.get(i).is_some_and(|x| is_ident(x, "as")) {
                    bound = match t.get(i + 1).map(|x| &x.tok) {
                        Some(Tok::Ident(a)) if a != "_" => Some(a.clone()),
                        _ => None,
                    };
                    i += 2;
                }
                out.push(UseLeaf {
                    path: prefix,
                    bound,
                    glob: false,
                    public,
                    line,
                    inline: 0,
                });
                return i;
            }
            _ => return i + 1,
        }
    }
}

fn analyse(path: ModPath, file: &Path, root: &Path) -> (Module, BTreeSet<String>) {
    let src = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let (tokens, test_mods) = strip_test_items(&lex(&src));
    let n = tokens.len();

    let mut inline_depth = vec![0; n];
    let mut in_use = vec![false; n];
    let mut uses = Vec::new();
    let mut children = BTreeSet::new();
    let mut defined = BTreeSet::new();

    // Inline modules: a stack of the brace depths at which they opened.
    let mut brace = 0usize;
    let mut inline: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < n {
        inline_depth[i] = inline.len();
        match &tokens[i].tok {
            Tok::Punct('{') => brace += 1,
            Tok::Punct('}') => {
                brace -= 1;
                if inline.last() == Some(&brace) {
                    inline.pop();
                }
            }
            Tok::Ident(w) if w == "mod" => {
                if let Some(Tok::Ident(name)) = tokens.get(i + 1).map(|x| &x.tok) {
                    if brace == 0 {
                        defined.insert(name.clone());
                    }
                    match tokens.get(i + 2) {
                        Some(x) if is_punct(x, ';') => {
                            children.insert(name.clone());
                        }
                        Some(x) if is_punct(x, '{') => {
                            inline.push(brace);
                        }
                        _ => {}
                    }
                }
            }
            Tok::Ident(w)
                if matches!(
                    w.as_str(),
                    "fn" | "struct" | "enum" | "trait" | "type" | "const" | "static" | "union"
                ) =>
            {
                if let Some(Tok::Ident(name)) = tokens.get(i + 1).map(|x| &x.tok) {
                    if brace == 0 {
                        defined.insert(name.clone());
                    }
                }
            }
            Tok::Ident(w) if w == "macro_rules" => {
                if let Some(Tok::Ident(name)) = tokens.get(i + 2).map(|x| &x.tok) {
                    if brace == 0 {
                        defined.insert(name.clone());
                    }
                }
            }
            Tok::Ident(w) if w == "use" => {
                // Visibility: `pub use`, `pub(crate) use`, ...
                let public = (i >= 1 && is_ident(&tokens[i - 1], "pub"))
                    || (i >= 1 && is_punct(&tokens[i - 1], ')') && {
                        let mut k = i - 1;
                        while k > 0 && !is_punct(&tokens[k], '(') {
                            k -= 1;
                        }
                        k >= 1 && is_ident(&tokens[k - 1], "pub")
                    });
                let before = uses.len();
                let end = parse_use_tree(&tokens, i + 1, Vec::new(), public, &mut uses);
                for leaf in &mut uses[before..] {
                    leaf.inline = inline.len();
                }
                let mut j = end.min(n);
                while j < n && !is_punct(&tokens[j], ';') {
                    j += 1;
                }
                for k in i..=j.min(n - 1) {
                    in_use[k] = true;
                    inline_depth[k] = inline.len();
                }
                i = j + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let children = children.difference(&test_mods).cloned().collect();
    let display = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    (
        Module {
            path,
            display,
            tokens,
            inline_depth,
            in_use,
            uses,
            children,
            defined,
        },
        test_mods,
    )
}

struct Crate {
    modules: BTreeMap<ModPath, Module>,
}

/// Every module file reachable from `src/lib.rs` through non-test `mod x;` declarations.
fn load_crate(crate_dir: &str) -> Crate {
    let root = workspace_root();
    load_crate_at(&root.join(crate_dir).join("src"), &root)
}

/// The crate whose root is `src/lib.rs`; files are shown relative to `root`.
fn load_crate_at(src: &Path, root: &Path) -> Crate {
    let mut modules = BTreeMap::new();
    let mut todo = vec![(Vec::new(), src.join("lib.rs"))];
    while let Some((path, file)) = todo.pop() {
        let (module, _) = analyse(path.clone(), &file, root);
        // Children of `lib.rs`/`mod.rs` live beside it; children of `x.rs` in `x/`.
        let dir = if path.is_empty() || file.ends_with("mod.rs") {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        for child in &module.children {
            let mut p = path.clone();
            p.push(child.clone());
            let flat = dir.join(format!("{child}.rs"));
            let nested = dir.join(child).join("mod.rs");
            let f = if flat.exists() { flat } else { nested };
            assert!(f.exists(), "{}: mod {child}; has no file", module.display);
            todo.push((p, f));
        }
        modules.insert(path, module);
    }
    Crate { modules }
}

/// A path naming something in the crate, and where it is written.
struct Edge {
    from: ModPath,
    to: ModPath,
    file: String,
    line: usize,
    text: String,
}

impl Crate {
    /// The crate-absolute form of `segs`, written in module `m` inside `inline` inline modules;
    /// `None` if it leaves the crate or stays inside the file.
    fn absolute(&self, m: &Module, inline: usize, segs: &[String]) -> Option<Vec<String>> {
        self.absolute_at(m, inline, segs, 0)
    }

    fn absolute_at(
        &self,
        m: &Module,
        inline: usize,
        segs: &[String],
        depth: usize,
    ) -> Option<Vec<String>> {
        let first = segs.first()?;
        if depth > 16 {
            return None;
        }
        match first.as_str() {
            "crate" | "$crate" => Some(segs[1..].to_vec()),
            "self" => (inline == 0).then(|| [m.path.clone(), segs[1..].to_vec()].concat()),
            "super" => {
                let supers = segs.iter().take_while(|s| *s == "super").count();
                // The first `inline` of them only leave inline modules of this file.
                let ups = supers.checked_sub(inline).filter(|u| *u > 0)?;
                let base = m.path[..m.path.len().checked_sub(ups)?].to_vec();
                Some([base, segs[supers..].to_vec()].concat())
            }
            _ if inline > 0 => None,
            name if m.children.contains(name) => Some([m.path.clone(), segs.to_vec()].concat()),
            name => {
                let leaf = m
                    .uses
                    .iter()
                    .find(|u| !u.glob && u.bound.as_deref() == Some(name))?;
                let base = self.absolute_at(m, 0, &leaf.path, depth + 1)?;
                Some([base, segs[1..].to_vec()].concat())
            }
        }
    }

    /// The module a crate-absolute path leads to, through re-exports; `None` if it leaves the
    /// crate.
    fn resolve(&self, abs: &[String], depth: usize) -> Option<ModPath> {
        if depth > 16 {
            return None;
        }
        let mut k = abs.len();
        while !self.modules.contains_key(&abs[..k]) {
            k -= 1;
        }
        let module = &self.modules[&abs[..k]];
        let Some(name) = abs.get(k) else {
            return Some(module.path.clone());
        };
        if !module.defined.contains(name) {
            if let Some(leaf) = module
                .uses
                .iter()
                .find(|u| !u.glob && u.bound.as_deref() == Some(name.as_str()))
            {
                let target = self.absolute(module, 0, &leaf.path)?;
                return self.resolve(&[target, abs[k + 1..].to_vec()].concat(), depth + 1);
            }
            for glob in module.uses.iter().filter(|u| u.glob) {
                let Some(base) = self.absolute(module, 0, &glob.path) else {
                    continue;
                };
                if let Some(m2) = self.modules.get(&base) {
                    if m2.defined.contains(name) {
                        return Some(m2.path.clone());
                    }
                }
            }
        }
        Some(module.path.clone())
    }

    fn edges(&self) -> Vec<Edge> {
        let mut edges = Vec::new();
        for m in self.modules.values() {
            let mut add = |to: ModPath, line: usize, text: String| {
                if to != m.path {
                    edges.push(Edge {
                        from: m.path.clone(),
                        to,
                        file: m.display.clone(),
                        line,
                        text,
                    });
                }
            };
            let is_descendant = |to: &ModPath| to.len() > m.path.len() && to.starts_with(&m.path);
            // Names this module re-exports from its own descendants: an edge only where its own
            // code uses them.
            let mut reexported: BTreeMap<String, ModPath> = BTreeMap::new();
            for leaf in &m.uses {
                let Some(abs) = self.absolute(m, leaf.inline, &leaf.path) else {
                    continue;
                };
                let Some(to) = self.resolve(&abs, 0) else {
                    continue;
                };
                if leaf.public && is_descendant(&to) {
                    if leaf.glob {
                        for name in &self.modules[&to].defined {
                            reexported.insert(name.clone(), to.clone());
                        }
                    } else if let Some(b) = &leaf.bound {
                        reexported.insert(b.clone(), to.clone());
                    }
                    continue;
                }
                add(to, leaf.line, format!("use {}", leaf.path.join("::")));
            }
            let t = &m.tokens;
            let mut i = 0;
            while i < t.len() {
                if m.in_use[i] {
                    i += 1;
                    continue;
                }
                let Tok::Ident(first) = &t[i].tok else {
                    i += 1;
                    continue;
                };
                let after_sep = i > 0 && t[i - 1].tok == Tok::PathSep;
                let dollar = i > 0 && is_punct(&t[i - 1], '$');
                if after_sep {
                    i += 1;
                    continue;
                }
                // A name re-exported from a child, used here: a real use of the child.
                if let Some(to) = reexported.get(first) {
                    if !(i + 1 < t.len() && t[i + 1].tok == Tok::PathSep) {
                        add(to.clone(), t[i].line, first.clone());
                    }
                }
                let mut segs = vec![if dollar && first == "crate" {
                    "$crate".to_string()
                } else {
                    first.clone()
                }];
                let mut j = i + 1;
                while j + 1 < t.len() && t[j].tok == Tok::PathSep {
                    if let Tok::Ident(s) = &t[j + 1].tok {
                        segs.push(s.clone());
                        j += 2;
                    } else {
                        break;
                    }
                }
                if segs.len() > 1 {
                    if let Some(to) = self
                        .absolute(m, m.inline_depth[i], &segs)
                        .and_then(|abs| self.resolve(&abs, 0))
                    {
                        add(to, t[i].line, segs.join("::"));
                    }
                }
                i = j.max(i + 1);
            }
        }
        edges
    }
}

/// Elementary circles of the graph, each starting at its smallest module.
fn circles(edges: &[Edge]) -> Vec<Vec<ModPath>> {
    let mut graph: BTreeMap<&ModPath, BTreeSet<&ModPath>> = BTreeMap::new();
    for e in edges {
        graph.entry(&e.from).or_default().insert(&e.to);
    }
    let mut found = Vec::new();
    for &start in graph.keys() {
        // Paths from `start` through larger modules only, back to `start`.
        let mut stack: Vec<(&ModPath, Vec<&ModPath>)> = vec![(start, vec![start])];
        while let Some((node, path)) = stack.pop() {
            for &next in graph.get(node).into_iter().flatten() {
                if next == start {
                    found.push(path.iter().map(|p| (*p).clone()).collect());
                } else if next > start && !path.contains(&next) {
                    let mut p = path.clone();
                    p.push(next);
                    stack.push((next, p));
                }
            }
            assert!(found.len() < 10_000, "too many circles to list");
        }
    }
    found.sort();
    found
}

fn circle_name(c: &[ModPath]) -> String {
    let mut s: Vec<String> = c.iter().map(|m| mod_name(m)).collect();
    s.push(mod_name(&c[0]));
    s.join(" -> ")
}

/// Every circle with the lines that make each of its edges.
fn describe(circle: &[ModPath], edges: &[Edge]) -> String {
    let mut out = format!("  circle: {}\n", circle_name(circle));
    for k in 0..circle.len() {
        let (from, to) = (&circle[k], &circle[(k + 1) % circle.len()]);
        let _ = writeln!(out, "    {} -> {}:", mod_name(from), mod_name(to));
        for e in edges.iter().filter(|e| &e.from == from && &e.to == to) {
            let _ = writeln!(out, "      {}:{}: {}", e.file, e.line, e.text);
        }
    }
    out
}

/// Checks one crate, adding its circles to `failures`.
fn check_circles(crate_dir: &str, failures: &mut String) {
    let krate = load_crate(crate_dir);
    let edges = krate.edges();
    assert!(
        krate.modules.len() >= 3 && edges.len() >= 3,
        "{crate_dir}: too little seen ({} modules, {} edges); is the scanner broken?",
        krate.modules.len(),
        edges.len()
    );
    for c in circles(&edges) {
        let _ = write!(failures, "{crate_dir}:\n{}", describe(&c, &edges));
    }
}

#[test]
fn no_circular_imports_between_modules() {
    let mut failures = String::new();
    for krate in ["protocol", "runtime", "store", "client", "broker"] {
        check_circles(krate, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "modules that import each other (break each circle by moving the shared item to the \
         module it belongs to):\n{failures}"
    );
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn only_the_runtime_names_glommio() {
    let root = workspace_root();
    let mut failures = String::new();
    let mut check = |dir: &str, allowed_dir: &str, allowed_line: &dyn Fn(&Path, &str) -> bool| {
        let mut files = Vec::new();
        rs_files(&root.join(dir), &mut files);
        for f in files {
            if f.starts_with(root.join(allowed_dir)) {
                continue;
            }
            let text = fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.to_lowercase().contains("glommio") && !allowed_line(&f, line) {
                    let rel = f.strip_prefix(&root).unwrap().display().to_string();
                    let _ = writeln!(failures, "  {rel}:{}: {}", n + 1, line.trim());
                }
            }
        }
    };
    // Code and comments: the broker's modules do not know which reactor runs them.
    check("broker", "runtime", &|_, _| false);
    // The client's optional front end, and the feature gate that declares it.
    let lib = root.join("client/src/lib.rs");
    check("client/src", "client/src/glommio", &|f, line| {
        f == lib
            && matches!(
                line.trim(),
                "#[cfg(feature = \"glommio\")]" | "pub mod glommio;"
            )
    });
    assert!(
        failures.is_empty(),
        "glommio named outside runtime/ and client/src/glommio/:\n{failures}"
    );
}

#[test]
fn store_never_touches_the_network() {
    // The store is its own crate: it cannot name the broker's network modules (remoting,
    // shard, processor, ...) at all. What is left to check: its manifest, and that it uses
    // none of the runtime's socket items.
    let deps = dependencies("store/Cargo.toml");
    assert!(
        deps.contains("thruster-runtime"),
        "manifest not read: {deps:?}"
    );
    let bad: Vec<_> = ["thruster-broker", "thruster-client", "tokio", "glommio"]
        .iter()
        .filter(|d| deps.contains(**d))
        .collect();
    assert!(bad.is_empty(), "thruster-store depends on {bad:?}");
    const SOCKET_ITEMS: &[&str] = &[
        "TcpStream",
        "TcpListener",
        "connect",
        "send_file_ranges",
        "SharedStream",
    ];
    let root = workspace_root();
    let mut all_files = Vec::new();
    rs_files(&root.join("store/src"), &mut all_files);
    assert!(all_files.len() > 10, "store sources not found");
    let mut failures = String::new();
    for f in &all_files {
        // All code of the store, its tests included; comments and strings do not count.
        let tokens = lex(&fs::read_to_string(f).unwrap());
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        for t in &tokens {
            if let Tok::Ident(w) = &t.tok {
                if SOCKET_ITEMS.contains(&w.as_str()) {
                    let _ = writeln!(failures, "  {rel}:{}: {w}", t.line);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the store names the runtime's sockets:\n{failures}"
    );
}

/// Names of the packages in a manifest's `[dependencies]` (and `[target.*.dependencies]`).
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let text = fs::read_to_string(workspace_root().join(manifest)).unwrap();
    let mut deps = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap().trim();
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            if let Some(name) = section.strip_prefix("dependencies.") {
                deps.insert(name.to_string());
            }
            continue;
        }
        let in_deps = section == "dependencies"
            || (section.starts_with("target.") && section.ends_with(".dependencies"));
        if !in_deps || line.is_empty() {
            continue;
        }
        let key = line
            .split(['=', '.'])
            .next()
            .unwrap()
            .trim()
            .trim_matches('"');
        deps.insert(key.to_string());
        // A renamed dependency: `x = { package = "tokio", .. }`.
        if let Some(rest) = line.split("package").nth(1) {
            if let Some(name) = rest.split('"').nth(1) {
                deps.insert(name.to_string());
            }
        }
    }
    deps
}

#[test]
fn protocol_depends_on_no_runtime_and_broker_not_on_client() {
    let protocol = dependencies("protocol/Cargo.toml");
    assert!(
        protocol.contains("bytes"),
        "manifest not read: {protocol:?}"
    );
    let forbidden = [
        "tokio",
        "glommio",
        "thruster-client",
        "thruster-broker",
        "futures-lite",
        "io-uring",
    ];
    let bad: Vec<_> = forbidden
        .iter()
        .filter(|d| protocol.contains(**d))
        .collect();
    assert!(bad.is_empty(), "thruster-protocol depends on {bad:?}");

    let broker = dependencies("broker/Cargo.toml");
    assert!(
        broker.contains("thruster-protocol"),
        "manifest not read: {broker:?}"
    );
    let bad: Vec<_> = ["thruster-client", "tokio", "glommio"]
        .iter()
        .filter(|d| broker.contains(**d))
        .collect();
    assert!(bad.is_empty(), "thruster-broker depends on {bad:?}");
}

/// The scanner itself, on a crate made for it: re-exports, globs, `super::`, comments, strings
/// and test-only code.
#[test]
fn the_scanner_sees_circles_and_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    let files = [
        (
            "lib.rs",
            "//! crate::c::Z in a comment\npub mod a;\npub mod b;\npub mod c;\n\
             #[cfg(test)]\nmod t;\n",
        ),
        (
            "a/mod.rs",
            "pub mod x;\npub mod y;\npub use x::X;\npub use y::*;\npub struct Shared;\n\
             pub fn make() -> X { X }\n",
        ),
        // `Y` is the glob re-export's: the edge is to `a::y`, not to `a`.
        ("a/x.rs", "use super::{Shared, Y};\npub struct X;\n"),
        (
            "a/y.rs",
            "pub struct Y;\npub fn f() -> super::X { super::X }\n/* crate::b::B */\n",
        ),
        (
            "b.rs",
            "use crate::a::Shared;\npub struct B;\nconst S: &str = \"crate::c::Z\";\n\
             const R: &str = r#\"crate::c::\"Z\"#;\n\
             #[cfg(test)]\nmod tests {\n    use crate::c::Z;\n}\n",
        ),
        (
            "c.rs",
            "pub struct Z;\nfn g() -> crate::b::B { crate::b::B }\n",
        ),
        ("t.rs", "use crate::b::B;\nuse crate::c::Z;\n"),
    ];
    for (name, text) in files {
        fs::write(src.join(name), text).unwrap();
    }
    let krate = load_crate_at(&src, dir.path());
    assert!(!krate.modules.contains_key(&vec!["t".to_string()]));
    let edges = krate.edges();
    let mut pairs: Vec<(String, String)> = edges
        .iter()
        .map(|e| (mod_name(&e.from), mod_name(&e.to)))
        .collect();
    pairs.sort();
    pairs.dedup();
    let expected = [
        ("a", "a::x"),
        ("a::x", "a"),
        ("a::x", "a::y"),
        ("a::y", "a::x"),
        ("b", "a"),
        ("c", "b"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(pairs, expected);
    let names: Vec<String> = circles(&edges).iter().map(|c| circle_name(c)).collect();
    assert_eq!(names, ["a -> a::x -> a", "a::x -> a::y -> a::x"]);
    let text = describe(&circles(&edges)[1], &edges);
    assert!(text.contains("src/a/x.rs:1: use super::Y"), "{text}");
    assert!(text.contains("src/a/y.rs:2: super::X"), "{text}");
}
