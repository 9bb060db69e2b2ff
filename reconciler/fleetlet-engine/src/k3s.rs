//! The k3s steps of the cycle, over the [`Cluster`] port: prepare (a server-side dry run of
//! every object, so an invalid object or a field conflict holds the release before anything
//! changes), apply (ordered, CRDs established before their resources, unchanged objects not
//! sent), prune (what the previous inventory has and the new one lacks — never what fleetlet
//! did not create, never what opts out) and observe (health from one list per kind).
//! The decisions are the pure functions of `fleetlet_core::k8s`; this module only sequences
//! requests.

use crate::cluster::{ApplyOptions, Cluster, ClusterError};
use fleetlet_core::k8s::{self, Health, Inventory, ObjectRef};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The label every object fleetlet applies carries, naming its app (lists select by it).
pub const APP_LABEL: &str = "fleetlet.dev/app";
/// The conventional label saying who manages an object; prune deletes only objects with it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "fleetlet";

/// How often (and how long) to wait for a CRD to become Established before applying its
/// resources: the API server usually takes well under a second.
const CRD_POLLS: u32 = 50;
const CRD_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The app's objects as they are applied: labelled for fleetlet, namespaced objects that name
/// no namespace put in `default` (scope from a CRD of the same set, else from discovery), in
/// apply order.
pub fn app_objects<'a>(
    cluster: &dyn Cluster,
    app: &str,
    objects: impl IntoIterator<Item = &'a Value>,
) -> Result<Vec<Value>, ClusterError> {
    let objects: Vec<&Value> = objects.into_iter().collect();
    let crd_scopes: BTreeMap<String, bool> = objects
        .iter()
        .filter(|o| k8s::is_crd(o))
        .filter_map(|crd| {
            let kind = crd["spec"]["names"]["kind"].as_str()?;
            let group = crd["spec"]["group"].as_str()?;
            Some((
                format!("{group}/{kind}"),
                crd["spec"]["scope"].as_str() == Some("Namespaced"),
            ))
        })
        .collect();
    let mut labelled = Vec::new();
    for o in objects {
        let mut o = o.clone();
        let Some(r) = ObjectRef::of(&o) else {
            labelled.push(o);
            continue;
        };
        if r.namespace.is_none() {
            let namespaced = match crd_scopes.get(&format!("{}/{}", r.group(), r.kind)) {
                Some(n) => Some(*n),
                None => cluster.namespaced(&r.api_version, &r.kind)?,
            };
            if namespaced == Some(true) {
                o["metadata"]["namespace"] = Value::String("default".into());
            }
        }
        labelled.push(o);
    }
    let labelled: Vec<Value> = labelled
        .into_iter()
        .map(|mut o| {
            if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                let labels = meta
                    .entry("labels")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(labels) = labels.as_object_mut() {
                    labels.insert(APP_LABEL.into(), Value::String(app.into()));
                    labels.insert(MANAGED_BY_LABEL.into(), Value::String(MANAGED_BY.into()));
                }
            }
            o
        })
        .collect();
    Ok(k8s::apply_order(&labelled))
}

/// Kinds the CRDs among `objects` define (`group/version`, kind): their resources cannot be
/// dry-run before the CRD exists.
fn kinds_defined_by_crds(objects: &[Value]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for crd in objects.iter().filter(|o| k8s::is_crd(o)) {
        let spec = &crd["spec"];
        let (Some(group), Some(kind)) = (spec["group"].as_str(), spec["names"]["kind"].as_str())
        else {
            continue;
        };
        for v in spec["versions"].as_array().into_iter().flatten() {
            if let Some(version) = v["name"].as_str() {
                out.insert((format!("{group}/{version}"), kind.to_string()));
            }
        }
    }
    out
}

/// Prepare: a server-side dry run of every object. Returns every problem (invalid objects,
/// conflicts with other field managers), or the cluster error that stopped it. Objects whose
/// kind or namespace the same set creates cannot be dry-run before it exists: the apply
/// checks them.
pub fn dry_run(
    cluster: &dyn Cluster,
    objects: &[Value],
    live: &BTreeSet<ObjectRef>,
) -> Result<Vec<String>, ClusterError> {
    let pending = kinds_defined_by_crds(objects);
    let new_namespaces: BTreeSet<String> = objects
        .iter()
        .filter_map(ObjectRef::of)
        .filter(|r| r.kind == "Namespace" && r.api_version == "v1" && !live.contains(r))
        .map(|r| r.name)
        .collect();
    let mut problems = Vec::new();
    for o in objects {
        let r = ObjectRef::of(o);
        if let Some(r) = &r
            && (pending.contains(&(r.api_version.clone(), r.kind.clone()))
                || r.namespace
                    .as_ref()
                    .is_some_and(|n| new_namespaces.contains(n)))
        {
            continue;
        }
        match cluster.apply(
            o,
            ApplyOptions {
                dry_run: true,
                force: false,
            },
        ) {
            Ok(_) => {}
            Err(e @ (ClusterError::Unavailable(_) | ClusterError::Denied { .. })) => return Err(e),
            Err(e) => problems.push(e.to_string()),
        }
    }
    Ok(problems)
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Objects sent to the API server.
    pub sent: usize,
    /// Objects whose manifest equals what was applied before (not sent).
    pub unchanged: usize,
}

/// Whether `object` must be sent: it is not on the cluster, or differs from what was applied.
pub fn needs_sending(object: &Value, previous: &Inventory, live: &BTreeSet<ObjectRef>) -> bool {
    !ObjectRef::of(object).is_some_and(|r| {
        live.contains(&r)
            && previous
                .entries
                .get(&r)
                .is_some_and(|e| e.hash == k8s::object_hash(object))
    })
}

/// Applies `objects` in order; an object whose manifest hash equals the entry of `previous`
/// and that `live` says exists is not sent (the no-op reconcile writes nothing; drift is
/// found by its own step). Waits for each CRD to be Established before what follows it.
pub fn apply(
    cluster: &dyn Cluster,
    objects: &[Value],
    previous: &Inventory,
    live: &BTreeSet<ObjectRef>,
) -> Result<Applied, ClusterError> {
    let mut done = Applied::default();
    for o in objects {
        let r = ObjectRef::of(o);
        if !needs_sending(o, previous, live) {
            done.unchanged += 1;
            continue;
        }
        let answer = cluster.apply(o, ApplyOptions::default())?;
        done.sent += 1;
        if k8s::is_crd(o) {
            wait_established(cluster, &answer, r.as_ref())?;
        }
    }
    Ok(done)
}

fn wait_established(
    cluster: &dyn Cluster,
    answer: &Value,
    r: Option<&ObjectRef>,
) -> Result<(), ClusterError> {
    if k8s::crd_established(answer) {
        return Ok(());
    }
    let Some(r) = r else { return Ok(()) };
    for _ in 0..CRD_POLLS {
        std::thread::sleep(CRD_POLL_INTERVAL);
        if cluster.get(r)?.as_ref().is_some_and(k8s::crd_established) {
            return Ok(());
        }
    }
    Err(ClusterError::Unavailable(format!(
        "{r}: not Established after {:?}",
        CRD_POLL_INTERVAL * CRD_POLLS
    )))
}

/// Deletes what `old` has and `new` lacks, in reverse apply order — skipping objects that are
/// gone already, opt out (`fleetlet.dev/prune: disabled`), or do not carry fleetlet's
/// managed-by label (someone else took them over). Returns what was deleted.
pub fn prune(
    cluster: &dyn Cluster,
    old: &Inventory,
    new: &Inventory,
) -> Result<Vec<ObjectRef>, ClusterError> {
    let mut live = BTreeMap::new();
    let mut opted_out = BTreeSet::new();
    for r in old.entries.keys().filter(|r| !new.entries.contains_key(*r)) {
        let found = match cluster.get(r) {
            // Its kind is no longer served (its CRD went): nothing of it is left to delete.
            Err(ClusterError::UnknownKind { .. }) => None,
            other => other?,
        };
        match found {
            None => {}
            Some(o) => {
                let ours = o["metadata"]["labels"][MANAGED_BY_LABEL].as_str() == Some(MANAGED_BY);
                if k8s::opts_out_of_prune(&o) || !ours {
                    opted_out.insert(r.clone());
                }
                live.insert(r.clone(), o);
            }
        }
    }
    let mut deleted = Vec::new();
    for r in k8s::prune_set(old, new, &opted_out) {
        if !live.contains_key(&r) {
            continue;
        }
        if cluster.delete(&r)? {
            deleted.push(r);
        }
    }
    Ok(deleted)
}

/// The live state of an app's objects: one list per kind (by the app label), so a no-op cycle
/// reads each kind once. Objects of the inventory that the lists lack are `None`.
pub fn observe(
    cluster: &dyn Cluster,
    app: &str,
    inventory: &Inventory,
) -> Result<BTreeMap<ObjectRef, Option<Health>>, ClusterError> {
    let kinds: BTreeSet<(&str, &str)> = inventory
        .entries
        .keys()
        .map(|r| (r.api_version.as_str(), r.kind.as_str()))
        .collect();
    let mut found: BTreeMap<ObjectRef, Health> = BTreeMap::new();
    let selector = format!("{APP_LABEL}={app}");
    for (api_version, kind) in kinds {
        let listed = match cluster.list(api_version, kind, &selector) {
            // A kind no longer served (its CRD went) has no objects left.
            Err(ClusterError::UnknownKind { .. }) => vec![],
            other => other?,
        };
        for o in listed {
            if let Some(r) = ObjectRef::of(&o) {
                found.insert(r, k8s::health(&o));
            }
        }
    }
    Ok(inventory
        .entries
        .keys()
        .map(|r| (r.clone(), found.remove(r)))
        .collect())
}

/// Where inventories are kept on the cluster, so a reinstalled agent (empty state) still knows
/// what it applied and can prune it.
pub const INVENTORY_NAMESPACE: &str = "fleetlet-system";
/// The label naming the app an inventory ConfigMap belongs to.
pub const INVENTORY_LABEL: &str = "fleetlet.dev/inventory";

/// The objects that record `app`'s inventory on the cluster: fleetlet's namespace and a
/// ConfigMap holding the inventory as JSON.
pub fn inventory_objects(app: &str, inventory: &Inventory) -> Vec<Value> {
    let json = serde_json::to_string(inventory).unwrap_or_default();
    vec![
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": INVENTORY_NAMESPACE, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
        }),
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": format!("fleetlet-inventory-{app}"),
                "namespace": INVENTORY_NAMESPACE,
                "labels": {INVENTORY_LABEL: app, MANAGED_BY_LABEL: MANAGED_BY},
            },
            "data": {"inventory.json": json},
        }),
    ]
}

/// The inventories recorded on the cluster, by app (unreadable ones are skipped: pruning
/// from a guess is worse than not pruning).
pub fn read_inventories(
    cluster: &dyn Cluster,
) -> Result<BTreeMap<String, Inventory>, ClusterError> {
    let mut out = BTreeMap::new();
    for cm in cluster.list("v1", "ConfigMap", INVENTORY_LABEL)? {
        if cm["metadata"]["namespace"].as_str() != Some(INVENTORY_NAMESPACE) {
            continue;
        }
        let (Some(app), Some(json)) = (
            cm["metadata"]["labels"][INVENTORY_LABEL].as_str(),
            cm["data"]["inventory.json"].as_str(),
        ) else {
            continue;
        };
        if let Ok(inv) = serde_json::from_str::<Inventory>(json) {
            out.insert(app.to_string(), inv);
        }
    }
    Ok(out)
}

/// Deletes the inventory record of an app that left the release.
pub fn forget_inventory(cluster: &dyn Cluster, app: &str) -> Result<(), ClusterError> {
    cluster
        .delete(&ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some(INVENTORY_NAMESPACE.into()),
            name: format!("fleetlet-inventory-{app}"),
        })
        .map(drop)
}
