//! Apply order: which objects go to the API server first.

use super::{condition_status, group_kind};
use serde_json::Value;

/// The install order of well-known kinds (Helm's `InstallOrder`, with `PriorityClass` after
/// `Namespace`), each with the API groups that serve it. A kind only counts as well-known in
/// one of its groups: a Knative `Service` (`serving.knative.dev`) is a custom resource, not a
/// core `Service`. `CustomResourceDefinition` is here for completeness but always goes first
/// (see [`kind_rank`]).
const KIND_ORDER: &[(&str, &[&str])] = &[
    ("Namespace", &[""]),
    ("PriorityClass", &["scheduling.k8s.io"]),
    ("NetworkPolicy", &["networking.k8s.io", "extensions"]),
    ("ResourceQuota", &[""]),
    ("LimitRange", &[""]),
    ("PodSecurityPolicy", &["policy", "extensions"]),
    ("PodDisruptionBudget", &["policy"]),
    ("ServiceAccount", &[""]),
    ("Secret", &[""]),
    ("SecretList", &[""]),
    ("ConfigMap", &[""]),
    ("StorageClass", &["storage.k8s.io"]),
    ("PersistentVolume", &[""]),
    ("PersistentVolumeClaim", &[""]),
    ("CustomResourceDefinition", &["apiextensions.k8s.io"]),
    ("ClusterRole", &["rbac.authorization.k8s.io"]),
    ("ClusterRoleList", &["rbac.authorization.k8s.io"]),
    ("ClusterRoleBinding", &["rbac.authorization.k8s.io"]),
    ("ClusterRoleBindingList", &["rbac.authorization.k8s.io"]),
    ("Role", &["rbac.authorization.k8s.io"]),
    ("RoleList", &["rbac.authorization.k8s.io"]),
    ("RoleBinding", &["rbac.authorization.k8s.io"]),
    ("RoleBindingList", &["rbac.authorization.k8s.io"]),
    ("Service", &[""]),
    ("DaemonSet", &["apps", "extensions"]),
    ("Pod", &[""]),
    ("ReplicationController", &[""]),
    ("ReplicaSet", &["apps", "extensions"]),
    ("Deployment", &["apps", "extensions"]),
    ("HorizontalPodAutoscaler", &["autoscaling"]),
    ("StatefulSet", &["apps"]),
    ("Job", &["batch"]),
    ("CronJob", &["batch"]),
    ("IngressClass", &["networking.k8s.io"]),
    ("Ingress", &["networking.k8s.io", "extensions"]),
    ("APIService", &["apiregistration.k8s.io"]),
];

const CRD_GROUP: &str = "apiextensions.k8s.io";
const CRD_KIND: &str = "CustomResourceDefinition";

/// The apply rank of a `(group, kind)`: 0 for CRDs, then the position in [`KIND_ORDER`] (from
/// 1), then every other kind (custom resources, webhooks, anything unknown) last. Lower ranks
/// are applied first and pruned last.
pub(crate) fn kind_rank(group: &str, kind: &str) -> usize {
    if group == CRD_GROUP && kind == CRD_KIND {
        return 0;
    }
    KIND_ORDER
        .iter()
        .position(|(k, groups)| *k == kind && groups.contains(&group))
        .map(|i| i + 1)
        .unwrap_or(KIND_ORDER.len() + 1)
}

/// The objects in the order to apply them.
///
/// Rule: CustomResourceDefinitions first (a custom resource cannot be applied before its CRD
/// is served), then Namespaces (namespaced objects need them), then the well-known kinds in
/// Helm's install order (RBAC, ServiceAccounts, Secrets and ConfigMaps before the workloads
/// that mount them; Services before the Pods whose environment names them), then every kind
/// this list does not know — custom resources — last. Kinds match only in their own API
/// group(s). The sort is stable: objects of the same rank keep their manifest order (path
/// order, then document order). Objects without `apiVersion`/`kind` rank as unknown.
///
/// Flux's kustomize-controller applies in two stages (CRDs and Namespaces, then the rest) and
/// orders within them much like this; Helm uses the same kind list.
pub fn apply_order(objects: &[Value]) -> Vec<Value> {
    let mut ranked: Vec<(usize, &Value)> = objects
        .iter()
        .map(|o| {
            let (group, kind) = group_kind(o);
            (kind_rank(group, kind), o)
        })
        .collect();
    ranked.sort_by_key(|(rank, _)| *rank); // stable
    ranked.into_iter().map(|(_, o)| o.clone()).collect()
}

/// Whether the object is a CustomResourceDefinition (`apiextensions.k8s.io`, any version).
pub fn is_crd(object: &Value) -> bool {
    group_kind(object) == (CRD_GROUP, CRD_KIND)
}

/// Whether a live CRD is served: its `status.conditions` has `Established=True`. Until then
/// the API server answers "no matches for kind" for its custom resources, so the engine waits
/// for this before applying them (as Flux does).
pub fn crd_established(object: &Value) -> bool {
    condition_status(object, "Established") == Some("True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(api_version: &str, kind: &str, name: &str) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}})
    }

    fn names(objects: &[Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    #[test]
    fn apply_order_table() {
        let cases: Vec<(&str, Vec<Value>, Vec<&str>)> = vec![
            ("empty", vec![], vec![]),
            (
                "crds first, then namespaces, then helm order, custom resources last",
                vec![
                    obj("example.com/v1", "Widget", "cr"),
                    obj("apps/v1", "Deployment", "deploy"),
                    obj("v1", "Service", "svc"),
                    obj("v1", "ConfigMap", "cm"),
                    obj("rbac.authorization.k8s.io/v1", "ClusterRole", "crole"),
                    obj("v1", "ServiceAccount", "sa"),
                    obj("v1", "Namespace", "ns"),
                    obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "crd"),
                ],
                vec!["crd", "ns", "sa", "cm", "crole", "svc", "deploy", "cr"],
            ),
            (
                "stable: same rank keeps manifest order",
                vec![
                    obj("v1", "ConfigMap", "b"),
                    obj("v1", "ConfigMap", "a"),
                    obj("example.com/v1", "Widget", "w2"),
                    obj("example.com/v1", "Gadget", "g1"),
                    obj("v1", "ConfigMap", "c"),
                ],
                vec!["b", "a", "c", "w2", "g1"],
            ),
            (
                "kinds match only in their own group",
                vec![
                    obj("serving.knative.dev/v1", "Service", "knative"),
                    obj("v1", "Service", "core"),
                    obj("apps/v1", "Deployment", "deploy"),
                ],
                vec!["core", "deploy", "knative"],
            ),
            (
                "workloads: DaemonSet, Pod, ReplicaSet, Deployment, HPA, StatefulSet, Job, CronJob, Ingress",
                vec![
                    obj("networking.k8s.io/v1", "Ingress", "ing"),
                    obj("batch/v1", "CronJob", "cron"),
                    obj("batch/v1", "Job", "job"),
                    obj("apps/v1", "StatefulSet", "sts"),
                    obj("autoscaling/v2", "HorizontalPodAutoscaler", "hpa"),
                    obj("apps/v1", "Deployment", "deploy"),
                    obj("v1", "Pod", "pod"),
                    obj("apps/v1", "DaemonSet", "ds"),
                    obj("networking.k8s.io/v1", "IngressClass", "ingclass"),
                ],
                vec![
                    "ds", "pod", "deploy", "hpa", "sts", "job", "cron", "ingclass", "ing",
                ],
            ),
            (
                "objects without apiVersion or kind are unknown: last",
                vec![
                    json!({"metadata": {"name": "nokind"}}),
                    json!({"kind": 7, "apiVersion": "v1", "metadata": {"name": "badkind"}}),
                    obj("v1", "Secret", "secret"),
                ],
                vec!["secret", "nokind", "badkind"],
            ),
            (
                "storage before workloads, PriorityClass right after Namespace",
                vec![
                    obj("v1", "PersistentVolumeClaim", "pvc"),
                    obj("storage.k8s.io/v1", "StorageClass", "sc"),
                    obj("scheduling.k8s.io/v1", "PriorityClass", "prio"),
                    obj("v1", "Namespace", "ns"),
                ],
                vec!["ns", "prio", "sc", "pvc"],
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(names(&apply_order(&input)), want, "{name}");
        }
    }

    #[test]
    fn kind_rank_is_monotonic_in_the_table() {
        assert_eq!(kind_rank(CRD_GROUP, CRD_KIND), 0);
        assert_eq!(kind_rank("", "Namespace"), 1);
        assert!(kind_rank("apps", "Deployment") < kind_rank("example.com", "Widget"));
        assert_eq!(kind_rank("", "Deployment"), KIND_ORDER.len() + 1);
    }

    #[test]
    fn crd_predicates_table() {
        let established = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "status": {"conditions": [
                {"type": "NamesAccepted", "status": "True"},
                {"type": "Established", "status": "True"}
            ]}
        });
        let cases: Vec<(&str, Value, bool, bool)> = vec![
            ("established crd", established, true, true),
            (
                "crd v1beta1, not established",
                json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
                       "status": {"conditions": [{"type": "Established", "status": "False"}]}}),
                true,
                false,
            ),
            (
                "crd without status",
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition"}),
                true,
                false,
            ),
            (
                "condition status is not a string",
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                       "status": {"conditions": [{"type": "Established", "status": true}]}}),
                true,
                false,
            ),
            (
                "same kind, other group",
                json!({"apiVersion": "example.com/v1", "kind": "CustomResourceDefinition"}),
                false,
                false,
            ),
            (
                "not an object",
                json!("CustomResourceDefinition"),
                false,
                false,
            ),
        ];
        for (name, o, crd, established) in cases {
            assert_eq!(is_crd(&o), crd, "{name}: is_crd");
            assert_eq!(crd_established(&o), established, "{name}: crd_established");
        }
    }
}
