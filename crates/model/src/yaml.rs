//! A YAML 1.1 loader that types scalars the way PyYAML's `safe_load` does.
//!
//! dstack reads configuration files with PyYAML, so `on`/`off`/`yes`/`no` are booleans,
//! `1:30` is a base-60 integer, `0755` is octal and `2024-01-01` is a date.
//! The event parser (`granit_parser`) gives us scalar text, style and position; this module
//! resolves plain scalars with PyYAML's implicit resolvers and builds a [`Node`] tree that
//! remembers where every value came from.
//!
//! Differences from PyYAML are deliberate and listed in the crate docs.

use std::collections::HashMap;
use std::fmt;

use granit_parser::{Event, Parser, ScalarStyle, Span};

/// A position in the source text, both numbers 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A loaded YAML (or JSON) value with the position it started at.
///
/// Nodes built from JSON (wire input) have no position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Option<Pos>,
}

/// A YAML 1.1 value as PyYAML's `safe_load` would construct it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    /// A `YYYY-MM-DD` date or a full timestamp; kept as written.
    Timestamp(String),
    Seq(Vec<Node>),
    /// Keys in first-seen order; a duplicate key replaces the earlier value in place.
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn new(value: Value, pos: Option<Pos>) -> Node {
        Node { value, pos }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value under a string key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    /// A short description of the value for error messages: `a string "abc"`, `a list`.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => format!("a boolean `{b}`"),
            Value::Int(i) => format!("an integer `{i}`"),
            Value::Float(f) => format!("a number `{}`", python_float_repr(*f)),
            Value::Str(s) => format!("a string {}", quote_short(s)),
            Value::Timestamp(s) => format!("a date `{s}` (quote it to use it as a string)"),
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
        }
    }

    /// Converts to JSON as Python's `json.dumps(yaml.safe_load(...))` would (dates become strings).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(i) => J::from(i),
                Err(_) => J::from(*i as f64),
            },
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) | Value::Timestamp(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => {
                J::Object(entries.iter().map(|(k, v)| (k.key_string(), v.to_json())).collect())
            }
        }
    }

    /// The key text of a mapping key, as Python's `str()` would print it.
    pub fn key_string(&self) -> String {
        match &self.value {
            Value::Str(s) | Value::Timestamp(s) => s.clone(),
            Value::Null => "None".to_owned(),
            Value::Bool(true) => "True".to_owned(),
            Value::Bool(false) => "False".to_owned(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => python_float_repr(*f),
            Value::Seq(_) | Value::Map(_) => "<collection>".to_owned(),
        }
    }

    /// Builds a node tree from JSON (wire input); nodes carry no position.
    pub fn from_json(json: &serde_json::Value) -> Node {
        use serde_json::Value as J;
        let value = match json {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i.into()),
                None => match n.as_u64() {
                    Some(u) => Value::Int(u.into()),
                    None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                },
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::Seq(items.iter().map(Node::from_json).collect()),
            J::Object(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| (Node::new(Value::Str(k.clone()), None), Node::from_json(v)))
                    .collect(),
            ),
        };
        Node::new(value, None)
    }
}

/// Quotes a string for a message, shortening long ones.
pub fn quote_short(s: &str) -> String {
    let n_chars = s.chars().count();
    if n_chars <= 60 {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(28).collect();
        let tail: String = s.chars().skip(n_chars - 28).collect();
        format!("{:?}", format!("{head}...{tail}"))
    }
}

/// Formats a float the way Python's `repr(float)` does: `1.0`, `0.5`, `1e+16`, `inf`.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".to_owned() } else { "-inf".to_owned() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0".to_owned() } else { "0.0".to_owned() };
    }
    // `{:e}` gives the shortest round-trip digits: "1.2345e3", "-5e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n_digits = digits.len() as i32;
    if (-4..16).contains(&exp) {
        let point = exp + 1; // position of the decimal point within `digits`
        if point <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
        } else if point >= n_digits {
            format!("{sign}{digits}{}.0", "0".repeat((point - n_digits) as usize))
        } else {
            let (a, b) = digits.split_at(point as usize);
            format!("{sign}{a}.{b}")
        }
    } else {
        let (a, b) = digits.split_at(1);
        let frac = if b.is_empty() { String::new() } else { format!(".{b}") };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{a}{frac}e{exp_sign}{:02}", exp.abs())
    }
}

/// Why a text could not be loaded as YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub pos: Option<Pos>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(pos) => write!(f, "{pos}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The most nodes a document may expand to through aliases (guards against "billion laughs").
const MAX_NODES: usize = 1_000_000;
/// The deepest nesting accepted.
const MAX_DEPTH: usize = 256;

/// Loads one YAML document. An empty document loads as null, as in PyYAML.
pub fn load(text: &str) -> Result<Node, LoadError> {
    let mut builder = Builder { anchors: HashMap::new(), n_nodes: 0 };
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut n_documents = 0;
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| LoadError {
            pos: Some(Pos { line: e.marker().line() as u32, col: e.marker().col() as u32 + 1 }),
            message: e.info(),
        })?;
        let pos = Some(pos_of(&span));
        let done: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => None,
            Event::DocumentStart(..) => {
                n_documents += 1;
                if n_documents > 1 {
                    return Err(LoadError {
                        pos,
                        message: "expected a single YAML document, found a second one (`---`); \
                                  put each configuration in its own file"
                            .to_owned(),
                    });
                }
                None
            }
            Event::Alias(id) => {
                let node = builder.anchors.get(&id).cloned().ok_or_else(|| LoadError {
                    pos,
                    message: "found an alias to an unknown anchor".to_owned(),
                })?;
                builder.count(&node, pos)?;
                Some((node, 0))
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| (t.handle().to_owned(), t.suffix().to_owned()));
                let value = resolve_scalar(&text, style, tag.as_ref())
                    .map_err(|message| LoadError { pos, message })?;
                builder.n_nodes += 1;
                Some((Node::new(value, pos), anchor))
            }
            Event::SequenceStart(_, anchor, tag) => {
                check_collection_tag(tag.as_deref().map(|t| (t.handle(), t.suffix())), "seq", pos)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(LoadError { pos, message: "document nested too deeply".to_owned() });
                }
                stack.push(Frame { kind: FrameKind::Seq(Vec::new()), pos, anchor });
                None
            }
            Event::MappingStart(_, anchor, tag) => {
                check_collection_tag(tag.as_deref().map(|t| (t.handle(), t.suffix())), "map", pos)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(LoadError { pos, message: "document nested too deeply".to_owned() });
                }
                stack.push(Frame {
                    kind: FrameKind::Map { entries: Vec::new(), key: None, merges: Vec::new() },
                    pos,
                    anchor,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = stack
                    .pop()
                    .ok_or_else(|| LoadError { pos, message: "unbalanced collection end".to_owned() })?;
                let value = match frame.kind {
                    FrameKind::Seq(items) => Value::Seq(items),
                    FrameKind::Map { entries, merges, .. } => {
                        Value::Map(apply_merges(entries, merges, frame.pos)?)
                    }
                };
                builder.n_nodes += 1;
                Some((Node::new(value, frame.pos), frame.anchor))
            }
            #[allow(unreachable_patterns)]
            _ => None,
        };
        let Some((node, anchor)) = done else { continue };
        if builder.n_nodes > MAX_NODES {
            return Err(LoadError {
                pos,
                message: format!("document expands to more than {MAX_NODES} values"),
            });
        }
        if anchor != 0 {
            builder.anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame { kind: FrameKind::Seq(items), .. }) => items.push(node),
            Some(Frame { kind: FrameKind::Map { entries, key, merges }, .. }) => match key.take() {
                None => {
                    if matches!(&node.value, Value::Seq(_) | Value::Map(_)) && !is_merge_key(&node) {
                        return Err(LoadError {
                            pos: node.pos,
                            message: "a mapping key must be a scalar, found a collection".to_owned(),
                        });
                    }
                    *key = Some(node);
                }
                Some(k) if is_merge_key(&k) => merges.push(node),
                Some(k) => insert_last_wins(entries, k, node),
            },
        }
    }
    Ok(root.unwrap_or_else(|| Node::new(Value::Null, Some(Pos { line: 1, col: 1 }))))
}

struct Builder {
    anchors: HashMap<usize, Node>,
    n_nodes: usize,
}

impl Builder {
    fn count(&mut self, node: &Node, pos: Option<Pos>) -> Result<(), LoadError> {
        self.n_nodes += count_nodes(node);
        if self.n_nodes > MAX_NODES {
            return Err(LoadError {
                pos,
                message: format!("document expands to more than {MAX_NODES} values"),
            });
        }
        Ok(())
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| count_nodes(k) + count_nodes(v)).sum(),
        _ => 0,
    }
}

struct Frame {
    kind: FrameKind,
    pos: Option<Pos>,
    anchor: usize,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map { entries: Vec<(Node, Node)>, key: Option<Node>, merges: Vec<Node> },
}

fn pos_of(span: &Span) -> Pos {
    Pos { line: span.start.line() as u32, col: span.start.col() as u32 + 1 }
}

fn is_merge_key(node: &Node) -> bool {
    // Only a plain `<<` is the merge key; it is resolved to a marker string below.
    matches!(&node.value, Value::Str(s) if s == MERGE_MARKER)
}

/// What a plain `<<` resolves to; cannot collide with a real key because of the NUL byte.
const MERGE_MARKER: &str = "\0<<merge>>";

fn insert_last_wins(entries: &mut Vec<(Node, Node)>, key: Node, value: Node) {
    match entries.iter_mut().find(|(k, _)| k.value == key.value) {
        // Python dicts keep the first position of a key and the last value.
        Some(entry) => entry.1 = value,
        None => entries.push((key, value)),
    }
}

/// Applies `<<` merge keys: keys written in the mapping win over merged ones, and among
/// merged mappings the earlier one wins (PyYAML's `flatten_mapping`).
fn apply_merges(
    entries: Vec<(Node, Node)>,
    merges: Vec<Node>,
    pos: Option<Pos>,
) -> Result<Vec<(Node, Node)>, LoadError> {
    if merges.is_empty() {
        return Ok(entries);
    }
    let mut sources: Vec<Vec<(Node, Node)>> = Vec::new();
    for merge in merges {
        match merge.value {
            Value::Map(m) => sources.push(m),
            Value::Seq(items) => {
                for item in items {
                    match item.value {
                        Value::Map(m) => sources.push(m),
                        _ => {
                            return Err(LoadError {
                                pos: item.pos.or(pos),
                                message: "expected a mapping for merging (`<<`), found a scalar".to_owned(),
                            });
                        }
                    }
                }
            }
            _ => {
                return Err(LoadError {
                    pos: merge.pos.or(pos),
                    message: "expected a mapping or list of mappings for merging (`<<`)".to_owned(),
                });
            }
        }
    }
    let mut result: Vec<(Node, Node)> = Vec::new();
    for source in sources.into_iter().rev() {
        for (k, v) in source {
            insert_last_wins(&mut result, k, v);
        }
    }
    for (k, v) in entries {
        insert_last_wins(&mut result, k, v);
    }
    Ok(result)
}

fn check_collection_tag(
    tag: Option<(&str, &str)>,
    expected: &str,
    pos: Option<Pos>,
) -> Result<(), LoadError> {
    match tag {
        None => Ok(()),
        Some(("tag:yaml.org,2002:", suffix)) if suffix == expected => Ok(()),
        Some((handle, suffix)) => {
            Err(LoadError { pos, message: format!("unsupported YAML tag `{handle}{suffix}`") })
        }
    }
}

/// Types one scalar: quoted and block scalars are strings, plain ones go through the
/// YAML 1.1 implicit resolvers, and explicit core tags (`!!str`, `!!int`, …) are honoured.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&(String, String)>) -> Result<Value, String> {
    if let Some((handle, suffix)) = tag {
        if handle != "tag:yaml.org,2002:" {
            return Err(format!("unsupported YAML tag `{handle}{suffix}`"));
        }
        return match suffix.as_str() {
            "str" => Ok(Value::Str(text.to_owned())),
            "null" => Ok(Value::Null),
            "bool" => parse_bool(text).map(Value::Bool).ok_or_else(|| bad_tagged(text, "bool")),
            "int" => parse_int(text).map(Value::Int).ok_or_else(|| bad_tagged(text, "int")),
            "float" => parse_float(text).map(Value::Float).ok_or_else(|| bad_tagged(text, "float")),
            other => Err(format!("unsupported YAML tag `!!{other}`")),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(text.to_owned()));
    }
    Ok(resolve_plain(text))
}

fn bad_tagged(text: &str, tag: &str) -> String {
    format!("cannot read {text:?} as `!!{tag}`")
}

/// PyYAML's implicit resolution of a plain scalar.
pub fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "<<" => return Value::Str(MERGE_MARKER.to_owned()),
        _ => {}
    }
    if let Some(b) = parse_bool(text) {
        return Value::Bool(b);
    }
    if is_int_1_1(text)
        && let Some(i) = parse_int(text)
    {
        return Value::Int(i);
    }
    if is_float_1_1(text)
        && let Some(f) = parse_float(text)
    {
        return Value::Float(f);
    }
    if is_timestamp(text) {
        return Value::Timestamp(text.to_owned());
    }
    Value::Str(text.to_owned())
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn strip_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

/// `[-+]?0b[0-1_]+ | [-+]?0[0-7_]+ | [-+]?(0|[1-9][0-9_]*) | [-+]?0x[0-9a-fA-F_]+ |
/// [-+]?[1-9][0-9_]*(:[0-5]?[0-9])+`
fn is_int_1_1(text: &str) -> bool {
    let (_, body) = strip_sign(text);
    let all = |s: &str, f: fn(u8) -> bool| !s.is_empty() && s.bytes().all(f);
    if let Some(rest) = body.strip_prefix("0b") {
        return all(rest, |c| c == b'0' || c == b'1' || c == b'_');
    }
    if let Some(rest) = body.strip_prefix("0x") {
        return all(rest, |c| c.is_ascii_hexdigit() || c == b'_');
    }
    if body == "0" {
        return true;
    }
    if let Some(rest) = body.strip_prefix('0') {
        return all(rest, |c| (b'0'..=b'7').contains(&c) || c == b'_');
    }
    let mut parts = body.split(':');
    let head = parts.next().unwrap_or("");
    let head_ok = head.as_bytes().first().is_some_and(|c| (b'1'..=b'9').contains(c))
        && head.bytes().all(|c| c.is_ascii_digit() || c == b'_');
    if !head_ok {
        return false;
    }
    parts.all(is_sexagesimal_part)
}

/// `[0-5]?[0-9]`
fn is_sexagesimal_part(part: &str) -> bool {
    let b = part.as_bytes();
    match b.len() {
        1 => b[0].is_ascii_digit(),
        2 => (b'0'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
        _ => false,
    }
}

/// PyYAML's `construct_yaml_int`, with an overflow check.
fn parse_int(text: &str) -> Option<i128> {
    let cleaned: String = text.chars().filter(|c| *c != '_').collect();
    let (negative, body) = strip_sign(&cleaned);
    let magnitude: i128 = if body == "0" {
        0
    } else if let Some(rest) = body.strip_prefix("0b") {
        i128::from_str_radix(rest, 2).ok()?
    } else if let Some(rest) = body.strip_prefix("0x") {
        i128::from_str_radix(rest, 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i128::from_str_radix(&body[1..], 8).ok()?
    } else if body.contains(':') {
        let mut value: i128 = 0;
        for part in body.split(':') {
            value = value.checked_mul(60)?.checked_add(part.parse::<i128>().ok()?)?;
        }
        value
    } else {
        body.parse().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// `[-+]?([0-9][0-9_]*)\.[0-9_]*([eE][-+][0-9]+)? | \.[0-9_]+([eE][-+][0-9]+)? |
/// [-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]* | [-+]?\.(inf|Inf|INF) | \.(nan|NaN|NAN)`
fn is_float_1_1(text: &str) -> bool {
    if matches!(text, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (_, body) = strip_sign(text);
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    let digits_us = |s: &str| s.bytes().all(|c| c.is_ascii_digit() || c == b'_');
    let exponent_ok = |s: &str| -> bool {
        // `[eE][-+][0-9]+` or empty
        if s.is_empty() {
            return true;
        }
        let b = s.as_bytes();
        b.len() >= 3
            && (b[0] == b'e' || b[0] == b'E')
            && (b[1] == b'-' || b[1] == b'+')
            && b[2..].iter().all(u8::is_ascii_digit)
    };
    let split_exp = |s: &str| -> (String, String) {
        match s.find(['e', 'E']) {
            Some(i) => (s[..i].to_owned(), s[i..].to_owned()),
            None => (s.to_owned(), String::new()),
        }
    };
    // `.5`, `.5e+3` (the leading-dot form has no sign in PyYAML's regex)
    if let Some(rest) = text.strip_prefix('.') {
        let (frac, exp) = split_exp(rest);
        return !frac.is_empty() && digits_us(&frac) && exponent_ok(&exp);
    }
    let Some((int_part, rest)) = body.split_once('.') else {
        return false;
    };
    if int_part.contains(':') {
        let mut parts = int_part.split(':');
        let head = parts.next().unwrap_or("");
        return head.as_bytes().first().is_some_and(u8::is_ascii_digit)
            && digits_us(head)
            && parts.all(is_sexagesimal_part)
            && digits_us(rest);
    }
    let (frac, exp) = split_exp(rest);
    int_part.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && digits_us(int_part)
        && digits_us(&frac)
        && exponent_ok(&exp)
}

/// PyYAML's `construct_yaml_float`.
fn parse_float(text: &str) -> Option<f64> {
    let cleaned: String = text.chars().filter(|c| *c != '_').collect::<String>().to_lowercase();
    let (negative, body) = strip_sign(&cleaned);
    let sign = if negative { -1.0 } else { 1.0 };
    if body == ".inf" {
        return Some(sign * f64::INFINITY);
    }
    if body == ".nan" {
        return Some(f64::NAN);
    }
    if body.contains(':') {
        let mut value = 0.0;
        for part in body.split(':') {
            value = value * 60.0 + part.parse::<f64>().ok()?;
        }
        return Some(sign * value);
    }
    body.parse::<f64>().ok().map(|v| sign * v)
}

/// `[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}` optionally followed by a time part.
fn is_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let rest = &text[5..];
    let (month, rest) = take_digits(rest, 1, 2);
    let Some(rest) = month.and(rest.strip_prefix('-')) else {
        return false;
    };
    let (day, rest) = take_digits(rest, 1, 2);
    if day.is_none() {
        return false;
    }
    if rest.is_empty() {
        // A bare date must have two-digit month and day in PyYAML's date pattern.
        return b.len() == 10;
    }
    // Full timestamps: `YYYY-M-D(T|t|[ \t]+)H:MM:SS(.frac)?(([ \t]*)(Z|[-+]H(:MM)?))?`
    let rest = match rest.strip_prefix(['T', 't']) {
        Some(r) => r,
        None => {
            let trimmed = rest.trim_start_matches([' ', '\t']);
            if trimmed.len() == rest.len() {
                return false;
            }
            trimmed
        }
    };
    let (hour, rest) = take_digits(rest, 1, 2);
    let Some(rest) = hour.and(rest.strip_prefix(':')) else {
        return false;
    };
    let (minute, rest) = take_digits(rest, 2, 2);
    let Some(rest) = minute.and(rest.strip_prefix(':')) else {
        return false;
    };
    let (second, mut rest) = take_digits(rest, 2, 2);
    if second.is_none() {
        return false;
    }
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    if rest.is_empty() || rest == "Z" {
        return true;
    }
    let Some(r) = rest.strip_prefix(['-', '+']) else {
        return false;
    };
    let (tz_hour, r) = take_digits(r, 1, 2);
    if tz_hour.is_none() {
        return false;
    }
    if r.is_empty() {
        return true;
    }
    let Some(r) = r.strip_prefix(':') else {
        return false;
    };
    let (tz_min, r) = take_digits(r, 2, 2);
    tz_min.is_some() && r.is_empty()
}

fn take_digits(s: &str, min: usize, max: usize) -> (Option<&str>, &str) {
    let n = s.bytes().take(max).take_while(u8::is_ascii_digit).count();
    if n < min { (None, s) } else { (Some(&s[..n]), &s[n..]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> Value {
        resolve_plain(text)
    }

    #[test]
    fn yaml_1_1_scalars() {
        assert_eq!(plain("off"), Value::Bool(false));
        assert_eq!(plain("Yes"), Value::Bool(true));
        assert_eq!(plain("y"), Value::Str("y".into()));
        assert_eq!(plain("1:2"), Value::Int(62));
        assert_eq!(plain("3000:30"), Value::Int(180030));
        assert_eq!(plain("8080:80"), Value::Str("8080:80".into()));
        assert_eq!(plain("0755"), Value::Int(493));
        assert_eq!(plain("0x1f"), Value::Int(31));
        assert_eq!(plain("1_000"), Value::Int(1000));
        assert_eq!(plain("08"), Value::Str("08".into()));
        assert_eq!(plain("3.10"), Value::Float(3.1));
        assert_eq!(plain("1e3"), Value::Str("1e3".into()));
        assert_eq!(plain("1.0e+3"), Value::Float(1000.0));
        assert_eq!(plain("2024-01-01"), Value::Timestamp("2024-01-01".into()));
        assert_eq!(plain("~"), Value::Null);
        assert_eq!(plain("-0"), Value::Int(0));
        assert_eq!(plain("190:20:30.15"), Value::Float(685230.15));
    }

    #[test]
    fn duplicate_keys_keep_first_position_and_last_value() {
        let node = load("a: 1\nb: 2\na: 3\n").unwrap();
        let map = node.as_map().unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map[0].0.as_str(), Some("a"));
        assert_eq!(map[0].1.value, Value::Int(3));
    }

    #[test]
    fn merge_keys_and_aliases() {
        let node = load("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n").unwrap();
        let other = node.get("other").unwrap();
        assert_eq!(other.get("x").unwrap().value, Value::Int(1));
        assert_eq!(other.get("y").unwrap().value, Value::Int(3));
    }

    #[test]
    fn positions_are_one_based() {
        let node = load("type: task\ncommands:\n  - echo\n").unwrap();
        let cmds = node.get("commands").unwrap();
        let Value::Seq(items) = &cmds.value else { panic!("not a list") };
        assert_eq!(items[0].pos, Some(Pos { line: 3, col: 5 }));
    }

    #[test]
    fn multiple_documents_are_refused() {
        let err = load("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.message.contains("single YAML document"), "{err}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = load(&text).unwrap_err();
        assert!(err.message.contains("expands"), "{err}");
    }

    #[test]
    fn python_float_repr_matches_python() {
        assert_eq!(python_float_repr(1.0), "1.0");
        assert_eq!(python_float_repr(0.5), "0.5");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(123456.789), "123456.789");
        assert_eq!(python_float_repr(0.0001), "0.0001");
        assert_eq!(python_float_repr(0.00001), "1e-05");
        assert_eq!(python_float_repr(-2.5e20), "-2.5e+20");
    }
}
