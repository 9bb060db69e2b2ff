//! Kubernetes objects as the pure core sees them: how an object is named ([`ObjectRef`]), and
//! the pure decisions of the k3s applier — apply order, the prune set, image pinning, health —
//! over plain JSON values. The engine feeds them what the cluster adapter read; nothing here
//! talks to a cluster.

use serde::{Deserialize, Serialize};

/// One object's identity on a cluster: `apiVersion`, `kind`, namespace (none for
/// cluster-scoped kinds) and name. Ordered so inventories and prune sets are sorted and
/// deterministic.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    /// The reference of a manifest (`apiVersion`, `kind`, `metadata.namespace`, `metadata.name`);
    /// `None` when one of the required fields is missing or not a string.
    pub fn of(object: &serde_json::Value) -> Option<ObjectRef> {
        let s = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(String::from);
        Some(ObjectRef {
            api_version: s(object.get("apiVersion")?)?,
            kind: s(object.get("kind")?)?,
            namespace: object
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(s),
            name: s(object.get("metadata")?.get("name")?)?,
        })
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version
            .split_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }
}

impl std::fmt::Display for ObjectRef {
    /// `Deployment/inventory/web` (namespaced) or `Namespace/inventory` (cluster-scoped).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}
