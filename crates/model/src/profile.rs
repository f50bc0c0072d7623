//! Profile parameters: where and how a run or fleet is provisioned (backends, regions, spot
//! policy, retry, durations, price, schedule, fleet and instance selection, tags, backend
//! options), shared by run configurations, fleets, presets and `profiles.yml`.
//!
//! Run configurations flatten these fields into themselves: the caller opens the mapping,
//! calls [`ProfileParams::read`] with the scope, reads its own fields and calls `finish`, so a
//! profile field that does not belong to the scope is reported as unknown there.
//!
//! - [`ProfileScope::Run`] (dev-environment, task, service, preset, `profiles.yml`): all 20
//!   fields, serialized by [`ProfileParams`] in dstack's order.
//! - [`ProfileScope::Fleet`]: `backends, regions, availability_zones, instance_types,
//!   reservation, spot_policy, retry, max_price, idle_duration, tags, backend_options`. A fleet
//!   serializes `reservation` between `nodes` and `resources`, and the rest after `resources`:
//!   use [`ProfileParams::into_fleet`] to split them ([`FleetProfileParams`] flattens).
//!
//! Deliberate differences from dstack:
//! - `tags` with a key or value that is not a string (`{a: 1}`, `{a: null}`) or that is not a
//!   mapping at all crashes dstack with a Python `TypeError`/`AttributeError`; it is refused
//!   here with an "expected a string" error.
//! - a cron number longer than 30 digits is refused with a "too large" error instead of
//!   Python's arbitrary-precision arithmetic; cron digits must be ASCII (Python's `\d` also
//!   takes other Unicode decimal digits).
//! - every failing cron expression of a list is reported, not only the first.

use indexmap::IndexMap;
use serde::Serialize;

use crate::common::{
    BackendType, Duration, EntityReference, OffDuration, parse_idle_duration, parse_tags, positive_f64,
};
use crate::de::{Cx, Diagnostic, FromNode, Object, Severity, int_in, lax_bool, lax_float, seq_with};
use crate::deserialize_via_node;
use crate::string_enum;
use crate::yaml::{self, Node, Value};

string_enum! {
    /// Whether to provision spot instances (`spot_policy`); dstack's default is `on-demand`.
    pub enum SpotPolicy {
        Spot = "spot",
        OnDemand = "on-demand",
        Auto = "auto",
    }
}

string_enum! {
    /// Whether a run may provision new instances (`creation_policy`).
    pub enum CreationPolicy {
        Reuse = "reuse",
        ReuseOrCreate = "reuse-or-create",
    }
}

string_enum! {
    /// The start order of a multi-node run's jobs (`startup_order`).
    pub enum StartupOrder {
        Any = "any",
        MasterFirst = "master-first",
        WorkersFirst = "workers-first",
    }
}

string_enum! {
    /// When a multi-node run is finished (`stop_criteria`).
    pub enum StopCriteria {
        AllDone = "all-done",
        MasterDone = "master-done",
    }
}

string_enum! {
    /// An event that `retry` handles.
    pub enum RetryEvent {
        NoCapacity = "no-capacity",
        Interruption = "interruption",
        Error = "error",
    }
}

string_enum! {
    /// The order in which Vast.ai offers are tried.
    pub enum VastAiOfferOrder {
        Score = "score",
        Price = "price",
    }
}

/// How long retrying lasts when `duration` is not set: one hour.
pub const DEFAULT_RETRY_DURATION: i64 = 3600;
/// A run's default `idle_duration`: five minutes.
pub const DEFAULT_RUN_IDLE_DURATION: i64 = 5 * 60;
/// A fleet's default `idle_duration`: three days.
pub const DEFAULT_FLEET_IDLE_DURATION: i64 = 72 * 60 * 60;
/// The default `stop_duration`: five minutes.
pub const DEFAULT_STOP_DURATION: i64 = 300;
/// The shortest `utilization_policy.time_window`: five minutes.
pub const MIN_UTILIZATION_TIME_WINDOW: i64 = 300;

/// `retry`: `true`/`false`, or a policy. Serialized as written (`true` stays `true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Retry {
    Enabled(bool),
    Policy(RetryPolicy),
}

/// `retry: {on_events, duration}`; unset fields mean all events and one hour.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RetryPolicy {
    pub on_events: Option<Vec<RetryEvent>>,
    pub duration: Option<Duration>,
}

impl Retry {
    /// The events retried and for how many seconds, or `None` when retry is off.
    pub fn effective(&self) -> Option<(Vec<RetryEvent>, i64)> {
        let all = || vec![RetryEvent::NoCapacity, RetryEvent::Interruption, RetryEvent::Error];
        match self {
            Retry::Enabled(false) => None,
            Retry::Enabled(true) => Some((all(), DEFAULT_RETRY_DURATION)),
            Retry::Policy(p) => Some((
                p.on_events.clone().unwrap_or_else(all),
                p.duration.map_or(DEFAULT_RETRY_DURATION, |d| d.0),
            )),
        }
    }
}

impl FromNode for RetryPolicy {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let policy = RetryPolicy { on_events: obj.opt(cx, "on_events"), duration: obj.opt(cx, "duration") };
        obj.finish(cx);
        cx.ok_since(mark)?;
        if policy.on_events.as_ref().is_some_and(Vec::is_empty) {
            let at = node.get("on_events").unwrap_or(node);
            cx.at_field("on_events", |cx| cx.error(at, "`on_events` cannot be empty"));
            return None;
        }
        Some(policy)
    }
}

impl FromNode for Retry {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        if let Value::Map(_) = node.value {
            return RetryPolicy::from_node(node, cx).map(Retry::Policy);
        }
        match lax_bool(node) {
            Some(b) => Some(Retry::Enabled(b)),
            None => {
                cx.expected(node, "`true`, `false` or a mapping with `on_events` and `duration`");
                None
            }
        }
    }
}

/// `utilization_policy`: stop the run when any GPU stays below `min_gpu_utilization` percent
/// for the whole `time_window`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UtilizationPolicy {
    pub min_gpu_utilization: i64,
    pub time_window: Duration,
}

impl FromNode for UtilizationPolicy {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let policy = UtilizationPolicy {
            min_gpu_utilization: obj
                .required_with(cx, "min_gpu_utilization", |n, cx| int_in(n, cx, Some(0), Some(100))),
            time_window: obj.required_with(cx, "time_window", |n, cx| {
                let d = Duration::parse(n, cx)?;
                if d.0 < MIN_UTILIZATION_TIME_WINDOW {
                    cx.error(n, "Minimum time_window is 5m");
                    return None;
                }
                Some(d)
            }),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(policy)
    }
}

/// `schedule`: start the run at these UTC times. `cron` is always serialized as a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schedule {
    pub cron: Vec<String>,
}

impl FromNode for Schedule {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let cron = obj.required_with(cx, "cron", |n, cx| {
            let one = |item: &Node, cx: &mut Cx| -> Option<String> {
                let expr = match &item.value {
                    Value::Str(_) | Value::Int(_) | Value::Float(_) => String::from_node(item, cx)?,
                    _ => {
                        cx.expected(item, "a cron expression string");
                        return None;
                    }
                };
                match validate_cron(&expr) {
                    Ok(()) => Some(expr),
                    Err(e) => {
                        cx.error_help(
                            item,
                            e,
                            "write five fields: minute hour day month day-of-week (UTC; day-of-week 0 is Monday)",
                        );
                        None
                    }
                }
            };
            match &n.value {
                Value::Seq(items) if items.is_empty() => {
                    cx.error(n, "At least one cron expression must be specified");
                    None
                }
                Value::Seq(_) => seq_with(n, cx, one),
                Value::Null | Value::Bool(_) | Value::Map(_) | Value::Timestamp(_) => {
                    cx.expected(n, "a cron expression or a list of them");
                    None
                }
                _ => one(n, cx).map(|e| vec![e]),
            }
        });
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(Schedule { cron })
    }
}

/// The fields of a crontab line in the order APScheduler checks them: (index in the line,
/// field name, minimum, maximum).
const CRON_FIELDS: [(usize, &str, i128, i128); 5] = [
    (3, "month", 1, 12),
    (2, "day", 1, 31),
    (4, "day_of_week", 0, 6),
    (1, "hour", 0, 23),
    (0, "minute", 0, 59),
];

const MONTHS: [&str; 12] =
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Checks a five-field crontab expression as APScheduler 3's `CronTrigger.from_crontab` does
/// (dstack's check), with its messages. Day-of-week 0 is Monday.
pub fn validate_cron(expr: &str) -> Result<(), String> {
    let fields: Vec<&str> = expr
        .split(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
        .filter(|f| !f.is_empty())
        .collect();
    if fields.len() != 5 {
        return Err(format!("Wrong number of fields; got {}, expected 5", fields.len()));
    }
    for (index, name, min, max) in CRON_FIELDS {
        for part in fields[index].split(',') {
            cron_part(part, name, min, max)?;
        }
    }
    Ok(())
}

/// A run of ASCII digits at the start of `s`, as a number, and the rest.
fn cron_number(s: &str) -> Option<(Result<i128, ()>, &str)> {
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    if end == 0 {
        return None;
    }
    let digits = s[..end].trim_start_matches('0');
    let value = if digits.len() > 30 { Err(()) } else { Ok(digits.parse().unwrap_or(0)) };
    Some((value, &s[end..]))
}

/// A run of ASCII letters at the start of `s`, and the rest.
fn cron_word(s: &str) -> Option<(&str, &str)> {
    let end = s.bytes().take_while(u8::is_ascii_alphabetic).count();
    (end > 0).then(|| s.split_at(end))
}

fn cron_part(part: &str, name: &str, min: i128, max: i128) -> Result<(), String> {
    let too_large = || format!("Error validating expression '{part}': the number is too large");
    let wrap = |e: String| format!("Error validating expression '{part}': {e}");
    let step_of = |rest: &str| -> Result<Option<Option<i128>>, String> {
        // `None`: not a valid tail; `Some(None)`: no step; `Some(Some(n))`: `/n`.
        if rest.is_empty() {
            return Ok(Some(None));
        }
        let Some(tail) = rest.strip_prefix('/') else {
            return Ok(None);
        };
        match cron_number(tail) {
            Some((n, "")) => n.map(|n| Some(Some(n))).map_err(|()| too_large()),
            _ => Ok(None),
        }
    };
    let check_step = |step: Option<i128>, range: i128| -> Result<(), String> {
        match step {
            Some(s) if s > range => Err(wrap(format!(
                "the step value ({s}) is higher than the total range of the expression ({range})"
            ))),
            _ => Ok(()),
        }
    };

    // `*` or `*/step`.
    if let Some(rest) = part.strip_prefix('*')
        && let Some(step) = step_of(rest)?
    {
        if step == Some(0) {
            return Err("Increment must be higher than 0".to_owned());
        }
        return check_step(step, max - min);
    }
    // `first`, `first-last`, with an optional `/step`.
    if let Some((first, rest)) = cron_number(part) {
        let (last, rest) = match rest.strip_prefix('-').and_then(cron_number) {
            Some((last, rest)) => (Some(last), rest),
            None => (None, rest),
        };
        if let Some(step) = step_of(rest)? {
            let first = first.map_err(|()| too_large())?;
            let last = last.transpose().map_err(|()| too_large())?;
            if step == Some(0) {
                return Err("Increment must be higher than 0".to_owned());
            }
            let last = if last.is_none() && step.is_none() { Some(first) } else { last };
            if last.is_some_and(|l| first > l) {
                return Err("The minimum value in a range must not be higher than the maximum".to_owned());
            }
            check_step(step, max - min)?;
            if first < min {
                return Err(wrap(format!(
                    "the first value ({first}) is lower than the minimum value ({min})"
                )));
            }
            if let Some(l) = last.filter(|l| *l > max) {
                return Err(wrap(format!("the last value ({l}) is higher than the maximum value ({max})")));
            }
            // APScheduler takes a last value of 0 as unset here.
            let range = last.filter(|l| *l != 0).unwrap_or(max) - first;
            return check_step(step, range);
        }
    }
    // Names: `jan`, `jan-mar` (months) or `mon`, `mon-fri` (days of the week). Like
    // APScheduler, only the start of the text is matched and the rest is ignored.
    let names: Option<(&[&str], i128, &str)> = match name {
        "month" => Some((&MONTHS, 1, "month")),
        "day_of_week" => Some((&WEEKDAYS, 0, "weekday")),
        _ => None,
    };
    if let Some((names, base, what)) = names
        && let Some((first, rest)) = cron_word(part)
    {
        let last = rest.strip_prefix('-').and_then(cron_word).map(|(word, _)| word);
        let index = |word: &str| -> Result<i128, String> {
            let lower = word.to_ascii_lowercase();
            names
                .iter()
                .position(|n| *n == lower)
                .map(|i| i as i128 + base)
                .ok_or_else(|| format!("Invalid {what} name \"{word}\""))
        };
        let first = index(first)?;
        if let Some(last) = last
            && first > index(last)?
        {
            return Err("The minimum value in a range must not be higher than the maximum".to_owned());
        }
        return Ok(());
    }
    // `last` (the last day of the month), matched at the start as APScheduler does.
    if name == "day" && part.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("last")) {
        return Ok(());
    }
    Err(format!("Unrecognized expression \"{part}\" for field \"{name}\""))
}

/// One entry of `instances`: an instance by name, by hostname, or by fleet and number.
/// A bare string is a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum InstanceSelector {
    Name { name: String },
    Hostname { hostname: String },
    Fleet { fleet: EntityReference, instance: i64 },
}

fn non_empty(node: &Node, cx: &mut Cx) -> Option<String> {
    let s = String::from_node(node, cx)?;
    if s.is_empty() {
        cx.error(node, "expected a non-empty string, found an empty string");
        return None;
    }
    Some(s)
}

impl FromNode for InstanceSelector {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Str(_) => non_empty(node, cx).map(|name| InstanceSelector::Name { name }),
            Value::Map(entries) => {
                let has = |k: &str| entries.iter().any(|(key, _)| key.as_str() == Some(k));
                let kinds = [has("name"), has("hostname"), has("fleet") || has("instance")];
                let help = "write `name: NAME`, `hostname: HOST`, or `fleet: FLEET` with `instance: N`";
                match kinds.iter().filter(|k| **k).count() {
                    0 => {
                        cx.error_help(
                            node,
                            "expected an instance selector: `name`, `hostname`, or `fleet` and `instance`",
                            help,
                        );
                        return None;
                    }
                    1 => {}
                    _ => {
                        cx.error_help(
                            node,
                            "an instance selector takes only one of `name`, `hostname`, or `fleet` with `instance`",
                            help,
                        );
                        return None;
                    }
                }
                let mut obj = Object::new(node, cx)?;
                let mark = cx.mark();
                let selector = if kinds[0] {
                    InstanceSelector::Name { name: obj.required_with(cx, "name", non_empty) }
                } else if kinds[1] {
                    InstanceSelector::Hostname { hostname: obj.required_with(cx, "hostname", non_empty) }
                } else {
                    InstanceSelector::Fleet {
                        fleet: obj.required(cx, "fleet"),
                        instance: obj.required_with(cx, "instance", |n, cx| int_in(n, cx, Some(0), None)),
                    }
                };
                obj.finish(cx);
                cx.ok_since(mark)?;
                Some(selector)
            }
            _ => {
                cx.expected(
                    node,
                    "an instance name or a mapping with `name`, `hostname`, or `fleet` and `instance`",
                );
                None
            }
        }
    }
}

/// A `fleets` entry: like [`EntityReference`], but a number is taken as a name (as dstack's
/// `str` fallback does).
fn fleet_reference(node: &Node, cx: &mut Cx) -> Option<EntityReference> {
    match &node.value {
        Value::Int(_) | Value::Float(_) => {
            let text = String::from_node(node, cx)?;
            EntityReference::from_node(&Node::new(Value::Str(text), node.pos), cx)
        }
        _ => EntityReference::from_node(node, cx),
    }
}

/// Vast.ai offer filters (`backend_options` entry with `type: vastai`).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct VastAiOptions {
    pub offer_order: Option<VastAiOfferOrder>,
    pub min_reliability: Option<f64>,
    pub min_score: Option<i64>,
}

/// One `backend_options` entry; `type` defaults to `vastai`, the only backend with options.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum BackendOptions {
    #[serde(rename = "vastai")]
    VastAi(VastAiOptions),
}

impl BackendOptions {
    pub fn backend(&self) -> BackendType {
        match self {
            BackendOptions::VastAi(_) => BackendType::VastAi,
        }
    }
}

impl FromNode for BackendOptions {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        if let Some(t) = obj.raw("type") {
            cx.at_field("type", |cx| {
                if t.as_str() != Some("vastai") {
                    cx.expected(t, "`vastai` (the only backend with options)");
                }
            });
        }
        let options = VastAiOptions {
            offer_order: obj.opt(cx, "offer_order"),
            min_reliability: obj.opt_with(cx, "min_reliability", |n, cx| {
                let v = lax_float(n, cx)?;
                if !(0.0..=1.0).contains(&v) {
                    cx.error(
                        n,
                        format!("expected a number from 0 to 1, found {}", crate::yaml::python_float_repr(v)),
                    );
                    return None;
                }
                Some(v)
            }),
            min_score: obj.opt_with(cx, "min_score", |n, cx| int_in(n, cx, Some(0), None)),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(BackendOptions::VastAi(options))
    }
}

fn backend_options(node: &Node, cx: &mut Cx) -> Option<Vec<BackendOptions>> {
    let options: Vec<BackendOptions> = FromNode::from_node(node, cx)?;
    let mut seen = Vec::new();
    for o in &options {
        let backend = o.backend();
        if seen.contains(&backend) {
            cx.error(node, format!("backend_options contains duplicate entry for backend '{backend}'"));
            return None;
        }
        seen.push(backend);
    }
    Some(options)
}

/// The 20 profile field names, in dstack's order (e.g. for presets, which exclude them).
pub const PROFILE_FIELDS: [&str; 20] = [
    "backends",
    "regions",
    "availability_zones",
    "instance_types",
    "reservation",
    "spot_policy",
    "retry",
    "max_duration",
    "stop_duration",
    "max_price",
    "creation_policy",
    "idle_duration",
    "utilization_policy",
    "startup_order",
    "stop_criteria",
    "schedule",
    "fleets",
    "instances",
    "tags",
    "backend_options",
];

/// The profile fields a fleet does not take (for a fleet-specific hint on unknown fields).
pub const RUN_ONLY_FIELDS: [&str; 9] = [
    "max_duration",
    "stop_duration",
    "creation_policy",
    "utilization_policy",
    "startup_order",
    "stop_criteria",
    "schedule",
    "fleets",
    "instances",
];

/// Which configuration the profile fields are read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileScope {
    /// Runs, presets and `profiles.yml`: all 20 fields.
    Run,
    /// Fleets: the provisioning subset (see the module docs).
    Fleet,
}

/// The profile parameters, serialized with the 20 fields in dstack's order (meant for
/// `#[serde(flatten)]`); `Default` leaves every field unset.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ProfileParams {
    pub backends: Option<Vec<BackendType>>,
    pub regions: Option<Vec<String>>,
    pub availability_zones: Option<Vec<String>>,
    pub instance_types: Option<Vec<String>>,
    pub reservation: Option<String>,
    pub spot_policy: Option<SpotPolicy>,
    pub retry: Option<Retry>,
    pub max_duration: Option<OffDuration>,
    pub stop_duration: Option<OffDuration>,
    pub max_price: Option<f64>,
    pub creation_policy: Option<CreationPolicy>,
    /// Seconds; `-1` (or any negative number, the legacy spelling) means off.
    pub idle_duration: Option<i64>,
    pub utilization_policy: Option<UtilizationPolicy>,
    pub startup_order: Option<StartupOrder>,
    pub stop_criteria: Option<StopCriteria>,
    pub schedule: Option<Schedule>,
    pub fleets: Option<Vec<EntityReference>>,
    pub instances: Option<Vec<InstanceSelector>>,
    pub tags: Option<IndexMap<String, String>>,
    pub backend_options: Option<Vec<BackendOptions>>,
}

impl ProfileParams {
    /// Reads the profile fields of `scope` from an open mapping. Fields outside the scope are
    /// left for the caller's `obj.finish` to report as unknown.
    pub fn read(obj: &mut Object<'_>, cx: &mut Cx, scope: ProfileScope) -> ProfileParams {
        let run = scope == ProfileScope::Run;
        let mut p = ProfileParams {
            backends: obj.opt(cx, "backends"),
            regions: obj.opt(cx, "regions"),
            availability_zones: obj.opt(cx, "availability_zones"),
            instance_types: obj.opt(cx, "instance_types"),
            reservation: obj.opt(cx, "reservation"),
            spot_policy: obj.opt(cx, "spot_policy"),
            retry: obj.opt(cx, "retry"),
            ..ProfileParams::default()
        };
        if run {
            p.max_duration = obj.opt_with(cx, "max_duration", OffDuration::parse_field).flatten();
            p.stop_duration = obj.opt_with(cx, "stop_duration", OffDuration::parse_field).flatten();
        }
        p.max_price = obj.opt_with(cx, "max_price", positive_f64);
        if run {
            p.creation_policy = obj.opt(cx, "creation_policy");
        }
        p.idle_duration = obj.opt_with(cx, "idle_duration", parse_idle_duration).flatten();
        if run {
            p.utilization_policy = obj.opt(cx, "utilization_policy");
            p.startup_order = obj.opt(cx, "startup_order");
            p.stop_criteria = obj.opt(cx, "stop_criteria");
            p.schedule = obj.opt(cx, "schedule");
            p.fleets = obj.opt_with(cx, "fleets", |n, cx| seq_with(n, cx, fleet_reference));
            p.instances = obj.opt_with(cx, "instances", |n, cx| {
                if matches!(&n.value, Value::Seq(items) if items.is_empty()) {
                    cx.error(n, "expected at least one instance selector, found an empty list");
                    return None;
                }
                seq_with(n, cx, InstanceSelector::from_node)
            });
        }
        p.tags = obj.opt_with(cx, "tags", parse_tags);
        p.backend_options = obj.opt_with(cx, "backend_options", backend_options);
        p
    }

    /// These parameters over `base`: every field set here wins, the rest come from `base`
    /// (how a configuration overrides the selected profile).
    pub fn merged_over(&self, base: &ProfileParams) -> ProfileParams {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            a.clone().or_else(|| b.clone())
        }
        ProfileParams {
            backends: pick(&self.backends, &base.backends),
            regions: pick(&self.regions, &base.regions),
            availability_zones: pick(&self.availability_zones, &base.availability_zones),
            instance_types: pick(&self.instance_types, &base.instance_types),
            reservation: pick(&self.reservation, &base.reservation),
            spot_policy: pick(&self.spot_policy, &base.spot_policy),
            retry: pick(&self.retry, &base.retry),
            max_duration: pick(&self.max_duration, &base.max_duration),
            stop_duration: pick(&self.stop_duration, &base.stop_duration),
            max_price: pick(&self.max_price, &base.max_price),
            creation_policy: pick(&self.creation_policy, &base.creation_policy),
            idle_duration: pick(&self.idle_duration, &base.idle_duration),
            utilization_policy: pick(&self.utilization_policy, &base.utilization_policy),
            startup_order: pick(&self.startup_order, &base.startup_order),
            stop_criteria: pick(&self.stop_criteria, &base.stop_criteria),
            schedule: pick(&self.schedule, &base.schedule),
            fleets: pick(&self.fleets, &base.fleets),
            instances: pick(&self.instances, &base.instances),
            tags: pick(&self.tags, &base.tags),
            backend_options: pick(&self.backend_options, &base.backend_options),
        }
    }

    /// Splits fleet-scope parameters into `reservation` and the rest, in a fleet's JSON order.
    pub fn into_fleet(self) -> (Option<String>, FleetProfileParams) {
        (
            self.reservation,
            FleetProfileParams {
                backends: self.backends,
                regions: self.regions,
                availability_zones: self.availability_zones,
                instance_types: self.instance_types,
                spot_policy: self.spot_policy,
                retry: self.retry,
                max_price: self.max_price,
                idle_duration: self.idle_duration,
                tags: self.tags,
                backend_options: self.backend_options,
            },
        )
    }
}

/// A standalone mapping of profile parameters (all 20; unknown keys refused).
impl FromNode for ProfileParams {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let params = ProfileParams::read(&mut obj, cx, ProfileScope::Run);
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(params)
    }
}

deserialize_via_node!(ProfileParams, UtilizationPolicy, BackendOptions);

/// The profile fields of a fleet after `resources`, in its JSON order (meant for
/// `#[serde(flatten)]`); `reservation` goes separately between `nodes` and `resources`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct FleetProfileParams {
    pub backends: Option<Vec<BackendType>>,
    pub regions: Option<Vec<String>>,
    pub availability_zones: Option<Vec<String>>,
    pub instance_types: Option<Vec<String>>,
    pub spot_policy: Option<SpotPolicy>,
    pub retry: Option<Retry>,
    pub max_price: Option<f64>,
    pub idle_duration: Option<i64>,
    pub tags: Option<IndexMap<String, String>>,
    pub backend_options: Option<Vec<BackendOptions>>,
}

impl FleetProfileParams {
    /// Back to [`ProfileParams`] (the run-only fields unset), e.g. to merge with a profile.
    pub fn to_profile_params(&self, reservation: Option<String>) -> ProfileParams {
        ProfileParams {
            backends: self.backends.clone(),
            regions: self.regions.clone(),
            availability_zones: self.availability_zones.clone(),
            instance_types: self.instance_types.clone(),
            reservation,
            spot_policy: self.spot_policy,
            retry: self.retry.clone(),
            max_price: self.max_price,
            idle_duration: self.idle_duration,
            tags: self.tags.clone(),
            backend_options: self.backend_options.clone(),
            ..ProfileParams::default()
        }
    }
}

/// One entry of `profiles.yml`: a name, whether it is the default, and the parameters.
/// Serialized as dstack does: the parameters first, then `name` and `default`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Profile {
    #[serde(flatten)]
    pub params: ProfileParams,
    pub name: String,
    pub default: bool,
}

impl FromNode for Profile {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let params = ProfileParams::read(&mut obj, cx, ProfileScope::Run);
        let profile = Profile {
            params,
            name: obj.field(cx, "name", String::new),
            default: obj.field(cx, "default", || false),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(profile)
    }
}

deserialize_via_node!(Profile);

/// A `profiles.yml` file: `profiles: [ {name, default, ...parameters} ]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ProfilesConfig {
    pub profiles: Vec<Profile>,
}

impl ProfilesConfig {
    /// The first profile marked `default: true`.
    pub fn default_profile(&self) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.default)
    }

    /// The first profile named `name`.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }
}

impl FromNode for ProfilesConfig {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let config = ProfilesConfig { profiles: obj.required(cx, "profiles") };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(config)
    }
}

deserialize_via_node!(ProfilesConfig);

/// The outcome of parsing a `profiles.yml` file.
#[derive(Debug)]
pub struct ParsedProfiles {
    /// Present only when there are no errors.
    pub config: Option<ProfilesConfig>,
    /// Errors and warnings, in the order found.
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses and validates a `profiles.yml` file's text. Never panics.
pub fn parse_profiles(text: &str) -> ParsedProfiles {
    let node = match yaml::load(text) {
        Ok(node) => node,
        Err(e) => {
            return ParsedProfiles {
                config: None,
                diagnostics: vec![Diagnostic {
                    severity: Severity::Error,
                    path: String::new(),
                    pos: e.pos,
                    message: format!("invalid YAML: {}", e.message),
                    help: None,
                }],
            };
        }
    };
    let mut cx = Cx::new();
    let config = ProfilesConfig::from_node(&node, &mut cx);
    let config = if cx.has_errors() { None } else { config };
    ParsedProfiles { config, diagnostics: cx.into_diagnostics() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::load;

    /// Reads `text` as a mapping of profile fields in `scope`; `Ok` holds the JSON of the set
    /// fields only, `Err` every message joined by `; `.
    fn read(text: &str, scope: ProfileScope) -> Result<serde_json::Value, String> {
        let node = load(text).map_err(|e| e.to_string())?;
        let mut cx = Cx::new();
        let params = Object::new(&node, &mut cx).map(|mut obj| {
            let p = ProfileParams::read(&mut obj, &mut cx, scope);
            obj.finish(&mut cx);
            p
        });
        match params {
            Some(p) if !cx.has_errors() => {
                let mut json = serde_json::to_value(&p).map_err(|e| e.to_string())?;
                if let Some(map) = json.as_object_mut() {
                    map.retain(|_, v| !v.is_null());
                }
                Ok(json)
            }
            _ => Err(cx
                .into_diagnostics()
                .iter()
                .map(|d| format!("{}: {}", d.path, d.message))
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }

    /// Input, then the set fields of dstack 0.22.5's `model_dump_json()` for
    /// `type: task\ncommands: [x]\n` plus the input (generated with the real dstack).
    const OK_CASES: &[(&str, &str)] = &[
        (r#"backends: [aws, gcp, remote, verda]"#, r#"{"backends":["aws","gcp","remote","verda"]}"#),
        (r#"regions: [eu-west-1, 1, 2.5]"#, r#"{"regions":["eu-west-1","1","2.5"]}"#),
        (r#"availability_zones: [eu-west-1a]"#, r#"{"availability_zones":["eu-west-1a"]}"#),
        (
            r#"instance_types: [g6e.24xlarge, n1-standard-4]"#,
            r#"{"instance_types":["g6e.24xlarge","n1-standard-4"]}"#,
        ),
        (r#"reservation: r-1"#, r#"{"reservation":"r-1"}"#),
        (r#"reservation: 5"#, r#"{"reservation":"5"}"#),
        (r#"spot_policy: spot"#, r#"{"spot_policy":"spot"}"#),
        (r#"spot_policy: on-demand"#, r#"{"spot_policy":"on-demand"}"#),
        (r#"spot_policy: auto"#, r#"{"spot_policy":"auto"}"#),
        (r#"retry: true"#, r#"{"retry":true}"#),
        (r#"retry: false"#, r#"{"retry":false}"#),
        (r#"retry: yes"#, r#"{"retry":true}"#),
        (r#"retry: 0"#, r#"{"retry":false}"#),
        (r#"retry: "true""#, r#"{"retry":true}"#),
        (r#"retry: {}"#, r#"{"retry":{"on_events":null,"duration":null}}"#),
        (r#"retry: {duration: 1h}"#, r#"{"retry":{"on_events":null,"duration":3600}}"#),
        (r#"retry: {duration: off}"#, r#"{"retry":{"on_events":null,"duration":0}}"#),
        (
            r#"retry: {on_events: [no-capacity, interruption, error], duration: 2d}"#,
            r#"{"retry":{"on_events":["no-capacity","interruption","error"],"duration":172800}}"#,
        ),
        (r#"retry: null"#, r#"{}"#),
        (r#"max_duration: off"#, r#"{"max_duration":"off"}"#),
        (r#"max_duration: false"#, r#"{"max_duration":"off"}"#),
        (r#"max_duration: true"#, r#"{}"#),
        (r#"max_duration: 1h"#, r#"{"max_duration":3600}"#),
        (r#"max_duration: 0"#, r#"{"max_duration":0}"#),
        (r#"stop_duration: 90"#, r#"{"stop_duration":90}"#),
        (r#"stop_duration: "10m""#, r#"{"stop_duration":600}"#),
        (r#"max_price: 1"#, r#"{"max_price":1.0}"#),
        (r#"max_price: "0.5""#, r#"{"max_price":0.5}"#),
        (r#"max_price: true"#, r#"{"max_price":1.0}"#),
        (r#"max_price: 1e-9"#, r#"{"max_price":1e-09}"#),
        (r#"max_price: 2.75"#, r#"{"max_price":2.75}"#),
        (r#"creation_policy: reuse"#, r#"{"creation_policy":"reuse"}"#),
        (r#"creation_policy: reuse-or-create"#, r#"{"creation_policy":"reuse-or-create"}"#),
        (r#"idle_duration: off"#, r#"{"idle_duration":-1}"#),
        (r#"idle_duration: -1"#, r#"{"idle_duration":-1}"#),
        (r#"idle_duration: -5"#, r#"{"idle_duration":-5}"#),
        (r#"idle_duration: 1d"#, r#"{"idle_duration":86400}"#),
        (r#"idle_duration: 0"#, r#"{"idle_duration":0}"#),
        (r#"idle_duration: true"#, r#"{}"#),
        (r#"idle_duration: false"#, r#"{"idle_duration":-1}"#),
        (
            r#"utilization_policy: {min_gpu_utilization: 10, time_window: 5m}"#,
            r#"{"utilization_policy":{"min_gpu_utilization":10,"time_window":300}}"#,
        ),
        (
            r#"utilization_policy: {min_gpu_utilization: 0, time_window: 300}"#,
            r#"{"utilization_policy":{"min_gpu_utilization":0,"time_window":300}}"#,
        ),
        (
            r#"utilization_policy: {min_gpu_utilization: "100", time_window: 1h}"#,
            r#"{"utilization_policy":{"min_gpu_utilization":100,"time_window":3600}}"#,
        ),
        (r#"startup_order: any"#, r#"{"startup_order":"any"}"#),
        (r#"startup_order: master-first"#, r#"{"startup_order":"master-first"}"#),
        (r#"startup_order: workers-first"#, r#"{"startup_order":"workers-first"}"#),
        (r#"stop_criteria: all-done"#, r#"{"stop_criteria":"all-done"}"#),
        (r#"stop_criteria: master-done"#, r#"{"stop_criteria":"master-done"}"#),
        (r#"schedule: {cron: "0 * * * *"}"#, r#"{"schedule":{"cron":["0 * * * *"]}}"#),
        (
            r#"schedule: {cron: ["*/15 0-6 * jan-mar mon-fri", "5 4 last * sun"]}"#,
            r#"{"schedule":{"cron":["*/15 0-6 * jan-mar mon-fri","5 4 last * sun"]}}"#,
        ),
        (r#"schedule: {cron: "0 0 1,15 * 0"}"#, r#"{"schedule":{"cron":["0 0 1,15 * 0"]}}"#),
        (r#"schedule: {cron: "0 12 * * MON-fri"}"#, r#"{"schedule":{"cron":["0 12 * * MON-fri"]}}"#),
        (r#"schedule: {cron: "0\t12 * * 6"}"#, r#"{"schedule":{"cron":["0\t12 * * 6"]}}"#),
        (r#"schedule: {cron: "0 0 lastday * *"}"#, r#"{"schedule":{"cron":["0 0 lastday * *"]}}"#),
        (r#"schedule: {cron: "0 0 * jan5 *"}"#, r#"{"schedule":{"cron":["0 0 * jan5 *"]}}"#),
        (r#"schedule: {cron: "0 0 * * sat-sun/2"}"#, r#"{"schedule":{"cron":["0 0 * * sat-sun/2"]}}"#),
        (r#"schedule: {cron: "0-59/59 * * * *"}"#, r#"{"schedule":{"cron":["0-59/59 * * * *"]}}"#),
        (r#"schedule: {cron: "5/54 * * * *"}"#, r#"{"schedule":{"cron":["5/54 * * * *"]}}"#),
        (r#"schedule: {cron: "0-0/59 * * * *"}"#, r#"{"schedule":{"cron":["0-0/59 * * * *"]}}"#),
        (r#"schedule: {cron: "007 * * * *"}"#, r#"{"schedule":{"cron":["007 * * * *"]}}"#),
        (r#"schedule: null"#, r#"{}"#),
        (
            r#"fleets: [a, p/b, {name: c}, {project: q, name: d}, 5, 1.5]"#,
            r#"{"fleets":[{"project":null,"name":"a"},{"project":"p","name":"b"},{"project":null,"name":"c"},{"project":"q","name":"d"},{"project":null,"name":"5"},{"project":null,"name":"1.5"}]}"#,
        ),
        (r#"fleets: []"#, r#"{"fleets":[]}"#),
        (
            r#"instances: [a, {name: b}, {name: 5}, {hostname: 1.2.3.4}, {fleet: f, instance: 0}, {fleet: p/f, instance: "2"}, {fleet: {project: p, name: f}, instance: 1.0}]"#,
            r#"{"instances":[{"name":"a"},{"name":"b"},{"name":"5"},{"hostname":"1.2.3.4"},{"fleet":{"project":null,"name":"f"},"instance":0},{"fleet":{"project":"p","name":"f"},"instance":2},{"fleet":{"project":"p","name":"f"},"instance":1}]}"#,
        ),
        (r#"instances: null"#, r#"{}"#),
        (r#"tags: {a: b, Team-1: "x y.z:/=_-+@"}"#, r#"{"tags":{"a":"b","Team-1":"x y.z:/=_-+@"}}"#),
        (r#"tags: {}"#, r#"{"tags":{}}"#),
        (r#"tags: null"#, r#"{}"#),
        (
            r#"backend_options: [{}]"#,
            r#"{"backend_options":[{"type":"vastai","offer_order":null,"min_reliability":null,"min_score":null}]}"#,
        ),
        (r#"backend_options: []"#, r#"{"backend_options":[]}"#),
        (
            r#"backend_options: [{type: vastai, offer_order: price, min_reliability: 0.5, min_score: 100}]"#,
            r#"{"backend_options":[{"type":"vastai","offer_order":"price","min_reliability":0.5,"min_score":100}]}"#,
        ),
        (
            r#"backend_options: [{offer_order: score, min_reliability: "1", min_score: "0"}]"#,
            r#"{"backend_options":[{"type":"vastai","offer_order":"score","min_reliability":1.0,"min_score":0}]}"#,
        ),
    ];

    #[test]
    fn accepted_inputs_serialize_as_dstack() {
        for (input, expected) in OK_CASES {
            let expected: serde_json::Value = serde_json::from_str(expected).unwrap();
            assert_eq!(read(input, ProfileScope::Run), Ok(expected), "input: {input}");
        }
    }

    /// Input, then the start of the first error (`path: message`). dstack 0.22.5 refuses
    /// every one of these inputs too; its messages are quoted where the spec marks them exact.
    const ERR_CASES: &[(&str, &str)] = &[
        (
            r#"backends: [foo]"#,
            r#"backends[0]: expected one of `amddevcloud`, `aws`, `azure`, `cloudrift`, `crusoe`, `cudo`, `datacrun"#,
        ),
        (r#"backends: aws"#, r#"backends: expected a list, found a string "aws""#),
        (r#"regions: us"#, r#"regions: expected a list, found a string "us""#),
        (r#"regions: [true]"#, r#"regions[0]: expected a string, found a boolean `true`"#),
        (r#"reservation: [a]"#, r#"reservation: expected a string, found a list"#),
        (
            r#"spot_policy: bad"#,
            r#"spot_policy: expected one of `spot`, `on-demand`, `auto`, found a string "bad""#,
        ),
        (
            r#"spot_policy: 1"#,
            r#"spot_policy: expected one of `spot`, `on-demand`, `auto`, found an integer `1`"#,
        ),
        (
            r#"retry: 2"#,
            r#"retry: expected `true`, `false` or a mapping with `on_events` and `duration`, found an integer `2`"#,
        ),
        (
            r#"retry: "x""#,
            r#"retry: expected `true`, `false` or a mapping with `on_events` and `duration`, found a string "x""#,
        ),
        (
            r#"retry: [a]"#,
            r#"retry: expected `true`, `false` or a mapping with `on_events` and `duration`, found a list"#,
        ),
        (r#"retry: {on_events: []}"#, r#"retry.on_events: `on_events` cannot be empty"#),
        (
            r#"retry: {on_events: [bad]}"#,
            r#"retry.on_events[0]: expected one of `no-capacity`, `interruption`, `error`, found a string "bad""#,
        ),
        (r#"retry: {duration: 1h30m}"#, r#"retry.duration: cannot parse the duration "1h30m""#),
        (r#"retry: {foo: 1}"#, r#"retry.foo: unknown field `foo`"#),
        (r#"max_duration: -1"#, r#"max_duration: Duration cannot be negative"#),
        (r#"max_duration: 10 min"#, r#"max_duration: cannot parse the duration "10 min""#),
        (r#"stop_duration: -1"#, r#"stop_duration: Duration cannot be negative"#),
        (r#"max_price: 0"#, r#"max_price: Input should be greater than 0"#),
        (r#"max_price: -1"#, r#"max_price: Input should be greater than 0"#),
        (r#"max_price: abc"#, r#"max_price: expected a number, found a string "abc""#),
        (r#"max_price: .nan"#, r#"max_price: Input should be greater than 0"#),
        (
            r#"creation_policy: x"#,
            r#"creation_policy: expected one of `reuse`, `reuse-or-create`, found a string "x""#,
        ),
        (r#"idle_duration: 1h30m"#, r#"idle_duration: cannot parse the duration "1h30m""#),
        (
            r#"utilization_policy: {min_gpu_utilization: 101, time_window: 4m}"#,
            r#"utilization_policy.min_gpu_utilization: expected an integer less than or equal to 100, found 101; ut"#,
        ),
        (
            r#"utilization_policy: {min_gpu_utilization: -1, time_window: 5m}"#,
            r#"utilization_policy.min_gpu_utilization: expected an integer greater than or equal to 0, found -1"#,
        ),
        (
            r#"utilization_policy: {min_gpu_utilization: 10}"#,
            r#"utilization_policy.time_window: missing required field `time_window`"#,
        ),
        (
            r#"utilization_policy: {time_window: 1h}"#,
            r#"utilization_policy.min_gpu_utilization: missing required field `min_gpu_utilization`"#,
        ),
        (
            r#"utilization_policy: {min_gpu_utilization: 0, time_window: 300, x: 1}"#,
            r#"utilization_policy.x: unknown field `x`"#,
        ),
        (r#"utilization_policy: 5"#, r#"utilization_policy: expected a mapping, found an integer `5`"#),
        (
            r#"startup_order: x"#,
            r#"startup_order: expected one of `any`, `master-first`, `workers-first`, found a string "x""#,
        ),
        (
            r#"stop_criteria: x"#,
            r#"stop_criteria: expected one of `all-done`, `master-done`, found a string "x""#,
        ),
        (r#"schedule: "0 * * * *""#, r#"schedule: expected a mapping, found a string "0 * * * *""#),
        (r#"schedule: {}"#, r#"schedule.cron: missing required field `cron`"#),
        (r#"schedule: {cron: []}"#, r#"schedule.cron: At least one cron expression must be specified"#),
        (
            r#"schedule: {cron: null}"#,
            r#"schedule.cron: expected a cron expression or a list of them, found null"#,
        ),
        (
            r#"schedule: {cron: [true]}"#,
            r#"schedule.cron[0]: expected a cron expression string, found a boolean `true`"#,
        ),
        (r#"schedule: {cron: "0 0 * * *", x: 1}"#, r#"schedule.x: unknown field `x`"#),
        (r#"schedule: {cron: 5}"#, r#"schedule.cron: Wrong number of fields; got 1, expected 5"#),
        (r#"schedule: {cron: "* * *"}"#, r#"schedule.cron: Wrong number of fields; got 3, expected 5"#),
        (r#"schedule: {cron: "* * * * * *"}"#, r#"schedule.cron: Wrong number of fields; got 6, expected 5"#),
        (
            r#"schedule: {cron: "61 * * * *"}"#,
            r#"schedule.cron: Error validating expression '61': the last value (61) is higher than the maximum valu"#,
        ),
        (
            r#"schedule: {cron: "* 24 * * *"}"#,
            r#"schedule.cron: Error validating expression '24': the last value (24) is higher than the maximum valu"#,
        ),
        (
            r#"schedule: {cron: "* * 0 * *"}"#,
            r#"schedule.cron: Error validating expression '0': the first value (0) is lower than the minimum value "#,
        ),
        (
            r#"schedule: {cron: "* * 32 * *"}"#,
            r#"schedule.cron: Error validating expression '32': the last value (32) is higher than the maximum valu"#,
        ),
        (
            r#"schedule: {cron: "* * * 13 *"}"#,
            r#"schedule.cron: Error validating expression '13': the last value (13) is higher than the maximum valu"#,
        ),
        (
            r#"schedule: {cron: "* * * * 7"}"#,
            r#"schedule.cron: Error validating expression '7': the last value (7) is higher than the maximum value "#,
        ),
        (r#"schedule: {cron: "*/0 * * * *"}"#, r#"schedule.cron: Increment must be higher than 0"#),
        (
            r#"schedule: {cron: "*/60 * * * *"}"#,
            r#"schedule.cron: Error validating expression '*/60': the step value (60) is higher than the total rang"#,
        ),
        (
            r#"schedule: {cron: "5-1 * * * *"}"#,
            r#"schedule.cron: The minimum value in a range must not be higher than the maximum"#,
        ),
        (
            r#"schedule: {cron: "5/55 * * * *"}"#,
            r#"schedule.cron: Error validating expression '5/55': the step value (55) is higher than the total rang"#,
        ),
        (
            r#"schedule: {cron: "0-0/60 * * * *"}"#,
            r#"schedule.cron: Error validating expression '0-0/60': the step value (60) is higher than the total ra"#,
        ),
        (r#"schedule: {cron: "1/0 * * * *"}"#, r#"schedule.cron: Increment must be higher than 0"#),
        (
            r#"schedule: {cron: "x * * * *"}"#,
            r#"schedule.cron: Unrecognized expression "x" for field "minute""#,
        ),
        (
            r#"schedule: {cron: "1,,2 * * * *"}"#,
            r#"schedule.cron: Unrecognized expression "" for field "minute""#,
        ),
        (r#"schedule: {cron: "* * * foo *"}"#, r#"schedule.cron: Invalid month name "foo""#),
        (
            r#"schedule: {cron: "* * * mar-jan *"}"#,
            r#"schedule.cron: The minimum value in a range must not be higher than the maximum"#,
        ),
        (r#"schedule: {cron: "* * * jan-xyz *"}"#, r#"schedule.cron: Invalid month name "xyz""#),
        (r#"schedule: {cron: "* * * * mon-funday"}"#, r#"schedule.cron: Invalid weekday name "funday""#),
        (
            r#"schedule: {cron: "* * * * sun-mon"}"#,
            r#"schedule.cron: The minimum value in a range must not be higher than the maximum"#,
        ),
        (r#"schedule: {cron: "* * last * last"}"#, r#"schedule.cron: Invalid weekday name "last""#),
        (
            r#"schedule: {cron: "jan * * * *"}"#,
            r#"schedule.cron: Unrecognized expression "jan" for field "minute""#,
        ),
        (
            r#"schedule: {cron: "61 * * 13 *"}"#,
            r#"schedule.cron: Error validating expression '13': the last value (13) is higher than the maximum valu"#,
        ),
        (
            r#"schedule: {cron: ["0 * * * *", "61 * * * *"]}"#,
            r#"schedule.cron[1]: Error validating expression '61': the last value (61) is higher than the maximum v"#,
        ),
        (
            r#"schedule: {cron: "1- * * * *"}"#,
            r#"schedule.cron: Unrecognized expression "1-" for field "minute""#,
        ),
        (
            r#"schedule: {cron: "*5 * * * *"}"#,
            r#"schedule.cron: Unrecognized expression "*5" for field "minute""#,
        ),
        (
            r#"fleets: [a/b/c]"#,
            r#"fleets[0]: Invalid entity reference. Only `<name>` or `<project>/<name>` formats are allowed"#,
        ),
        (
            r#"fleets: ["a/"]"#,
            r#"fleets[0]: Invalid entity reference. Only `<name>` or `<project>/<name>` formats are allowed"#,
        ),
        (r#"fleets: [true]"#, r#"fleets[0]: expected a name or `project/name`, found a boolean `true`"#),
        (r#"fleets: [{name: a, x: 1}]"#, r#"fleets[0].x: unknown field `x`"#),
        (r#"fleets: a"#, r#"fleets: expected a list, found a string "a""#),
        (r#"instances: []"#, r#"instances: expected at least one instance selector, found an empty list"#),
        (r#"instances: a"#, r#"instances: expected a list, found a string "a""#),
        (r#"instances: [""]"#, r#"instances[0]: expected a non-empty string"#),
        (
            r#"instances: [5]"#,
            r#"instances[0]: expected an instance name or a mapping with `name`, `hostname`, or `fleet` and `instan"#,
        ),
        (r#"instances: [{name: ""}]"#, r#"instances[0].name: expected a non-empty string"#),
        (r#"instances: [{hostname: ""}]"#, r#"instances[0].hostname: expected a non-empty string"#),
        (
            r#"instances: [{foo: 1}]"#,
            r#"instances[0]: expected an instance selector: `name`, `hostname`, or `fleet` and `instance`"#,
        ),
        (
            r#"instances: [{name: a, hostname: b}]"#,
            r#"instances[0]: an instance selector takes only one of `name`, `hostname`, or `fleet` with `instance`"#,
        ),
        (r#"instances: [{fleet: f}]"#, r#"instances[0].instance: missing required field `instance`"#),
        (r#"instances: [{instance: 0}]"#, r#"instances[0].fleet: missing required field `fleet`"#),
        (
            r#"instances: [{fleet: f, instance: -1}]"#,
            r#"instances[0].instance: expected an integer greater than or equal to 0, found -1"#,
        ),
        (
            r#"instances: [{fleet: 5, instance: 0}]"#,
            r#"instances[0].fleet: expected a name or `project/name`, found an integer `5`"#,
        ),
        (
            r#"instances: [{fleet: a/b/c, instance: 1}]"#,
            r#"instances[0].fleet: Invalid entity reference. Only `<name>` or `<project>/<name>` formats are allowe"#,
        ),
        (
            r#"tags: {"bad key!": x}"#,
            r#"tags: Invalid tag key bad key!. The key must match regex '^[_\-a-zA-Z0-9]{1,60}$'"#,
        ),
        (
            r#"tags: {a: "v!"}"#,
            r#"tags: Invalid tag value v!. The value must match regex '^[a-zA-Z0-9 .:/=_\-+@]{0,256}$'"#,
        ),
        (
            r#"tags: {a: 1}"#,
            r#"tags.a: expected a string (quote numbers and booleans), found an integer `1`"#,
        ),
        (r#"tags: {1: a}"#, r#"tags: expected a string tag name, found an integer `1`"#),
        (r#"tags: [a]"#, r#"tags: expected a mapping of tag names to values, found a list"#),
        (r#"tags: {a: null}"#, r#"tags.a: expected a string (quote numbers and booleans), found null"#),
        (r#"backend_options: {}"#, r#"backend_options: expected a list, found a mapping"#),
        (
            r#"backend_options: [{type: aws}]"#,
            r#"backend_options[0].type: expected `vastai` (the only backend with options), found a string "aws""#,
        ),
        (
            r#"backend_options: [{type: null}]"#,
            r#"backend_options[0].type: expected `vastai` (the only backend with options), found null"#,
        ),
        (
            r#"backend_options: [{type: vastai}, {}]"#,
            r#"backend_options: backend_options contains duplicate entry for backend 'vastai'"#,
        ),
        (
            r#"backend_options: [{min_reliability: 2}]"#,
            r#"backend_options[0].min_reliability: expected a number from 0 to 1, found 2.0"#,
        ),
        (
            r#"backend_options: [{min_score: -1}]"#,
            r#"backend_options[0].min_score: expected an integer greater than or equal to 0, found -1"#,
        ),
        (
            r#"backend_options: [{offer_order: fast}]"#,
            r#"backend_options[0].offer_order: expected one of `score`, `price`, found a string "fast""#,
        ),
        (r#"backend_options: [{x: 1}]"#, r#"backend_options[0].x: unknown field `x`"#),
    ];

    #[test]
    fn refused_inputs() {
        for (input, expected) in ERR_CASES {
            match read(input, ProfileScope::Run) {
                Err(msg) => assert!(msg.starts_with(expected), "input: {input}: {msg:?}"),
                Ok(v) => panic!("input: {input}: accepted as {v}"),
            }
        }
    }

    #[test]
    fn field_lists_match_the_serialization() {
        let json = serde_json::to_value(ProfileParams::default()).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, PROFILE_FIELDS);
        assert!(RUN_ONLY_FIELDS.iter().all(|f| PROFILE_FIELDS.contains(f)));
    }

    #[test]
    fn unset_fields_serialize_as_null_in_dstack_order() {
        // From dstack's JSON for `type: task\ncommands: [x]`.
        let expected = r#"{"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"reservation":null,"spot_policy":null,"retry":null,"max_duration":null,"stop_duration":null,"max_price":null,"creation_policy":null,"idle_duration":null,"utilization_policy":null,"startup_order":null,"stop_criteria":null,"schedule":null,"fleets":null,"instances":null,"tags":null,"backend_options":null}"#;
        assert_eq!(serde_json::to_string(&ProfileParams::default()).unwrap(), expected);
    }

    /// How the fleet module places the fields: `reservation` after `nodes`, the rest after
    /// `resources`.
    #[derive(Serialize)]
    struct FleetShape {
        nodes: i64,
        reservation: Option<String>,
        resources: Option<()>,
        #[serde(flatten)]
        profile: FleetProfileParams,
        ssh_config: Option<()>,
    }

    #[test]
    fn fleet_scope_reads_the_subset_in_fleet_order() {
        let text = "backend_options: [{}]\ntags: {a: b}\nidle_duration: off\nmax_price: 2\n\
                    retry: {duration: 1h}\nspot_policy: auto\nreservation: r\n\
                    instance_types: [t]\navailability_zones: [z]\nregions: [r]\nbackends: [aws]\n";
        let node = load(text).unwrap();
        let mut cx = Cx::new();
        let mut obj = Object::new(&node, &mut cx).unwrap();
        let params = ProfileParams::read(&mut obj, &mut cx, ProfileScope::Fleet);
        obj.finish(&mut cx);
        assert!(!cx.has_errors(), "{:?}", cx.diagnostics());
        let (reservation, profile) = params.clone().into_fleet();
        let shape = FleetShape { nodes: 1, reservation, resources: None, profile, ssh_config: None };
        // The matching part of dstack's JSON for `type: fleet\nnodes: 1\n` plus `text`.
        let expected = r#"{"nodes":1,"reservation":"r","resources":null,"backends":["aws"],"regions":["r"],"availability_zones":["z"],"instance_types":["t"],"spot_policy":"auto","retry":{"on_events":null,"duration":3600},"max_price":2.0,"idle_duration":-1,"tags":{"a":"b"},"backend_options":[{"type":"vastai","offer_order":null,"min_reliability":null,"min_score":null}],"ssh_config":null}"#;
        assert_eq!(serde_json::to_string(&shape).unwrap(), expected);
        let back = shape.profile.to_profile_params(Some("r".to_owned()));
        assert_eq!(back, params);
    }

    #[test]
    fn fleet_scope_leaves_run_only_fields_unknown() {
        for field in [
            "max_duration: 1h",
            "stop_duration: 1h",
            "creation_policy: reuse",
            "utilization_policy: {min_gpu_utilization: 1, time_window: 1h}",
            "startup_order: any",
            "stop_criteria: all-done",
            "schedule: {cron: '* * * * *'}",
            "fleets: [a]",
            "instances: [a]",
        ] {
            let name = field.split(':').next().unwrap_or_default();
            let err = read(field, ProfileScope::Fleet).unwrap_err();
            assert_eq!(err, format!("{name}: unknown field `{name}`"));
            assert!(read(field, ProfileScope::Run).is_ok(), "{field}");
        }
    }

    #[test]
    fn every_field_error_is_reported() {
        let err =
            read("spot_policy: x\nmax_price: 0\ninstances: []\nbogus: 1\n", ProfileScope::Run).unwrap_err();
        let paths: Vec<&str> = err.split("; ").map(|m| m.split(':').next().unwrap_or_default()).collect();
        assert_eq!(paths, ["spot_policy", "max_price", "instances", "bogus"]);
    }

    #[test]
    fn cron_expressions() {
        let ok = [
            "0 * * * *",
            "*/15 0-6 * jan-mar mon-fri",
            "5 4 LAST * SUN",
            "0 0 1,15 * 0",
            "0\t12  * * 6",
            "0 0 * jan5 *",
            "0-0/59 * * * *",
            "007 * * * *",
        ];
        for expr in ok {
            assert_eq!(validate_cron(expr), Ok(()), "{expr}");
        }
        let err = [
            ("", "Wrong number of fields; got 0, expected 5"),
            (
                "0-59/60 * * * *",
                "Error validating expression '0-59/60': the step value (60) is higher than the total range of the expression (59)",
            ),
            ("5-/2 * * * *", "Unrecognized expression \"5-/2\" for field \"minute\""),
            ("1-2-3 * * * *", "Unrecognized expression \"1-2-3\" for field \"minute\""),
            ("* * * * 1-x", "Unrecognized expression \"1-x\" for field \"day_of_week\""),
            (
                "* * * 0 *",
                "Error validating expression '0': the first value (0) is lower than the minimum value (1)",
            ),
            ("99999999999999999999999999999999999 * * * *", "the number is too large"),
        ];
        for (expr, message) in err {
            let got = validate_cron(expr).unwrap_err();
            assert!(got.contains(message), "{expr}: {got}");
        }
    }

    #[test]
    fn retry_effective_policy() {
        let all = vec![RetryEvent::NoCapacity, RetryEvent::Interruption, RetryEvent::Error];
        assert_eq!(Retry::Enabled(false).effective(), None);
        assert_eq!(Retry::Enabled(true).effective(), Some((all.clone(), 3600)));
        let policy = Retry::Policy(RetryPolicy { on_events: Some(vec![RetryEvent::Error]), duration: None });
        assert_eq!(policy.effective(), Some((vec![RetryEvent::Error], 3600)));
        let policy = Retry::Policy(RetryPolicy { on_events: None, duration: Some(Duration(60)) });
        assert_eq!(policy.effective(), Some((all, 60)));
    }

    #[test]
    fn configuration_overrides_profile() {
        let parse = |text: &str| -> ProfileParams {
            serde_json::from_value(serde_json::to_value(load(text).unwrap().to_json()).unwrap()).unwrap()
        };
        let profile = parse("{backends: [aws], max_price: 2, spot_policy: spot}");
        let conf = parse("{max_price: 1, regions: [eu]}");
        let merged = conf.merged_over(&profile);
        assert_eq!(merged.backends, Some(vec![BackendType::Aws]));
        assert_eq!(merged.max_price, Some(1.0));
        assert_eq!(merged.spot_policy, Some(SpotPolicy::Spot));
        assert_eq!(merged.regions, Some(vec!["eu".to_owned()]));
        assert_eq!(merged.retry, None);
    }

    #[test]
    fn wire_json_round_trips() {
        let json = r#"{"backends":["aws"],"regions":null,"availability_zones":null,"instance_types":null,"reservation":null,"spot_policy":"spot","retry":true,"max_duration":"off","stop_duration":300,"max_price":1.5,"creation_policy":"reuse","idle_duration":-1,"utilization_policy":{"min_gpu_utilization":10,"time_window":600},"startup_order":"any","stop_criteria":"master-done","schedule":{"cron":["0 * * * *"]},"fleets":[{"project":"p","name":"f"}],"instances":[{"name":"a"},{"hostname":"h"},{"fleet":{"project":null,"name":"f"},"instance":0}],"tags":{"a":"b"},"backend_options":[{"type":"vastai","offer_order":"price","min_reliability":0.5,"min_score":1}]}"#;
        let params: ProfileParams = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&params).unwrap(), json);
        assert!(serde_json::from_str::<ProfileParams>(r#"{"max_price":0}"#).is_err());
    }

    /// `profiles.yml` texts, then dstack's `ProfilesConfig.model_dump_json()` with the null
    /// profile parameters left out (or an error substring).
    const PROFILES_CASES: &[(&str, Result<&str, &str>)] = &[
        (
            "profiles:\n  - name: a\n    default: true\n    backends: [aws]\n    retry: true\n  - name: 5\n",
            Ok(
                r#"{"profiles":[{"backends":["aws"],"retry":true,"name":"a","default":true},{"name":"5","default":false}]}"#,
            ),
        ),
        ("profiles: []", Ok(r#"{"profiles":[]}"#)),
        ("profiles: [{}]", Ok(r#"{"profiles":[{"name":"","default":false}]}"#)),
        (
            "profiles: [{name: a, default: yes, max_duration: 1h}]",
            Ok(r#"{"profiles":[{"max_duration":3600,"name":"a","default":true}]}"#),
        ),
        ("{}", Err("missing required field `profiles`")),
        ("", Err("expected a mapping, found null")),
        ("profiles: 5", Err("expected a list, found an integer `5`")),
        ("profiles: [{name: a, x: 1}]", Err("unknown field `x`")),
        ("profiles: [{name: null}]", Err("expected a string, found null")),
        ("profiles: [{default: null}]", Err("expected a boolean")),
        ("profiles: [{nmae: a}]", Err("did you mean `name`?")),
        ("profiles: [", Err("invalid YAML")),
    ];

    #[test]
    fn profiles_files() {
        for (text, expected) in PROFILES_CASES {
            let parsed = parse_profiles(text);
            match (expected, parsed.config) {
                (Ok(json), Some(config)) => {
                    let mut got = serde_json::to_value(&config).unwrap();
                    for p in got["profiles"].as_array_mut().unwrap() {
                        p.as_object_mut().unwrap().retain(|_, v| !v.is_null());
                    }
                    let want: serde_json::Value = serde_json::from_str(json).unwrap();
                    assert_eq!(got, want, "{text:?}");
                }
                (Err(sub), None) => {
                    let all: Vec<String> = parsed
                        .diagnostics
                        .iter()
                        .map(|d| d.message.clone() + &d.help.clone().unwrap_or_default())
                        .collect();
                    assert!(all.iter().any(|m| m.contains(sub)), "{text:?}: {all:?}");
                }
                (_, got) => panic!("{text:?}: expected {expected:?}, got {got:?}"),
            }
        }
        let parsed = parse_profiles("profiles: [{name: a}, {name: b, default: true}]");
        let config = parsed.config.unwrap();
        assert_eq!(config.default_profile().map(|p| p.name.as_str()), Some("b"));
        assert_eq!(config.get("a").map(|p| p.default), Some(false));
        assert!(config.get("c").is_none());
    }
}
