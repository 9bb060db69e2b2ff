//! Kubernetes objects as the pure core sees them: how an object is named ([`ObjectRef`]), and
//! the pure decisions of the k3s applier over plain JSON values — the way Flux's
//! kustomize-controller applies a folder of manifests:
//!
//! - [`apply_order`]: CRDs, then Namespaces, then a fixed kind order (Helm's install order),
//!   custom resources last;
//! - [`Inventory`] / [`prune_set`]: what fleetlet applied, and what to delete when it is gone
//!   from the repo (never anything fleetlet did not apply; `fleetlet.dev/prune: disabled` opts
//!   out);
//! - [`images`] / [`pin_images`]: the pod templates' images, and rewriting them to digests;
//! - [`health`]: kstatus-like readiness of a live object (Ready / Progressing / Failed);
//! - [`drifted`]: which fields fleetlet set differ from what a server-side dry-run apply says.
//!
//! The engine feeds them what the cluster adapter read; nothing here talks to a cluster.

mod drift;
mod health;
mod images;
mod inventory;
mod order;

pub use drift::{drifted, strip_server_fields};
pub use health::{Health, health};
pub use images::{images, pin_images};
pub use inventory::{
    Inventory, InventoryEntry, PRUNE_ANNOTATION, PRUNE_DISABLED, inventory_of, object_hash,
    opts_out_of_prune, prune_set,
};
pub use order::{apply_order, crd_established, is_crd};

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// `(group, kind)` of a manifest; `""` for a missing field or the core group.
fn group_kind(object: &Value) -> (&str, &str) {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    (group, kind)
}

/// The `status.conditions` entry of type `type_`, if any.
fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

/// The `status` (`"True"`, `"False"`, `"Unknown"`) of the condition of type `type_`.
fn condition_status<'a>(object: &'a Value, type_: &str) -> Option<&'a str> {
    condition(object, type_)?.get("status")?.as_str()
}

/// A string field of a condition (`reason`, `message`), `""` when absent.
fn condition_str<'a>(condition: &'a Value, field: &str) -> &'a str {
    condition.get(field).and_then(Value::as_str).unwrap_or("")
}
