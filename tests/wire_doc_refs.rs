//! Every `§N` / `§N.M` reference in the tree must name a heading of
//! `docs/wire.md` (`## N.`, `### N.M`, `#### N.M.K`), so that a comment citing
//! the wire format always points at the right place. Other documents are
//! cited as "section N", never with `§`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Directories scanned, relative to the crate root.
const DIRS: &[&str] = &[
    "src", "tests", "examples", "benches", "interop", "docs", "scripts", ".ci",
];
/// Files at the crate root that are scanned too.
const ROOT_FILES: &[&str] = &["README.md", "Cargo.toml"];
/// Text files that may carry references (Rust, Go and its templates,
/// Markdown, vectors, manifests, scripts).
const EXTENSIONS: &[&str] = &["rs", "go", "tmpl", "md", "json", "toml", "sh", "mod", "txt"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Section ids of `docs/wire.md`'s headings, with their heading level.
/// Panics on a malformed, misplaced or duplicate numbered heading.
fn heading_ids(wire: &str) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for (n, line) in wire.lines().enumerate() {
        let level = line.bytes().take_while(|&b| b == b'#').count();
        if level == 0 || !line[level..].starts_with(' ') {
            continue;
        }
        let title = line[level..].trim_start();
        let number: String = title
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let id = number.trim_end_matches('.');
        if id.is_empty() {
            continue;
        }
        assert!(
            id.split('.').all(|p| !p.is_empty()),
            "docs/wire.md:{}: malformed section number {number:?}",
            n + 1
        );
        // "## 4." for a section, "### 4.3" for a subsection, and so on.
        let depth = id.split('.').count();
        assert_eq!(
            level,
            depth + 1,
            "docs/wire.md:{}: section {id} should be a level-{} heading",
            n + 1,
            depth + 1
        );
        assert!(
            ids.insert(id.to_string(), level).is_none(),
            "docs/wire.md:{}: section {id} appears twice",
            n + 1
        );
    }
    ids
}

/// The section numbers cited with `§` in `text`, with their line numbers. An
/// optional space after the sign is allowed; in a range like 1.2–1.4 written
/// with one sign only the first number is a reference.
fn references(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find('§') {
            rest = &rest[i + '§'.len_utf8()..];
            let s = rest.strip_prefix(' ').unwrap_or(rest);
            let mut end = 0;
            let b = s.as_bytes();
            // digits, then any number of ".digits"
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            if end == 0 {
                continue; // a bare sign, as in "`§N`", cites nothing
            }
            while end + 1 < b.len() && b[end] == b'.' && b[end + 1].is_ascii_digit() {
                end += 1;
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                }
            }
            out.push((n + 1, s[..end].to_string()));
        }
    }
    out
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            // Build output and VCS data are not ours to cite from.
            if name != "target" && name != ".git" {
                collect_files(&path, out);
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
        {
            out.push(path);
        }
    }
}

fn unresolved(text: &str, ids: &BTreeMap<String, usize>) -> Vec<(usize, String)> {
    references(text)
        .into_iter()
        .filter(|(_, r)| !ids.contains_key(r))
        .collect()
}

#[test]
fn every_section_reference_names_a_heading_of_docs_wire_md() {
    let root = root();
    let wire = fs::read_to_string(root.join("docs/wire.md")).expect("docs/wire.md");
    let ids = heading_ids(&wire);

    let mut files = Vec::new();
    for d in DIRS {
        collect_files(&root.join(d), &mut files);
    }
    files.extend(ROOT_FILES.iter().map(|f| root.join(f)));
    files.sort();

    let mut total = 0;
    let mut cited = BTreeSet::new();
    let mut bad = Vec::new();
    for f in &files {
        let Ok(text) = fs::read_to_string(f) else {
            continue; // not UTF-8: cannot hold a '§' reference we write
        };
        let rel = f.strip_prefix(&root).unwrap_or(f).display().to_string();
        for (line, r) in references(&text) {
            total += 1;
            if ids.contains_key(&r) {
                cited.insert(r);
            } else {
                bad.push(format!(
                    "{rel}:{line}: §{r} is not a heading of docs/wire.md"
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} unresolved section reference(s):\n{}",
        bad.len(),
        bad.join("\n")
    );
    // The tree cites the spec some 150 times; finding far fewer means the
    // scan itself broke (wrong root, wrong extensions), not that all is well.
    assert!(
        total >= 100,
        "only {total} references found: the scan is broken"
    );
    for must in ["1.8", "4.3", "5.2.1", "7.6", "11"] {
        assert!(
            cited.contains(must),
            "§{must} is cited in the tree but was not found"
        );
    }
}

#[test]
fn wire_md_has_the_numbered_sections_the_code_relies_on() {
    let wire = fs::read_to_string(root().join("docs/wire.md")).expect("docs/wire.md");
    let ids = heading_ids(&wire);
    for top in 0..=12 {
        assert!(ids.contains_key(&top.to_string()), "missing section {top}");
    }
    // Every subsection sits under an existing parent.
    for id in ids.keys() {
        if let Some((parent, _)) = id.rsplit_once('.') {
            assert!(ids.contains_key(parent), "§{id} has no parent §{parent}");
        }
    }
}

#[test]
fn the_checker_rejects_what_it_should() {
    // Written with escapes so that this file's own scan does not see them.
    let ids = heading_ids("# Title\n## 1. One\n### 1.8 Eight\n#### 1.8.2 Deep\n## 2. Two\n");
    let text = "ok \u{a7}1, \u{a7}1.8 and \u{a7} 1.8.2, ranges \u{a7}1.8\u{2013}1.9.\n\
                bad \u{a7}1.9 and \u{a7}3, a bare \u{a7} sign, FIPS-197 \u{a7}5.2\n";
    let bad = unresolved(text, &ids);
    assert_eq!(
        bad,
        vec![
            (2, "1.9".to_string()),
            (2, "3".to_string()),
            (2, "5.2".to_string()),
        ]
    );
    // A trailing full stop is not part of the number.
    assert_eq!(references("see \u{a7}7.2."), vec![(1, "7.2".to_string())]);
}

#[test]
#[should_panic(expected = "should be a level-3 heading")]
fn a_misplaced_heading_is_reported() {
    heading_ids("## 1. One\n## 1.1 Wrong level\n");
}
