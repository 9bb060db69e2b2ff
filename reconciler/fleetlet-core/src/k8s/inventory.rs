//! The inventory of what fleetlet applied, and the prune set computed from two inventories.

use super::ObjectRef;
use super::order::kind_rank;
use crate::render::canonical_json;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// The annotation that opts a live object out of pruning (with value [`PRUNE_DISABLED`]); the
/// counterpart of Flux's `kustomize.toolkit.fluxcd.io/prune: disabled`.
pub const PRUNE_ANNOTATION: &str = "fleetlet.dev/prune";
/// The value of [`PRUNE_ANNOTATION`] that opts out.
pub const PRUNE_DISABLED: &str = "disabled";

/// What fleetlet applied for one workload: every object it sent, with the hash of the manifest
/// it sent. Only what fleetlet applied is ever recorded, so pruning (which deletes only
/// inventory entries) never touches objects fleetlet did not create — the same guarantee as
/// Flux's `status.inventory`.
///
/// JSON: `{"entries": [{"apiVersion", "kind", "namespace"?, "name", "hash"}, ...]}`, sorted by
/// reference, so the stored inventory is stable and diffs read well.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    #[serde(default, with = "entry_list")]
    #[schemars(with = "Vec<InventoryRecord>")]
    pub entries: BTreeMap<ObjectRef, InventoryEntry>,
}

/// One inventory entry's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    /// [`object_hash`] of the manifest as applied.
    pub hash: String,
}

/// The serialised form of one entry: the reference's fields and the hash, flat.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InventoryRecord {
    api_version: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    name: String,
    hash: String,
}

mod entry_list {
    use super::{InventoryEntry, InventoryRecord, ObjectRef};
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        entries: &BTreeMap<ObjectRef, InventoryEntry>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(entries.iter().map(|(r, e)| InventoryRecord {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            hash: e.hash.clone(),
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<ObjectRef, InventoryEntry>, D::Error> {
        let mut out = BTreeMap::new();
        for rec in Vec::<InventoryRecord>::deserialize(d)? {
            let r = ObjectRef {
                api_version: rec.api_version,
                kind: rec.kind,
                namespace: rec.namespace,
                name: rec.name,
            };
            if out.contains_key(&r) {
                return Err(D::Error::custom(format!("duplicate inventory entry {r}")));
            }
            out.insert(r, InventoryEntry { hash: rec.hash });
        }
        Ok(out)
    }
}

/// The sha256 (lower-case hex) of the object's canonical JSON (keys sorted, no whitespace,
/// [`canonical_json`]): equal for equal objects whatever their key order, so an unchanged
/// manifest keeps its hash across renders.
pub fn object_hash(object: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(object)))
}

/// The inventory of a set of manifests, as the engine records it after applying them: one entry
/// per [`ObjectRef`] with its [`object_hash`]. Objects without a reference (missing
/// `apiVersion`, `kind` or `metadata.name`) cannot be applied and are left out; when two objects
/// share a reference the later one wins, as it would on the server.
///
/// The reference is taken from the manifest: give namespaced objects their namespace before
/// building the inventory (the engine fills in the workload's namespace), or a manifest that
/// later spells out `namespace: default` would look like a different object.
pub fn inventory_of(objects: &[Value]) -> Inventory {
    let entries = objects
        .iter()
        .filter_map(|o| {
            let r = ObjectRef::of(o)?;
            Some((
                r,
                InventoryEntry {
                    hash: object_hash(o),
                },
            ))
        })
        .collect();
    Inventory { entries }
}

/// Whether the (live) object carries `fleetlet.dev/prune: disabled`. Read it from the live
/// object, not the manifest: an operator may annotate an object on the cluster to keep it
/// after removing it from the repo. Any other value (or a non-string) does not opt out.
pub fn opts_out_of_prune(object: &Value) -> bool {
    object
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(PRUNE_ANNOTATION))
        .and_then(Value::as_str)
        == Some(PRUNE_DISABLED)
}

/// Identity for pruning: group, kind, namespace, name — not the version. Moving a manifest
/// from `autoscaling/v2beta2` to `autoscaling/v2` names the same object, and deleting the
/// "old" one would delete what was just applied (Flux's inventory compares the same way).
fn identity(r: &ObjectRef) -> (&str, &str, Option<&str>, &str) {
    (r.group(), &r.kind, r.namespace.as_deref(), &r.name)
}

/// What to delete after a successful apply of `new`: the objects in `old` that are not in
/// `new`, minus those in `opted_out` (the engine reads each candidate's live object and passes
/// those for which [`opts_out_of_prune`] holds).
///
/// Rules:
/// - Only `old` entries are candidates: pruning never deletes anything fleetlet did not apply.
/// - Objects are compared by group, kind, namespace and name; the API version is ignored, so a
///   version bump is not a delete-and-recreate.
/// - Order is the reverse of [`apply_order`](super::apply_order): custom resources first,
///   workloads before the ConfigMaps/Secrets/RBAC they use, namespaced objects before their
///   Namespace, CRDs last (deleting a CRD deletes all its custom resources). Ties by reference.
pub fn prune_set(
    old: &Inventory,
    new: &Inventory,
    opted_out: &BTreeSet<ObjectRef>,
) -> Vec<ObjectRef> {
    let kept: BTreeSet<_> = new.entries.keys().map(identity).collect();
    let opted: BTreeSet<_> = opted_out.iter().map(identity).collect();
    let mut out: Vec<ObjectRef> = old
        .entries
        .keys()
        .filter(|r| !kept.contains(&identity(r)) && !opted.contains(&identity(r)))
        .cloned()
        .collect();
    out.sort_by(|a, b| {
        kind_rank(b.group(), &b.kind)
            .cmp(&kind_rank(a.group(), &a.kind))
            .then_with(|| a.cmp(b))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.map(String::from),
            name: name.into(),
        }
    }

    fn inv<const N: usize>(refs: [ObjectRef; N]) -> Inventory {
        Inventory {
            entries: refs
                .into_iter()
                .map(|r| (r, InventoryEntry { hash: "h".into() }))
                .collect(),
        }
    }

    #[test]
    fn object_hash_is_canonical() {
        let a = json!({"kind": "ConfigMap", "apiVersion": "v1", "data": {"b": "2", "a": "1"}});
        let b: Value = serde_json::from_str(
            r#"{"apiVersion":"v1","data":{"a":"1","b":"2"},"kind":"ConfigMap"}"#,
        )
        .unwrap();
        let c = json!({"kind": "ConfigMap", "apiVersion": "v1", "data": {"b": "2", "a": "3"}});
        assert_eq!(object_hash(&a), object_hash(&b));
        assert_ne!(object_hash(&a), object_hash(&c));
        assert_eq!(object_hash(&a).len(), 64);
        assert!(object_hash(&a).bytes().all(|c| c.is_ascii_hexdigit()));
        // Pinned: sha256 of `{}`.
        assert_eq!(
            object_hash(&json!({})),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    type InventoryCase = (&'static str, Vec<Value>, Vec<(ObjectRef, String)>);
    type PruneCase = (
        &'static str,
        Inventory,
        Inventory,
        BTreeSet<ObjectRef>,
        Vec<ObjectRef>,
    );

    #[test]
    fn inventory_of_table() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}, "data": {"k": "v"}});
        let cm2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}, "data": {"k": "w"}});
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}});
        let cases: Vec<InventoryCase> = vec![
            ("empty", vec![], vec![]),
            (
                "namespaced and cluster-scoped",
                vec![cm.clone(), ns.clone()],
                vec![
                    (r("v1", "ConfigMap", Some("ns"), "c"), object_hash(&cm)),
                    (r("v1", "Namespace", None, "ns"), object_hash(&ns)),
                ],
            ),
            (
                "objects without a reference are skipped",
                vec![
                    json!({"kind": "ConfigMap", "metadata": {"name": "x"}}),
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 3}}),
                    json!({"apiVersion": "v1", "kind": "ConfigMap"}),
                    json!(null),
                    ns.clone(),
                ],
                vec![(r("v1", "Namespace", None, "ns"), object_hash(&ns))],
            ),
            (
                "duplicate reference: the later wins",
                vec![cm.clone(), cm2.clone()],
                vec![(r("v1", "ConfigMap", Some("ns"), "c"), object_hash(&cm2))],
            ),
        ];
        for (name, objects, want) in cases {
            let got: Vec<(ObjectRef, String)> = inventory_of(&objects)
                .entries
                .into_iter()
                .map(|(r, e)| (r, e.hash))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn inventory_json_is_a_sorted_flat_list() {
        let inventory = Inventory {
            entries: [
                (
                    r("v1", "Namespace", None, "shop"),
                    InventoryEntry { hash: "b".into() },
                ),
                (
                    r("apps/v1", "Deployment", Some("shop"), "web"),
                    InventoryEntry { hash: "a".into() },
                ),
            ]
            .into_iter()
            .collect(),
        };
        let json = serde_json::to_value(&inventory).unwrap();
        assert_eq!(
            json,
            json!({"entries": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "web", "hash": "a"},
                {"apiVersion": "v1", "kind": "Namespace", "name": "shop", "hash": "b"}
            ]})
        );
        let back: Inventory = serde_json::from_value(json).unwrap();
        assert_eq!(back, inventory);

        let empty: Inventory = serde_json::from_value(json!({})).unwrap();
        assert_eq!(empty, Inventory::default());

        let dup = json!({"entries": [
            {"apiVersion": "v1", "kind": "Namespace", "name": "shop", "hash": "a"},
            {"apiVersion": "v1", "kind": "Namespace", "name": "shop", "hash": "b"}
        ]});
        let err = serde_json::from_value::<Inventory>(dup).unwrap_err();
        assert!(
            err.to_string()
                .contains("duplicate inventory entry Namespace/shop"),
            "{err}"
        );

        let unknown = json!({"entries": [{"apiVersion": "v1", "kind": "Namespace", "name": "x", "hash": "a", "extra": 1}]});
        assert!(serde_json::from_value::<Inventory>(unknown).is_err());

        let schema = serde_json::to_value(schemars::schema_for!(Inventory)).unwrap();
        assert_eq!(schema["properties"]["entries"]["type"], "array", "{schema}");
    }

    #[test]
    fn opts_out_of_prune_table() {
        let with =
            |annotations: Value| json!({"metadata": {"name": "x", "annotations": annotations}});
        let cases: Vec<(&str, Value, bool)> = vec![
            (
                "disabled",
                with(json!({"fleetlet.dev/prune": "disabled"})),
                true,
            ),
            (
                "other value",
                with(json!({"fleetlet.dev/prune": "enabled"})),
                false,
            ),
            (
                "case matters",
                with(json!({"fleetlet.dev/prune": "Disabled"})),
                false,
            ),
            (
                "non-string value",
                with(json!({"fleetlet.dev/prune": false})),
                false,
            ),
            (
                "flux's annotation is not ours",
                with(json!({"kustomize.toolkit.fluxcd.io/prune": "disabled"})),
                false,
            ),
            ("no annotations", json!({"metadata": {"name": "x"}}), false),
            ("annotations null", with(json!(null)), false),
            ("no metadata", json!({}), false),
        ];
        for (name, o, want) in cases {
            assert_eq!(opts_out_of_prune(&o), want, "{name}");
        }
    }

    #[test]
    fn prune_set_table() {
        let ns = r("v1", "Namespace", None, "shop");
        let deploy = r("apps/v1", "Deployment", Some("shop"), "web");
        let cm = r("v1", "ConfigMap", Some("shop"), "cfg");
        let sa = r("v1", "ServiceAccount", Some("shop"), "web");
        let crd = r(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            "widgets.example.com",
        );
        let cr = r("example.com/v1", "Widget", Some("shop"), "w");
        let crole = r(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            None,
            "reader",
        );
        let hpa_old = r(
            "autoscaling/v2beta2",
            "HorizontalPodAutoscaler",
            Some("shop"),
            "web",
        );
        let hpa_new = r(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            Some("shop"),
            "web",
        );
        let none = BTreeSet::new();

        let cases: Vec<PruneCase> = vec![
            (
                "nothing before",
                inv([]),
                inv([ns.clone(), deploy.clone()]),
                none.clone(),
                vec![],
            ),
            (
                "nothing removed",
                inv([ns.clone(), deploy.clone()]),
                inv([ns.clone(), deploy.clone()]),
                none.clone(),
                vec![],
            ),
            (
                "everything removed: reverse apply order",
                inv([
                    ns.clone(),
                    deploy.clone(),
                    cm.clone(),
                    sa.clone(),
                    crd.clone(),
                    cr.clone(),
                    crole.clone(),
                ]),
                inv([]),
                none.clone(),
                vec![
                    cr.clone(),
                    deploy.clone(),
                    crole.clone(),
                    cm.clone(),
                    sa.clone(),
                    ns.clone(),
                    crd.clone(),
                ],
            ),
            (
                "only what was in old: objects new to the repo are never candidates",
                inv([cm.clone()]),
                inv([deploy.clone()]),
                none.clone(),
                vec![cm.clone()],
            ),
            (
                "opted out on the live object",
                inv([cm.clone(), deploy.clone()]),
                inv([]),
                [cm.clone()].into_iter().collect(),
                vec![deploy.clone()],
            ),
            (
                "opt-out for an object not in old changes nothing",
                inv([cm.clone()]),
                inv([]),
                [deploy.clone()].into_iter().collect(),
                vec![cm.clone()],
            ),
            (
                "api version bump is the same object",
                inv([hpa_old.clone()]),
                inv([hpa_new.clone()]),
                none.clone(),
                vec![],
            ),
            (
                "same name in another namespace is another object",
                inv([cm.clone()]),
                inv([r("v1", "ConfigMap", Some("other"), "cfg")]),
                none.clone(),
                vec![cm.clone()],
            ),
            (
                "same kind in another group is another object",
                inv([r("v1", "Service", Some("shop"), "web")]),
                inv([r("serving.knative.dev/v1", "Service", Some("shop"), "web")]),
                none.clone(),
                vec![r("v1", "Service", Some("shop"), "web")],
            ),
            (
                "ties broken by reference",
                inv([
                    r("v1", "ConfigMap", Some("b"), "x"),
                    r("v1", "ConfigMap", Some("a"), "y"),
                ]),
                inv([]),
                none.clone(),
                vec![
                    r("v1", "ConfigMap", Some("a"), "y"),
                    r("v1", "ConfigMap", Some("b"), "x"),
                ],
            ),
        ];
        for (name, old, new, opted_out, want) in cases {
            assert_eq!(prune_set(&old, &new, &opted_out), want, "{name}");
        }
    }
}
