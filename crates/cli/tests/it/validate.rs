//! `dstack validate`: exit codes, error format and `--json` output, through the real binary.

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::prelude::*;
use tempfile::TempDir;

fn dstack() -> Command {
    let mut cmd = Command::cargo_bin("dstack").expect("the dstack binary is built");
    // No colours in assertions.
    cmd.env("NO_COLOR", "1").env("CLICOLOR", "0");
    cmd
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("temp file is writable");
    path
}

#[test]
fn valid_file_exits_zero() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "task.dstack.yml", "type: task\ncommands:\n  - python train.py\n");
    dstack()
        .arg("validate")
        .arg(&file)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("valid task configuration"));
}

#[test]
fn invalid_file_exits_one_with_position_path_and_suggestion() {
    let dir = TempDir::new().unwrap();
    let file =
        write(&dir, "train.yml", "type: task\ncommands: [echo]\nresources:\n  gpu: A100\n  memroy: 16GB\n");
    dstack()
        .current_dir(dir.path())
        .args(["validate", "train.yml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("train.yml:5:3: error: `resources.memroy`: unknown field `memroy`"))
        .stderr(predicate::str::contains("help: did you mean `memory`?"));
    drop(file);
}

#[test]
fn unknown_type_is_refused_with_suggestion() {
    let dir = TempDir::new().unwrap();
    write(&dir, "x.yml", "type: tsk\n");
    dstack()
        .current_dir(dir.path())
        .args(["validate", "x.yml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("x.yml:1:7: error: `type`: expected one of"))
        .stderr(predicate::str::contains("did you mean `task`?"));
}

#[test]
fn any_invalid_file_makes_the_run_fail() {
    let dir = TempDir::new().unwrap();
    write(&dir, "ok.yml", "type: task\ncommands: [echo]\n");
    write(&dir, "bad.yml", "type: task\ncommands: echo\n");
    dstack()
        .current_dir(dir.path())
        .args(["validate", "ok.yml", "bad.yml"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("ok.yml: valid"))
        .stderr(predicate::str::contains("bad.yml:2:11: error: `commands`: expected a list"));
}

#[test]
fn usage_errors_exit_two() {
    dstack().arg("validate").assert().code(2).stderr(predicate::str::contains("FILE"));
    dstack().args(["validate", "--bogus", "x.yml"]).assert().code(2);
    dstack()
        .args(["validate", "/definitely/not/here.yml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("does not exist"));
}

#[test]
fn json_prints_one_normalized_document_per_valid_file() {
    let dir = TempDir::new().unwrap();
    write(&dir, "a.yml", "type: task\ncommands: [echo a]\n");
    write(&dir, "b.yml", "type: dev-environment\nide: vscode\n");
    let out =
        dstack().current_dir(dir.path()).args(["validate", "--json", "a.yml", "b.yml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON document"))
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["type"], "task");
    assert_eq!(docs[0]["commands"], serde_json::json!(["echo a"]));
    assert_eq!(docs[1]["type"], "dev-environment");
    assert_eq!(docs[1]["ide"], "vscode");
}

#[test]
fn stdin_is_read_with_dash() {
    dstack()
        .args(["validate", "--json", "-"])
        .write_stdin("type: task\ncommands: [echo]\n")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("\"type\":\"task\""));
}

#[test]
fn yaml_syntax_errors_are_reported_with_position() {
    let dir = TempDir::new().unwrap();
    write(&dir, "broken.yml", "type: task\ncommands: [echo\n");
    dstack()
        .current_dir(dir.path())
        .args(["validate", "broken.yml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("broken.yml:").and(predicate::str::contains("invalid YAML")));
}

/// The spec's examples (config.md §13): E1–E8 are valid, I1–I6 are refused by dstack's parser
/// and I7 by its server; `dstack validate` gives the same verdict for each.
#[test]
fn spec_examples_get_dstacks_verdict() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/corpus");
    let mut n_checked = 0;
    for (dir, expected_code) in [("valid", 0), ("invalid", 1), ("server", 1)] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(corpus.join(dir))
            .expect("corpus folder exists")
            .map(|e| e.expect("readable entry").path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let is_example = name.len() > 3
                    && (name.starts_with('e') || name.starts_with('i'))
                    && name.as_bytes()[1].is_ascii_digit()
                    && name.as_bytes()[2] == b'-';
                is_example && name.ends_with(".yml")
            })
            .collect();
        names.sort();
        for path in names {
            let out = dstack().arg("validate").arg(&path).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(expected_code),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n_checked += 1;
        }
    }
    assert_eq!(n_checked, 15, "E1–E8 and I1–I7 are all in the corpus");
}

/// `local.ssh` of a gateway (ours): valid with the fields of an SSH fleet's host, and every
/// bad field reported with its position and path.
#[test]
fn gateway_ssh_hosts_are_validated() {
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "gw.yml",
        "type: gateway\nbackend: local\ndomain: gw.example\nlocal:\n  http_port: 80\n  ssh:\n    \
         hostname: gw.internal\n    user: ubuntu\n    identity_file: ~/.ssh/gw\n",
    );
    dstack()
        .current_dir(dir.path())
        .args(["validate", "gw.yml"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("valid gateway configuration"));
    write(
        &dir,
        "bad.yml",
        "type: gateway\nbackend: local\nlocal:\n  http_port: 80\n  ssh:\n    hostname: h\n    \
         port: 0\n    usr: ubuntu\n",
    );
    dstack()
        .current_dir(dir.path())
        .args(["validate", "bad.yml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad.yml:7:11: error: `local.ssh.port`: expected an integer"))
        .stderr(predicate::str::contains("`local.ssh.user`: missing required field `user`"))
        .stderr(predicate::str::contains("bad.yml:8:5: error: `local.ssh.usr`: unknown field `usr`"))
        .stderr(predicate::str::contains("help: did you mean `user`?"));
}
