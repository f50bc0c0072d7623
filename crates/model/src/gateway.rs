//! `type: gateway`: dstack 0.22.5's `GatewayConfiguration`, including `load_balancer` and
//! the `gcp-cm` certificate, which the spec does not list.
//!
//! Deliberate differences from dstack: `backend: local` with its `local` settings (ours: the
//! gateway runs on the server's machine as a `dstack gateway run` child process; no `region`
//! needed), and `local.ssh` (ours: the same process on a host the server reaches over SSH, as
//! dstack runs its gateway on a VM it reaches by SSH; the fields are those of a host of an SSH
//! fleet's `ssh_config`); otherwise none in parsing. [`GatewayConfiguration::static_checks`]
//! does not check that `domain` interpolates (dstack's server does); and it uses dstack's
//! default replica limit, [`GATEWAY_MAX_REPLICAS`], not `DSTACK_SERVER_GATEWAY_MAX_REPLICAS`.

use indexmap::IndexMap;
use serde::Serialize;

use crate::common::{BackendType, parse_tags};
use crate::common::{RESOURCE_NAME_ERROR, check_type_tag, is_valid_resource_name, read_tag};
use crate::de::{Cx, FromNode, Object, int_in};
use crate::fleet::SshKey;
use crate::yaml::Node;

/// dstack's default for `DSTACK_SERVER_GATEWAY_MAX_REPLICAS`.
pub const GATEWAY_MAX_REPLICAS: i64 = 9;

/// The backends whose compute supports gateways, in dstack's order.
pub const BACKENDS_WITH_GATEWAY_SUPPORT: &[BackendType] =
    &[BackendType::Aws, BackendType::Azure, BackendType::Gcp, BackendType::Kubernetes];

/// The backends that support gateways without a public IP.
pub const BACKENDS_WITH_PRIVATE_GATEWAY_SUPPORT: &[BackendType] = &[BackendType::Aws, BackendType::Gcp];

/// How the gateway gets its TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum GatewayCertificate {
    /// Automatic certificates by Let's Encrypt (the default).
    #[serde(rename = "lets-encrypt")]
    LetsEncrypt,
    /// A wildcard certificate in AWS Certificate Manager.
    #[serde(rename = "acm")]
    Acm { arn: String },
    /// A certificate in Google Cloud Certificate Manager (full resource name).
    #[serde(rename = "gcp-cm")]
    GcpCm { name: String },
}

const CERTIFICATE_TYPES: &[&str] = &["lets-encrypt", "acm", "gcp-cm"];

impl FromNode for GatewayCertificate {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let tag = read_tag(node, cx, CERTIFICATE_TYPES)?;
        let mut obj = Object::new(node, cx)?;
        obj.allow(&["type"]);
        let mark = cx.mark();
        let cert = match tag {
            "lets-encrypt" => GatewayCertificate::LetsEncrypt,
            "acm" => GatewayCertificate::Acm { arn: obj.required(cx, "arn") },
            _ => GatewayCertificate::GcpCm { name: obj.required(cx, "name") },
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(cert)
    }
}

/// A load balancer in front of the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum GatewayLoadBalancer {
    /// An Application Load Balancer (aws, gcp).
    #[serde(rename = "alb")]
    Alb,
}

impl FromNode for GatewayLoadBalancer {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        read_tag(node, cx, &["alb"])?;
        let mut obj = Object::new(node, cx)?;
        obj.allow(&["type"]);
        let mark = cx.mark();
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(GatewayLoadBalancer::Alb)
    }
}

/// Where a gateway runs: one of dstack's backends, or `local` (ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayBackend {
    Backend(BackendType),
    /// The server's own machine (a child process of the server).
    Local,
}

impl std::fmt::Display for GatewayBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GatewayBackend::Backend(b) => b.fmt(f),
            GatewayBackend::Local => f.write_str("local"),
        }
    }
}

impl Serialize for GatewayBackend {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromNode for GatewayBackend {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        if node.as_str() == Some("local") {
            return Some(GatewayBackend::Local);
        }
        BackendType::from_node(node, cx).map(GatewayBackend::Backend)
    }
}

/// `local:` (ours, with `backend: local`): where the local gateway process listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalGateway {
    /// The address the HTTP and HTTPS listeners bind (default `0.0.0.0`).
    pub host: String,
    /// The services' plain HTTP port.
    pub http_port: i64,
    /// The services' HTTPS port; unset: no HTTPS.
    pub https_port: Option<i64>,
    /// Certificates: `<cert_dir>/<domain>/fullchain.pem` and `privkey.pem` (or a wildcard
    /// `*.<parent>` directory); unset: `certs` under the gateway's state directory. With
    /// `ssh`, a directory on that host.
    pub cert_dir: Option<String>,
    /// Ours: run the gateway on this host, reached over SSH, instead of the server's machine;
    /// `host` and the ports are then that host's. Absent from the JSON when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<GatewaySshHost>,
}

/// `local.ssh` (ours): the host a gateway runs on, with the field names of a host of an SSH
/// fleet's `ssh_config`. The CLI reads `identity_file` into `ssh_key`, as for fleets; the
/// server needs `ssh_key.private` and never shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewaySshHost {
    pub hostname: String,
    /// Unset means 22.
    pub port: Option<i64>,
    pub user: String,
    pub identity_file: Option<String>,
    pub ssh_key: Option<SshKey>,
}

impl FromNode for GatewaySshHost {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let hostname = obj.required_with(cx, "hostname", |n, cx| non_empty(n, cx).map(Some));
        let port = obj.opt_with(cx, "port", port);
        let user = obj.required_with(cx, "user", |n, cx| non_empty(n, cx).map(Some));
        let identity_file = obj.opt_with(cx, "identity_file", non_empty);
        let ssh_key: Option<SshKey> = obj.opt(cx, "ssh_key");
        obj.finish(cx);
        cx.ok_since(mark)?;
        if identity_file.is_none() && ssh_key.is_none() {
            cx.error(
                node,
                "missing required field `identity_file` (the private key the server connects with)",
            );
            return None;
        }
        Some(GatewaySshHost { hostname: hostname?, port, user: user?, identity_file, ssh_key })
    }
}

fn port(node: &Node, cx: &mut Cx) -> Option<i64> {
    int_in(node, cx, Some(1), Some(65535))
}

impl FromNode for LocalGateway {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let host = obj.field_with(
            cx,
            "host",
            || "0.0.0.0".to_owned(),
            |n, cx| {
                let s = String::from_node(n, cx)?;
                if s.parse::<std::net::IpAddr>().is_err() {
                    cx.expected(n, "an IP address to listen on, e.g. 0.0.0.0 or 127.0.0.1");
                    return None;
                }
                Some(s)
            },
        );
        let http_port = obj.required_with(cx, "http_port", |n, cx| port(n, cx).map(Some));
        let https_port = obj.opt_with(cx, "https_port", port);
        let cert_dir = obj.opt_with(cx, "cert_dir", non_empty);
        let ssh = obj.opt(cx, "ssh");
        obj.finish(cx);
        cx.ok_since(mark)?;
        if https_port.is_some() && https_port == http_port {
            cx.error(node, "`http_port` and `https_port` must differ");
            return None;
        }
        Some(LocalGateway { host, http_port: http_port?, https_port, cert_dir, ssh })
    }
}

/// Serializes as `"gateway"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GatewayTag;

impl Serialize for GatewayTag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("gateway")
    }
}

/// A gateway configuration (`type: gateway`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayConfiguration {
    #[serde(rename = "type")]
    pub type_: GatewayTag,
    pub name: Option<String>,
    /// Unset on create: becomes the default unless one exists. Unset on update: unchanged.
    pub default: Option<bool>,
    pub backend: GatewayBackend,
    /// `local` when `backend: local` leaves it unset.
    pub region: String,
    pub instance_type: Option<String>,
    /// The wildcard domain; may contain `${{ run.project_name }}`.
    pub domain: Option<String>,
    pub public_ip: bool,
    pub load_balancer: Option<GatewayLoadBalancer>,
    /// `None` means no HTTPS (`certificate: null`).
    pub certificate: Option<GatewayCertificate>,
    /// Unset means 1.
    pub replicas: Option<i64>,
    pub tags: Option<IndexMap<String, String>>,
    /// Ours: set exactly when `backend: local`; absent from the JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalGateway>,
}

fn non_empty(node: &Node, cx: &mut Cx) -> Option<String> {
    let s = String::from_node(node, cx)?;
    if s.is_empty() {
        cx.error(node, "String should have at least 1 character");
        return None;
    }
    Some(s)
}

impl FromNode for GatewayConfiguration {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        check_type_tag(&mut obj, cx, "gateway");
        let name = obj.opt(cx, "name");
        let default = obj.opt(cx, "default");
        let backend = obj.required_with(cx, "backend", |n, cx| GatewayBackend::from_node(n, cx).map(Some));
        let region = if backend == Some(GatewayBackend::Local) {
            obj.field(cx, "region", || "local".to_owned())
        } else {
            obj.required(cx, "region")
        };
        let local_node = obj.raw("local");
        let local = match (backend, local_node) {
            (Some(GatewayBackend::Local), Some(n)) => {
                cx.at_field("local", |cx| LocalGateway::from_node(n, cx))
            }
            (Some(GatewayBackend::Local), None) => {
                cx.at_field("local", |cx| {
                    cx.error(
                        node,
                        "missing required field `local` (`backend: local` needs `local: {http_port: …}`)",
                    )
                });
                None
            }
            (_, Some(n)) => {
                cx.at_field("local", |cx| cx.error(n, "`local` is only allowed with `backend: local`"));
                None
            }
            (None, None) => None,
            (Some(GatewayBackend::Backend(_)), None) => None,
        };
        let instance_type = obj.opt_with(cx, "instance_type", non_empty);
        let domain = obj.opt(cx, "domain");
        let public_ip = obj.field(cx, "public_ip", || true);
        let load_balancer = obj.opt(cx, "load_balancer");
        let certificate = match obj.raw("certificate") {
            None => Some(GatewayCertificate::LetsEncrypt),
            Some(n) if n.is_null() => None,
            Some(n) => cx.at_field("certificate", |cx| GatewayCertificate::from_node(n, cx)),
        };
        let replicas = obj.opt_with(cx, "replicas", |n, cx| int_in(n, cx, Some(1), None));
        let tags = obj.opt_with(cx, "tags", parse_tags);
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(GatewayConfiguration {
            type_: GatewayTag,
            name,
            default,
            backend: backend?,
            region,
            instance_type,
            domain,
            public_ip,
            load_balancer,
            certificate,
            replicas,
            tags,
            local,
        })
    }
}

crate::deserialize_via_node!(GatewayConfiguration);

fn python_list(backends: &[BackendType]) -> String {
    let items: Vec<String> = backends.iter().map(|b| format!("'{b}'")).collect();
    format!("[{}]", items.join(", "))
}

impl GatewayConfiguration {
    /// The checks dstack's server runs on a gateway configuration that need no server
    /// state, with dstack's messages, in dstack's order (dstack stops at the first).
    pub fn static_checks(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.backend == GatewayBackend::Local {
            return self.local_checks();
        }
        let GatewayBackend::Backend(backend) = self.backend else { return out };
        if !BACKENDS_WITH_GATEWAY_SUPPORT.contains(&backend) {
            out.push(format!(
                "Gateways are not supported for {backend} backend. Available backends with gateway support: {}.",
                python_list(BACKENDS_WITH_GATEWAY_SUPPORT)
            ));
        }
        if let Some(name) = &self.name
            && !is_valid_resource_name(name)
        {
            out.push(RESOURCE_NAME_ERROR.to_owned());
        }
        if !self.public_ip && !BACKENDS_WITH_PRIVATE_GATEWAY_SUPPORT.contains(&backend) {
            // Two spaces after the period, as dstack writes it.
            out.push(format!(
                "Private gateways are not supported for {backend} backend.  Available backends with private gateway support: {}.",
                python_list(BACKENDS_WITH_PRIVATE_GATEWAY_SUPPORT)
            ));
        }
        let replicas = self.replicas.unwrap_or(1);
        if replicas > GATEWAY_MAX_REPLICAS {
            out.push(format!(
                "Cannot provision {replicas} gateway replicas. This server allows at most {GATEWAY_MAX_REPLICAS}"
            ));
        }
        let cert = self.certificate.as_ref();
        if self.load_balancer == Some(GatewayLoadBalancer::Alb) {
            match backend {
                BackendType::Aws => {
                    if cert.is_some_and(|c| !matches!(c, GatewayCertificate::Acm { .. })) {
                        out.push("`load_balancer: { type: alb }` can only be used with `certificate: null` or `certificate: { type: acm }`".to_owned());
                    }
                }
                BackendType::Gcp => {
                    if cert.is_some_and(|c| !matches!(c, GatewayCertificate::GcpCm { .. })) {
                        out.push("`load_balancer: { type: alb }` for the `gcp` backend can only be used with `certificate: null` or `certificate: { type: gcp-cm }`".to_owned());
                    }
                }
                _ => out.push(
                    "`load_balancer: { type: alb }` is supported for `aws` and `gcp` backends only"
                        .to_owned(),
                ),
            }
        }
        match cert {
            Some(GatewayCertificate::LetsEncrypt) if !self.public_ip => {
                out.push("lets-encrypt certificate type is not supported for private gateways".to_owned());
            }
            Some(GatewayCertificate::Acm { .. }) if backend != BackendType::Aws => {
                out.push("acm certificate type is supported for aws backend only".to_owned());
            }
            Some(GatewayCertificate::GcpCm { .. }) => {
                if backend != BackendType::Gcp {
                    out.push("gcp-cm certificate type is supported for gcp backend only".to_owned());
                }
                if self.load_balancer != Some(GatewayLoadBalancer::Alb) {
                    out.push(
                        "`certificate: { type: gcp-cm }` requires `load_balancer: { type: alb }`".to_owned(),
                    );
                }
            }
            _ => {}
        }
        if cert == Some(&GatewayCertificate::LetsEncrypt) && replicas > 1 {
            let mut err = String::from(
                "The `lets-encrypt` certificate type is not supported for gateways with `replicas` greater than `1`. To create a replicated gateway, set the `certificate` configuration property to one of the supported values, such as `certificate: null` (no HTTPS)",
            );
            match backend {
                BackendType::Aws => err.push_str(" or `certificate: { type: acm, arn: <arn> }` (AWS ACM)"),
                BackendType::Gcp => err
                    .push_str(" or `certificate: { type: gcp-cm, name: <name> }` (GCP Certificate Manager)"),
                _ => {}
            }
            out.push(err);
        }
        out
    }

    /// The checks for `backend: local` (ours): one process, so one replica; no load balancer
    /// and no certificate service (the certificate comes from files: `certificate: null` or the
    /// default `lets-encrypt`, which for a local gateway means "HTTPS from `cert_dir`").
    fn local_checks(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(name) = &self.name
            && !is_valid_resource_name(name)
        {
            out.push(RESOURCE_NAME_ERROR.to_owned());
        }
        if self.replicas.unwrap_or(1) != 1 {
            out.push("A `local` gateway has exactly one replica".to_owned());
        }
        if self.load_balancer.is_some() {
            out.push("`load_balancer` is not supported for `local` gateways".to_owned());
        }
        if matches!(self.certificate, Some(GatewayCertificate::Acm { .. } | GatewayCertificate::GcpCm { .. }))
        {
            out.push("A `local` gateway reads its certificates from `local.cert_dir`: use `certificate: null` or leave `certificate` unset".to_owned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::fleet::test_support::{check_err, check_json};

    // Spec §13 E7, verbatim.
    const E7: &str = r#"type: gateway
name: prod-gw
backend: aws
region: eu-west-1
domain: ${{ run.project_name }}.inference.example.com
instance_type: t3.large
public_ip: true
certificate:
  type: lets-encrypt
default: true
tags:
  env: prod
"#;

    #[test]
    fn gateways_parse_as_dstack_does() {
        let cases: &[(&str, &str)] = &[
            (
                E7,
                r#"{"type":"gateway","name":"prod-gw","default":true,"backend":"aws","region":"eu-west-1","instance_type":"t3.large","domain":"${{ run.project_name }}.inference.example.com","public_ip":true,"load_balancer":null,"certificate":{"type":"lets-encrypt"},"replicas":null,"tags":{"env":"prod"}}"#,
            ),
            (
                "type: gateway\nbackend: aws\nregion: x",
                r#"{"type":"gateway","name":null,"default":null,"backend":"aws","region":"x","instance_type":null,"domain":null,"public_ip":true,"load_balancer":null,"certificate":{"type":"lets-encrypt"},"replicas":null,"tags":null}"#,
            ),
            (
                "type: gateway\nbackend: aws\nregion: r\ncertificate: null\ndefault: yes",
                r#"{"type":"gateway","name":null,"default":true,"backend":"aws","region":"r","instance_type":null,"domain":null,"public_ip":true,"load_balancer":null,"certificate":null,"replicas":null,"tags":null}"#,
            ),
            (
                "type: gateway\nbackend: aws\nregion: r\ncertificate: {type: acm, arn: a}\nload_balancer: {type: alb}\nreplicas: 2",
                r#"{"type":"gateway","name":null,"default":null,"backend":"aws","region":"r","instance_type":null,"domain":null,"public_ip":true,"load_balancer":{"type":"alb"},"certificate":{"type":"acm","arn":"a"},"replicas":2,"tags":null}"#,
            ),
            (
                "type: gateway\nbackend: gcp\nregion: r\npublic_ip: false\ncertificate: {type: gcp-cm, name: n}",
                r#"{"type":"gateway","name":null,"default":null,"backend":"gcp","region":"r","instance_type":null,"domain":null,"public_ip":false,"load_balancer":null,"certificate":{"type":"gcp-cm","name":"n"},"replicas":null,"tags":null}"#,
            ),
        ];
        for (yaml, json) in cases {
            check_json(yaml, json);
        }
    }

    #[test]
    fn local_gateways_parse() {
        check_json(
            "type: gateway\nname: gw\nbackend: local\ndomain: gw.example\nlocal: {http_port: 8080}",
            r#"{"type":"gateway","name":"gw","default":null,"backend":"local","region":"local","instance_type":null,"domain":"gw.example","public_ip":true,"load_balancer":null,"certificate":{"type":"lets-encrypt"},"replicas":null,"tags":null,"local":{"host":"0.0.0.0","http_port":8080,"https_port":8443,"cert_dir":"/c"}}"#
                .replace(r#""https_port":8443,"cert_dir":"/c""#, r#""https_port":null,"cert_dir":null"#)
                .as_str(),
        );
        check_json(
            "type: gateway\nbackend: local\nregion: here\nlocal: {host: 127.0.0.1, http_port: 80, https_port: 443, cert_dir: /c}",
            r#"{"type":"gateway","name":null,"default":null,"backend":"local","region":"here","instance_type":null,"domain":null,"public_ip":true,"load_balancer":null,"certificate":{"type":"lets-encrypt"},"replicas":null,"tags":null,"local":{"host":"127.0.0.1","http_port":80,"https_port":443,"cert_dir":"/c"}}"#,
        );
        check_json(
            "type: gateway\nbackend: local\nlocal:\n  http_port: 80\n  ssh: {hostname: gw.internal, user: ubuntu, identity_file: ~/.ssh/gw}",
            r#"{"type":"gateway","name":null,"default":null,"backend":"local","region":"local","instance_type":null,"domain":null,"public_ip":true,"load_balancer":null,"certificate":{"type":"lets-encrypt"},"replicas":null,"tags":null,"local":{"host":"0.0.0.0","http_port":80,"https_port":null,"cert_dir":null,"ssh":{"hostname":"gw.internal","port":null,"user":"ubuntu","identity_file":"~/.ssh/gw","ssh_key":null}}}"#,
        );
        check_json(
            "type: gateway\nbackend: local\nlocal:\n  http_port: 80\n  ssh: {hostname: h, port: 2222, user: root, ssh_key: {public: p, private: k}}",
            r#"{"type":"gateway","name":null,"default":null,"backend":"local","region":"local","instance_type":null,"domain":null,"public_ip":true,"load_balancer":null,"certificate":{"type":"lets-encrypt"},"replicas":null,"tags":null,"local":{"host":"0.0.0.0","http_port":80,"https_port":null,"cert_dir":null,"ssh":{"hostname":"h","port":2222,"user":"root","identity_file":null,"ssh_key":{"public":"p","private":"k"}}}}"#,
        );
        let errors: &[(&str, &str)] = &[
            ("type: gateway\nbackend: local", "`local`: missing required field `local`"),
            (
                "type: gateway\nbackend: local\nlocal: {http_port: 1, ssh: {hostname: h, user: u}}",
                "`local.ssh`: missing required field `identity_file`",
            ),
            (
                "type: gateway\nbackend: local\nlocal: {http_port: 1, ssh: {user: u, identity_file: k}}",
                "`local.ssh.hostname`: missing required field `hostname`",
            ),
            (
                "type: gateway\nbackend: local\nlocal: {http_port: 1, ssh: {hostname: h, identity_file: k}}",
                "`local.ssh.user`: missing required field `user`",
            ),
            (
                "type: gateway\nbackend: local\nlocal: {http_port: 1, ssh: {hostname: h, user: u, identity_file: k, port: 70000}}",
                "`local.ssh.port`: expected an integer",
            ),
            (
                "type: gateway\nbackend: local\nlocal: {http_port: 1, ssh: {hostname: '', user: u, identity_file: k}}",
                "`local.ssh.hostname`: String should have at least 1 character",
            ),
            (
                "type: gateway\nbackend: local\nlocal: {http_port: 1, ssh: {hostname: h, user: u, identity_file: k, proxy_jump: {}}}",
                "unknown field `proxy_jump`",
            ),
            (
                "type: gateway\nbackend: local\nlocal: {}",
                "`local.http_port`: missing required field `http_port`",
            ),
            (
                "type: gateway\nbackend: local\nlocal: {http_port: 0}",
                "`local.http_port`: expected an integer",
            ),
            (
                "type: gateway\nbackend: local\nlocal: {http_port: 1, host: x}",
                "`local.host`: expected an IP address",
            ),
            ("type: gateway\nbackend: local\nlocal: {http_port: 1, https_port: 1}", "must differ"),
            ("type: gateway\nbackend: local\nlocal: {http_port: 1, port: 2}", "unknown field `port`"),
            (
                "type: gateway\nbackend: aws\nregion: r\nlocal: {http_port: 1}",
                "`local`: `local` is only allowed with `backend: local`",
            ),
        ];
        for (yaml, err) in errors {
            check_err(yaml, err);
        }
    }

    #[test]
    fn gateway_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "type: gateway\nbackend: aws\nregion: r\ncertificate: {type: acm}",
                "`certificate.arn`: missing required field `arn`",
            ),
            (
                "type: gateway\nbackend: aws\nregion: r\ncertificate: {arn: a}",
                "`certificate`: missing required field `type`",
            ),
            (
                "type: gateway\nbackend: aws\nregion: r\ncertificate: {type: x}",
                "`certificate.type`: expected one of `lets-encrypt`, `acm`, `gcp-cm`, found",
            ),
            (
                "type: gateway\nbackend: aws\nregion: r\ncertificate: lets-encrypt",
                "`certificate`: expected a mapping with a `type` field",
            ),
            (
                "type: gateway\nbackend: aws\nregion: r\nload_balancer: {}",
                "`load_balancer`: missing required field `type`",
            ),
            (
                "type: gateway\nbackend: aws\nregion: r\nreplicas: 0",
                "`replicas`: expected an integer greater than or equal to 1, found 0",
            ),
            (
                "type: gateway\nbackend: aws\nregion: r\ninstance_type: ''",
                "`instance_type`: String should have at least 1 character",
            ),
            ("type: gateway\nbackend: aws\nregion: r\npublic_ip: null", "`public_ip`: expected a boolean"),
            ("type: gateway\nregion: r", "`backend`: missing required field `backend`"),
            ("type: gateway\nbackend: aws", "`region`: missing required field `region`"),
            ("type: gateway\nbackend: foo\nregion: r", "`backend`: expected one of `amddevcloud`, `aws`"),
            ("type: gateway\nbackend: aws\nregion: r\nregions: [a]", "unknown field `regions`"),
        ];
        for (yaml, err) in cases {
            check_err(yaml, err);
        }
    }

    #[test]
    fn gateway_static_checks() {
        let cases: &[(&str, &[&str])] = &[
            (E7, &[]),
            ("type: gateway\nbackend: local\nlocal: {http_port: 8080}", &[]),
            (
                "type: gateway\nbackend: local\nreplicas: 2\ncertificate: {type: acm, arn: a}\nlocal: {http_port: 8080}",
                &[
                    "A `local` gateway has exactly one replica",
                    "A `local` gateway reads its certificates from `local.cert_dir`: use `certificate: null` or leave `certificate` unset",
                ],
            ),
            (
                "type: gateway\nbackend: lambda\nregion: r",
                &[
                    "Gateways are not supported for lambda backend. Available backends with gateway support: ['aws', 'azure', 'gcp', 'kubernetes'].",
                ],
            ),
            (
                "type: gateway\nbackend: azure\nregion: r\npublic_ip: false\ncertificate: null",
                &[
                    "Private gateways are not supported for azure backend.  Available backends with private gateway support: ['aws', 'gcp'].",
                ],
            ),
            (
                "type: gateway\nbackend: aws\nregion: r\nreplicas: 10\ncertificate: null",
                &["Cannot provision 10 gateway replicas. This server allows at most 9"],
            ),
            (
                "type: gateway\nbackend: aws\nregion: r\npublic_ip: false",
                &["lets-encrypt certificate type is not supported for private gateways"],
            ),
            (
                "type: gateway\nbackend: aws\nregion: r\nreplicas: 2",
                &[
                    "The `lets-encrypt` certificate type is not supported for gateways with `replicas` greater than `1`. To create a replicated gateway, set the `certificate` configuration property to one of the supported values, such as `certificate: null` (no HTTPS) or `certificate: { type: acm, arn: <arn> }` (AWS ACM)",
                ],
            ),
            (
                "type: gateway\nbackend: gcp\nregion: r\ncertificate: {type: acm, arn: a}",
                &["acm certificate type is supported for aws backend only"],
            ),
            (
                "type: gateway\nbackend: gcp\nregion: r\ncertificate: {type: gcp-cm, name: n}",
                &["`certificate: { type: gcp-cm }` requires `load_balancer: { type: alb }`"],
            ),
            (
                "type: gateway\nbackend: aws\nregion: r\nload_balancer: {type: alb}",
                &[
                    "`load_balancer: { type: alb }` can only be used with `certificate: null` or `certificate: { type: acm }`",
                ],
            ),
        ];
        for (yaml, expected) in cases {
            let parsed = crate::parse_configuration(yaml);
            let Some(crate::AnyConfiguration::Gateway(gateway)) = parsed.configuration else {
                panic!("{yaml}: {:?}", parsed.diagnostics);
            };
            assert_eq!(gateway.static_checks(), *expected, "{yaml}");
        }
    }
}
