//! Data-driven validation cases: each folder under `tests/validate/` holds a fleet repo (`repo/`)
//! and the diagnostics `fleetlet validate` must print (`expected.txt`, or `ok`).
//! Set `UPDATE_EXPECT=1` to rewrite the expectations after a deliberate change.

use fleetlet_core::{RepoTree, load_fleet};
use std::path::Path;

fn read_tree(root: &Path) -> RepoTree {
    fn walk(root: &Path, dir: &Path, tree: &mut RepoTree) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, tree);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                tree.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut tree = RepoTree::new();
    walk(root, root, &mut tree);
    tree
}

fn check(case: &Path) {
    let tree = read_tree(&case.join("repo"));
    let out = load_fleet(&tree);
    let got = if out.diagnostics.is_empty() {
        "ok\n".to_string()
    } else {
        out.diagnostics.iter().map(|d| format!("{d}\n")).collect()
    };
    let expected_path = case.join("expected.txt");
    if std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1") {
        std::fs::write(&expected_path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&expected_path).unwrap();
    assert_eq!(got, want, "case {}", case.display());
}

#[test]
fn validation_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 3);
    for case in cases {
        check(&case);
    }
}
