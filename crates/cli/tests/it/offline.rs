//! The run commands' argument handling and local checks, through the real binary, with no
//! server: a HOME without `~/.dstack/config.yml` proves nothing reached the network.

use assert_cmd::Command;
use predicates::prelude::*;
use tempfile::TempDir;

fn dstack(home: &TempDir) -> Command {
    let mut cmd = Command::cargo_bin("dstack").expect("the dstack binary is built");
    cmd.env("NO_COLOR", "1")
        .env("CLICOLOR", "0")
        .env("HOME", home.path())
        .env_remove("DSTACK_PROJECT")
        .env_remove("DSTACK_SERVER_URL")
        .env_remove("DSTACK_TOKEN")
        .current_dir(home.path());
    cmd
}

#[test]
fn apply_reports_an_invalid_file_as_validate_does_and_stops() {
    let home = TempDir::new().unwrap();
    std::fs::write(
        home.path().join("train.yml"),
        "type: task\ncommands: [echo]\nresources:\n  memroy: 16GB\n",
    )
    .unwrap();
    let validate = dstack(&home).args(["validate", "train.yml"]).assert().code(1);
    let expected = String::from_utf8(validate.get_output().stderr.clone()).unwrap();
    assert!(expected.contains("train.yml:4:3: error: `resources.memroy`"), "{expected}");
    // Same diagnostics, exit 1, and no attempt to find a project (there is no config).
    dstack(&home).args(["apply", "-f", "train.yml", "-y"]).assert().code(1).stderr(expected).stdout("");
}

#[test]
fn apply_refuses_what_it_cannot_do_yet_before_any_call() {
    let home = TempDir::new().unwrap();
    std::fs::write(
        home.path().join("vol.yml"),
        "type: volume\nname: vol\nbackend: aws\nregion: us-east-1\nsize: 100GB\n",
    )
    .unwrap();
    dstack(&home)
        .args(["apply", "-f", "vol.yml", "-y"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("`volume` configurations are not supported yet"));
    std::fs::write(home.path().join("fleet.yml"), "type: fleet\nname: fl\nnodes: 1\n").unwrap();
    dstack(&home)
        .args(["apply", "-f", "fleet.yml", "-y", "-e", "A=1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("`env` is currently supported for SSH fleets only"));
    std::fs::write(home.path().join("task.yml"), "type: task\ncommands: [env]\nenv: [TOKEN]\n").unwrap();
    dstack(&home)
        .args(["apply", "-f", "task.yml", "-y"])
        .env_remove("TOKEN")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("Environment variable TOKEN is not set"));
    dstack(&home)
        .args(["apply", "-f", "missing.yml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("configuration file missing.yml does not exist"));
}

#[test]
fn commands_without_a_project_say_how_to_get_one() {
    let home = TempDir::new().unwrap();
    let out = dstack(&home).args(["ps"]).assert().code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("project"), "{stderr}");
}

#[test]
fn usage_errors_exit_two() {
    let home = TempDir::new().unwrap();
    dstack(&home)
        .args(["ps", "--json", "-w"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
    dstack(&home)
        .args(["logs", "t1", "--since", "yesterday"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("expected a duration like 10m or an RFC 3339 time"));
    dstack(&home).args(["ps", "-n", "0"]).assert().code(2);
    dstack(&home).args(["stop"]).assert().code(2);
    dstack(&home).args(["delete"]).assert().code(2);
    dstack(&home).args(["apply", "--max-offers", "0"]).assert().code(2);
}

#[test]
fn help_lists_the_run_verbs() {
    let home = TempDir::new().unwrap();
    let out = dstack(&home).arg("--help").assert().code(0);
    let help = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    for verb in ["apply", "ps", "logs", "stop", "delete", "offer", "fleet", "init", "completion", "gateway"] {
        assert!(help.contains(&format!("\n  {verb} ")), "{verb} missing from:\n{help}");
    }
    dstack(&home)
        .args(["apply", "--help"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("-e, --env <VAR[=VALUE]>"))
        .stdout(predicate::str::contains("Ctrl-C detaches"));
}

#[test]
fn gateway_says_which_address_is_taken() {
    let home = TempDir::new().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let state = home.path().join("gw");
    dstack(&home)
        .args(["gateway", "--api-listen", "127.0.0.1:0", "--http-listen", &addr, "--state-dir"])
        .arg(&state)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("cannot listen on {addr} (http)")))
        .stderr(predicate::str::contains("--http-listen"));
    assert!(state.is_dir(), "the state dir is created");
}

#[test]
fn completion_scripts_are_generated() {
    let home = TempDir::new().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        dstack(&home)
            .args(["completion", shell])
            .assert()
            .code(0)
            .stdout(predicate::str::contains("apply").and(predicate::str::contains("logs")));
    }
    dstack(&home).args(["completion", "tcsh"]).assert().code(2);
}

#[test]
fn init_outside_a_git_repo_says_so() {
    let home = TempDir::new().unwrap();
    dstack(&home)
        .arg("init")
        .env("GIT_CEILING_DIRECTORIES", home.path().parent().unwrap())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not a Git repo"));
}
