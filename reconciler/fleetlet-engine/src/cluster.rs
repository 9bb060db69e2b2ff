//! The k3s applier's port: the few requests the engine makes of a Kubernetes API server
//! (server-side apply, read, list by label, delete). The adapter (`fleetlet-k3s`, `kube`) owns
//! discovery, authentication and retries; the engine owns order, inventory, prune, health and
//! drift — decided by pure functions in `fleetlet_core::k8s`.

use fleetlet_core::k8s::ObjectRef;

/// The field manager every apply uses.
pub const FIELD_MANAGER: &str = "fleetlet";

/// How an apply is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Server-side dry run: nothing is persisted; the answer is what the object would become.
    pub dry_run: bool,
    /// Take over fields another manager owns (only for fields fleetlet owned before).
    pub force: bool,
}

/// Cluster failures, typed by what the caller does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The API server is down, slow, restarting, or answered 5xx/429: retry later; nothing is
    /// known to have happened.
    #[error("Kubernetes API unavailable: {0}")]
    Unavailable(String),
    /// 401/403: the agent's credentials or RBAC do not allow it.
    #[error("{object}: access denied: {message}")]
    Denied { object: String, message: String },
    /// The API server has no such kind (not installed, or its CRD is not established yet).
    #[error("{object}: the cluster does not serve {api_version} {kind}")]
    UnknownKind {
        object: String,
        api_version: String,
        kind: String,
    },
    /// Server-side apply conflict: other managers own fields this apply sets.
    #[error("{object}: conflict with other field managers: {}", .fields.iter().map(|(f, m)| format!("{f} (owned by {m})")).collect::<Vec<_>>().join(", "))]
    Conflict {
        object: String,
        /// (field path, manager)
        fields: Vec<(String, String)>,
    },
    /// The object was refused (400/422: invalid, admission denied).
    #[error("{object}: {message}")]
    Invalid { object: String, message: String },
}

impl ClusterError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClusterError::Unavailable(_) | ClusterError::UnknownKind { .. }
        )
    }
}

/// A Kubernetes API server, as the engine needs it.
pub trait Cluster {
    /// Server-side applies `object` (field manager [`FIELD_MANAGER`]); returns the object as
    /// the server has it (or would have it, in a dry run).
    fn apply(
        &self,
        object: &serde_json::Value,
        options: ApplyOptions,
    ) -> Result<serde_json::Value, ClusterError>;

    /// The object, or `None` when it does not exist.
    fn get(&self, object: &ObjectRef) -> Result<Option<serde_json::Value>, ClusterError>;

    /// Every object of `api_version`/`kind` (all namespaces) carrying the label selector
    /// (`key=value,...`).
    fn list(
        &self,
        api_version: &str,
        kind: &str,
        label_selector: &str,
    ) -> Result<Vec<serde_json::Value>, ClusterError>;

    /// Deletes the object (background propagation); `false` when it was already gone.
    fn delete(&self, object: &ObjectRef) -> Result<bool, ClusterError>;

    /// Whether `api_version`/`kind` is namespaced, from discovery; `None` when the cluster
    /// does not serve it (yet). The engine puts namespaced objects that name no namespace in
    /// `default`, as kubectl does, so inventories name objects as the cluster does.
    fn namespaced(&self, api_version: &str, kind: &str) -> Result<Option<bool>, ClusterError> {
        let _ = (api_version, kind);
        Ok(None)
    }
}
