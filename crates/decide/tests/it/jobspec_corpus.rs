//! The configuration corpus through our job configurators, against what dstack 0.22.5's own
//! configurators compute (`tests/jobspec_compat/oracle.py --write` records that in
//! `tests/jobspec_corpus/NAME.json`; `tests/jobspec_compat/run.sh` checks the records are
//! still dstack's).
//!
//! Each case is the run spec `dstack apply --no-repo` sends for `valid/NAME.yml` (dstack's own
//! normalized configuration, `valid/NAME.json`), with the oracle's fixed environment: the user
//! key [`SSH_KEY`] and [`fake_image`] for every custom image.

use std::path::{Path, PathBuf};

use dstack_api::runs::RunSpec;
use dstack_decide::jobspec::{
    ImageConfig, ImageConfigs, effective_run_spec, images_to_inspect, plan_job_specs,
};
use dstack_model::resources::CpuArch;
use serde_json::{Value, json};

use crate::jobspec_fixtures::first_difference;

const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJobspecOracleKey oracle";

/// What the oracle answers for every image: `FAKE_IMAGE` and `FAKE_ARCHS` of `oracle.py`.
fn fake_image() -> ImageConfig {
    ImageConfig {
        entrypoint: Some(vec!["/entrypoint.sh".to_owned()]),
        cmd: Some(vec!["serve".to_owned()]),
        user: Some("1000:1000".to_owned()),
        architectures: vec![CpuArch::X86],
    }
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Our answer in the oracle's shape: `{effective_run_spec, job_specs}` or `{error}`.
fn ours(configuration: &Value) -> Value {
    let spec = json!({"run_name": configuration["name"], "configuration": configuration});
    let run_spec: RunSpec = match serde_json::from_value(spec) {
        Ok(s) => s,
        Err(e) => return json!({"error": format!("the configuration does not load: {e}")}),
    };
    let effective = match effective_run_spec(&run_spec, Some(SSH_KEY), false) {
        Ok(s) => s,
        Err(e) => return json!({"error": e.to_string()}),
    };
    let images: ImageConfigs = images_to_inspect(&effective).into_iter().map(|i| (i, fake_image())).collect();
    match plan_job_specs(&effective, &images) {
        Ok(jobs) => json!({"effective_run_spec": effective, "job_specs": jobs}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

#[test]
fn corpus_job_specs_agree_with_dstack() {
    let corpus = manifest().join("../model/tests/corpus/valid");
    let mut expected: Vec<PathBuf> = std::fs::read_dir(manifest().join("tests/jobspec_corpus"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    expected.sort();
    let mut failures = Vec::new();
    for path in &expected {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let theirs = read(path);
        let ours = ours(&read(&corpus.join(format!("{name}.json"))));
        // Errors agree when both refuse; the messages are dstack's exceptions.
        let both_refuse = theirs.get("error").is_some() && ours.get("error").is_some();
        if !both_refuse && let Some(d) = first_difference("", &ours, &theirs) {
            failures.push(format!("{name}: {d}"));
        }
    }
    let total = expected.len();
    eprintln!("jobspec corpus: {}/{total} agree with dstack 0.22.5", total - failures.len());
    assert!(total >= 90, "only {total} recorded cases: run tests/jobspec_compat/run.sh --write");
    assert!(failures.is_empty(), "{} of {total} differ:\n{}", failures.len(), failures.join("\n"));
}
