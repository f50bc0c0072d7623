//! Property tests: no input makes the parser panic, and every refusal says why.
//!
//! Three generators: arbitrary text, YAML documents built from dstack's own field names and
//! value shapes, and mutations (byte edits, line drops and duplications) of the corpus files.
//! The coverage-guided fuzz target lives in `fuzz/` (cargo-fuzz) and checks the same property.

use std::path::Path;

use dstack_model::parse_configuration;
use proptest::prelude::*;

/// The property: parsing returns, a configuration comes only without errors, every error
/// has a message, and a valid configuration serializes and deserializes back to itself.
fn check(text: &str) {
    let parsed = parse_configuration(text);
    let n_errors = parsed.errors().count();
    match &parsed.configuration {
        Some(conf) => {
            assert_eq!(n_errors, 0, "a configuration came back with errors for {text:?}");
            let json = serde_json::to_value(conf).expect("a configuration serializes");
            let back: dstack_model::AnyConfiguration = serde_json::from_value(json.clone())
                .unwrap_or_else(|e| panic!("round trip of {text:?} failed: {e}"));
            assert_eq!(serde_json::to_value(&back).unwrap(), json, "round trip changed {text:?}");
        }
        None => {
            assert!(n_errors > 0, "no configuration and no error for {text:?}");
            assert!(parsed.errors().all(|d| !d.message.is_empty()));
        }
    }
}

const KEYS: &[&str] = &[
    "type",
    "name",
    "image",
    "commands",
    "resources",
    "gpu",
    "cpu",
    "memory",
    "disk",
    "shm_size",
    "env",
    "ports",
    "port",
    "replicas",
    "scaling",
    "groups",
    "nodes",
    "volumes",
    "path",
    "instance_path",
    "ssh_config",
    "hosts",
    "hostname",
    "backend",
    "region",
    "size",
    "max_duration",
    "idle_duration",
    "retry",
    "on_events",
    "duration",
    "probes",
    "model",
    "rate_limits",
    "python",
    "nvcc",
    "docker",
    "ide",
    "files",
    "repos",
    "schedule",
    "cron",
    "min",
    "max",
    "count",
    "vendor",
    "blocks",
    "placement",
    "certificate",
    "auth",
    "https",
    "gateway",
    "router",
];

const SCALARS: &[&str] = &[
    "task",
    "service",
    "dev-environment",
    "fleet",
    "gateway",
    "volume",
    "preset",
    "A100:80GB:2",
    "24GB..",
    "x86:8..",
    "1..4",
    "..",
    "off",
    "on",
    "yes",
    "null",
    "~",
    "1:2",
    "3000:30",
    "\"8080:\"",
    "-1",
    "0",
    "3.10",
    "1h",
    "1h30m",
    "2024-01-01",
    "nvidia",
    "tpu-v5e-8",
    "*:80",
    "/data",
    "vol:/data",
    "HF_TOKEN",
    "A=1",
    "''",
    "1e400",
    "0x1f",
    "0755",
    "\"${{ secrets.x }}\"",
    "rps",
    "http",
    "aws",
    "10.0.0.1",
];

fn yaml_value(depth: u32) -> BoxedStrategy<String> {
    let scalar = proptest::sample::select(SCALARS).prop_map(str::to_owned);
    if depth == 0 {
        return scalar.boxed();
    }
    prop_oneof![
        3 => scalar,
        1 => proptest::collection::vec(yaml_value(depth - 1), 0..4)
            .prop_map(|items| format!("[{}]", items.join(", "))),
        1 => proptest::collection::vec((proptest::sample::select(KEYS), yaml_value(depth - 1)), 0..4)
            .prop_map(|entries| {
                let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
    ]
    .boxed()
}

fn yaml_document() -> impl Strategy<Value = String> {
    let kinds = &["task", "service", "dev-environment", "fleet", "gateway", "volume", "preset"][..];
    (
        proptest::sample::select(kinds),
        proptest::collection::vec((proptest::sample::select(KEYS), yaml_value(3)), 0..8),
    )
        .prop_map(|(kind, entries)| {
            let mut text = format!("type: {kind}\n");
            for (k, v) in entries {
                text.push_str(&format!("{k}: {v}\n"));
            }
            text
        })
}

fn corpus_texts() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut texts = Vec::new();
    for dir in ["valid", "invalid", "deviations", "server"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "yml") {
                texts.push(std::fs::read_to_string(entry.path()).expect("corpus file is UTF-8"));
            }
        }
    }
    texts.sort();
    if texts.is_empty() {
        texts.push("type: task\ncommands: [echo]\nresources: {gpu: A100:2}\n".to_owned());
    }
    texts
}

#[derive(Debug, Clone)]
enum Mutation {
    ReplaceByte(usize, u8),
    DeleteLine(usize),
    DuplicateLine(usize),
    Truncate(usize),
    Indent(usize),
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let lines: Vec<&str> = text.lines().collect();
    match *mutation {
        Mutation::ReplaceByte(i, b) => {
            let mut bytes = text.as_bytes().to_vec();
            if !bytes.is_empty() {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Mutation::DeleteLine(i) if !lines.is_empty() => {
            let i = i % lines.len();
            let kept: Vec<&str> =
                lines.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, l)| *l).collect();
            kept.join("\n")
        }
        Mutation::DuplicateLine(i) if !lines.is_empty() => {
            let i = i % lines.len();
            let mut out = lines.clone();
            out.insert(i, lines[i]);
            out.join("\n")
        }
        Mutation::Truncate(i) => text.chars().take(i % (text.chars().count() + 1)).collect(),
        Mutation::Indent(i) if !lines.is_empty() => {
            let i = i % lines.len();
            let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            out[i] = format!("  {}", out[i]);
            out.join("\n")
        }
        _ => text.to_owned(),
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = &b":-[]{}#&*!|>'\"\n\t ,.0aZ"[..];
    prop_oneof![
        (any::<usize>(), proptest::sample::select(bytes)).prop_map(|(i, b)| Mutation::ReplaceByte(i, b)),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::Indent),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        check(&text);
    }

    #[test]
    fn generated_documents_never_panic(text in yaml_document()) {
        check(&text);
    }

    #[test]
    fn mutated_corpus_files_never_panic(
        idx in any::<usize>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let texts = corpus_texts();
        let mut text = texts[idx % texts.len()].clone();
        for m in &mutations {
            text = apply(&text, m);
        }
        check(&text);
    }
}
