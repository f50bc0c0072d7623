//! Validation of loaded YAML (or JSON) into typed models, collecting every error.
//!
//! This plays the role pydantic's lax mode plays in dstack: strings accept numbers, integers
//! accept integral floats and numeric strings, booleans accept `yes`/`on`/`1`, and unknown keys
//! are refused (with the nearest known key suggested). Unlike serde, a failure does not stop
//! validation: every problem in a file is reported, each with its field path and position.
//!
//! The pattern for a model:
//! ```text
//! impl FromNode for ScalingSpec {
//!     fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
//!         let mut obj = Object::new(node, cx)?;
//!         let mark = cx.mark();
//!         let spec = ScalingSpec {
//!             metric: obj.required(cx, "metric"),
//!             target: obj.required_with(cx, "target", positive_f64),
//!             window: obj.opt(cx, "window"),
//!         };
//!         obj.finish(cx);
//!         cx.ok_since(mark)?;            // field errors: stop before cross-field checks
//!         if bad { cx.error(node, "…"); return None; }
//!         Some(spec)
//!     }
//! }
//! ```

use std::fmt;

use indexmap::IndexMap;

use crate::yaml::{Node, Pos, Value, python_float_repr, quote_short};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a configuration: where, what, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The field path, `resources.gpu` or `ports[1]`; empty for the whole document.
    pub path: String,
    pub pos: Option<Pos>,
    pub message: String,
    /// A suggestion such as "did you mean `commands`?".
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders as `file:line:col: error: path: message` plus a help line.
    pub fn render(&self, file: &str) -> String {
        let mut out = String::from(file);
        if let Some(pos) = self.pos {
            out.push_str(&format!(":{}:{}", pos.line, pos.col));
        }
        out.push_str(match self.severity {
            Severity::Error => ": error: ",
            Severity::Warning => ": warning: ",
        });
        if !self.path.is_empty() {
            out.push_str(&format!("`{}`: ", self.path));
        }
        out.push_str(&self.message);
        if let Some(help) = &self.help {
            out.push_str(&format!("\n  help: {help}"));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("<input>"))
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Field(String),
    Index(usize),
}

/// The validation context: the current field path and everything found so far.
#[derive(Debug, Default)]
pub struct Cx {
    path: Vec<Seg>,
    diagnostics: Vec<Diagnostic>,
    n_errors: usize,
}

/// A count of errors at some moment; see [`Cx::ok_since`].
#[derive(Debug, Clone, Copy)]
pub struct Mark(usize);

impl Cx {
    pub fn new() -> Cx {
        Cx::default()
    }

    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diagnostics
    }

    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    pub fn has_errors(&self) -> bool {
        self.n_errors > 0
    }

    pub fn mark(&self) -> Mark {
        Mark(self.n_errors)
    }

    /// `Some(())` when no error was recorded since `mark`.
    pub fn ok_since(&self, mark: Mark) -> Option<()> {
        (self.n_errors == mark.0).then_some(())
    }

    /// The current path as text, `resources.gpu` or `ports[1]`.
    pub fn path_string(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// Runs `f` with `seg` appended to the path.
    pub fn at<R>(&mut self, seg: Seg, f: impl FnOnce(&mut Cx) -> R) -> R {
        self.path.push(seg);
        let r = f(self);
        self.path.pop();
        r
    }

    pub fn at_field<R>(&mut self, name: &str, f: impl FnOnce(&mut Cx) -> R) -> R {
        self.at(Seg::Field(name.to_owned()), f)
    }

    pub fn at_index<R>(&mut self, i: usize, f: impl FnOnce(&mut Cx) -> R) -> R {
        self.at(Seg::Index(i), f)
    }

    fn push(&mut self, severity: Severity, pos: Option<Pos>, message: String, help: Option<String>) {
        if severity == Severity::Error {
            self.n_errors += 1;
        }
        self.diagnostics.push(Diagnostic { severity, path: self.path_string(), pos, message, help });
    }

    /// Records an error about `node` at the current path.
    pub fn error(&mut self, node: &Node, message: impl Into<String>) {
        self.push(Severity::Error, node.pos, message.into(), None);
    }

    /// Records an error with a suggestion.
    pub fn error_help(&mut self, node: &Node, message: impl Into<String>, help: impl Into<String>) {
        self.push(Severity::Error, node.pos, message.into(), Some(help.into()));
    }

    /// Records an error at a position (or none, for wire input).
    pub fn error_at(&mut self, pos: Option<Pos>, message: impl Into<String>) {
        self.push(Severity::Error, pos, message.into(), None);
    }

    /// Records "expected X, found `<description of node>`".
    pub fn expected(&mut self, node: &Node, what: &str) {
        let message = format!("expected {what}, found {}", node.describe());
        self.error(node, message);
    }

    pub fn warn(&mut self, node: &Node, message: impl Into<String>) {
        self.push(Severity::Warning, node.pos, message.into(), None);
    }
}

/// A type that can be validated from a loaded node.
///
/// `None` means the node was invalid and at least one error was recorded in `cx`.
pub trait FromNode: Sized {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self>;
}

/// Reads the fields of a mapping, remembering which keys were known.
pub struct Object<'a> {
    node: &'a Node,
    entries: &'a [(Node, Node)],
    known: Vec<&'static str>,
}

impl<'a> Object<'a> {
    /// Starts reading `node` as a mapping; records an error if it is not one.
    pub fn new(node: &'a Node, cx: &mut Cx) -> Option<Object<'a>> {
        match &node.value {
            Value::Map(entries) => Some(Object { node, entries, known: Vec::new() }),
            _ => {
                cx.expected(node, "a mapping");
                None
            }
        }
    }

    /// The mapping being read.
    pub fn node(&self) -> &'a Node {
        self.node
    }

    /// The raw value under `key` (marks the key as known).
    pub fn raw(&mut self, key: &'static str) -> Option<&'a Node> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        self.entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    /// Whether `key` is present (even as null); marks the key as known.
    pub fn has(&mut self, key: &'static str) -> bool {
        self.raw(key).is_some()
    }

    /// Marks keys as known without reading them.
    pub fn allow(&mut self, keys: &[&'static str]) {
        for key in keys {
            self.raw(key);
        }
    }

    /// A field validated by `f`; `default()` when the key is absent or the value is invalid.
    pub fn field_with<T>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        default: impl FnOnce() -> T,
        f: impl FnOnce(&Node, &mut Cx) -> Option<T>,
    ) -> T {
        match self.raw(key) {
            None => default(),
            Some(value) => cx.at_field(key, |cx| f(value, cx)).unwrap_or_else(default),
        }
    }

    /// A field with a default for when it is absent. An explicit null goes to `T`, so
    /// non-optional types refuse it (as pydantic does).
    pub fn field<T: FromNode>(&mut self, cx: &mut Cx, key: &'static str, default: impl FnOnce() -> T) -> T {
        self.field_with(cx, key, default, T::from_node)
    }

    /// An optional field: absent or null is `None`.
    pub fn opt<T: FromNode>(&mut self, cx: &mut Cx, key: &'static str) -> Option<T> {
        self.opt_with(cx, key, T::from_node)
    }

    /// An optional field validated by `f`: absent or null is `None`.
    pub fn opt_with<T>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        f: impl FnOnce(&Node, &mut Cx) -> Option<T>,
    ) -> Option<T> {
        match self.raw(key) {
            None => None,
            Some(value) if value.is_null() => None,
            Some(value) => cx.at_field(key, |cx| f(value, cx)),
        }
    }

    /// A required field: absent records "missing field" (null goes to `T`).
    pub fn required<T: FromNode + Default>(&mut self, cx: &mut Cx, key: &'static str) -> T {
        self.required_with(cx, key, T::from_node)
    }

    /// A required field validated by `f`.
    pub fn required_with<T: Default>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        f: impl FnOnce(&Node, &mut Cx) -> Option<T>,
    ) -> T {
        match self.raw(key) {
            None => {
                let node = self.node;
                cx.at_field(key, |cx| cx.error(node, format!("missing required field `{key}`")));
                T::default()
            }
            Some(value) => cx.at_field(key, |cx| f(value, cx)).unwrap_or_default(),
        }
    }

    /// Reports every key that no accessor asked for, suggesting the nearest known one.
    pub fn finish(self, cx: &mut Cx) {
        for (key, _) in self.entries {
            let Some(name) = key.as_str() else {
                cx.error(key, format!("expected a field name, found {}", key.describe()));
                continue;
            };
            if self.known.contains(&name) {
                continue;
            }
            let message = format!("unknown field `{name}`");
            cx.at_field(name, |cx| match suggest(name, &self.known) {
                Some(near) => cx.error_help(key, message, format!("did you mean `{near}`?")),
                None => cx.error(key, message),
            });
        }
    }
}

/// The known name nearest to a misspelt one, if any is near enough.
pub fn suggest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = name.to_lowercase();
    known
        .iter()
        .map(|k| (*k, strsim::jaro_winkler(&lower, k)))
        .filter(|(k, score)| *score >= 0.8 || strsim::levenshtein(&lower, k) <= 2)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

/// Validates each item of a sequence with `f`, with indices in the path.
pub fn seq_with<T>(
    node: &Node,
    cx: &mut Cx,
    mut f: impl FnMut(&Node, &mut Cx) -> Option<T>,
) -> Option<Vec<T>> {
    let Value::Seq(items) = &node.value else {
        cx.expected(node, "a list");
        return None;
    };
    let mark = cx.mark();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(v) = cx.at_index(i, |cx| f(item, cx)) {
            out.push(v);
        }
    }
    cx.ok_since(mark)?;
    Some(out)
}

impl<T: FromNode> FromNode for Vec<T> {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        seq_with(node, cx, T::from_node)
    }
}

impl<T: FromNode> FromNode for Option<T> {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        if node.is_null() { Some(None) } else { T::from_node(node, cx).map(Some) }
    }
}

impl<T: FromNode> FromNode for Box<T> {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        T::from_node(node, cx).map(Box::new)
    }
}

/// Strings accept numbers too (pydantic's `coerce_numbers_to_str`).
impl FromNode for String {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(python_float_repr(*f)),
            _ => {
                cx.expected(node, "a string");
                None
            }
        }
    }
}

/// The boolean a lax pydantic `bool` field reads from a node, if any.
pub fn lax_bool(node: &Node) -> Option<bool> {
    match &node.value {
        Value::Bool(b) => Some(*b),
        Value::Int(0) => Some(false),
        Value::Int(1) => Some(true),
        Value::Float(f) if *f == 0.0 => Some(false),
        Value::Float(f) if *f == 1.0 => Some(true),
        Value::Str(s) => match s.to_lowercase().as_str() {
            "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
            "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
            _ => None,
        },
        _ => None,
    }
}

impl FromNode for bool {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let b = lax_bool(node);
        if b.is_none() {
            cx.expected(node, "a boolean (`true` or `false`)");
        }
        b
    }
}

/// The integer a lax pydantic `int` field reads from a node.
pub fn lax_int(node: &Node, cx: &mut Cx) -> Option<i64> {
    let value: Option<i128> = match &node.value {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Float(f) if f.is_finite() && f.fract() == 0.0 => Some(*f as i128),
        Value::Float(f) if f.is_finite() => {
            cx.error(
                node,
                format!(
                    "expected an integer, found a number with a fractional part `{}`",
                    python_float_repr(*f)
                ),
            );
            return None;
        }
        Value::Str(s) => {
            let t = s.trim();
            let t = t.strip_prefix('+').unwrap_or(t);
            t.replace('_', "").parse::<i128>().ok().filter(|_| !t.starts_with('_') && !t.ends_with('_'))
        }
        _ => None,
    };
    match value.map(i64::try_from) {
        Some(Ok(i)) => Some(i),
        Some(Err(_)) => {
            cx.error(node, "integer is out of range");
            None
        }
        None => {
            cx.expected(node, "an integer");
            None
        }
    }
}

impl FromNode for i64 {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        lax_int(node, cx)
    }
}

/// The number a lax pydantic `float` field reads from a node.
pub fn lax_float(node: &Node, cx: &mut Cx) -> Option<f64> {
    let value = match &node.value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Str(s) => parse_python_float(s.trim()),
        _ => None,
    };
    if value.is_none() {
        cx.expected(node, "a number");
    }
    value
}

/// Python's `float(str)` for the common forms (`1`, `1.5`, `1e3`, `inf`).
pub fn parse_python_float(s: &str) -> Option<f64> {
    let cleaned = s.replace('_', "");
    let lower = cleaned.to_lowercase();
    match lower.trim_start_matches(['+', '-']) {
        "inf" | "infinity" | "nan" => return lower.parse::<f64>().ok(),
        _ => {}
    }
    if lower.is_empty() || !lower.bytes().all(|c| c.is_ascii_digit() || b"+-.e".contains(&c)) {
        return None;
    }
    lower.parse::<f64>().ok()
}

impl FromNode for f64 {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        lax_float(node, cx)
    }
}

/// A `str → str` mapping (pydantic `Dict[str, str]`).
impl FromNode for IndexMap<String, String> {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            cx.expected(node, "a mapping");
            return None;
        };
        let mark = cx.mark();
        let mut out = IndexMap::new();
        for (k, v) in entries {
            let Some(key) = String::from_node(k, cx) else {
                continue;
            };
            if let Some(value) = cx.at_field(&key.clone(), |cx| String::from_node(v, cx)) {
                out.insert(key, value);
            }
        }
        cx.ok_since(mark)?;
        Some(out)
    }
}

/// An integer within inclusive bounds.
pub fn int_in(node: &Node, cx: &mut Cx, min: Option<i64>, max: Option<i64>) -> Option<i64> {
    let v = lax_int(node, cx)?;
    if let Some(min) = min
        && v < min
    {
        cx.error(node, format!("expected an integer greater than or equal to {min}, found {v}"));
        return None;
    }
    if let Some(max) = max
        && v > max
    {
        cx.error(node, format!("expected an integer less than or equal to {max}, found {v}"));
        return None;
    }
    Some(v)
}

/// A string from a fixed set of choices, with a suggestion for near misses.
pub fn choice<'c>(node: &Node, cx: &mut Cx, choices: &[&'c str]) -> Option<&'c str> {
    let found = match &node.value {
        Value::Str(s) => choices.iter().find(|c| **c == s.as_str()).copied(),
        _ => None,
    };
    if found.is_none() {
        let list = choices.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
        let message = format!("expected one of {list}, found {}", node.describe());
        match node.as_str().and_then(|s| suggest(s, choices)) {
            Some(near) => cx.error_help(node, message, format!("did you mean `{near}`?")),
            None => cx.error(node, message),
        }
    }
    found
}

/// Defines a string enum with dstack's wire values: `Serialize`, `Deserialize`, `FromNode`,
/// `as_str` and `Display`.
#[macro_export]
macro_rules! string_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($value),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $value),+ }
            }

            pub fn from_wire(s: &str) -> Option<Self> {
                match s { $($value => Some(Self::$variant),)+ _ => None }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::de::FromNode for $name {
            fn from_node(node: &$crate::yaml::Node, cx: &mut $crate::de::Cx) -> Option<Self> {
                $crate::de::choice(node, cx, Self::ALL).and_then(Self::from_wire)
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                Self::from_wire(&s).ok_or_else(|| {
                    <D::Error as ::serde::de::Error>::unknown_variant(&s, Self::ALL)
                })
            }
        }
    };
}

/// Implements `serde::Deserialize` through [`FromNode`], so the wire JSON is validated by
/// exactly the rules the YAML is (one source of truth for what is accepted).
#[macro_export]
macro_rules! deserialize_via_node {
    ($($ty:ty),+ $(,)?) => {$(
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let json = <::serde_json::Value as ::serde::Deserialize>::deserialize(d)?;
                $crate::de::from_json::<$ty>(&json).map_err(<D::Error as ::serde::de::Error>::custom)
            }
        }
    )+};
}

/// Validates `node` as `T`: the value, or every error found (warnings left out).
pub fn validate<T: FromNode>(node: &Node) -> Result<T, Vec<Diagnostic>> {
    let mut cx = Cx::new();
    let value = T::from_node(node, &mut cx);
    match value {
        Some(v) if !cx.has_errors() => Ok(v),
        _ => Err(cx.into_diagnostics().into_iter().filter(Diagnostic::is_error).collect()),
    }
}

/// Validates wire JSON as `T`; the error lists every problem, one per line.
pub fn from_json<T: FromNode>(json: &serde_json::Value) -> Result<T, String> {
    validate(&Node::from_json(json)).map_err(|errors| {
        errors
            .iter()
            .map(|d| if d.path.is_empty() { d.message.clone() } else { format!("{}: {}", d.path, d.message) })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Describes a string for messages (re-exported for models).
pub fn quoted(s: &str) -> String {
    quote_short(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::load;

    #[derive(Debug, Default, PartialEq)]
    struct Demo {
        name: Option<String>,
        count: i64,
        flag: bool,
    }

    impl FromNode for Demo {
        fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
            let mut obj = Object::new(node, cx)?;
            let mark = cx.mark();
            let demo = Demo {
                name: obj.opt(cx, "name"),
                count: obj.required_with(cx, "count", |n, cx| int_in(n, cx, Some(1), None)),
                flag: obj.field(cx, "flag", || false),
            };
            obj.finish(cx);
            cx.ok_since(mark)?;
            Some(demo)
        }
    }

    fn check(text: &str) -> (Option<Demo>, Vec<String>) {
        let node = load(text).unwrap();
        let mut cx = Cx::new();
        let demo = Demo::from_node(&node, &mut cx);
        (demo, cx.into_diagnostics().iter().map(|d| d.render("f.yml")).collect())
    }

    #[test]
    fn lax_coercion() {
        let (demo, diags) = check("name: 123\ncount: '5'\nflag: on\n");
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(demo, Some(Demo { name: Some("123".into()), count: 5, flag: true }));
    }

    #[test]
    fn all_errors_are_collected_with_positions_and_suggestions() {
        let (demo, diags) = check("count: 0\nflga: true\nname: [a]\n");
        assert_eq!(demo, None);
        assert_eq!(
            diags,
            vec![
                "f.yml:3:7: error: `name`: expected a string, found a list",
                "f.yml:1:8: error: `count`: expected an integer greater than or equal to 1, found 0",
                "f.yml:2:1: error: `flga`: unknown field `flga`\n  help: did you mean `flag`?",
            ]
        );
    }

    #[test]
    fn missing_required_field() {
        let (_, diags) = check("name: x\n");
        assert_eq!(diags, vec!["f.yml:1:1: error: `count`: missing required field `count`"]);
    }

    #[test]
    fn fractional_float_is_not_an_int() {
        let (_, diags) = check("count: 1.5\n");
        assert!(diags[0].contains("fractional part `1.5`"), "{diags:?}");
    }
}
