//! The Kubernetes adapter: the apply step of the reconcile cycle. After the engine has rendered
//! a site's manifests, ordered them and decided what to prune (pure functions in
//! `fleetlet_core::k8s`), it hands each object to this adapter through the
//! [`Cluster`] port, which talks to the site's local k3s with the `kube` client:
//!
//! - **apply** is a server-side apply (`PATCH`, `application/apply-patch+yaml`,
//!   `fieldManager=fleetlet`, `force` as the engine asks, `dryRun=All` for plans), so field
//!   ownership, conflicts and three-way merging are the API server's, not ours;
//! - **get** / **list** (all namespaces, by label) feed health, drift and the prune set;
//! - **delete** (background propagation) prunes.
//!
//! Kinds are resolved by API discovery ([`discovery`]), cached per `apiVersion` and looked up
//! again once when a kind is missing, so a CRD applied earlier in the same run serves its custom
//! resources. Failures are mapped to [`ClusterError`] by what the engine does next
//! (see `errors.rs`).
//!
//! The port is synchronous: every call runs the async client on the tokio runtime whose handle
//! the adapter was given and blocks the calling thread until it finishes or
//! [`K3sConfig::timeout`] passes. `kube`'s own retry layer is switched off: a 429 or 503 comes
//! back at once as [`ClusterError::Unavailable`] and the engine retries on its own schedule,
//! instead of one call blocking for minutes on `Retry-After`.
//!
//! With the `standin` feature, [`standin`] provides an in-process API-server stand-in for
//! tests (no real API server can run where fleetlet is developed).

mod discovery;
mod errors;
#[cfg(feature = "standin")]
pub mod standin;

use discovery::{Cached, DiscoveryCache, Served};
use errors::{NotFound, classify_not_found, from_kube};
use fleetlet_core::k8s::ObjectRef;
use fleetlet_engine::cluster::{ApplyOptions, Cluster, ClusterError, FIELD_MANAGER};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::gvk::GroupVersion;
use kube::core::params::{
    DeleteParams, GetParams, ListParams, Patch, PatchParams, PropagationPolicy,
};
use kube::core::{DynamicObject, Request, Resource};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::Duration;

/// Where k3s writes its admin kubeconfig on a server node.
pub const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// The namespace of a namespaced object that names none (what `kubectl` does).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Request counter keys of [`K3sCluster::requests`].
pub mod verbs {
    /// Discovery of one `apiVersion` (`/api/v1`, `/apis/{group}/{version}`).
    pub const DISCOVERY: &str = "DISCOVERY";
    pub const GET: &str = "GET";
    pub const LIST: &str = "LIST";
    /// Server-side apply that persists.
    pub const PATCH: &str = "PATCH";
    /// Server-side apply with `dryRun=All`.
    pub const PATCH_DRY_RUN: &str = "PATCH_DRY_RUN";
    pub const DELETE: &str = "DELETE";
}

/// How to reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sConfig {
    /// Kubeconfig file. `None`: [`K3S_KUBECONFIG`] if it exists, else the in-cluster service
    /// account, else `$KUBECONFIG` (or `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// Longest time one port call may take, discovery included; also the connect, read and
    /// write timeout of each connection.
    pub timeout: Duration,
}

impl Default for K3sConfig {
    fn default() -> Self {
        K3sConfig {
            kubeconfig: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why the adapter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum K3sError {
    #[error("cannot load kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes configuration: {K3S_KUBECONFIG} does not exist, not in a cluster \
         ({in_cluster}), and no kubeconfig ({kubeconfig})"
    )]
    NoConfig {
        in_cluster: String,
        kubeconfig: String,
    },
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// The [`Cluster`] port on a Kubernetes API server (the site's k3s).
pub struct K3sCluster {
    handle: tokio::runtime::Handle,
    client: kube::Client,
    timeout: Duration,
    /// Which configuration was used (for logs and errors).
    source: String,
    discovery: DiscoveryCache,
    requests: Mutex<BTreeMap<String, u64>>,
}

impl fmt::Debug for K3sCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("K3sCluster")
            .field("source", &self.source)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// kube builds rustls client configs with the process-default crypto provider; with both
/// *ring* and aws-lc-rs in the dependency graph there is no implicit default and building a
/// client panics. Install aws-lc-rs (what the rest of fleetlet uses) unless someone already
/// installed one.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race to another installer is fine: any provider will do.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
    });
}

async fn config_from_file(path: &Path) -> Result<kube::Config, K3sError> {
    let error = |source| K3sError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(error)?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(error)
}

/// The client configuration and a description of where it came from.
async fn load_config(explicit: Option<&Path>) -> Result<(kube::Config, String), K3sError> {
    if let Some(path) = explicit {
        return Ok((config_from_file(path).await?, path.display().to_string()));
    }
    let k3s = Path::new(K3S_KUBECONFIG);
    if k3s.exists() {
        return Ok((config_from_file(k3s).await?, K3S_KUBECONFIG.to_string()));
    }
    let in_cluster = match kube::Config::incluster() {
        Ok(config) => return Ok((config, "in-cluster service account".to_string())),
        Err(e) => e,
    };
    match kube::Config::from_kubeconfig(&KubeConfigOptions::default()).await {
        Ok(config) => Ok((config, "$KUBECONFIG or ~/.kube/config".to_string())),
        Err(e) => Err(K3sError::NoConfig {
            in_cluster: in_cluster.to_string(),
            kubeconfig: e.to_string(),
        }),
    }
}

impl K3sCluster {
    /// Builds the adapter (no request is made yet). `handle` must belong to a runtime with its
    /// I/O and time drivers that keeps running while the adapter is used (a multi-thread
    /// runtime, or a current-thread one driven elsewhere); the port's methods block on it and
    /// must be called from a thread that is not one of its workers.
    pub fn new(config: K3sConfig, handle: tokio::runtime::Handle) -> Result<Self, K3sError> {
        install_crypto_provider();
        let timeout = config.timeout;
        // The client spawns its request buffer on the runtime, so it is built inside it.
        let (client, source) = handle.block_on(async {
            let (mut kube_config, source) = load_config(config.kubeconfig.as_deref()).await?;
            kube_config.connect_timeout = Some(timeout);
            kube_config.read_timeout = Some(timeout);
            kube_config.write_timeout = Some(timeout);
            kube_config.default_retry = false;
            let client = kube::Client::try_from(kube_config).map_err(K3sError::Client)?;
            Ok::<_, K3sError>((client, source))
        })?;
        tracing::debug!(%source, ?timeout, "Kubernetes client ready");
        Ok(K3sCluster {
            handle,
            client,
            timeout,
            source,
            discovery: DiscoveryCache::default(),
            requests: Mutex::new(BTreeMap::new()),
        })
    }

    /// Where the configuration came from (a kubeconfig path or the in-cluster account).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Requests sent so far, by verb (the keys of [`verbs`]); a request counts when it is sent,
    /// whatever its outcome.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn count(&self, verb: &str) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests.entry(verb.to_string()).or_default() += 1;
    }

    /// Runs one port call on the runtime, bounded by the timeout.
    fn run<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, ClusterError>>,
    ) -> Result<T, ClusterError> {
        let timeout = self.timeout;
        self.handle.block_on(async {
            tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| {
                    Err(ClusterError::Unavailable(format!(
                        "{what}: no answer within {timeout:?}"
                    )))
                })
        })
    }

    /// The resource serving `api_version`/`kind`: from the cache, else from one discovery
    /// request (which also refreshes the cache for a kind added since the last lookup).
    async fn resolve(
        &self,
        object: &str,
        api_version: &str,
        kind: &str,
    ) -> Result<Served, ClusterError> {
        if let Cached::Hit(served) = self.discovery.lookup(api_version, kind) {
            return Ok(served);
        }
        let gv: GroupVersion = api_version.parse().map_err(|e| ClusterError::Invalid {
            object: object.to_string(),
            message: format!("bad apiVersion {api_version:?}: {e}"),
        })?;
        self.count(verbs::DISCOVERY);
        let kinds = discovery::fetch(&self.client, &gv)
            .await
            .map_err(|e| from_kube(object, api_version, kind, &e))?
            .unwrap_or_default();
        let found = kinds.iter().find(|s| s.resource.kind == kind).cloned();
        self.discovery.store(api_version, kinds);
        found.ok_or_else(|| unknown_kind(object, api_version, kind))
    }

    /// The namespace an object of `served` lives in: none for cluster-scoped kinds (a
    /// namespace given anyway is ignored, as `kubectl` does), [`DEFAULT_NAMESPACE`] when a
    /// namespaced object names none.
    fn namespace_for<'a>(served: &Served, namespace: Option<&'a str>) -> Option<&'a str> {
        served
            .namespaced
            .then(|| namespace.unwrap_or(DEFAULT_NAMESPACE))
    }

    /// How errors name an object once its scope is known: with the namespace it is sent to.
    fn label_in(oref: &ObjectRef, namespace: Option<&str>) -> String {
        ObjectRef {
            namespace: namespace.map(String::from),
            ..oref.clone()
        }
        .to_string()
    }

    /// A 404 on a path discovery said exists: the kind went away; forget it so the next call
    /// looks again.
    fn kind_gone(&self, object: &str, api_version: &str, kind: &str) -> ClusterError {
        self.discovery.forget(api_version);
        unknown_kind(object, api_version, kind)
    }

    async fn apply_async(
        &self,
        object: &Value,
        oref: &ObjectRef,
        options: ApplyOptions,
    ) -> Result<Value, ClusterError> {
        let label = oref.to_string();
        let served = self.resolve(&label, &oref.api_version, &oref.kind).await?;
        let namespace = Self::namespace_for(&served, oref.namespace.as_deref());
        let label = Self::label_in(oref, namespace);
        // The body's namespace must agree with the URL's, or the server refuses the apply.
        let mut body = object.clone();
        if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            match namespace {
                Some(ns) => {
                    metadata.insert("namespace".into(), Value::String(ns.to_string()));
                }
                None => {
                    metadata.remove("namespace");
                }
            }
        }
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = options.force;
        params.dry_run = options.dry_run;
        let request = Request::new(DynamicObject::url_path(&served.resource, namespace))
            .patch(&oref.name, &params, &Patch::Apply(&body))
            .map_err(|e| ClusterError::Invalid {
                object: label.clone(),
                message: e.to_string(),
            })?;
        self.count(if options.dry_run {
            verbs::PATCH_DRY_RUN
        } else {
            verbs::PATCH
        });
        match self.client.request::<Value>(request).await {
            Ok(applied) => Ok(applied),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                match classify_not_found(&status, &oref.name) {
                    NotFound::Namespace(ns) => Err(ClusterError::Invalid {
                        object: label,
                        message: format!("namespace {ns:?} does not exist"),
                    }),
                    NotFound::Object | NotFound::Kind => {
                        Err(self.kind_gone(&label, &oref.api_version, &oref.kind))
                    }
                }
            }
            Err(e) => Err(from_kube(&label, &oref.api_version, &oref.kind, &e)),
        }
    }

    async fn get_async(&self, oref: &ObjectRef) -> Result<Option<Value>, ClusterError> {
        let label = oref.to_string();
        let served = self.resolve(&label, &oref.api_version, &oref.kind).await?;
        let namespace = Self::namespace_for(&served, oref.namespace.as_deref());
        let label = Self::label_in(oref, namespace);
        let request = Request::new(DynamicObject::url_path(&served.resource, namespace))
            .get(&oref.name, &GetParams::default())
            .map_err(|e| ClusterError::Invalid {
                object: label.clone(),
                message: e.to_string(),
            })?;
        self.count(verbs::GET);
        match self.client.request::<Value>(request).await {
            Ok(object) => Ok(Some(object)),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                match classify_not_found(&status, &oref.name) {
                    NotFound::Object | NotFound::Namespace(_) => Ok(None),
                    NotFound::Kind => Err(self.kind_gone(&label, &oref.api_version, &oref.kind)),
                }
            }
            Err(e) => Err(from_kube(&label, &oref.api_version, &oref.kind, &e)),
        }
    }

    async fn list_async(
        &self,
        api_version: &str,
        kind: &str,
        label_selector: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        let label = format!("{kind} ({api_version})");
        let served = self.resolve(&label, api_version, kind).await?;
        let mut params = ListParams::default();
        if !label_selector.is_empty() {
            params = params.labels(label_selector);
        }
        let request = Request::new(DynamicObject::url_path(&served.resource, None))
            .list(&params)
            .map_err(|e| ClusterError::Invalid {
                object: label.clone(),
                message: e.to_string(),
            })?;
        self.count(verbs::LIST);
        let list = match self.client.request::<Value>(request).await {
            Ok(list) => list,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(self.kind_gone(&label, api_version, kind));
            }
            Err(e) => return Err(from_kube(&label, api_version, kind, &e)),
        };
        let Some(Value::Array(items)) = list.get("items").cloned() else {
            return Err(ClusterError::Unavailable(format!(
                "{label}: the list answer has no items"
            )));
        };
        // List items of built-in kinds come without apiVersion and kind; callers name objects
        // by them (ObjectRef::of), so put them back.
        Ok(items
            .into_iter()
            .map(|mut item| {
                if let Some(fields) = item.as_object_mut() {
                    fields
                        .entry("apiVersion")
                        .or_insert_with(|| Value::String(api_version.to_string()));
                    fields
                        .entry("kind")
                        .or_insert_with(|| Value::String(kind.to_string()));
                }
                item
            })
            .collect())
    }

    async fn delete_async(&self, oref: &ObjectRef) -> Result<bool, ClusterError> {
        let label = oref.to_string();
        let served = self.resolve(&label, &oref.api_version, &oref.kind).await?;
        let namespace = Self::namespace_for(&served, oref.namespace.as_deref());
        let label = Self::label_in(oref, namespace);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        let request = Request::new(DynamicObject::url_path(&served.resource, namespace))
            .delete(&oref.name, &params)
            .map_err(|e| ClusterError::Invalid {
                object: label.clone(),
                message: e.to_string(),
            })?;
        self.count(verbs::DELETE);
        // The answer is the object (with a deletionTimestamp while finalizers run) or a
        // Status; either way the deletion was accepted.
        match self.client.request_text(request).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                match classify_not_found(&status, &oref.name) {
                    NotFound::Object | NotFound::Namespace(_) => Ok(false),
                    NotFound::Kind => Err(self.kind_gone(&label, &oref.api_version, &oref.kind)),
                }
            }
            Err(e) => Err(from_kube(&label, &oref.api_version, &oref.kind, &e)),
        }
    }
}

fn unknown_kind(object: &str, api_version: &str, kind: &str) -> ClusterError {
    ClusterError::UnknownKind {
        object: object.to_string(),
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    }
}

impl Cluster for K3sCluster {
    fn apply(&self, object: &Value, options: ApplyOptions) -> Result<Value, ClusterError> {
        let Some(oref) = ObjectRef::of(object) else {
            return Err(ClusterError::Invalid {
                object: "manifest".to_string(),
                message: "apiVersion, kind and metadata.name are required".to_string(),
            });
        };
        let label = oref.to_string();
        self.run(&label, self.apply_async(object, &oref, options))
    }

    fn get(&self, object: &ObjectRef) -> Result<Option<Value>, ClusterError> {
        self.run(&object.to_string(), self.get_async(object))
    }

    fn list(
        &self,
        api_version: &str,
        kind: &str,
        label_selector: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        self.run(
            &format!("{kind} ({api_version})"),
            self.list_async(api_version, kind, label_selector),
        )
    }

    fn delete(&self, object: &ObjectRef) -> Result<bool, ClusterError> {
        self.run(&object.to_string(), self.delete_async(object))
    }

    fn namespaced(&self, api_version: &str, kind: &str) -> Result<Option<bool>, ClusterError> {
        let label = format!("{kind} ({api_version})");
        match self.run(&label, self.resolve(&label, api_version, kind)) {
            Ok(served) => Ok(Some(served.namespaced)),
            Err(ClusterError::UnknownKind { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
