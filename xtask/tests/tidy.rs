//! The repository's invariants, checked on every `cargo test`.

#[test]
fn tidy() {
    let problems = xtask::tidy(&xtask::repo_root()).expect("tidy checks run");
    assert!(problems.is_empty(), "tidy problems:\n{}", problems.join("\n"));
}
