//! Issue #9: the pattern crates and `kw` are built on kafka-wire's public surface only (the crate
//! root's re-exports, `kafka_wire::types`, `kafka_wire::client`), never on `kafka_wire::codec` or
//! `kafka_wire::proto`, which are the implementation's and may change between releases. These
//! tests read the sources (no broker needed) and name the file and line of every such path.

use std::path::{Path, PathBuf};

use kafka_wire_tests::workspace_root;

/// The crates that must stay on the public surface.
const CRATES: &[&str] = &["kw", "handler", "txn", "retry", "kvstore", "patterns", "contacts-import"];
/// Where their Rust sources are.
const DIRS: &[&str] = &["src", "examples", "tests", "benches"];
/// The modules of kafka-wire that are not public surface.
const INTERNAL: &[&str] = &["codec", "proto"];

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("read a directory entry").path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The identifier (or `*`, `{`) starting at `i` after whitespace, and the index after it.
fn next_token(text: &str, mut i: usize) -> (&str, usize) {
    let bytes = text.as_bytes();
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    let start = i;
    if i < bytes.len() && (bytes[i] == b'*' || bytes[i] == b'{' || bytes[i] == b':') {
        if bytes[i] == b':' && bytes.get(i + 1) == Some(&b':') {
            return (&text[start..i + 2], i + 2);
        }
        return (&text[start..i + 1], i + 1);
    }
    while i < bytes.len() && is_ident_byte(bytes[i]) {
        i += 1;
    }
    (&text[start..i], i)
}

/// The first item of each entry of the `{...}` group opening at `open` (`a::b, c, d::{e}` gives
/// `a`, `c`, `d`), with their byte offsets.
fn group_heads(text: &str, open: usize) -> Vec<(&str, usize)> {
    let bytes = text.as_bytes();
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                depth += 1;
                if depth == 1 {
                    expect_head = true;
                }
                i += 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                i += 1;
            }
            b',' if depth == 1 => {
                expect_head = true;
                i += 1;
            }
            b if b.is_ascii_whitespace() => i += 1,
            _ if depth == 1 && expect_head => {
                let (token, end) = next_token(text, i);
                heads.push((token, i));
                expect_head = false;
                i = end.max(i + 1);
            }
            _ => i += 1,
        }
    }
    heads
}

/// Byte offsets of the internal paths in `text`: `<root>::codec…`, `<root>::proto…`,
/// `<root>::*` (a glob brings both into scope) and `<root>::{…, codec…}`, for the crate name and
/// every name it is imported as (`use kafka_wire as kw;`).
fn internal_paths(text: &str) -> Vec<(usize, String)> {
    let mut roots = vec!["kafka_wire".to_owned()];
    let mut found = Vec::new();
    let mut r = 0;
    while r < roots.len() {
        let root = roots[r].clone();
        r += 1;
        let mut from = 0;
        while let Some(pos) = text[from..].find(root.as_str()).map(|p| p + from) {
            from = pos + root.len();
            let bytes = text.as_bytes();
            let bounded_before = pos == 0 || !is_ident_byte(bytes[pos - 1]);
            let bounded_after = from >= bytes.len() || !is_ident_byte(bytes[from]);
            if !bounded_before || !bounded_after {
                continue;
            }
            let (token, after) = next_token(text, from);
            match token {
                "as" => {
                    let (alias, _) = next_token(text, after);
                    if !alias.is_empty() && alias != "_" && !roots.iter().any(|x| x == alias) {
                        roots.push(alias.to_owned());
                    }
                }
                "::" => {
                    let (item, item_end) = next_token(text, after);
                    if INTERNAL.contains(&item) || item == "*" {
                        found.push((pos, format!("{root}::{item}")));
                    } else if item == "{" {
                        for (head, at) in group_heads(text, item_end - 1) {
                            if INTERNAL.contains(&head) || head == "*" {
                                found.push((at, format!("{root}::{{{head}…}}")));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    found.sort();
    found
}

/// `path:line: what (the line)` for each internal path in the file.
fn violations_in(path: &Path, text: &str) -> Vec<String> {
    internal_paths(text)
        .into_iter()
        .map(|(at, what)| {
            let line = text[..at].matches('\n').count() + 1;
            let source = text.lines().nth(line - 1).unwrap_or_default().trim();
            format!("{}:{line}: {what} ({source})", path.display())
        })
        .collect()
}

#[test]
fn pattern_crates_and_kw_use_only_the_public_surface() {
    let root = workspace_root();
    let mut files = Vec::new();
    for krate in CRATES {
        for dir in DIRS {
            rust_files(&root.join(krate).join(dir), &mut files);
        }
    }
    // The walk itself must have found the sources, or the test would pass on nothing.
    for must in ["kw/src/main.rs", "txn/src/processor.rs", "retry/src/lib.rs", "kvstore/src/lib.rs"] {
        assert!(files.contains(&root.join(must)), "{must} was not found under {}", root.display());
    }
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let shown = file.strip_prefix(&root).unwrap_or(file);
        violations.extend(violations_in(shown, &text));
    }
    assert!(
        violations.is_empty(),
        "{} use(s) of kafka-wire's internal modules (use kafka_wire::types, the crate root or \
         kafka_wire::client instead):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// The checker finds each way of writing an internal path, and only those.
#[test]
fn the_surface_check_finds_every_form_of_an_internal_path() {
    let flagged = |text: &str| -> Vec<String> { internal_paths(text).into_iter().map(|(_, w)| w).collect() };
    assert_eq!(flagged("use kafka_wire::codec::ErrorCode;"), ["kafka_wire::codec"]);
    assert_eq!(flagged("let tp = ::kafka_wire :: proto::producer::TopicPartition::new();"), ["kafka_wire::proto"]);
    assert_eq!(
        flagged("use kafka_wire::{\n    client::Admin,\n    codec::{ErrorCode, Uuid},\n    Producer,\n};"),
        ["kafka_wire::{codec…}"]
    );
    assert_eq!(flagged("use kafka_wire::{Header, proto};"), ["kafka_wire::{proto…}"]);
    assert_eq!(flagged("use kafka_wire::*;"), ["kafka_wire::*"]);
    assert_eq!(flagged("use kafka_wire as k;\nfn f() -> k::codec::ErrorCode { todo!() }"), ["k::codec"]);
    // Public paths, and names that only contain the crate's or a module's name, pass.
    assert!(flagged("use kafka_wire::{client::{Admin, NewTopic}, types::ErrorCode, Producer};").is_empty());
    assert!(flagged("use kafka_wire::client::config::Acks;\nlet codec = kafka_wire::Compression::Lz4;").is_empty());
    assert!(flagged("use my_kafka_wire::codec::X; use kafka_wire_tests::bootstrap;").is_empty());
    assert!(flagged("use kafka_wire::types::{Header, Headers};\nlet p = protocol::x;").is_empty());
}
