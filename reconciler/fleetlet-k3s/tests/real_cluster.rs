//! The adapter against a real Kubernetes API server — opt-in, because none can run where
//! fleetlet is developed. Runs only when `FLEETLET_TEST_KUBECONFIG` names a kubeconfig; works
//! in a namespace of its own (`fleetlet-test-<pid>-<time>`) and deletes it at the end.
//!
//! Against k3s (as root on a k3s server node):
//!
//! ```sh
//! FLEETLET_TEST_KUBECONFIG=/etc/rancher/k3s/k3s.yaml \
//!     cargo test -p fleetlet-k3s --test real_cluster -- --nocapture
//! ```
//!
//! The credentials need create/patch/get/list/delete on namespaces and configmaps.

use fleetlet_core::k8s::ObjectRef;
use fleetlet_engine::cluster::{ApplyOptions, Cluster, ClusterError};
use fleetlet_k3s::{K3sCluster, K3sConfig, verbs};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::discovery::ApiResource;
use kube::core::gvk::GroupVersionKind;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const APPLY: ApplyOptions = ApplyOptions {
    dry_run: false,
    force: false,
};

/// Deletes the test namespace however the test ends.
struct Cleanup<'a> {
    cluster: &'a K3sCluster,
    namespace: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let ns = ObjectRef {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            namespace: None,
            name: self.namespace.clone(),
        };
        if let Err(e) = self.cluster.delete(&ns) {
            eprintln!("could not delete test namespace {}: {e}", self.namespace);
        }
    }
}

fn config_map(namespace: &str, name: &str, data: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"fleetlet-test": "yes"}},
        "data": {"key": data},
    })
}

#[test]
fn adapter_against_a_real_cluster() {
    let Some(kubeconfig) = std::env::var_os("FLEETLET_TEST_KUBECONFIG") else {
        println!("skipped: set FLEETLET_TEST_KUBECONFIG to run against a real cluster");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cluster = K3sCluster::new(
        K3sConfig {
            kubeconfig: Some(kubeconfig.into()),
            timeout: Duration::from_secs(30),
        },
        runtime.handle().clone(),
    )
    .unwrap();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let ns = format!("fleetlet-test-{}-{nanos}", std::process::id());
    let cleanup = Cleanup {
        cluster: &cluster,
        namespace: ns.clone(),
    };

    cluster
        .apply(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            APPLY,
        )
        .unwrap();
    let cm_ref = ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: Some(ns.clone()),
        name: "cfg".into(),
    };

    // Dry run persists nothing.
    let planned = cluster
        .apply(
            &config_map(&ns, "cfg", "one"),
            ApplyOptions {
                dry_run: true,
                force: false,
            },
        )
        .unwrap();
    assert_eq!(planned["data"]["key"], "one");
    assert_eq!(cluster.get(&cm_ref).unwrap(), None);

    // Create, then a no-op apply keeps the resourceVersion.
    let created = cluster
        .apply(&config_map(&ns, "cfg", "one"), APPLY)
        .unwrap();
    let again = cluster
        .apply(&config_map(&ns, "cfg", "one"), APPLY)
        .unwrap();
    assert_eq!(
        created["metadata"]["resourceVersion"],
        again["metadata"]["resourceVersion"]
    );

    // List by label across namespaces finds it.
    let listed = cluster
        .list("v1", "ConfigMap", "fleetlet-test=yes")
        .unwrap();
    assert!(
        listed
            .iter()
            .any(|o| o["metadata"]["namespace"] == ns.as_str() && o["kind"] == "ConfigMap")
    );

    // Another field manager takes .data.key; fleetlet's apply conflicts, then forces.
    runtime.block_on(async {
        let client = kube::Client::try_from(
            kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(
                    std::env::var_os("FLEETLET_TEST_KUBECONFIG").unwrap(),
                )
                .unwrap(),
                &Default::default(),
            )
            .await
            .unwrap(),
        )
        .unwrap();
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"));
        let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
        api.patch(
            "cfg",
            &PatchParams::apply("fleetlet-test-other").force(),
            &Patch::Apply(config_map(&ns, "cfg", "theirs")),
        )
        .await
        .unwrap();
    });
    match cluster.apply(&config_map(&ns, "cfg", "two"), APPLY) {
        Err(ClusterError::Conflict { fields, .. }) => {
            assert!(
                fields
                    .iter()
                    .any(|(f, m)| f == ".data.key" && m == "fleetlet-test-other"),
                "{fields:?}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let forced = cluster
        .apply(
            &config_map(&ns, "cfg", "two"),
            ApplyOptions {
                dry_run: false,
                force: true,
            },
        )
        .unwrap();
    assert_eq!(forced["data"]["key"], "two");

    // Unknown kinds, delete and delete of the absent.
    let gadget = json!({"apiVersion": "fleetlet-test.example.org/v1", "kind": "Gadget",
                        "metadata": {"name": "g", "namespace": ns}});
    assert!(matches!(
        cluster.apply(&gadget, APPLY),
        Err(ClusterError::UnknownKind { .. })
    ));
    assert!(cluster.delete(&cm_ref).unwrap());
    // ConfigMaps have no finalizers: gone at once.
    assert!(!cluster.delete(&cm_ref).unwrap());
    assert_eq!(cluster.get(&cm_ref).unwrap(), None);

    println!("requests: {:?}", cluster.requests());
    assert!(cluster.requests()[verbs::PATCH] >= 4);
    drop(cleanup);
}
