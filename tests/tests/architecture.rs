//! ARCHITECTURE.md names files: each one it links to must exist.

use std::path::Path;

#[test]
fn every_path_architecture_md_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut checked = 0;
    for link in text.split("](").skip(1) {
        let target = link.split(')').next().unwrap_or_default();
        if target.starts_with("http") || target.starts_with('#') {
            continue;
        }
        assert!(
            root.join(target).exists(),
            "ARCHITECTURE.md names {target}, which does not exist"
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} paths found: is the format still `[..](path)`?"
    );
}
