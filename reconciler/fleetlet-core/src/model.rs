//! The documents of a fleet repo (`Site`, `App`) as Rust types. Unknown fields are errors; the
//! JSON Schemas in `schemas/` are generated from these types.

use crate::selector::LabelSelector;
use crate::units::{ByteSize, DurationSpec, Port};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub const API_VERSION: &str = "fleetlet.dev/v1alpha1";
pub const API_GROUP_PREFIX: &str = "fleetlet.dev/";

impl Override {
    /// The sites this override applies to, as a target.
    pub fn target(&self) -> Target {
        Target {
            sites: self.sites.clone(),
            selector: self.selector.clone(),
        }
    }
}

/// A site's name: a DNS label (lower-case letters, digits, `-`, at most 63 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteName(String);

impl JsonSchema for SiteName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SiteName".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"})
    }
}

impl SiteName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SiteName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        check_dns_label(&s)?;
        Ok(SiteName(s))
    }
}

impl std::str::FromStr for SiteName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SiteName::try_from(s.to_string())
    }
}

impl From<SiteName> for String {
    fn from(s: SiteName) -> String {
        s.0
    }
}

impl fmt::Display for SiteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a name against the DNS label rule used for sites, apps and workloads.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected a DNS label (lower-case letters, digits and '-', 1-63 characters), got {s:?}"
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Where a workload runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// The agent's embedded WebAssembly runtime (wasmtime, WASI 0.2).
    Wasm,
    /// The site's k3s cluster.
    K3s,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Wasm => "wasm",
            Runtime::K3s => "k3s",
        })
    }
}

/// An edge site: one agent runs there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Site")]
pub struct Site {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: SiteSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SiteSpec {
    /// The runtimes this site offers.
    pub runtimes: Vec<Runtime>,
    /// Per-site values, substituted into workload `env` and `command.args` as `${values.KEY}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    /// The RuntimeClass of the site's k3s that runs Wasm (a containerd Wasm shim such as
    /// runwasi/Spin): wasm workloads with `runOn: k3s` run there as pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_runtime_class: Option<String>,
}

/// An application: workloads and the sites that run them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "App")]
pub struct App {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: AppSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppSpec {
    /// The sites this app runs on: a site is targeted when any entry matches it.
    pub targets: Vec<Target>,
    pub workloads: Vec<Workload>,
    /// Merge patches (RFC 7386) on workloads, applied in order on the sites each one selects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
}

/// Names sites, selects them by label, or both (then a site must satisfy both).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Override {
    /// Sites this override applies to by name (with `selector`, a site must satisfy both).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Workload name → a merge patch on that workload (any workload field).
    pub workloads: BTreeMap<String, serde_json::Value>,
}

/// One thing to run: a Wasm component (`runtime: wasm`) or a folder of Kubernetes manifests
/// (`runtime: k3s`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    pub name: String,
    pub runtime: Runtime,
    /// `wasm`: the component, a path to a `.wasm` file in the repo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// `wasm`: serve the component as a `wasi:http` handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSpec>,
    /// `wasm`: run the component as a long-running `wasi:cli` command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandSpec>,
    /// `wasm`: the environment the component sees (nothing else from the host).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Capabilities::is_empty")]
    pub capabilities: Capabilities,
    /// `k3s`: a folder of plain Kubernetes manifests in the repo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<String>,
    /// `k3s`: how long the applied objects may take to become healthy, what happens when they
    /// do not, and what happens to changes made on the cluster by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3sOptions>,
    /// `wasm`: where the component runs — on the agent's embedded runtime (`agent`, the
    /// default) or as a pod on the site's k3s through its Wasm RuntimeClass (`k3s`; the
    /// component must then be an image in a registry, which containerd pulls through the
    /// site's mirror).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_on: Option<RunOn>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RunOn {
    Agent,
    K3s,
}

/// Health and drift policy of a k3s workload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K3sOptions {
    /// How long the objects may take to become Ready after an apply (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout: Option<DurationSpec>,
    /// `rollback` (default): return to the last-known-good release when the objects fail or
    /// time out; `report`: keep them and report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_unhealthy: Option<OnUnhealthy>,
    /// `correct` (default): changes made on the cluster to fields fleetlet applies are undone;
    /// `report`: they are only counted and shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnUnhealthy {
    Rollback,
    Report,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DriftMode {
    Correct,
    Report,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpSpec {
    pub port: Port,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommandSpec {
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Most linear memory (and tables) one instance may hold, e.g. `64Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// `http`: how long one request may compute before it is cut off, e.g. `100ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_per_request: Option<DurationSpec>,
    /// `http`: most requests served at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capabilities {
    /// Directories the component may open. Each is private to the workload and lives under the
    /// agent's state dir; `path` is where the guest sees it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<DirCapability>,
    /// `host:port` (or `host`, any port) the component may reach with outgoing HTTP requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_hosts: Vec<String>,
}

impl Capabilities {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.outbound_hosts.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DirCapability {
    /// Absolute path the guest sees, e.g. `/data`.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}
