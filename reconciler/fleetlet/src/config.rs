//! The agent's local config (`agent.yaml`): which site this is, where its state lives, where the
//! fleet repo comes from, how the runtimes run, and whom the site trusts (`trust:` — on the
//! site, never only in the fleet repo). Unknown fields are errors.

use anyhow::{Context, bail};
use fleetlet_core::SiteName;
use fleetlet_core::units::DurationSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub const KIND: &str = "AgentConfig";
/// Where `deploy/install.sh` puts the site's config: the site-side commands (`agent`,
/// `bundle import`, `bundle export-status`) read it when given no `--config`.
pub const DEFAULT_CONFIG: &str = "/etc/fleetlet/agent.yaml";

/// The installed config, if this machine has one: commands that can also work from a bare
/// state dir (`status`, `audit …`) use it when given neither `--config` nor `--state-dir`.
pub fn installed_config() -> Option<PathBuf> {
    let path = PathBuf::from(DEFAULT_CONFIG);
    path.exists().then_some(path)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "AgentConfig")]
pub struct AgentConfig {
    pub api_version: String,
    pub kind: String,
    /// The site this agent runs on: its `Site` document in the fleet repo.
    pub site: SiteName,
    /// Where the agent keeps its Git mirror, blobs, compiled components and state record.
    pub state_dir: PathBuf,
    pub source: SourceConfig,
    #[serde(default)]
    pub registries: RegistriesConfig,
    #[serde(default)]
    pub runtimes: RuntimesConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub listen: ListenConfig,
    /// Trust roots and policy. By default commits and artifacts must be signed, so a config
    /// without trust roots must say `require: none` explicitly to run unsigned releases.
    #[serde(default)]
    pub trust: fleetlet_verify::policy::TrustConfig,
}

/// How the agent reaches OCI registries for image components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistriesConfig {
    /// A Docker `config.json` with credentials (`auths.<host>.auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_config: Option<PathBuf>,
    /// Connect timeout, and idle timeout of every read (default 30s).
    #[serde(default = "default_timeout")]
    pub timeout: DurationSpec,
    /// Retries on transient failures (network, 5xx, 429), with backoff and jitter (default 3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Per registry host (`host[:port]`): mirrors, CA, plain HTTP.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, RegistryHostConfig>,
    /// Applied releases whose artifacts the store keeps (default 3).
    #[serde(default = "default_keep_releases")]
    pub keep_releases: usize,
    /// Folders under which the fleet repo may name local OCI layouts (`oci:PATH:TAG`) as
    /// components, e.g. a mounted USB stick. None by default: a repo cannot make the agent read
    /// arbitrary local paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_layouts: Vec<PathBuf>,
}

impl Default for RegistriesConfig {
    fn default() -> Self {
        RegistriesConfig {
            docker_config: None,
            timeout: default_timeout(),
            retries: default_retries(),
            hosts: BTreeMap::new(),
            keep_releases: default_keep_releases(),
            local_layouts: Vec::new(),
        }
    }
}

fn default_retries() -> u32 {
    3
}

fn default_keep_releases() -> usize {
    3
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryHostConfig {
    /// Plain HTTP (loopback registries get it by default, as with Docker).
    #[serde(default)]
    pub insecure: bool,
    /// Extra CA (PEM) trusted for this registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Mirrors tried in order before the registry itself: `host[:port]` or `http(s)://host[:port]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

impl RegistriesConfig {
    pub fn to_adapter(&self) -> fleetlet_oci::RegistryConfig {
        fleetlet_oci::RegistryConfig {
            hosts: self
                .hosts
                .iter()
                .map(|(h, c)| {
                    (
                        h.clone(),
                        fleetlet_oci::HostConfig {
                            insecure: c.insecure,
                            ca_file: c.ca_file.clone(),
                            mirrors: c.mirrors.clone(),
                        },
                    )
                })
                .collect(),
            docker_config: self.docker_config.clone(),
            timeout: self.timeout.as_duration(),
            retries: self.retries,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceConfig {
    /// Pull the fleet repo from Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitConfig>,
    /// Or take releases from signed sync bundles only (air-gapped sites): dropped into an
    /// inbox, or imported with `fleetlet bundle import`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundles: Option<BundlesConfig>,
}

impl SourceConfig {
    /// How often the source is looked at.
    pub fn interval(&self) -> std::time::Duration {
        match (&self.git, &self.bundles) {
            (Some(g), _) => g.interval.as_duration(),
            (None, Some(b)) => b.interval.as_duration(),
            (None, None) => default_interval().as_duration(),
        }
    }
}

/// The site's audit log (`stateDir/audit.jsonl`, its journal in the state store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuditConfig {
    /// How often the chain head is signed with the site key (default 1h; also at shutdown).
    #[serde(default = "default_checkpoint")]
    pub checkpoint_interval: DurationSpec,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_interval: default_checkpoint(),
        }
    }
}

fn default_checkpoint() -> DurationSpec {
    DurationSpec(3_600_000)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BundlesConfig {
    /// A folder the agent watches: each bundle copied there is imported once complete, then
    /// moved to `done/` or `rejected/` (with a `.reason` file) beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox: Option<PathBuf>,
    /// The branch releases are accepted on (default `main`): a bundle publishing any other is
    /// refused, so the policy's per-ref rules (`trust.commits.refs`) judge what this site
    /// would follow, never a branch the bundle's maker picked.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// How long a file must stay unchanged before it counts as completely copied (default 2s).
    #[serde(default = "default_settle")]
    pub settle: DurationSpec,
    /// How often the inbox and the imported release are looked at, besides file events
    /// (default 30s).
    #[serde(default = "default_interval")]
    pub interval: DurationSpec,
    /// Largest unpacked bundle accepted (default 64Gi): the guard against compression bombs.
    #[serde(default = "default_max_bundle")]
    pub max_size: fleetlet_core::units::ByteSize,
}

fn default_branch() -> String {
    "main".into()
}

fn default_settle() -> DurationSpec {
    DurationSpec(2_000)
}

fn default_max_bundle() -> fleetlet_core::units::ByteSize {
    fleetlet_core::units::ByteSize(64 << 30)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitConfig {
    /// A local path, `file://`, `git://`, `http(s)://` or `ssh://` URL.
    pub url: String,
    /// Follow this branch (default `main` when no `tag` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Follow the newest tag matching this glob (e.g. `v*`, `release-*`) instead of a branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// How often to poll the remote (default 30s). Local paths are also watched for changes.
    #[serde(default = "default_interval")]
    pub interval: DurationSpec,
    /// Connect and read timeout for the remote (default 30s).
    #[serde(default = "default_timeout")]
    pub timeout: DurationSpec,
    /// CA bundle (PEM) for an https remote with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Private key for ssh remotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file for ssh remotes; unknown hosts are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    /// Accept a followed ref that moved to a commit that does not descend from the applied one
    /// (force-push, older release) without a signed rollback instruction.
    #[serde(default)]
    pub allow_force_push: bool,
}

fn default_interval() -> DurationSpec {
    DurationSpec(30_000)
}

fn default_timeout() -> DurationSpec {
    DurationSpec(30_000)
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuntimesConfig {
    #[serde(default)]
    pub wasm: WasmConfig,
    /// The site's k3s cluster. Without this section, k3s workloads are not applied (status
    /// shows them as `notApplied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3sConfig>,
}

/// How the agent reaches the site's k3s API server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K3sConfig {
    /// A kubeconfig. Default: k3s's `/etc/rancher/k3s/k3s.yaml` when it exists, else the
    /// in-cluster service account, else `$KUBECONFIG`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Timeout of each API request (default 30s).
    #[serde(default = "default_timeout")]
    pub timeout: DurationSpec,
    /// How often applied objects are checked for changes made on the cluster (a server-side
    /// dry run each; default 5m).
    #[serde(default = "default_drift_interval")]
    pub drift_interval: DurationSpec,
}

fn default_drift_interval() -> DurationSpec {
    DurationSpec(300_000)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WasmConfig {
    /// Address HTTP components listen on (default 0.0.0.0: the site's network).
    #[serde(default = "default_bind")]
    pub bind_address: IpAddr,
    /// Instances alive at once across all workloads, preallocated by wasmtime's pooling
    /// allocator (fast instantiation per request). 0 turns pooling off: less virtual memory
    /// reserved, slower per-request instantiation. Default 256.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
}

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            bind_address: default_bind(),
            max_instances: default_max_instances(),
        }
    }
}

fn default_max_instances() -> u32 {
    256
}

fn default_bind() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenConfig {
    /// `/healthz`, `/readyz`, `/status` and `/metrics` (default 127.0.0.1:9440; loopback keeps
    /// them off the site's network).
    #[serde(default = "default_status_addr")]
    pub status: SocketAddr,
    /// Serve the artifact store read-only as an OCI registry mirror here (e.g. 127.0.0.1:5050),
    /// for k3s's containerd (see deploy/k3s/registries.yaml). Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_mirror: Option<SocketAddr>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            status: default_status_addr(),
            registry_mirror: None,
        }
    }
}

fn default_status_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9440))
}

impl AgentConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            if path == Path::new(DEFAULT_CONFIG) {
                format!(
                    "reading agent config {DEFAULT_CONFIG} (the default: give --config for another)"
                )
            } else {
                format!("reading agent config {}", path.display())
            }
        })?;
        let cfg: AgentConfig = serde_yaml::from_str(&text)
            .with_context(|| format!("agent config {}", path.display()))?;
        if cfg.api_version != fleetlet_core::model::API_VERSION || cfg.kind != KIND {
            bail!(
                "agent config {}: expected apiVersion {:?} and kind {KIND:?}, got {:?} / {:?}",
                path.display(),
                fleetlet_core::model::API_VERSION,
                cfg.api_version,
                cfg.kind
            );
        }
        match (&cfg.source.git, &cfg.source.bundles) {
            (Some(_), Some(_)) | (None, None) => bail!(
                "agent config {}: source: set exactly one of `git` and `bundles`",
                path.display()
            ),
            (Some(git), None) => {
                if git.interval.0 < 100 || git.timeout.0 < 100 {
                    bail!(
                        "agent config {}: source.git.interval and source.git.timeout must be at least 100ms",
                        path.display()
                    );
                }
                if git.branch.is_some() && git.tag.is_some() {
                    bail!(
                        "agent config {}: source.git: set `branch` or `tag`, not both",
                        path.display()
                    );
                }
            }
            (None, Some(b)) => {
                if b.interval.0 < 100 {
                    bail!(
                        "agent config {}: source.bundles.interval must be at least 100ms",
                        path.display()
                    );
                }
            }
        }
        let mut cfg = cfg;
        // Relative paths are relative to the config file, as an operator reading it expects.
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.state_dir = base.join(&cfg.state_dir);
        for p in &mut cfg.registries.local_layouts {
            *p = base.join(&*p);
        }
        for p in cfg.trust.keys.values_mut() {
            *p = base.join(&*p);
        }
        if let Some(k) = &mut cfg.trust.keyless {
            k.trusted_root = base.join(&k.trusted_root);
        }
        for p in &mut cfg.trust.commit_signers.openpgp_keys {
            *p = base.join(&*p);
        }
        if let Some(inbox) = cfg.source.bundles.as_mut().and_then(|b| b.inbox.as_mut()) {
            *inbox = base.join(&*inbox);
        }
        let host_cas = cfg.registries.hosts.values_mut().map(|h| &mut h.ca_file);
        let git_paths = cfg
            .source
            .git
            .as_mut()
            .map(|g| vec![&mut g.ca_file, &mut g.ssh_key, &mut g.known_hosts])
            .unwrap_or_default();
        for p in [
            &mut cfg.registries.docker_config,
            &mut cfg.trust.commit_signers.allowed_signers,
            cfg.runtimes
                .k3s
                .as_mut()
                .map(|k| &mut k.kubeconfig)
                .unwrap_or(&mut None),
        ]
        .into_iter()
        .chain(git_paths)
        .chain(host_cas)
        .flatten()
        {
            *p = base.join(&*p);
        }
        if let Some(git) = &mut cfg.source.git
            && !git.url.contains("://")
            && !git.url.contains('@')
        {
            git.url = base.join(&git.url).to_string_lossy().into_owned();
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/agent.yaml.example");
        let cfg = AgentConfig::load(&path).unwrap();
        assert_eq!(
            cfg.trust.keys["release"],
            PathBuf::from("/etc/fleetlet/keys/release.pub")
        );
        assert_eq!(
            cfg.trust.commits.max_age.map(|d| d.to_string()).as_deref(),
            Some("14d")
        );
    }

    #[test]
    fn rejects_unknown_fields_and_resolves_paths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.yaml");
        std::fs::write(
            &p,
            "apiVersion: fleetlet.dev/v1alpha1\nkind: AgentConfig\nsite: s1\nstateDir: state\nsource: {git: {url: repo}}\n",
        )
        .unwrap();
        let cfg = AgentConfig::load(&p).unwrap();
        assert_eq!(cfg.state_dir, dir.path().join("state"));
        assert_eq!(cfg.source.git.unwrap().interval, DurationSpec(30_000));
        std::fs::write(
            &p,
            "apiVersion: fleetlet.dev/v1alpha1\nkind: AgentConfig\nsite: s1\nstateDir: s\nsource: {git: {url: r}}\nbogus: 1\n",
        )
        .unwrap();
        let e = format!("{:#}", AgentConfig::load(&p).unwrap_err());
        assert!(e.contains("bogus"), "{e}");
    }
}
