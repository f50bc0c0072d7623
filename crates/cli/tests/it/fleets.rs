//! `dstack apply -f fleet.yml -y -d` of an SSH fleet against a real server process: the fleet
//! is created with one pending instance per host, shown without keys, one instance deleted by
//! number, then the fleet.

use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::server::{cli, start, stop};

#[test]
fn an_ssh_fleet_is_applied_listed_and_deleted() {
    let home = TempDir::new().unwrap();
    let server = start(home.path(), &[]);
    let key = home.path().join("fleet_key");
    std::fs::write(&key, include_str!("../../../server/tests/fixtures/test_ed25519")).unwrap();
    std::fs::write(
        home.path().join("fleet_key.pub"),
        include_str!("../../../server/tests/fixtures/test_ed25519.pub"),
    )
    .unwrap();
    let file = home.path().join("fleet.yml");
    std::fs::write(
        &file,
        format!(
            "type: fleet\nname: hosts\nssh_config:\n  user: ubuntu\n  identity_file: {}\n  hosts:\n    - 127.0.0.21\n    - 127.0.0.22\n",
            key.display()
        ),
    )
    .unwrap();
    let file = file.display().to_string();

    let (code, out, err) = cli(home.path(), &["apply", "-f", &file, "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Fleet type     ssh"), "{out}");
    assert!(out.trim_end().ends_with("Fleet configuration submitted. Exiting..."), "{out}");

    let (code, out, err) = cli(home.path(), &["fleet", "get", "hosts"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    let fleet: Value = serde_json::from_str(&out).unwrap();
    let instances: Vec<(&str, &str)> = fleet["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["hostname"].as_str().unwrap(), i["status"].as_str().unwrap()))
        .collect();
    assert_eq!(instances, [("127.0.0.21", "pending"), ("127.0.0.22", "pending")]);

    // The same file again: nothing to change.
    let (code, out, err) = cli(home.path(), &["apply", "-f", &file, "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("No configuration changes detected"), "{out}");

    let (code, out, err) = cli(home.path(), &["fleet", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hosts") && out.contains("pending"), "{out}");

    // One instance, by its number: the other stays.
    let (code, out, err) = cli(home.path(), &["fleet", "delete", "hosts", "-i", "1", "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim_end(), "Fleet hosts instances deleted");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = cli(home.path(), &["fleet", "get", "hosts"]);
        let fleet: Value = serde_json::from_str(&out).unwrap();
        let live: Vec<(i64, &str)> = fleet["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["status"] != "terminated")
            .map(|i| (i["instance_num"].as_i64().unwrap(), i["hostname"].as_str().unwrap()))
            .collect();
        if live == [(0, "127.0.0.21")] {
            break;
        }
        assert!(Instant::now() < deadline, "instance 1 is still there: {live:?}");
        std::thread::sleep(Duration::from_millis(300));
    }

    crate::fleets::delete_fleet_and_wait(home.path(), "hosts", Duration::from_secs(30));
    assert_eq!(stop(server), 0);
}

/// `dstack fleet delete NAME -y`, within `within`: a delete that meets a pass of the fleets
/// or instances loop holding the fleet gets dstack's "being processed currently. Try again
/// later." and is tried again, as a user would.
pub(crate) fn delete_fleet(home: &std::path::Path, name: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (code, out, err) = cli(home, &["fleet", "delete", name, "-y"]);
        if code == 0 {
            return;
        }
        assert!(err.contains("being processed currently. Try again later."), "{out}{err}");
        assert!(Instant::now() < deadline, "the fleet stays busy: {err}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// [`delete_fleet`], then `fleet get` until the fleet is gone (all within `within`).
pub(crate) fn delete_fleet_and_wait(home: &std::path::Path, name: &str, within: Duration) {
    let deadline = Instant::now() + within;
    delete_fleet(home, name, within);
    loop {
        let (code, out, _) = cli(home, &["fleet", "get", name]);
        if code != 0 {
            assert!(out.contains(&format!("Fleet {name} not found")), "{out}");
            return;
        }
        assert!(Instant::now() < deadline, "the fleet is still there: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}
