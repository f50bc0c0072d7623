//! dstack's `dstack gateway update|get` against a real server: `--set-default` moves the
//! project's default, `--domain` (deprecated, with dstack's warning) sets the wildcard domain,
//! `get NAME --json` prints the gateway (`--json` is required, as in dstack).

use serde_json::Value;
use tempfile::TempDir;

use crate::server::{cli, start, stop};

fn get(home: &std::path::Path, name: &str) -> Value {
    let (code, out, err) = cli(home, &["gateway", "get", name, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn gateway_update_and_get_work_as_dstacks() {
    let dir = TempDir::new().unwrap();
    let home = dir.path();
    let server = start(home, &[]);
    for name in ["gw-a", "gw-b"] {
        let file = home.join(format!("{name}.yml"));
        std::fs::write(
            &file,
            format!(
                "type: gateway\nname: {name}\nbackend: local\ndomain: {name}.test\ncertificate: null\n\
                 local: {{host: 127.0.0.1, http_port: {}}}\n",
                crate::unused_port()
            ),
        )
        .unwrap();
        let (code, out, err) = cli(home, &["apply", "-f", &file.display().to_string(), "-y"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    assert_eq!(
        (get(home, "gw-a")["default"].clone(), get(home, "gw-b")["default"].clone()),
        (true.into(), false.into())
    );

    let (code, out, err) = cli(home, &["gateway", "update", "gw-b", "--set-default"]);
    assert_eq!(code, 0, "{out}{err}");
    let row = out.lines().find(|l| l.trim_start().starts_with("gw-b")).unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("gw-b.test") && row.contains("yes"), "{out}");
    assert_eq!(
        (get(home, "gw-a")["default"].clone(), get(home, "gw-b")["default"].clone()),
        (false.into(), true.into())
    );

    let (code, out, err) = cli(home, &["gateway", "update", "gw-a", "--domain", "new.test"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("`dstack gateway update --domain` is deprecated"), "{err}");
    assert!(out.contains("new.test"), "{out}");
    let a = get(home, "gw-a");
    assert_eq!(
        (a["wildcard_domain"].as_str(), a["configuration"]["domain"].as_str()),
        (Some("new.test"), Some("new.test"))
    );
    assert_eq!(a["name"], "gw-a");

    let (code, _, _) = cli(home, &["gateway", "get", "gw-a"]);
    assert_eq!(code, 2, "`--json` is required");
    let (code, out, err) = cli(home, &["gateway", "get", "nope", "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("Resource not found"), "{err}");
    let (code, out, err) = cli(home, &["gateway", "update", "nope", "--set-default"]);
    assert_eq!(code, 1, "{out}{err}");

    let (code, out, err) = cli(home, &["gateway", "delete", "gw-a", "gw-b", "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(stop(server), 0);
}
