//! Real SSH against real OpenSSH servers in Docker containers (`dstack_hostssh::testkit`), only
//! with `DSTACK_TEST_DOCKER=1` (needs a Docker engine, root and debootstrap for the image).

mod connect;
mod deploy;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub(crate) fn enabled() -> bool {
    std::env::var("DSTACK_TEST_DOCKER").as_deref() == Ok("1")
}

/// `target/debug`, with `dstack-shim` and `dstack-runner` built once per test run.
pub(crate) fn agent_binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test exe");
        let dir = exe.parent().and_then(Path::parent).expect("target/debug").to_owned();
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "dstack-shim", "-p", "dstack-runner"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building dstack-shim and dstack-runner");
        dir
    })
}
