//! The architecture's rules, measured by `scripts/structure` on `sensor/src`
//! (outside `#[cfg(test)]`): no function over 80 lines and no file over 700;
//! the sans-IO core opens no files or sockets, reads no clock or environment
//! and prints nothing; no module imports one above it; every signature fact
//! name is spelled in at most two files.

mod common;

#[test]
fn the_source_tree_keeps_the_architectures_rules() {
    let script = common::workspace().join("scripts/structure");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .output()
        .expect("python3 runs scripts/structure");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" 0 problems"), "{text}");
}
