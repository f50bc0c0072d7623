//! `repos:` end to end: `dstack apply` from a Git working tree whose upstream is served over
//! HTTPS on loopback (`tests/support/git_https_server.py`), against a real `dstack server`
//! with its `local` fleet; the job sees the committed files, the uncommitted change and the
//! untracked file. Also a repo by `url:`, and dstack's errors for a directory that is not a
//! Git repo and for a branch without an upstream.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use tempfile::TempDir;

use crate::server::{cli_env, start_with_local_fleet_env, stop};

fn git(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_SYSTEM", "/dev/null")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The HTTPS Git server over `root`, killed on drop.
struct HttpsGit(Child, u16);

impl HttpsGit {
    fn start(root: &Path, state: &Path) -> HttpsGit {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/git_https_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--root")
            .arg(root)
            .arg("--state")
            .arg(state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the git server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("a port line");
        let port = line.trim().trim_start_matches("listening on ").parse().expect("a port");
        HttpsGit(child, port)
    }
}

impl Drop for HttpsGit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const RESOURCES: &str = "resources:\n  cpu: 1..\n  memory: 0GB..\n  disk: null\n";

#[test]
fn a_task_runs_with_the_local_repo_and_its_uncommitted_changes() {
    crate::local_fleet::agents_built();
    let home = TempDir::new().unwrap();
    let (root, state) = (home.path().join("git"), home.path().join("git-state"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let server_git = HttpsGit::start(&root, &state);
    let cert = state.join("cert.pem").display().to_string();
    let env = [("GIT_SSL_CAINFO", cert.as_str())];
    let url = format!("https://127.0.0.1:{}/up.git", server_git.1);

    // Upstream: committed.txt and modified.txt on main.
    git(&root, &env, &["init", "-q", "--bare", "up.git"]);
    let seed = home.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &env, &["init", "-q"]);
    std::fs::write(seed.join("committed.txt"), "committed-content\n").unwrap();
    std::fs::write(seed.join("modified.txt"), "as-committed\n").unwrap();
    std::fs::write(seed.join(".gitignore"), "ignored.txt\n").unwrap();
    git(&seed, &env, &["add", "."]);
    git(&seed, &env, &["-c", "user.name=S", "-c", "user.email=s@e", "commit", "-qm", "seed"]);
    git(&seed, &env, &["push", "-q", &url, "main"]);

    // The user's working tree: a clone with local changes.
    git(home.path(), &env, &["clone", "-q", &url, "work"]);
    let work = home.path().join("work");
    git(&work, &env, &["config", "user.name", "Jane Doe"]);
    git(&work, &env, &["config", "user.email", "jane@example.com"]);
    let head = git(&work, &env, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("modified.txt"), "changed-locally\n").unwrap();
    std::fs::write(work.join("new.txt"), "untracked-file\n").unwrap();
    std::fs::write(work.join("ignored.txt"), "never-uploaded\n").unwrap();
    let script = "cd $DSTACK_REPO_DIR && cat committed.txt modified.txt new.txt && \
                  (test -e ignored.txt || echo no-ignored) && git config user.name && echo dir=$DSTACK_REPO_DIR";
    std::fs::write(
        work.join(".dstack.yml"),
        format!(
            "type: task\nname: repo-task\ncommands:\n  - {script}\nrepos:\n  - local_path: .\n    path: /workflow/src\n{RESOURCES}"
        ),
    )
    .unwrap();

    let server = start_with_local_fleet_env(home.path(), &env);
    let config = work.join(".dstack.yml").display().to_string();
    let (code, out, err) = cli_env(home.path(), &["apply", "-f", &config, "-y"], &env);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("committed-content\nchanged-locally\nuntracked-file\nno-ignored\nJane Doe\ndir="),
        "{out}"
    );
    assert!(out.contains("/workflow/src\n"), "{out}");

    let (code, out, err) = cli_env(home.path(), &["ps", "-a", "--json"], &env);
    assert_eq!(code, 0, "{err}");
    let runs: Value = serde_json::from_str(&out).unwrap();
    let spec = &runs["runs"][0]["run_spec"];
    // dstack's id: slugify("up", "127.0.0.1/up").
    assert_eq!(spec["repo_id"], "up-cuie8gcw");
    assert_eq!(spec["repo_dir"], "/workflow/src");
    assert_eq!(spec["repo_data"]["repo_type"], "remote");
    assert_eq!(spec["repo_data"]["repo_branch"], "main");
    assert_eq!(spec["repo_data"]["repo_hash"], head.as_str());
    assert_eq!(spec["repo_data"]["repo_config_email"], "jane@example.com");
    assert_eq!(spec["repo_code_hash"].as_str().map(str::len), Some(64));

    // A repo by URL: the committed state only, nothing uploaded.
    let by_url = home.path().join("by-url.yml");
    std::fs::write(
        &by_url,
        format!(
            "type: task\nname: url-task\ncommands:\n  - cat $DSTACK_REPO_DIR/modified.txt\nrepos:\n  - url: {url}\n    branch: main\n    path: u\n{RESOURCES}"
        ),
    )
    .unwrap();
    let (code, out, err) = cli_env(home.path(), &["apply", "-f", &by_url.display().to_string(), "-y"], &env);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("as-committed\n"), "{out}");

    // dstack's errors: not a Git repo, no upstream.
    let plain = home.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let task = format!("type: task\ncommands: [ls]\nrepos:\n  - local_path: .\n{RESOURCES}");
    std::fs::write(plain.join("t.yml"), &task).unwrap();
    let file = plain.join("t.yml").display().to_string();
    let (code, _, err) = cli_env(home.path(), &["apply", "-f", &file, "-y", "-d"], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("{file}:3: `repos[0]`: Git repo not found: ")), "{err}");
    assert!(err.contains("Use `files` to mount an arbitrary directory"), "{err}");

    git(&plain, &env, &["init", "-q"]);
    let (code, _, err) = cli_env(home.path(), &["apply", "-f", &file, "-y", "-d"], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("No remote branch is configured"), "{err}");
    stop(server);
}
