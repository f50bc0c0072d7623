//! `cargo xtask tidy`: the repository's invariants, also run by `cargo test` (xtask/tests).

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("tidy") => {
            let problems = xtask::tidy(&xtask::repo_root())?;
            for p in &problems {
                eprintln!("{p}");
            }
            anyhow::ensure!(problems.is_empty(), "{} tidy problem(s)", problems.len());
            println!("tidy: ok");
            Ok(())
        }
        _ => anyhow::bail!("usage: cargo xtask tidy"),
    }
}
