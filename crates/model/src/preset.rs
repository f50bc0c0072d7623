//! `type: preset` (experimental): dstack 0.22.5's `PresetConfiguration`, which asks an
//! agent to create an optimized service configuration for a model.
//!
//! The real 0.22.5 differs from the spec (§11): `dataset` has no default (`random` is
//! refused), and there is an `agent` field.
//!
//! Deliberate differences from dstack: a `model` mapping with both `repo` and `base` gets one
//! "unknown field" error instead of one per union member.

use serde::Serialize;
use serde::ser::{Error as _, SerializeMap};

use crate::common::EntityReference;
use crate::common::check_type_tag;
use crate::de::{Cx, FromNode, Object, int_in, lax_bool};
use crate::env::Env;
use crate::profile::{ProfileParams, ProfileScope};
use crate::string_enum;
use crate::yaml::{Node, Value};

/// The longest inline `prompt`, in characters.
pub const MAX_PROMPT_LENGTH: usize = 10_000;

/// The model to serve: an exact repo (with an optional client-facing name), or a base model
/// whose compatible variants the agent may pick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PresetModel {
    Repo { repo: String, name: Option<String> },
    Base { base: String },
}

fn model_string(node: &Node, cx: &mut Cx, field: &str) -> Option<String> {
    let s = String::from_node(node, cx)?;
    if s.trim().is_empty() {
        cx.error(node, format!("Preset model {field} must be a non-empty string"));
        return None;
    }
    Some(s)
}

impl FromNode for PresetModel {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Str(_) => {
                model_string(node, cx, "model").map(|repo| PresetModel::Repo { repo, name: None })
            }
            Value::Map(_) => {
                let mut obj = Object::new(node, cx)?;
                let mark = cx.mark();
                let model = if node.get("base").is_some() && node.get("repo").is_none() {
                    PresetModel::Base {
                        base: obj.required_with(cx, "base", |n, cx| model_string(n, cx, "base")),
                    }
                } else {
                    PresetModel::Repo {
                        repo: obj.required_with(cx, "repo", |n, cx| model_string(n, cx, "repo")),
                        name: obj.opt_with(cx, "name", |n, cx| model_string(n, cx, "name")),
                    }
                };
                obj.finish(cx);
                cx.ok_since(mark)?;
                Some(model)
            }
            _ => {
                cx.expected(node, "a model repo, or a mapping with `repo` (and `name`) or `base`");
                None
            }
        }
    }
}

/// Extra instructions for the agent, inline or from a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PresetPrompt {
    Text(String),
    File { path: String },
}

impl FromNode for PresetPrompt {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        if let Value::Map(_) = node.value {
            let mut obj = Object::new(node, cx)?;
            let mark = cx.mark();
            let path: String = obj.required_with(cx, "path", |n, cx| {
                let s = String::from_node(n, cx)?;
                if s.trim().is_empty() {
                    cx.error(n, "Prompt path must be a non-empty string");
                    return None;
                }
                Some(s)
            });
            obj.finish(cx);
            cx.ok_since(mark)?;
            return Some(PresetPrompt::File { path });
        }
        if !matches!(node.value, Value::Str(_) | Value::Int(_) | Value::Float(_)) {
            cx.expected(node, "a prompt or a mapping with `path`");
            return None;
        }
        let text = String::from_node(node, cx)?;
        if text.trim().is_empty() {
            cx.error(node, "Prompt must be a non-empty string");
            return None;
        }
        if text.chars().count() > MAX_PROMPT_LENGTH {
            cx.error(node, format!("Prompt must be at most {MAX_PROMPT_LENGTH} characters"));
            return None;
        }
        Some(PresetPrompt::Text(text))
    }
}

/// `gateway`: `false` (none), `true` (the default one), a name, or `{project?, name}`.
/// Tried in that order, as dstack's left-to-right union.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PresetGateway {
    Enabled(bool),
    Reference(EntityReference),
    Name(String),
}

impl FromNode for PresetGateway {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        if let Some(b) = lax_bool(node) {
            return Some(PresetGateway::Enabled(b));
        }
        match &node.value {
            Value::Map(_) => EntityReference::from_node(node, cx).map(PresetGateway::Reference),
            Value::Str(_) | Value::Int(_) | Value::Float(_) => {
                String::from_node(node, cx).map(PresetGateway::Name)
            }
            _ => {
                cx.expected(node, "`true`, `false`, a gateway name or `{project, name}`");
                None
            }
        }
    }
}

string_enum! {
    /// The agent CLI that creates the preset.
    pub enum PresetAgentProvider {
        Claude = "claude",
        Codex = "codex",
    }
}

string_enum! {
    /// The agent's reasoning effort.
    pub enum PresetAgentEffort {
        Low = "low",
        Medium = "medium",
        High = "high",
        XHigh = "xhigh",
        Max = "max",
    }
}

/// `agent`: which agent creates the preset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresetAgentConfig {
    pub provider: PresetAgentProvider,
    pub model: Option<String>,
    pub effort: Option<PresetAgentEffort>,
}

impl FromNode for PresetAgentConfig {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let provider =
            obj.required_with(cx, "provider", |n, cx| PresetAgentProvider::from_node(n, cx).map(Some));
        let model = obj.opt(cx, "model");
        let effort = obj.opt(cx, "effort");
        obj.finish(cx);
        cx.ok_since(mark)?;
        let provider = provider?;
        if provider == PresetAgentProvider::Codex && effort == Some(PresetAgentEffort::Max) {
            cx.error(node, "effort `max` is not supported by `codex`");
            return None;
        }
        Some(PresetAgentConfig { provider, model, effort })
    }
}

/// A preset configuration (`type: preset`).
///
/// Serializes as dstack does: the 20 profile parameters first, then the preset fields.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetConfiguration {
    pub profile: ProfileParams,
    pub name: Option<String>,
    pub model: PresetModel,
    /// Set only when the shorthand did not apply (an empty value); otherwise it became `model`.
    pub base: Option<String>,
    /// As `base`.
    pub repo: Option<String>,
    pub prompt: Option<PresetPrompt>,
    pub min_context_length: Option<i64>,
    /// Milliseconds.
    pub max_ttft: Option<i64>,
    pub trials: Option<i64>,
    pub previous: Option<Vec<String>>,
    pub concurrency: Option<i64>,
    /// Unset means 1024.
    pub input_tokens: Option<i64>,
    /// Unset means 1024.
    pub output_tokens: Option<i64>,
    pub shared_prefix_tokens: Option<i64>,
    /// Unset means synthetic prompts shaped by the token fields.
    pub dataset: Option<String>,
    /// Unset means true.
    pub baseline: Option<bool>,
    pub gateway: Option<PresetGateway>,
    pub agent: Option<PresetAgentConfig>,
    pub env: Env,
}

/// Python truthiness of a loaded value, for the `base`/`repo` shorthand.
fn truthy(node: Option<&Node>) -> bool {
    let Some(node) = node else {
        return false;
    };
    match &node.value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::Str(s) => !s.is_empty(),
        Value::Seq(items) => !items.is_empty(),
        Value::Map(entries) => !entries.is_empty(),
        Value::Timestamp(_) => true,
    }
}

fn positive(node: &Node, cx: &mut Cx) -> Option<i64> {
    int_in(node, cx, Some(1), None)
}

fn dataset(node: &Node, cx: &mut Cx) -> Option<String> {
    let s = String::from_node(node, cx)?;
    let s = s.trim();
    if s.is_empty() {
        cx.error(node, "dataset must be a non-empty string");
        return None;
    }
    if s == "random" {
        cx.error(node, "`random` is not a dataset; omit `dataset` for synthetic prompts");
        return None;
    }
    Some(s.to_owned())
}

impl FromNode for PresetConfiguration {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        // The `base`/`repo` shorthand is resolved before any field is validated.
        let base_node = obj.raw("base");
        let repo_node = obj.raw("repo");
        let model_node = obj.raw("model");
        let shorthand = match (truthy(base_node), truthy(repo_node)) {
            (true, true) => {
                cx.error(node, "`base` and `repo` are mutually exclusive");
                return None;
            }
            (true, false) => base_node.map(|n| ("base", n)),
            (false, true) => repo_node.map(|n| ("repo", n)),
            (false, false) => None,
        };
        if shorthand.is_some() && model_node.is_some_and(|n| !n.is_null()) {
            cx.error(node, "`model` cannot be combined with the `base`/`repo` shorthand");
            return None;
        }
        let profile = ProfileParams::read(&mut obj, cx, ProfileScope::Run);
        check_type_tag(&mut obj, cx, "preset");
        let name = obj.opt(cx, "name");
        let model = match shorthand {
            Some((key, value)) => {
                let key_node = Node::new(Value::Str(key.to_owned()), value.pos);
                let synthetic = Node::new(Value::Map(vec![(key_node, value.clone())]), value.pos);
                cx.at_field("model", |cx| PresetModel::from_node(&synthetic, cx))
            }
            None => match model_node {
                Some(n) => cx.at_field("model", |cx| PresetModel::from_node(n, cx)),
                None => {
                    cx.at_field("model", |cx| {
                        cx.error_help(
                            node,
                            "missing required field `model`",
                            "set `model`, or the `repo` or `base` shorthand",
                        )
                    });
                    None
                }
            },
        };
        let (base, repo) =
            if shorthand.is_some() { (None, None) } else { (obj.opt(cx, "base"), obj.opt(cx, "repo")) };
        let conf = PresetConfiguration {
            profile,
            name,
            model: model.unwrap_or(PresetModel::Base { base: String::new() }),
            base,
            repo,
            prompt: obj.opt(cx, "prompt"),
            min_context_length: obj.opt_with(cx, "min_context_length", positive),
            max_ttft: obj.opt_with(cx, "max_ttft", positive),
            trials: obj.opt_with(cx, "trials", positive),
            previous: obj.opt(cx, "previous"),
            concurrency: obj.opt_with(cx, "concurrency", positive),
            input_tokens: obj.opt_with(cx, "input_tokens", positive),
            output_tokens: obj.opt_with(cx, "output_tokens", |n, cx| int_in(n, cx, Some(2), None)),
            shared_prefix_tokens: obj
                .opt_with(cx, "shared_prefix_tokens", |n, cx| int_in(n, cx, Some(0), None)),
            dataset: obj.opt_with(cx, "dataset", dataset),
            baseline: obj.opt(cx, "baseline"),
            gateway: obj.opt(cx, "gateway"),
            agent: obj.opt(cx, "agent"),
            env: obj.field(cx, "env", Env::default),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        if conf.dataset.is_some() {
            let set: Vec<&str> = [
                ("input_tokens", conf.input_tokens),
                ("output_tokens", conf.output_tokens),
                ("shared_prefix_tokens", conf.shared_prefix_tokens),
            ]
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect();
            if !set.is_empty() {
                cx.error(
                    node,
                    format!(
                        "{} cannot be set together with `dataset`: these fields shape synthetic prompts, and a dataset brings its own",
                        set.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                    ),
                );
                return None;
            }
        }
        if let Some(prefix) = conf.shared_prefix_tokens {
            let input = conf.input_tokens.unwrap_or(1024);
            if prefix >= input {
                cx.error(node, format!("shared_prefix_tokens must be less than input_tokens ({input})"));
                return None;
            }
        }
        Some(conf)
    }
}

crate::deserialize_via_node!(PresetConfiguration);

impl Serialize for PresetConfiguration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let profile = match serde_json::to_value(&self.profile).map_err(S::Error::custom)? {
            serde_json::Value::Object(map) => map,
            other => {
                return Err(S::Error::custom(format!("profile parameters serialized to {other}")));
            }
        };
        let mut m = s.serialize_map(None)?;
        for (key, value) in &profile {
            m.serialize_entry(key, value)?;
        }
        m.serialize_entry("type", "preset")?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("model", &self.model)?;
        m.serialize_entry("base", &self.base)?;
        m.serialize_entry("repo", &self.repo)?;
        m.serialize_entry("prompt", &self.prompt)?;
        m.serialize_entry("min_context_length", &self.min_context_length)?;
        m.serialize_entry("max_ttft", &self.max_ttft)?;
        m.serialize_entry("trials", &self.trials)?;
        m.serialize_entry("previous", &self.previous)?;
        m.serialize_entry("concurrency", &self.concurrency)?;
        m.serialize_entry("input_tokens", &self.input_tokens)?;
        m.serialize_entry("output_tokens", &self.output_tokens)?;
        m.serialize_entry("shared_prefix_tokens", &self.shared_prefix_tokens)?;
        m.serialize_entry("dataset", &self.dataset)?;
        m.serialize_entry("baseline", &self.baseline)?;
        m.serialize_entry("gateway", &self.gateway)?;
        m.serialize_entry("agent", &self.agent)?;
        m.serialize_entry("env", &self.env)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use crate::fleet::test_support::{check_err, check_json};

    const PROFILE_NULLS: &str = r#""backends":null,"regions":null,"availability_zones":null,"instance_types":null,"reservation":null,"spot_policy":null,"retry":null,"max_duration":null,"stop_duration":null,"max_price":null,"creation_policy":null,"idle_duration":null,"utilization_policy":null,"startup_order":null,"stop_criteria":null,"schedule":null,"fleets":null,"instances":null,"tags":null,"backend_options":null"#;

    #[test]
    fn presets_parse_as_dstack_does() {
        let cases: &[(&str, &str)] = &[
            (
                "type: preset\nmodel: org/m",
                r#""type":"preset","name":null,"model":{"repo":"org/m","name":null},"base":null,"repo":null,"prompt":null,"min_context_length":null,"max_ttft":null,"trials":null,"previous":null,"concurrency":null,"input_tokens":null,"output_tokens":null,"shared_prefix_tokens":null,"dataset":null,"baseline":null,"gateway":null,"agent":null,"env":{}}"#,
            ),
            (
                "type: preset\nmodel: {repo: r, name: n}\ngateway: {name: g}",
                r#""type":"preset","name":null,"model":{"repo":"r","name":"n"},"base":null,"repo":null,"prompt":null,"min_context_length":null,"max_ttft":null,"trials":null,"previous":null,"concurrency":null,"input_tokens":null,"output_tokens":null,"shared_prefix_tokens":null,"dataset":null,"baseline":null,"gateway":{"project":null,"name":"g"},"agent":null,"env":{}}"#,
            ),
            (
                "type: preset\nbase: b\ngateway: p/g",
                r#""type":"preset","name":null,"model":{"base":"b"},"base":null,"repo":null,"prompt":null,"min_context_length":null,"max_ttft":null,"trials":null,"previous":null,"concurrency":null,"input_tokens":null,"output_tokens":null,"shared_prefix_tokens":null,"dataset":null,"baseline":null,"gateway":"p/g","agent":null,"env":{}}"#,
            ),
            (
                "type: preset\nbase: b\nrepo: \"\"\ndataset: \" sg \"",
                r#""type":"preset","name":null,"model":{"base":"b"},"base":null,"repo":null,"prompt":null,"min_context_length":null,"max_ttft":null,"trials":null,"previous":null,"concurrency":null,"input_tokens":null,"output_tokens":null,"shared_prefix_tokens":null,"dataset":"sg","baseline":null,"gateway":null,"agent":null,"env":{}}"#,
            ),
            (
                "type: preset\nrepo: r\nname: p\ngateway: false\nprompt: hi",
                r#""type":"preset","name":"p","model":{"repo":"r","name":null},"base":null,"repo":null,"prompt":"hi","min_context_length":null,"max_ttft":null,"trials":null,"previous":null,"concurrency":null,"input_tokens":null,"output_tokens":null,"shared_prefix_tokens":null,"dataset":null,"baseline":null,"gateway":false,"agent":null,"env":{}}"#,
            ),
            (
                "type: preset\nrepo: r\nprompt: {path: p.md}\nmin_context_length: 8192\nmax_ttft: 500\ntrials: 3\nprevious: [a]\nconcurrency: 8\ninput_tokens: 100\noutput_tokens: 2\nshared_prefix_tokens: 10\nbaseline: false\ngateway: true\nagent: {provider: codex, effort: high}",
                r#""type":"preset","name":null,"model":{"repo":"r","name":null},"base":null,"repo":null,"prompt":{"path":"p.md"},"min_context_length":8192,"max_ttft":500,"trials":3,"previous":["a"],"concurrency":8,"input_tokens":100,"output_tokens":2,"shared_prefix_tokens":10,"dataset":null,"baseline":false,"gateway":true,"agent":{"provider":"codex","model":null,"effort":"high"},"env":{}}"#,
            ),
            (
                "type: preset\nmodel: x\nbase: \"\"",
                r#""type":"preset","name":null,"model":{"repo":"x","name":null},"base":"","repo":null,"prompt":null,"min_context_length":null,"max_ttft":null,"trials":null,"previous":null,"concurrency":null,"input_tokens":null,"output_tokens":null,"shared_prefix_tokens":null,"dataset":null,"baseline":null,"gateway":null,"agent":null,"env":{}}"#,
            ),
        ];
        for (yaml, tail) in cases {
            check_json(yaml, &format!("{{{PROFILE_NULLS},{tail}"));
        }
    }

    #[test]
    fn preset_errors() {
        let cases: &[(&str, &str)] = &[
            ("type: preset", "`model`: missing required field `model`"),
            ("type: preset\nrepo: ''", "missing required field `model`"),
            ("type: preset\nbase: b\nrepo: r", "`base` and `repo` are mutually exclusive"),
            (
                "type: preset\nbase: b\nmodel: x",
                "`model` cannot be combined with the `base`/`repo` shorthand",
            ),
            ("type: preset\nmodel: ''", "`model`: Preset model model must be a non-empty string"),
            (
                "type: preset\nmodel: {repo: ' '}",
                "`model.repo`: Preset model repo must be a non-empty string",
            ),
            ("type: preset\nmodel: {repo: r, base: b}", "`model.base`: unknown field `base`"),
            (
                "type: preset\nrepo: r\ndataset: random",
                "`dataset`: `random` is not a dataset; omit `dataset` for synthetic prompts",
            ),
            (
                "type: preset\nrepo: r\ndataset: sharegpt\ninput_tokens: 5\noutput_tokens: 4",
                "`input_tokens`, `output_tokens` cannot be set together with `dataset`: these fields shape synthetic prompts, and a dataset brings its own",
            ),
            (
                "type: preset\nrepo: r\nshared_prefix_tokens: 1024",
                "shared_prefix_tokens must be less than input_tokens (1024)",
            ),
            (
                "type: preset\nrepo: r\nagent: {provider: codex, effort: max}",
                "`agent`: effort `max` is not supported by `codex`",
            ),
            ("type: preset\nrepo: r\nprompt: '  '", "`prompt`: Prompt must be a non-empty string"),
            (
                "type: preset\nrepo: r\noutput_tokens: 1",
                "`output_tokens`: expected an integer greater than or equal to 2, found 1",
            ),
            (
                "type: preset\nrepo: r\ntrials: 0",
                "`trials`: expected an integer greater than or equal to 1, found 0",
            ),
            ("type: preset\nrepo: r\nagent: {}", "`agent.provider`: missing required field `provider`"),
        ];
        for (yaml, err) in cases {
            check_err(yaml, err);
        }
    }
}
