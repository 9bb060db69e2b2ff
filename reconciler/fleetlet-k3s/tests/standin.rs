//! Request-level scenarios of the adapter against the in-process API-server stand-in: the
//! exact requests sent (method, path, query, content type, body) and the multi-step flows of
//! a reconcile (create, update, no-op, conflict, dry run, CRD then custom resource, prune).

mod common;

use common::{apply_as, fixture, fixture_with_timeout, raw};
use fleetlet_core::k8s::ObjectRef;
use fleetlet_engine::cluster::{ApplyOptions, Cluster, ClusterError};
use fleetlet_k3s::standin::{RecordedRequest, StandIn};
use fleetlet_k3s::{K3sCluster, K3sConfig, verbs};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const APPLY: ApplyOptions = ApplyOptions {
    dry_run: false,
    force: false,
};

fn deployment(name: &str, replicas: u32, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
        },
    })
}

fn config_map(namespace: &str, name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "data": {"key": "value"},
    })
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn oref(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.map(String::from),
        name: name.into(),
    }
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The requests other than discovery.
fn object_requests(standin: &StandIn) -> Vec<RecordedRequest> {
    standin
        .requests()
        .into_iter()
        .filter(|r| r.path.split('/').filter(|s| !s.is_empty()).count() > 3)
        .collect()
}

fn metadata<'a>(object: &'a Value, field: &str) -> &'a Value {
    &object["metadata"][field]
}

#[test]
fn apply_sends_server_side_apply_and_creates_then_updates() {
    let f = fixture();
    let created = f
        .cluster
        .apply(&deployment("web", 1, "nginx:1.27"), APPLY)
        .unwrap();

    // Discovery of apps/v1 once, then one apply PATCH to the default namespace.
    let log = f.standin.requests();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str()),
        ("GET", "/apis/apps/v1")
    );
    let patch = &log[1];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(
        patch.path,
        "/apis/apps/v1/namespaces/default/deployments/web"
    );
    assert_eq!(
        patch.query,
        vec![("fieldManager".to_string(), "fleetlet".to_string())]
    );
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    // A namespaced object without a namespace goes to `default`, in the body too.
    assert_eq!(patch.body["metadata"]["namespace"], "default");
    assert_eq!(patch.body["spec"]["replicas"], 1);

    assert_eq!(metadata(&created, "generation"), 1);
    assert_eq!(metadata(&created, "namespace"), "default");
    assert_eq!(
        created["metadata"]["managedFields"][0]["manager"],
        "fleetlet"
    );
    let rv1 = metadata(&created, "resourceVersion").clone();

    // A changed spec: new generation and resourceVersion.
    let updated = f
        .cluster
        .apply(&deployment("web", 3, "nginx:1.27"), APPLY)
        .unwrap();
    assert_eq!(metadata(&updated, "generation"), 2);
    assert_eq!(updated["spec"]["replicas"], 3);
    let rv2 = metadata(&updated, "resourceVersion").clone();
    assert_ne!(rv1, rv2);

    // The same apply again writes nothing.
    let same = f
        .cluster
        .apply(&deployment("web", 3, "nginx:1.27"), APPLY)
        .unwrap();
    assert_eq!(metadata(&same, "resourceVersion"), &rv2);
    assert_eq!(metadata(&same, "generation"), 2);

    // Discovery was cached.
    assert_eq!(
        f.cluster.requests(),
        counts(&[(verbs::DISCOVERY, 1), (verbs::PATCH, 3)])
    );
}

#[test]
fn force_and_dry_run_are_sent_as_asked_and_dry_run_persists_nothing() {
    let f = fixture();
    let answer = f
        .cluster
        .apply(
            &config_map("default", "plan", "web"),
            ApplyOptions {
                dry_run: true,
                force: true,
            },
        )
        .unwrap();
    assert_eq!(answer["data"]["key"], "value");
    let patch = object_requests(&f.standin).pop().unwrap();
    assert_eq!(patch.param("dryRun"), Some("All"));
    assert_eq!(patch.param("force"), Some("true"));
    assert_eq!(patch.param("fieldManager"), Some("fleetlet"));

    let cm = oref("v1", "ConfigMap", Some("default"), "plan");
    assert_eq!(f.cluster.get(&cm).unwrap(), None);
    assert!(
        !f.standin
            .objects()
            .iter()
            .any(|o| o["metadata"]["name"] == "plan")
    );

    // Dry run on an existing object: the merged answer, the stored object untouched.
    let stored = f
        .cluster
        .apply(&config_map("default", "plan", "web"), APPLY)
        .unwrap();
    let mut changed = config_map("default", "plan", "web");
    changed["data"]["key"] = json!("other");
    let would_be = f
        .cluster
        .apply(
            &changed,
            ApplyOptions {
                dry_run: true,
                force: false,
            },
        )
        .unwrap();
    assert_eq!(would_be["data"]["key"], "other");
    let now = f.cluster.get(&cm).unwrap().unwrap();
    assert_eq!(now["data"]["key"], "value");
    assert_eq!(
        metadata(&now, "resourceVersion"),
        metadata(&stored, "resourceVersion")
    );
    assert_eq!(f.cluster.requests()[verbs::PATCH_DRY_RUN], 2);
    assert_eq!(f.cluster.requests()[verbs::PATCH], 1);
}

#[test]
fn conflict_with_another_manager_names_field_and_manager_and_force_takes_it() {
    let f = fixture();
    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    let mut theirs = deployment("web", 5, "nginx:1.27");
    theirs["metadata"]["namespace"] = json!("default");
    let (code, _) = apply_as(&f.standin, "kubectl-edit", path, false, &theirs);
    assert_eq!(code, 201);

    // Same image (shared ownership, no conflict), different replicas (conflict).
    let ours = deployment("web", 2, "nginx:1.27");
    let error = f.cluster.apply(&ours, APPLY).unwrap_err();
    assert_eq!(
        error,
        ClusterError::Conflict {
            object: "Deployment/default/web".into(),
            fields: vec![(".spec.replicas".into(), "kubectl-edit".into())],
        }
    );
    let patch = object_requests(&f.standin).pop().unwrap();
    assert_eq!(patch.param("force"), None);

    let taken = f
        .cluster
        .apply(
            &ours,
            ApplyOptions {
                dry_run: false,
                force: true,
            },
        )
        .unwrap();
    assert_eq!(taken["spec"]["replicas"], 2);
    let patch = object_requests(&f.standin).pop().unwrap();
    assert_eq!(patch.param("force"), Some("true"));
    // fleetlet now owns .spec.replicas; the other manager keeps the fields it shares.
    let managers: BTreeMap<String, Value> = taken["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap().to_string(),
                m["fieldsV1"].clone(),
            )
        })
        .collect();
    assert!(managers["fleetlet"]["f:spec"]["f:replicas"].is_object());
    assert!(
        managers["kubectl-edit"]["f:spec"]
            .get("f:replicas")
            .is_none()
    );
    assert!(managers["kubectl-edit"]["f:spec"]["f:template"].is_object());

    // Now the other manager conflicts with fleetlet, as the real API would answer it.
    let (code, status) = apply_as(&f.standin, "kubectl-edit", path, false, &theirs);
    assert_eq!(code, 409);
    assert_eq!(status["details"]["causes"][0]["field"], ".spec.replicas");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "conflict with \"fleetlet\" using apps/v1"
    );
}

#[test]
fn crd_applied_then_its_custom_resource_in_the_same_session() {
    let f = fixture();
    let widget = json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default", "labels": {"app": "w"}},
        "spec": {"size": 3},
    });
    // Before the CRD exists the kind is unknown (the group is not served at all).
    assert!(matches!(
        f.cluster.apply(&widget, APPLY),
        Err(ClusterError::UnknownKind { .. })
    ));

    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    });
    let applied_crd = f.cluster.apply(&crd, APPLY).unwrap();
    let conditions = applied_crd["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    );
    // A cluster-scoped object's apply has no namespace in its path.
    let patch = object_requests(&f.standin).pop().unwrap();
    assert_eq!(
        patch.path,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
    );

    let created = f.cluster.apply(&widget, APPLY).unwrap();
    assert_eq!(created["spec"]["size"], 3);
    let discoveries: Vec<String> = f
        .standin
        .requests()
        .into_iter()
        .filter(|r| r.path == "/apis/example.com/v1")
        .map(|r| r.method)
        .collect();
    assert_eq!(discoveries, ["GET", "GET"], "looked up again after the CRD");

    let listed = f.cluster.list("example.com/v1", "Widget", "app=w").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["kind"], "Widget");

    // Deleting the CRD takes the kind away; the adapter notices on its next call.
    let crd_ref = oref(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        "widgets.example.com",
    );
    assert!(f.cluster.delete(&crd_ref).unwrap());
    let w1 = oref("example.com/v1", "Widget", Some("default"), "w1");
    assert!(matches!(
        f.cluster.get(&w1),
        Err(ClusterError::UnknownKind { .. })
    ));
    assert!(matches!(
        f.cluster.get(&w1),
        Err(ClusterError::UnknownKind { .. })
    ));
}

#[test]
fn unknown_kinds_are_reported_without_an_object_request() {
    let f = fixture();
    let gadget =
        json!({"apiVersion": "example.org/v1", "kind": "Gadget", "metadata": {"name": "g"}});
    assert_eq!(
        f.cluster.apply(&gadget, APPLY).unwrap_err(),
        ClusterError::UnknownKind {
            object: "Gadget/g".into(),
            api_version: "example.org/v1".into(),
            kind: "Gadget".into(),
        }
    );
    // A served group/version without that kind.
    let odd = json!({"apiVersion": "v1", "kind": "Nonsense", "metadata": {"name": "n"}});
    assert!(matches!(
        f.cluster.apply(&odd, APPLY),
        Err(ClusterError::UnknownKind { .. })
    ));
    assert!(object_requests(&f.standin).is_empty());
    assert!(!f.cluster.requests().contains_key(verbs::PATCH));

    // The scope question the engine asks before naming objects, from the same discovery.
    assert_eq!(
        f.cluster.namespaced("example.org/v1", "Gadget").unwrap(),
        None
    );
    assert_eq!(f.cluster.namespaced("v1", "ConfigMap").unwrap(), Some(true));
    assert_eq!(
        f.cluster.namespaced("v1", "Namespace").unwrap(),
        Some(false)
    );
    assert_eq!(
        f.cluster
            .namespaced("rbac.authorization.k8s.io/v1", "ClusterRole")
            .unwrap(),
        Some(false)
    );
}

#[test]
fn get_and_delete_with_background_propagation() {
    let f = fixture();
    let cm = oref("v1", "ConfigMap", Some("default"), "gone");
    assert_eq!(f.cluster.get(&cm).unwrap(), None);
    assert!(!f.cluster.delete(&cm).unwrap(), "absent: Ok(false)");

    f.cluster
        .apply(&config_map("default", "gone", "web"), APPLY)
        .unwrap();
    let got = f.cluster.get(&cm).unwrap().unwrap();
    assert_eq!(got["data"]["key"], "value");
    f.standin.clear_requests();
    assert!(f.cluster.delete(&cm).unwrap());
    let delete = f.standin.requests().pop().unwrap();
    assert_eq!(delete.method, "DELETE");
    assert_eq!(delete.path, "/api/v1/namespaces/default/configmaps/gone");
    assert_eq!(delete.body["propagationPolicy"], "Background");
    assert_eq!(f.cluster.get(&cm).unwrap(), None);

    // A namespaced reference without a namespace means `default`.
    f.cluster
        .apply(&config_map("default", "implicit", "web"), APPLY)
        .unwrap();
    let implicit = oref("v1", "ConfigMap", None, "implicit");
    assert!(f.cluster.get(&implicit).unwrap().is_some());
    let get = f.standin.requests().pop().unwrap();
    assert_eq!(get.path, "/api/v1/namespaces/default/configmaps/implicit");
    assert_eq!(
        f.cluster.requests(),
        counts(&[
            (verbs::DISCOVERY, 1),
            (verbs::GET, 4),
            (verbs::DELETE, 2),
            (verbs::PATCH, 2)
        ])
    );
}

#[test]
fn list_by_label_across_namespaces() {
    let f = fixture();
    for ns in ["a", "b"] {
        f.cluster.apply(&namespace(ns), APPLY).unwrap();
    }
    f.cluster
        .apply(&config_map("a", "one", "web"), APPLY)
        .unwrap();
    f.cluster
        .apply(&config_map("b", "two", "web"), APPLY)
        .unwrap();
    f.cluster
        .apply(&config_map("b", "db", "db"), APPLY)
        .unwrap();
    f.standin.clear_requests();

    let web = f.cluster.list("v1", "ConfigMap", "app=web").unwrap();
    let names: Vec<(&str, &str)> = web
        .iter()
        .map(|o| {
            (
                o["metadata"]["namespace"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("a", "one"), ("b", "two")]);
    // Built-in list items come without apiVersion/kind; the adapter puts them back.
    assert!(
        web.iter()
            .all(|o| o["apiVersion"] == "v1" && o["kind"] == "ConfigMap")
    );

    let list = f.standin.requests().pop().unwrap();
    assert_eq!(
        (list.method.as_str(), list.path.as_str()),
        ("GET", "/api/v1/configmaps")
    );
    assert_eq!(list.param("labelSelector"), Some("app=web"));

    let both = f
        .cluster
        .list("v1", "ConfigMap", "app=web,app!=db")
        .unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(
        f.standin.requests().pop().unwrap().param("labelSelector"),
        Some("app=web,app!=db")
    );
    // No selector: everything of the kind, and no labelSelector parameter at all.
    assert_eq!(f.cluster.list("v1", "ConfigMap", "").unwrap().len(), 3);
    assert_eq!(
        f.standin.requests().pop().unwrap().param("labelSelector"),
        None
    );
    assert_eq!(f.cluster.requests()[verbs::LIST], 3);
}

#[test]
fn stopped_api_server_is_unavailable_within_the_timeout() {
    let timeout = Duration::from_secs(2);
    let mut f = fixture_with_timeout(timeout);
    // A warm connection and discovery cache first, so the failure is the object request's.
    f.cluster
        .apply(&config_map("default", "x", "web"), APPLY)
        .unwrap();
    f.standin.stop();
    for _ in 0..2 {
        let start = Instant::now();
        let error = f
            .cluster
            .apply(&config_map("default", "x", "web"), APPLY)
            .unwrap_err();
        assert!(matches!(error, ClusterError::Unavailable(_)), "{error}");
        assert!(error.is_transient());
        assert!(start.elapsed() < timeout + Duration::from_secs(1));
    }
}

#[test]
fn api_server_that_never_answers_is_unavailable_after_the_timeout() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut connections = Vec::new();
        for stream in listener.incoming().take(4) {
            connections.push(stream);
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    fleetlet_k3s::standin::write_kubeconfig(&kubeconfig, &format!("http://{addr}")).unwrap();
    let runtime = common::runtime();
    let timeout = Duration::from_millis(800);
    let cluster = K3sCluster::new(
        K3sConfig {
            kubeconfig: Some(kubeconfig),
            timeout,
        },
        runtime.handle().clone(),
    )
    .unwrap();
    let start = Instant::now();
    let error = cluster
        .get(&oref("v1", "ConfigMap", Some("default"), "x"))
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(error, ClusterError::Unavailable(_)), "{error}");
    assert!(
        elapsed >= timeout - Duration::from_millis(100),
        "{elapsed:?}"
    );
    assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
    drop(cluster);
    drop(runtime);
    drop(held);
}

#[test]
fn injected_failures_map_to_the_port_errors_without_retries() {
    let f = fixture();
    let cm = config_map("default", "x", "web");
    f.cluster.apply(&cm, APPLY).unwrap();

    f.standin.fail_next(1, 500);
    assert!(matches!(
        f.cluster.apply(&cm, APPLY),
        Err(ClusterError::Unavailable(_))
    ));
    f.standin.fail_next(1, 429);
    assert!(matches!(
        f.cluster.apply(&cm, APPLY),
        Err(ClusterError::Unavailable(_))
    ));
    f.standin.fail_next(1, 503);
    assert!(matches!(
        f.cluster
            .get(&oref("v1", "ConfigMap", Some("default"), "x")),
        Err(ClusterError::Unavailable(_))
    ));
    f.standin.fail_next(1, 422);
    match f.cluster.apply(&cm, APPLY) {
        Err(ClusterError::Invalid { object, message }) => {
            assert_eq!(object, "ConfigMap/default/x");
            assert_eq!(message, "stand-in: injected 422");
        }
        other => panic!("{other:?}"),
    }
    f.standin.fail_next(1, 403);
    assert!(matches!(
        f.cluster
            .delete(&oref("v1", "ConfigMap", Some("default"), "x")),
        Err(ClusterError::Denied { .. })
    ));
    f.standin.fail_next(1, 401);
    assert!(matches!(
        f.cluster.list("v1", "ConfigMap", ""),
        Err(ClusterError::Denied { .. })
    ));
    // One request per call: kube's retry layer is off, the engine retries on its schedule.
    assert_eq!(
        f.cluster.requests(),
        counts(&[
            (verbs::DISCOVERY, 1),
            (verbs::PATCH, 4),
            (verbs::GET, 1),
            (verbs::DELETE, 1),
            (verbs::LIST, 1)
        ])
    );
    // A failure during discovery is mapped the same way.
    f.standin.fail_next(1, 500);
    assert!(matches!(
        f.cluster.apply(&deployment("web", 1, "nginx"), APPLY),
        Err(ClusterError::Unavailable(_))
    ));
    assert!(
        f.cluster
            .apply(&deployment("web", 1, "nginx"), APPLY)
            .is_ok()
    );
}

#[test]
fn invalid_objects_and_missing_namespaces() {
    let f = fixture();
    let nameless = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
    assert!(matches!(
        f.cluster.apply(&nameless, APPLY),
        Err(ClusterError::Invalid { .. })
    ));
    assert!(
        f.standin.requests().is_empty(),
        "refused before any request"
    );

    match f.cluster.apply(&config_map("nowhere", "x", "web"), APPLY) {
        Err(ClusterError::Invalid { message, .. }) => assert!(message.contains("nowhere")),
        other => panic!("{other:?}"),
    }
    // A CRD the server refuses (name must be plural.group) is Invalid with its message.
    let bad_crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "wrong"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"kind": "Widget", "plural": "widgets"},
                 "versions": [{"name": "v1", "served": true, "storage": true}]},
    });
    match f.cluster.apply(&bad_crd, APPLY) {
        Err(ClusterError::Invalid { message, .. }) => {
            assert!(message.contains("spec.names.plural"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // A cluster-scoped kind ignores a namespace given anyway (as kubectl does).
    let mut ns = namespace("site");
    ns["metadata"]["namespace"] = json!("default");
    f.cluster.apply(&ns, APPLY).unwrap();
    let patch = f.standin.requests().pop().unwrap();
    assert_eq!(patch.path, "/api/v1/namespaces/site");
    assert!(patch.body["metadata"].get("namespace").is_none());
}

#[test]
fn status_written_by_a_controller_is_read_back_and_fields_dropped_from_the_manifest_go() {
    let f = fixture();
    let mut web = deployment("web", 2, "nginx:1.27");
    web["metadata"]["annotations"] = json!({"owner": "team-a"});
    f.cluster.apply(&web, APPLY).unwrap();
    let dep = oref("apps/v1", "Deployment", Some("default"), "web");
    f.standin
        .set_status(&dep, json!({"readyReplicas": 2, "observedGeneration": 1}))
        .unwrap();
    let got = f.cluster.get(&dep).unwrap().unwrap();
    assert_eq!(got["status"]["readyReplicas"], 2);
    assert_eq!(metadata(&got, "generation"), 1);

    // An apply without the annotation removes it (fleetlet was its only manager), and the
    // applied body's status is not taken.
    let mut next = deployment("web", 2, "nginx:1.27");
    next["status"] = json!({"readyReplicas": 0});
    let applied = f.cluster.apply(&next, APPLY).unwrap();
    assert!(applied["metadata"].get("annotations").is_none());
    assert_eq!(applied["status"]["readyReplicas"], 2);
    assert_eq!(metadata(&applied, "generation"), 1, "metadata only");
}

#[test]
fn stand_in_answers_like_the_real_server_for_unserved_paths() {
    let standin = StandIn::start();
    let (code, body) = raw(standin.addr(), "GET", "/apis/nowhere.io/v1", None, "");
    assert_eq!((code, body), (404, Value::Null), "plain-text 404 page");
    let (code, body) = raw(standin.addr(), "GET", "/api/v1/gizmos", None, "");
    assert_eq!(code, 404);
    assert_eq!(
        body["message"],
        "the server could not find the requested resource"
    );
    let (code, body) = raw(standin.addr(), "GET", "/version", None, "");
    assert_eq!(code, 200);
    assert_eq!(body["major"], "1");
    let (code, body) = raw(
        standin.addr(),
        "PATCH",
        "/api/v1/namespaces/default/configmaps/x",
        Some("application/merge-patch+json"),
        "{}",
    );
    assert_eq!(code, 415, "{body}");
    let (code, _) = raw(
        standin.addr(),
        "PATCH",
        "/api/v1/namespaces/default/configmaps/x",
        Some("application/apply-patch+yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    assert_eq!(code, 422, "fieldManager is required");
}
