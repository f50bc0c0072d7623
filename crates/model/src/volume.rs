//! `type: volume`: dstack 0.22.5's volume configurations, discriminated a second time by
//! `backend`: `aws`, `gcp`, `runpod`, `kubernetes`, and also `daytona` and `lium`, which the
//! real 0.22.5 has and the spec does not list.
//!
//! Each backend accepts its own fields and serializes them in its own order, as dstack's
//! per-backend models do.
//!
//! Deliberate differences from dstack: none in parsing. dstack reports a missing `backend`
//! against the first-stage model and an unknown one with Python enum reprs; here both are
//! plain "expected one of" errors.

use indexmap::IndexMap;
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::common::{Memory, parse_idle_duration, parse_tags};
use crate::common::{RESOURCE_NAME_ERROR, check_type_tag, is_valid_resource_name};
use crate::de::{Cx, FromNode, Object, choice};
use crate::yaml::Node;

/// The `backend` values a volume may have, in dstack's order.
pub const VOLUME_BACKENDS: &[&str] = &["aws", "gcp", "runpod", "kubernetes", "daytona", "lium"];

/// The backend-specific part of a volume configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeBackend {
    Aws(CloudDisk),
    Gcp(CloudDisk),
    Runpod(RunpodVolume),
    Kubernetes(KubernetesVolume),
    Daytona(ExternalOnly),
    Lium(ExternalOnly),
}

/// An EBS volume or a GCP persistent disk.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CloudDisk {
    pub size: Option<Memory>,
    /// Registers an existing disk instead of creating one.
    pub volume_id: Option<String>,
    pub region: String,
    pub availability_zone: Option<String>,
}

/// A RunPod network volume.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunpodVolume {
    pub size: Option<Memory>,
    pub volume_id: Option<String>,
    pub region: String,
    /// Accepted for old clients, ignored, and not serialized.
    pub availability_zone: Option<String>,
}

/// A Kubernetes PersistentVolumeClaim.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesVolume {
    pub size: Option<Memory>,
    /// The cluster; `""` by default.
    pub region: String,
    /// Registers an existing PVC instead of creating one.
    pub claim_name: Option<String>,
    pub storage_class_name: Option<String>,
    pub access_modes: Vec<String>,
    pub read_only: bool,
}

/// A backend whose volumes can only be registered, not created.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExternalOnly {
    pub volume_id: Option<String>,
}

/// A volume configuration (`type: volume`).
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeConfiguration {
    pub name: Option<String>,
    /// Seconds unused before deletion; `-1` (or another negative number) means off, unset
    /// means keep forever.
    pub auto_cleanup_duration: Option<i64>,
    pub tags: Option<IndexMap<String, String>>,
    pub backend: VolumeBackend,
}

impl VolumeConfiguration {
    /// The `backend` value.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            VolumeBackend::Aws(_) => "aws",
            VolumeBackend::Gcp(_) => "gcp",
            VolumeBackend::Runpod(_) => "runpod",
            VolumeBackend::Kubernetes(_) => "kubernetes",
            VolumeBackend::Daytona(_) => "daytona",
            VolumeBackend::Lium(_) => "lium",
        }
    }

    /// The size, for backends that have one.
    pub fn size(&self) -> Option<Memory> {
        match &self.backend {
            VolumeBackend::Aws(d) | VolumeBackend::Gcp(d) => d.size,
            VolumeBackend::Runpod(r) => r.size,
            VolumeBackend::Kubernetes(k) => k.size,
            VolumeBackend::Daytona(_) | VolumeBackend::Lium(_) => None,
        }
    }

    /// The identifier of an existing volume being registered (`volume_id`, or `claim_name`
    /// on Kubernetes); such a volume is external.
    pub fn external_volume_id(&self) -> Option<&str> {
        match &self.backend {
            VolumeBackend::Aws(d) | VolumeBackend::Gcp(d) => d.volume_id.as_deref(),
            VolumeBackend::Runpod(r) => r.volume_id.as_deref(),
            VolumeBackend::Kubernetes(k) => k.claim_name.as_deref(),
            VolumeBackend::Daytona(e) | VolumeBackend::Lium(e) => e.volume_id.as_deref(),
        }
    }

    /// The checks dstack's server runs on a volume configuration that need no server
    /// state, with dstack's messages, in dstack's order (dstack stops at the first).
    pub fn static_checks(&self) -> Vec<String> {
        let mut out = Vec::new();
        let has_size = !matches!(self.backend, VolumeBackend::Daytona(_) | VolumeBackend::Lium(_));
        if has_size && self.external_volume_id().is_none() && self.size().is_none() {
            out.push("Volume must specify either existing identifier or size".to_owned());
        }
        if let Some(name) = &self.name
            && !is_valid_resource_name(name)
        {
            out.push(RESOURCE_NAME_ERROR.to_owned());
        }
        if self.external_volume_id().is_some() && self.auto_cleanup_duration.is_some_and(|d| d > 0) {
            out.push(
                "External volumes do not support auto_cleanup_duration. Auto-cleanup only works for volumes created and managed by dstack."
                    .to_owned(),
            );
        }
        out
    }
}

impl FromNode for VolumeConfiguration {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        check_type_tag(&mut obj, cx, "volume");
        let backend = match obj.raw("backend") {
            None => {
                cx.at_field("backend", |cx| {
                    cx.error_help(
                        node,
                        "missing required field `backend`",
                        format!("set `backend` to one of {}", list(VOLUME_BACKENDS)),
                    )
                });
                None
            }
            Some(n) => cx.at_field("backend", |cx| choice(n, cx, VOLUME_BACKENDS)),
        };
        let name = obj.opt(cx, "name");
        let auto_cleanup_duration = obj.opt_with(cx, "auto_cleanup_duration", parse_idle_duration).flatten();
        let tags = obj.opt_with(cx, "tags", parse_tags);
        // Without a valid backend, the backend's fields cannot be told from unknown ones.
        let backend = backend?;
        let size = |obj: &mut Object<'_>, cx: &mut Cx| obj.opt::<Memory>(cx, "size");
        let backend = match backend {
            "aws" | "gcp" => {
                let disk = CloudDisk {
                    size: size(&mut obj, cx),
                    volume_id: obj.opt(cx, "volume_id"),
                    region: obj.required(cx, "region"),
                    availability_zone: obj.opt(cx, "availability_zone"),
                };
                if backend == "aws" { VolumeBackend::Aws(disk) } else { VolumeBackend::Gcp(disk) }
            }
            "runpod" => VolumeBackend::Runpod(RunpodVolume {
                size: size(&mut obj, cx),
                volume_id: obj.opt(cx, "volume_id"),
                region: obj.required(cx, "region"),
                availability_zone: obj.opt(cx, "availability_zone"),
            }),
            "kubernetes" => VolumeBackend::Kubernetes(KubernetesVolume {
                size: size(&mut obj, cx),
                region: obj.field(cx, "region", String::new),
                claim_name: obj.opt(cx, "claim_name"),
                storage_class_name: obj.opt(cx, "storage_class_name"),
                access_modes: obj.field(cx, "access_modes", || vec!["ReadWriteOnce".to_owned()]),
                read_only: obj.field(cx, "read_only", || false),
            }),
            "daytona" => VolumeBackend::Daytona(ExternalOnly { volume_id: obj.opt(cx, "volume_id") }),
            _ => VolumeBackend::Lium(ExternalOnly { volume_id: obj.opt(cx, "volume_id") }),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(VolumeConfiguration { name, auto_cleanup_duration, tags, backend })
    }
}

crate::deserialize_via_node!(VolumeConfiguration);

fn list(items: &[&str]) -> String {
    items.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
}

impl Serialize for VolumeConfiguration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", "volume")?;
        m.serialize_entry("backend", self.backend_name())?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("auto_cleanup_duration", &self.auto_cleanup_duration)?;
        m.serialize_entry("tags", &self.tags)?;
        match &self.backend {
            VolumeBackend::Aws(d) | VolumeBackend::Gcp(d) => {
                m.serialize_entry("size", &d.size)?;
                m.serialize_entry("volume_id", &d.volume_id)?;
                m.serialize_entry("region", &d.region)?;
                m.serialize_entry("availability_zone", &d.availability_zone)?;
            }
            VolumeBackend::Runpod(r) => {
                m.serialize_entry("size", &r.size)?;
                m.serialize_entry("volume_id", &r.volume_id)?;
                m.serialize_entry("region", &r.region)?;
            }
            VolumeBackend::Kubernetes(k) => {
                m.serialize_entry("size", &k.size)?;
                m.serialize_entry("region", &k.region)?;
                m.serialize_entry("claim_name", &k.claim_name)?;
                m.serialize_entry("storage_class_name", &k.storage_class_name)?;
                m.serialize_entry("access_modes", &k.access_modes)?;
                m.serialize_entry("read_only", &k.read_only)?;
            }
            VolumeBackend::Daytona(e) | VolumeBackend::Lium(e) => {
                m.serialize_entry("volume_id", &e.volume_id)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use crate::fleet::test_support::{check_err, check_json};

    // Spec §13 E8 and I6, verbatim.
    const E8: &str = r#"type: volume
name: ckpt-0
backend: aws
region: us-east-1
availability_zone: us-east-1a
size: 500GB
auto_cleanup_duration: 7d
tags:
  team: research
"#;

    const I6: &str = r#"type: volume
name: data
backend: aws
size: 100GB
"#;

    #[test]
    fn volumes_parse_as_dstack_does() {
        let cases: &[(&str, &str)] = &[
            (
                E8,
                r#"{"type":"volume","backend":"aws","name":"ckpt-0","auto_cleanup_duration":604800,"tags":{"team":"research"},"size":500.0,"volume_id":null,"region":"us-east-1","availability_zone":"us-east-1a"}"#,
            ),
            (
                "type: volume\nbackend: gcp\nregion: r\nsize: 1",
                r#"{"type":"volume","backend":"gcp","name":null,"auto_cleanup_duration":null,"tags":null,"size":1.0,"volume_id":null,"region":"r","availability_zone":null}"#,
            ),
            (
                "type: volume\nbackend: runpod\nregion: r\navailability_zone: z\nsize: 10.5GB\nvolume_id: v",
                r#"{"type":"volume","backend":"runpod","name":null,"auto_cleanup_duration":null,"tags":null,"size":10.5,"volume_id":"v","region":"r"}"#,
            ),
            (
                "type: volume\nbackend: kubernetes\nclaim_name: c\naccess_modes: [ReadWriteMany]\nread_only: on\nauto_cleanup_duration: off",
                r#"{"type":"volume","backend":"kubernetes","name":null,"auto_cleanup_duration":-1,"tags":null,"size":null,"region":"","claim_name":"c","storage_class_name":null,"access_modes":["ReadWriteMany"],"read_only":true}"#,
            ),
            (
                "type: volume\nbackend: kubernetes\nregion: cl\nsize: 1TB\nstorage_class_name: fast",
                r#"{"type":"volume","backend":"kubernetes","name":null,"auto_cleanup_duration":null,"tags":null,"size":1024.0,"region":"cl","claim_name":null,"storage_class_name":"fast","access_modes":["ReadWriteOnce"],"read_only":false}"#,
            ),
            (
                "type: volume\nbackend: daytona\nvolume_id: x\nname: n",
                r#"{"type":"volume","backend":"daytona","name":"n","auto_cleanup_duration":null,"tags":null,"volume_id":"x"}"#,
            ),
            (
                "type: volume\nbackend: lium\nauto_cleanup_duration: 2h",
                r#"{"type":"volume","backend":"lium","name":null,"auto_cleanup_duration":7200,"tags":null,"volume_id":null}"#,
            ),
            (
                "type: volume\nbackend: aws\nregion: r\nauto_cleanup_duration: -5\nsize: 512MB",
                r#"{"type":"volume","backend":"aws","name":null,"auto_cleanup_duration":-5,"tags":null,"size":0.5,"volume_id":null,"region":"r","availability_zone":null}"#,
            ),
        ];
        for (yaml, json) in cases {
            check_json(yaml, json);
        }
    }

    #[test]
    fn volume_errors() {
        let cases: &[(&str, &str)] = &[
            (I6, "`region`: missing required field `region`"),
            ("type: volume\nbackend: gcp\nsize: 1", "`region`: missing required field `region`"),
            ("type: volume\nregion: r", "`backend`: missing required field `backend`"),
            (
                "type: volume\nbackend: azure\nregion: r",
                "`backend`: expected one of `aws`, `gcp`, `runpod`, `kubernetes`, `daytona`, `lium`, found",
            ),
            ("type: volume\nbackend: AWS\nregion: r", "did you mean `aws`?"),
            ("type: volume\nbackend: aws\nregion: r\nfoo: 1", "unknown field `foo`"),
            ("type: volume\nbackend: lium\nsize: 1", "unknown field `size`"),
            ("type: volume\nbackend: daytona\nregion: r", "unknown field `region`"),
            ("type: volume\nbackend: aws\nregion: r\nsize: x", "`size`: cannot read \"x\" as a memory size"),
            ("type: volume\nbackend: kubernetes\nregion: null", "`region`: expected a string, found null"),
            ("type: volume\nbackend: aws\nregion: r\ntags: {\"a b\": c}", "Invalid tag key a b"),
        ];
        for (yaml, err) in cases {
            check_err(yaml, err);
        }
    }

    #[test]
    fn volume_static_checks() {
        let cases: &[(&str, &[&str])] = &[
            (E8, &[]),
            (
                "type: volume\nbackend: aws\nregion: r\nname: Data",
                &[
                    "Volume must specify either existing identifier or size",
                    "Resource name should match regex '^[a-z][a-z0-9-]{1,40}$'",
                ],
            ),
            ("type: volume\nbackend: kubernetes\nclaim_name: c", &[]),
            ("type: volume\nbackend: lium", &[]),
            (
                "type: volume\nbackend: aws\nregion: r\nvolume_id: vol-1\nauto_cleanup_duration: 1h",
                &[
                    "External volumes do not support auto_cleanup_duration. Auto-cleanup only works for volumes created and managed by dstack.",
                ],
            ),
            ("type: volume\nbackend: aws\nregion: r\nvolume_id: vol-1\nauto_cleanup_duration: off", &[]),
        ];
        for (yaml, expected) in cases {
            let parsed = crate::parse_configuration(yaml);
            let Some(crate::AnyConfiguration::Volume(volume)) = parsed.configuration else {
                panic!("{yaml}: {:?}", parsed.diagnostics);
            };
            assert_eq!(volume.static_checks(), *expected, "{yaml}");
        }
    }
}
