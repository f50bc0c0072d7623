//! The configuration corpus: every file under `tests/corpus/` is a test case.
//!
//! - `valid/NAME.yml`: parses without errors, serializes to exactly `valid/NAME.json` (dstack
//!   0.22.5's own output, same key order; numbers compared as f64), and that JSON deserializes
//!   back to a configuration that serializes to the same JSON. Some valid files are still
//!   refused by dstack's server (an AMD GPU without `image`, an SSH host without a user): for
//!   those `static_checks` gives exactly `NAME.server.err`; for the rest it gives nothing.
//! - `invalid/NAME.yml` and `deviations/NAME.yml`: parsing reports errors, and all diagnostics,
//!   each rendered with the file name `NAME.yml` and joined by newlines, equal `NAME.err`.
//! - `server/NAME.yml`: parses without errors, but `static_checks` refuses it with exactly the
//!   messages in `NAME.err`, one per line.
//!
//! `UPDATE_EXPECT=1 cargo test -p dstack-model --test corpus` writes missing or outdated `.err`
//! files instead of failing (expect-test style); review the diff before committing.
//! Whether dstack itself agrees with each file's folder is checked by `tests/compat/run.sh`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use dstack_model::configuration::static_checks;
use dstack_model::{AnyConfiguration, parse_configuration};
use serde_json::Value;

#[test]
fn corpus_valid() {
    check_folder("valid", check_valid);
}

#[test]
fn corpus_invalid() {
    check_folder("invalid", check_refused);
}

#[test]
fn corpus_deviations() {
    check_folder("deviations", check_refused);
}

#[test]
fn corpus_server() {
    check_folder("server", check_server);
}

/// Runs `check` on every `.yml` file of one corpus folder and fails once, listing every file
/// that did not pass.
fn check_folder(folder: &str, check: fn(&Case) -> Result<(), String>) {
    let dir = corpus_dir().join(folder);
    let cases = cases_in(&dir);
    assert!(!cases.is_empty(), "no .yml files in {}", dir.display());
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(why) = check(case) {
            failures.push(format!("--- {folder}/{}\n{}", case.file_name, why.trim_end()));
        }
    }
    if !failures.is_empty() {
        panic!(
            "\n{}\n\ncorpus {folder}: {} passed, {} failed (UPDATE_EXPECT=1 rewrites .err files)\n",
            failures.join("\n\n"),
            cases.len() - failures.len(),
            failures.len(),
        );
    }
}

struct Case {
    /// `NAME.yml`, the name diagnostics are rendered with.
    file_name: String,
    path: PathBuf,
    text: String,
}

impl Case {
    fn sibling(&self, extension: &str) -> PathBuf {
        self.path.with_extension(extension)
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("corpus")
}

fn cases_in(dir: &Path) -> Vec<Case> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut cases: Vec<Case> = entries
        .map(|entry| entry.expect("reading a corpus folder entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .map(|path| Case {
            file_name: path.file_name().expect("a corpus file has a name").to_string_lossy().into_owned(),
            text: fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
            path,
        })
        .collect();
    cases.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    cases
}

fn check_valid(case: &Case) -> Result<(), String> {
    let configuration = parse_ok(case)?;
    let expected_path = case.sibling("json");
    let expected: Value = serde_json::from_str(
        &fs::read_to_string(&expected_path)
            .map_err(|e| format!("cannot read {}: {e}", expected_path.display()))?,
    )
    .map_err(|e| format!("{} is not JSON: {e}", expected_path.display()))?;
    let actual = serde_json::to_value(&configuration)
        .map_err(|e| format!("serializing the configuration failed: {e}"))?;
    let mut diffs = Vec::new();
    json_diff(&expected, &actual, "$", &mut diffs);
    if !diffs.is_empty() {
        return Err(format!(
            "the JSON differs from dstack's ({} = expected):\n{}",
            expected_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            summarize(&diffs)
        ));
    }
    check_server_verdict(case, &static_checks(&configuration))?;
    let reparsed: AnyConfiguration = serde_json::from_value(actual.clone())
        .map_err(|e| format!("round trip: our JSON does not deserialize: {e}"))?;
    let again =
        serde_json::to_value(&reparsed).map_err(|e| format!("round trip: serializing again failed: {e}"))?;
    let mut diffs = Vec::new();
    json_diff(&actual, &again, "$", &mut diffs);
    if !diffs.is_empty() {
        return Err(format!(
            "round trip: JSON -> configuration -> JSON changed it (expected = first JSON):\n{}",
            summarize(&diffs)
        ));
    }
    Ok(())
}

fn check_refused(case: &Case) -> Result<(), String> {
    let parsed = parse_configuration(&case.text);
    if parsed.errors().next().is_none() {
        return Err(format!(
            "expected errors, but it parsed{}",
            if parsed.diagnostics.is_empty() {
                String::new()
            } else {
                format!(" with:\n{}", render_all(case, &parsed.diagnostics))
            }
        ));
    }
    expect_text(&case.sibling("err"), &render_all(case, &parsed.diagnostics))
}

fn check_server(case: &Case) -> Result<(), String> {
    let configuration = parse_ok(case)?;
    let messages = static_checks(&configuration);
    if messages.is_empty() {
        return Err("expected static_checks to refuse it, but it returned no messages".into());
    }
    expect_text(&case.sibling("err"), &messages.join("\n"))
}

/// A parser-valid file: `static_checks` agrees with `NAME.server.err`, which exists only when
/// dstack's server refuses the file.
fn check_server_verdict(case: &Case, messages: &[String]) -> Result<(), String> {
    let path = case.sibling("server.err");
    if !messages.is_empty() {
        return expect_text(&path, &messages.join("\n"));
    }
    if !path.exists() {
        return Ok(());
    }
    if update_expect() {
        fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        eprintln!("removed {}", path.display());
        return Ok(());
    }
    Err(format!("static_checks accepts it, but {} says the server refuses it", path.display()))
}

fn parse_ok(case: &Case) -> Result<AnyConfiguration, String> {
    let parsed = parse_configuration(&case.text);
    match parsed.configuration {
        Some(configuration) if parsed.errors().next().is_none() => Ok(configuration),
        _ => Err(format!("expected it to parse, but got:\n{}", render_all(case, &parsed.diagnostics))),
    }
}

fn render_all(case: &Case, diagnostics: &[dstack_model::Diagnostic]) -> String {
    diagnostics.iter().map(|d| d.render(&case.file_name)).collect::<Vec<_>>().join("\n")
}

/// Compares `actual` with an expectation file, or rewrites the file under `UPDATE_EXPECT`.
fn expect_text(path: &Path, actual: &str) -> Result<(), String> {
    let expected = fs::read_to_string(path).ok();
    let matches = expected.as_deref().is_some_and(|e| e.strip_suffix('\n').unwrap_or(e) == actual);
    if matches {
        return Ok(());
    }
    if update_expect() {
        fs::write(path, format!("{actual}\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("updated {}", path.display());
        return Ok(());
    }
    Err(match expected {
        None => format!(
            "{} is missing; the errors are:\n{}",
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            indent(actual)
        ),
        Some(expected) => format!(
            "the errors differ from the .err file\nexpected:\n{}\nactual:\n{}",
            indent(expected.trim_end_matches('\n')),
            indent(actual)
        ),
    })
}

fn update_expect() -> bool {
    std::env::var("UPDATE_EXPECT").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn indent(text: &str) -> String {
    text.lines().fold(String::new(), |mut out, line| {
        let _ = writeln!(out, "    {line}");
        out
    })
}

fn summarize(diffs: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut out: String = diffs.iter().take(SHOWN).map(|d| format!("    {d}\n")).collect();
    if diffs.len() > SHOWN {
        let _ = writeln!(out, "    ... and {} more", diffs.len() - SHOWN);
    }
    out
}

/// Records where two JSON values differ. Numbers are compared as f64 (so `8` equals `8.0`);
/// object keys must appear in the same order, since dstack's key order is part of the format.
fn json_diff(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => {
            if a.as_f64() != b.as_f64() {
                out.push(format!("{path}: expected {a}, found {b}"));
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => json_diff(value, other, &format!("{path}.{key}"), out),
                    None => out.push(format!("{path}.{key}: missing (expected {value})")),
                }
            }
            for (key, value) in b {
                if !a.contains_key(key) {
                    out.push(format!("{path}.{key}: unexpected key (found {value})"));
                }
            }
            let a_keys: Vec<&String> = a.keys().filter(|k| b.contains_key(*k)).collect();
            let b_keys: Vec<&String> = b.keys().filter(|k| a.contains_key(*k)).collect();
            if a_keys != b_keys {
                out.push(format!(
                    "{path}: key order differs\n      expected {a_keys:?}\n      found    {b_keys:?}"
                ));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                json_diff(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {
            if expected != actual {
                out.push(format!("{path}: expected {expected}, found {actual}"));
            }
        }
    }
}
