//! Environment variables (`env`) of runs, SSH fleets and presets.
//!
//! Two spellings are accepted, as in dstack 0.22.5:
//! - a list of `NAME=value`, `NAME=` (empty value) or `NAME` (a required variable whose value
//!   the CLI takes from its own environment before submitting);
//! - a mapping `NAME: value`, where numbers are converted to strings and a required variable
//!   is written `{key: NAME}` (the shape dstack itself serializes).
//!
//! Both give the same normalized mapping, serialized as
//! `{"A": {"key": "A"}, "B": "1"}`. Insertion order is kept.
//!
//! Deliberate differences from dstack:
//! - every duplicate name of the list form is reported, not only the first.

use indexmap::IndexMap;
use serde::Serialize;

use crate::de::{Cx, FromNode, Object};
use crate::deserialize_via_node;
use crate::yaml::{Node, Value, quote_short};

/// Whether `s` matches `^([a-zA-Z_][a-zA-Z0-9_]*)(=.*$|$)` as pydantic checks it (Rust-regex
/// semantics: `.` stops at a newline and `$` is the very end).
fn is_env_item(s: &str) -> bool {
    let (name, value) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    };
    let mut chars = name.chars();
    let head_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    head_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && value.is_none_or(|v| !v.contains('\n'))
}

/// The value of one environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// A known value.
    Value(String),
    /// A value to be filled in from the environment variable `key` (dstack's `EnvSentinel`).
    Required { key: String },
}

impl Serialize for EnvValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            EnvValue::Value(v) => s.serialize_str(v),
            EnvValue::Required { key } => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("key", key)?;
                map.end()
            }
        }
    }
}

/// Environment variables in the order they were written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Env(pub IndexMap<String, EnvValue>);

impl Env {
    pub fn new() -> Env {
        Env::default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&EnvValue> {
        self.0.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &EnvValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Sets a known value, replacing any earlier one (its position is kept).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), EnvValue::Value(value.into()));
    }

    /// Marks `name` as required, to be resolved from the environment.
    pub fn set_required(&mut self, name: impl Into<String>) {
        let name = name.into();
        self.0.insert(name.clone(), EnvValue::Required { key: name });
    }

    /// Overrides these variables with `other`'s (dstack's `Env.update`, used for `-e` flags).
    pub fn update(&mut self, other: &Env) {
        for (k, v) in &other.0 {
            self.0.insert(k.clone(), v.clone());
        }
    }

    /// The names whose values are still to be taken from the environment.
    pub fn required_names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|(k, v)| match v {
            EnvValue::Required { .. } => Some(k.as_str()),
            EnvValue::Value(_) => None,
        })
    }

    /// Fills every required variable with `lookup(key)`. A missing one fails with dstack's
    /// message `Environment variable NAME is not set` (the first missing one, in order); on
    /// failure nothing is changed.
    pub fn resolve(&mut self, mut lookup: impl FnMut(&str) -> Option<String>) -> Result<(), String> {
        let mut resolved = Vec::new();
        for (name, value) in &self.0 {
            if let EnvValue::Required { key } = value {
                match lookup(key) {
                    Some(v) => resolved.push((name.clone(), v)),
                    None => return Err(format!("Environment variable {key} is not set")),
                }
            }
        }
        for (name, v) in resolved {
            self.0.insert(name, EnvValue::Value(v));
        }
        Ok(())
    }

    /// The variables as plain strings; fails with the sorted unresolved names
    /// (`not all variables are resolved: A, B`) if any is still required.
    pub fn as_dict(&self) -> Result<IndexMap<String, String>, String> {
        let mut unresolved: Vec<&str> = self.required_names().collect();
        if !unresolved.is_empty() {
            unresolved.sort_unstable();
            return Err(format!("not all variables are resolved: {}", unresolved.join(", ")));
        }
        Ok(self
            .0
            .iter()
            .filter_map(|(k, v)| match v {
                EnvValue::Value(v) => Some((k.clone(), v.clone())),
                EnvValue::Required { .. } => None,
            })
            .collect())
    }

    fn from_list(items: &[Node], cx: &mut Cx) -> Option<Env> {
        let mark = cx.mark();
        let mut env = Env::new();
        for (i, item) in items.iter().enumerate() {
            cx.at_index(i, |cx| {
                let text = match &item.value {
                    Value::Str(_) | Value::Int(_) | Value::Float(_) => String::from_node(item, cx)?,
                    _ => {
                        cx.expected(item, "a string `NAME=value`, `NAME=` or `NAME`");
                        return None;
                    }
                };
                if !is_env_item(&text) {
                    cx.error_help(
                        item,
                        format!(
                            "invalid environment variable {}: expected `NAME=value`, `NAME=` or `NAME`",
                            quote_short(&text)
                        ),
                        "a name starts with a letter or `_` and has only letters, digits and `_` (pattern '^([a-zA-Z_][a-zA-Z0-9_]*)(=.*$|$)')",
                    );
                    return None;
                }
                let (name, value) = match text.split_once('=') {
                    Some((k, v)) => (k.to_owned(), EnvValue::Value(v.to_owned())),
                    None => (text.clone(), EnvValue::Required { key: text.clone() }),
                };
                if env.0.contains_key(&name) {
                    cx.error(item, format!("Duplicate environment variable: {text}"));
                    return None;
                }
                env.0.insert(name, value);
                Some(())
            });
        }
        cx.ok_since(mark)?;
        Some(env)
    }

    fn from_map(entries: &[(Node, Node)], cx: &mut Cx) -> Option<Env> {
        let mark = cx.mark();
        let mut env = Env::new();
        for (k, v) in entries {
            // Keys are not checked against the list form's pattern (dstack does not either).
            let Some(name) = String::from_node(k, cx) else {
                continue;
            };
            let value = cx.at_field(&name, |cx| match &v.value {
                Value::Str(_) | Value::Int(_) | Value::Float(_) => {
                    String::from_node(v, cx).map(EnvValue::Value)
                }
                Value::Map(_) => {
                    let mut obj = Object::new(v, cx)?;
                    let inner = cx.mark();
                    let key: String = obj.required(cx, "key");
                    obj.finish(cx);
                    cx.ok_since(inner)?;
                    Some(EnvValue::Required { key })
                }
                _ => {
                    cx.expected(v, "a string (numbers are converted)");
                    None
                }
            });
            if let Some(value) = value {
                env.0.insert(name, value);
            }
        }
        cx.ok_since(mark)?;
        Some(env)
    }
}

impl FromNode for Env {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Seq(items) => Env::from_list(items, cx),
            Value::Map(entries) => Env::from_map(entries, cx),
            _ => {
                cx.expected(node, "a list of `NAME=value` strings or a mapping of names to values");
                None
            }
        }
    }
}

deserialize_via_node!(Env);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::load;

    fn parse(text: &str) -> Result<String, String> {
        let node = load(text).map_err(|e| e.to_string())?;
        let mut cx = Cx::new();
        match Env::from_node(&node, &mut cx) {
            Some(env) if !cx.has_errors() => serde_json::to_string(&env).map_err(|e| e.to_string()),
            _ => Err(cx.into_diagnostics().iter().map(|d| d.message.clone()).collect::<Vec<_>>().join("; ")),
        }
    }

    /// Input YAML, then the expected JSON (`Ok`) or an error substring (`Err`). Each expected
    /// JSON was produced by dstack 0.22.5's `model_dump_json()` for `env:` of a task.
    const CASES: &[(&str, Result<&str, &str>)] = &[
        ("[A, B=1, C=, D=x=y]", Ok(r#"{"A":{"key":"A"},"B":"1","C":"","D":"x=y"}"#)),
        ("[]", Ok("{}")),
        ("{}", Ok("{}")),
        ("['_a=b']", Ok(r#"{"_a":"b"}"#)),
        ("[\"A=1\\r\"]", Ok(r#"{"A":"1\r"}"#)),
        (
            "{A: 1, B: x, C: 1.5, D: '', E: 0x10, F: .inf}",
            Ok(r#"{"A":"1","B":"x","C":"1.5","D":"","E":"16","F":"inf"}"#),
        ),
        ("{1: x, 1.5: y}", Ok(r#"{"1":"x","1.5":"y"}"#)),
        ("{bad key: x}", Ok(r#"{"bad key":"x"}"#)),
        ("{A: {key: B}}", Ok(r#"{"A":{"key":"B"}}"#)),
        ("{A: {key: 5}}", Ok(r#"{"A":{"key":"5"}}"#)),
        ("[A, A=2]", Err("Duplicate environment variable: A=2")),
        ("[A=1, A=2]", Err("Duplicate environment variable: A=2")),
        ("[A=1, A]", Err("Duplicate environment variable: A")),
        ("['1A=x']", Err("invalid environment variable \"1A=x\"")),
        ("['A B=x']", Err("invalid environment variable")),
        ("[\"A\\r=1\"]", Err("invalid environment variable")),
        ("[\"A=1\\nB\"]", Err("invalid environment variable")),
        ("['']", Err("invalid environment variable")),
        ("['é=1']", Err("invalid environment variable")),
        ("[5]", Err("invalid environment variable \"5\"")),
        ("[true]", Err("found a boolean `true`")),
        ("{A: true}", Err("expected a string (numbers are converted), found a boolean")),
        ("{A: null}", Err("found null")),
        ("{A: [1]}", Err("found a list")),
        ("{true: x}", Err("expected a string, found a boolean")),
        ("{A: {key: A, x: 1}}", Err("unknown field `x`")),
        ("{A: {}}", Err("missing required field `key`")),
        ("A=1", Err("expected a list of `NAME=value` strings")),
        ("null", Err("found null")),
    ];

    #[test]
    fn env_cases() {
        for (input, expected) in CASES {
            let got = parse(input);
            match (expected, &got) {
                (Ok(json), Ok(out)) => assert_eq!(out, json, "input: {input}"),
                (Err(sub), Err(msg)) => {
                    assert!(msg.contains(sub), "input: {input}: {msg:?} lacks {sub:?}")
                }
                _ => panic!("input: {input}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn error_paths_point_at_items() {
        let node = load("[A=1, 'bad name']").unwrap();
        let mut cx = Cx::new();
        assert!(Env::from_node(&node, &mut cx).is_none());
        let diags = cx.into_diagnostics();
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].path, "[1]");
        assert_eq!(diags[0].pos.map(|p| (p.line, p.col)), Some((1, 7)));
    }

    #[test]
    fn resolve_and_helpers() {
        let node = load("[A, B=1, C]").unwrap();
        let mut env = Env::from_node(&node, &mut Cx::new()).unwrap();
        assert_eq!(env.required_names().collect::<Vec<_>>(), vec!["A", "C"]);
        assert_eq!(env.as_dict(), Err("not all variables are resolved: A, C".to_owned()));
        let before = env.clone();
        assert_eq!(
            env.resolve(|k| (k == "A").then(|| "a".to_owned())),
            Err("Environment variable C is not set".to_owned())
        );
        assert_eq!(env, before);
        let mut flags = Env::new();
        flags.set("C", "from-flag");
        env.update(&flags);
        assert_eq!(env.resolve(|_| Some("a".to_owned())), Ok(()));
        let dict = env.as_dict().unwrap();
        assert_eq!(
            dict.into_iter().collect::<Vec<_>>(),
            vec![
                ("A".to_owned(), "a".to_owned()),
                ("B".to_owned(), "1".to_owned()),
                ("C".to_owned(), "from-flag".to_owned()),
            ]
        );
    }

    #[test]
    fn wire_json_round_trips() {
        let json = r#"{"A":{"key":"A"},"B":"1"}"#;
        let env: Env = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&env).unwrap(), json);
        assert!(serde_json::from_str::<Env>(r#"{"A":true}"#).is_err());
    }
}
