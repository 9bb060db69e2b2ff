//! k3s workloads end to end: the real `fleetlet agent` binary applying a fleet repo's
//! Kubernetes manifests to the in-process API-server stand-in (`fleetlet_k3s::standin`), each
//! test with its own stand-in. Assertions are on what the stand-in stores and logs (objects,
//! labels, managedFields, request order and counts) and on the agent's `status.json`.
//!
//! The Deployments carry no container image: the engine pulls and pins every image of a k3s
//! workload before applying, and these tests have no registry for it (the stand-in does not
//! validate pod templates).

use crate::testkit::agent::{Agent, http_app, site_yaml, wait_body, write_config};
use crate::testkit::components::{free_port, probe_http};
use crate::testkit::git::TestRepo;
use fleetlet_core::k8s::{Inventory, ObjectRef};
use fleetlet_k3s::standin::{RecordedRequest, StandIn};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
const WORKLOAD: &str = "shop/backend";
const PRUNE_DISABLED: &str = "fleetlet.dev/prune: disabled";

// ---------------------------------------------------------------------------------------------
// Fleet repo content
// ---------------------------------------------------------------------------------------------

/// App `shop` with one k3s workload `backend` whose manifests are `k3s/shop/`.
fn k3s_app() -> String {
    "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {name: shop}\nspec:\n  targets: [{selector: {matchLabels: {tier: store}}}]\n  workloads:\n    - name: backend\n      runtime: k3s\n      manifests: k3s/shop\n".to_string()
}

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n")
}

/// A ConfigMap; `namespace` `None` leaves the namespace out of the manifest.
fn config_map(namespace: Option<&str>, name: &str, value: &str, annotations: &str) -> String {
    let ns = namespace
        .map(|n| format!("\n  namespace: {n}"))
        .unwrap_or_default();
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!("\n  annotations: {{{annotations}}}")
    };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}{ns}{annotations}\ndata:\n  value: \"{value}\"\n"
    )
}

fn deployment(namespace: Option<&str>, name: &str, replicas: u32) -> String {
    let ns = namespace
        .map(|n| format!("\n  namespace: {n}"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}{ns}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: {name}}}]\n"
    )
}

fn service(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n"
    )
}

fn oref(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.map(String::from),
        name: name.into(),
    }
}

fn commit(repo: &TestRepo, files: &[(&str, String)], msg: &str) -> String {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
    repo.commit_files(&files, msg).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The site: a local fleet repo, a stand-in, an agent configured for both
// ---------------------------------------------------------------------------------------------

/// An agent config in `dir` following `url`, with `runtimes.k3s` pointing at `kubeconfig`.
fn config_with_k3s(dir: &Path, url: &str, interval: &str, kubeconfig: &Path) -> PathBuf {
    let config = write_config(dir, "store-1", url, interval, "");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("runtimes:\n"), "{text}");
    let text = text.replacen(
        "runtimes:\n",
        &format!(
            "runtimes:\n  k3s: {{kubeconfig: {}, timeout: 10s}}\n",
            kubeconfig.display()
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    config
}

struct Site {
    repo: TestRepo,
    standin: StandIn,
    agent: Agent,
    _work: tempfile::TempDir,
}

/// Commits the site (`wasm, k3s`), app `shop` and `files`, starts a stand-in and an agent
/// polling every `interval`, and waits until that first commit is applied.
fn site(files: &[(&str, String)], interval: &str) -> (Site, String) {
    let repo = TestRepo::new().unwrap();
    let mut all = vec![
        ("sites/s.yaml", site_yaml("store-1", "wasm, k3s")),
        ("apps/shop.yaml", k3s_app()),
    ];
    all.extend(files.iter().cloned());
    let first = commit(&repo, &all, "release 1");
    let standin = StandIn::start();
    let work = tempfile::tempdir().unwrap();
    let config = config_with_k3s(
        work.path(),
        &repo.file_url(),
        interval,
        standin.kubeconfig_path(),
    );
    let agent = Agent::start(&config);
    agent.wait_status(T, "first release applied", applied(&first));
    (
        Site {
            repo,
            standin,
            agent,
            _work: work,
        },
        first,
    )
}

fn applied(commit: &str) -> impl Fn(&Value) -> bool + '_ {
    move |s| s["appliedCommit"].as_str() == Some(commit)
}

/// The status entry of workload `id`.
fn workload<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["workloads"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == id))
        .unwrap_or(&Value::Null)
}

fn workload_state(status: &Value, id: &str) -> String {
    workload(status, id)["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Reading the stand-in
// ---------------------------------------------------------------------------------------------

/// The stored object of `kind` named `name` in `namespace` (`None`: cluster-scoped).
fn stored(standin: &StandIn, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
    standin.objects().into_iter().find(|o| {
        o["kind"] == kind
            && o["metadata"]["name"] == name
            && o["metadata"]["namespace"].as_str() == namespace
    })
}

fn is_dry_run(r: &RecordedRequest) -> bool {
    r.method == "PATCH" && r.param("dryRun") == Some("All")
}

/// Requests that change the cluster: applies that persist, deletes.
fn writes(log: &[RecordedRequest]) -> Vec<(String, String)> {
    log.iter()
        .filter(|r| (r.method == "PATCH" && !is_dry_run(r)) || r.method == "DELETE")
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect()
}

/// Where fleetlet keeps its copy of each app's inventory on the cluster.
const INVENTORY_PATH: &str = "/namespaces/fleetlet-system";

/// [`writes`] to the app's own objects (not to fleetlet's inventory record).
fn app_writes(log: &[RecordedRequest]) -> Vec<(String, String)> {
    writes(log)
        .into_iter()
        .filter(|(_, p)| !p.contains(INVENTORY_PATH))
        .collect()
}

/// The objects (`Kind/ns/name`) app `shop`'s inventory ConfigMap on the cluster lists.
fn inventory_on_cluster(standin: &StandIn) -> Vec<String> {
    let cm = stored(
        standin,
        "ConfigMap",
        Some("fleetlet-system"),
        "fleetlet-inventory-shop",
    )
    .expect("the inventory is recorded on the cluster");
    let inventory: Inventory =
        serde_json::from_str(cm["data"]["inventory.json"].as_str().unwrap()).unwrap();
    let mut refs: Vec<String> = inventory.entries.keys().map(|r| r.to_string()).collect();
    refs.sort();
    refs
}

fn is_list(r: &RecordedRequest) -> bool {
    r.method == "GET" && r.param("labelSelector").is_some()
}

/// Reads of one object (not lists, not discovery).
fn is_object_get(r: &RecordedRequest) -> bool {
    r.method == "GET"
        && !is_list(r)
        && r.path.contains("/namespaces/")
        && r.path.split('/').filter(|s| !s.is_empty()).count() >= 5
}

/// Writes the status a Deployment controller reports once the rollout of the current
/// generation is complete.
fn make_ready(standin: &StandIn, namespace: Option<&str>, name: &str) {
    let ns = namespace.unwrap_or("default");
    let live = stored(standin, "Deployment", Some(ns), name).expect("deployment stored");
    let generation = live["metadata"]["generation"].as_i64().unwrap_or(1);
    let replicas = live["spec"]["replicas"].as_i64().unwrap_or(1);
    standin
        .set_status(
            &oref("apps/v1", "Deployment", Some(ns), name),
            json!({
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            }),
        )
        .unwrap();
}

/// One HTTP/1.1 request to the stand-in on a fresh connection: (status code, JSON body).
fn raw(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A server-side apply by another field manager (as `kubectl` or a controller would).
fn apply_as(standin: &StandIn, manager: &str, path: &str, force: bool, object: &Value) -> u16 {
    let force = if force { "&force=true" } else { "" };
    let (code, body) = raw(
        standin.addr(),
        "PATCH",
        &format!("{path}?fieldManager={manager}{force}"),
        "application/apply-patch+yaml",
        &serde_yaml::to_string(object).unwrap(),
    );
    assert!(code < 300, "{manager} apply answered {code}: {body:#}");
    code
}

/// Waits (polling) until `cond` holds; panics with `what` and the agent's logs after `timeout`.
fn wait_for(agent: &Agent, timeout: Duration, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {:#}\nlogs:\n{}",
            agent.status(),
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn apply_creates_labelled_objects_namespace_first_and_promotes_once_ready() {
    // File order puts the Namespace last: the apply order must not follow it.
    let (s, c1) = site(
        &[
            (
                "k3s/shop/a-deployment.yaml",
                deployment(Some("shop"), "web", 1),
            ),
            (
                "k3s/shop/b-config.yaml",
                config_map(Some("shop"), "settings", "v1", ""),
            ),
            ("k3s/shop/c-service.yaml", service("shop", "web")),
            ("k3s/shop/z-namespace.yaml", namespace("shop")),
        ],
        "200ms",
    );

    // Every object exists, labelled for fleetlet and owned by field manager `fleetlet`.
    for (kind, ns, name) in [
        ("Namespace", None, "shop"),
        ("Deployment", Some("shop"), "web"),
        ("ConfigMap", Some("shop"), "settings"),
        ("Service", Some("shop"), "web"),
    ] {
        let o = stored(&s.standin, kind, ns, name)
            .unwrap_or_else(|| panic!("{kind} {name} not on the cluster"));
        let labels = &o["metadata"]["labels"];
        assert_eq!(labels["fleetlet.dev/app"], "shop", "{o:#}");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "fleetlet", "{o:#}");
        let managers: Vec<&str> = o["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert_eq!(managers, vec!["fleetlet"], "{o:#}");
    }

    // Dry run first, then the Namespace before everything in it; then the inventory's copy
    // on the cluster.
    let log = s.standin.requests();
    let first_patch = log.iter().find(|r| r.method == "PATCH").unwrap();
    assert!(is_dry_run(first_patch), "{first_patch:#?}");
    let applies = app_writes(&log);
    assert_eq!(
        applies[0],
        ("PATCH".into(), "/api/v1/namespaces/shop".into()),
        "{applies:#?}"
    );
    assert_eq!(applies.len(), 4, "{applies:#?}");
    assert!(applies.iter().all(|(m, _)| m == "PATCH"), "{applies:#?}");
    for r in log.iter().filter(|r| r.method == "PATCH") {
        assert_eq!(r.param("fieldManager"), Some("fleetlet"), "{r:#?}");
    }
    assert_eq!(
        inventory_on_cluster(&s.standin),
        vec![
            "ConfigMap/shop/settings",
            "Deployment/shop/web",
            "Namespace/shop",
            "Service/shop/web"
        ]
    );
    let st = s.agent.status();
    assert!(st["appliedCommit"] == c1.as_str(), "{st:#}");

    // The Deployment has not rolled out: progressing, and not last-known-good, over several
    // cycles.
    let st = s.agent.wait_status(T, "k3s workload progressing", |st| {
        workload_state(st, WORKLOAD) == "progressing"
    });
    let reason = workload(&st, WORKLOAD)["reason"].as_str().unwrap_or("");
    assert!(reason.contains("Deployment/shop/web"), "{st:#}");
    assert_eq!(workload(&st, WORKLOAD)["runtime"], "k3s", "{st:#}");
    std::thread::sleep(Duration::from_millis(1500));
    let st = s.agent.status();
    assert_eq!(workload_state(&st, WORKLOAD), "progressing", "{st:#}");
    assert!(st["lastKnownGoodCommit"].is_null(), "{st:#}");

    // The controller reports the rollout done: running, then last-known-good.
    make_ready(&s.standin, Some("shop"), "web");
    let st = s.agent.wait_status(T, "k3s workload running", |st| {
        workload_state(st, WORKLOAD) == "running"
    });
    assert!(st["lastError"].is_null(), "{st:#}");
    s.agent.wait_status(T, "release promoted", |st| {
        st["lastKnownGoodCommit"].as_str() == Some(c1.as_str())
    });
}

#[test]
fn changed_manifest_is_the_only_patch_removed_ones_are_pruned_unless_opted_out() {
    let (s, _c1) = site(
        &[
            ("k3s/shop/ns.yaml", namespace("shop")),
            (
                "k3s/shop/cm-a.yaml",
                config_map(Some("shop"), "a", "v1", ""),
            ),
            (
                "k3s/shop/cm-b.yaml",
                config_map(Some("shop"), "b", "v1", ""),
            ),
            (
                "k3s/shop/cm-keep.yaml",
                config_map(Some("shop"), "keep", "v1", PRUNE_DISABLED),
            ),
            (
                "k3s/shop/cm-taken.yaml",
                config_map(Some("shop"), "taken", "v1", ""),
            ),
            ("k3s/shop/deploy.yaml", deployment(Some("shop"), "web", 1)),
        ],
        "200ms",
    );
    // Someone else takes over `taken` (its managed-by label now says so).
    apply_as(
        &s.standin,
        "helm",
        "/api/v1/namespaces/shop/configmaps/taken",
        true,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "taken", "namespace": "shop",
                             "labels": {"app.kubernetes.io/managed-by": "helm"}}}),
    );
    let before_a = stored(&s.standin, "ConfigMap", Some("shop"), "a").unwrap();
    let deploy_rv = stored(&s.standin, "Deployment", Some("shop"), "web").unwrap()["metadata"]
        ["resourceVersion"]
        .clone();

    s.standin.clear_requests();
    for f in ["cm-b.yaml", "cm-keep.yaml", "cm-taken.yaml"] {
        s.repo.remove(&format!("k3s/shop/{f}")).unwrap();
    }
    let c2 = commit(
        &s.repo,
        &[(
            "k3s/shop/cm-a.yaml",
            config_map(Some("shop"), "a", "v2", ""),
        )],
        "change a, drop b, keep and taken",
    );
    let st = s
        .agent
        .wait_status(T, "second release applied", applied(&c2));
    assert!(st["lastError"].is_null(), "{st:#}");

    let log = s.standin.requests();
    assert_eq!(
        app_writes(&log),
        vec![
            (
                "PATCH".to_string(),
                "/api/v1/namespaces/shop/configmaps/a".to_string()
            ),
            (
                "DELETE".to_string(),
                "/api/v1/namespaces/shop/configmaps/b".to_string()
            ),
        ],
        "{log:#?}"
    );
    let dry_runs: Vec<&str> = log
        .iter()
        .filter(|r| is_dry_run(r))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(
        dry_runs,
        vec!["/api/v1/namespaces/shop/configmaps/a"],
        "only the changed object is dry-run"
    );

    let a = stored(&s.standin, "ConfigMap", Some("shop"), "a").unwrap();
    assert_eq!(a["data"]["value"], "v2");
    assert_ne!(
        a["metadata"]["resourceVersion"],
        before_a["metadata"]["resourceVersion"]
    );
    assert!(stored(&s.standin, "ConfigMap", Some("shop"), "b").is_none());
    let keep = stored(&s.standin, "ConfigMap", Some("shop"), "keep").expect("opted out: kept");
    assert_eq!(keep["data"]["value"], "v1");
    let taken = stored(&s.standin, "ConfigMap", Some("shop"), "taken").expect("not ours: kept");
    assert_eq!(
        taken["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "helm"
    );
    assert_eq!(
        stored(&s.standin, "Deployment", Some("shop"), "web").unwrap()["metadata"]["resourceVersion"],
        deploy_rv,
        "unchanged objects are not touched"
    );
    // The inventory (state record and the cluster's copy) no longer lists what left the repo.
    assert_eq!(
        inventory_on_cluster(&s.standin),
        vec!["ConfigMap/shop/a", "Deployment/shop/web", "Namespace/shop"]
    );
}

#[test]
fn no_op_cycles_write_nothing_and_list_each_kind_at_most_once_per_cycle() {
    let (s, c1) = site(
        &[
            ("k3s/shop/ns.yaml", namespace("shop")),
            (
                "k3s/shop/cm-a.yaml",
                config_map(Some("shop"), "a", "v1", ""),
            ),
            (
                "k3s/shop/cm-b.yaml",
                config_map(Some("shop"), "b", "v1", ""),
            ),
            ("k3s/shop/svc.yaml", service("shop", "web")),
            ("k3s/shop/deploy.yaml", deployment(Some("shop"), "web", 1)),
        ],
        "200ms",
    );
    make_ready(&s.standin, Some("shop"), "web");
    s.agent.wait_status(T, "release promoted", |st| {
        st["lastKnownGoodCommit"].as_str() == Some(c1.as_str())
    });
    // Settle: from here on the agent polls every 200 ms and nothing changes.
    std::thread::sleep(Duration::from_millis(500));
    s.standin.clear_requests();
    let window = Duration::from_secs(3);
    std::thread::sleep(window);
    let log = s.standin.requests();

    assert_eq!(writes(&log), vec![], "{log:#?}");
    assert!(!log.iter().any(is_dry_run), "{log:#?}");
    assert!(!log.iter().any(is_object_get), "{log:#?}");
    let mut lists: BTreeMap<&str, usize> = BTreeMap::new();
    for r in log.iter().filter(|r| is_list(r)) {
        *lists.entry(r.path.as_str()).or_default() += 1;
    }
    // Namespaces, configmaps, services, deployments.
    assert_eq!(lists.len(), 4, "one list per kind: {lists:#?}");
    // At most one cycle per interval (the window may cut one cycle in two).
    let max_cycles = (window.as_millis() / 200) as usize + 1;
    let (min, max) = (
        *lists.values().min().unwrap(),
        *lists.values().max().unwrap(),
    );
    assert!(min >= 3, "cycles ran during the window: {lists:#?}");
    assert!(
        max <= max_cycles,
        "more than one list per kind per cycle: {lists:#?}"
    );
    assert!(max - min <= 1, "every kind once per cycle: {lists:#?}");
    let others: Vec<&RecordedRequest> = log.iter().filter(|r| !is_list(r)).collect();
    assert!(
        others.is_empty(),
        "nothing but lists in a no-op cycle: {others:#?}"
    );
    let st = s.agent.status();
    assert_eq!(workload_state(&st, WORKLOAD), "running", "{st:#}");
    assert!(st["lastError"].is_null(), "{st:#}");
}

#[test]
fn invalid_objects_hold_the_release_at_prepare_and_nothing_is_applied() {
    let (s, c1) = site(
        &[
            ("k3s/shop/ns.yaml", namespace("shop")),
            (
                "k3s/shop/cm-a.yaml",
                config_map(Some("shop"), "a", "v1", ""),
            ),
        ],
        "200ms",
    );
    let before = stored(&s.standin, "ConfigMap", Some("shop"), "a").unwrap();
    s.standin.clear_requests();
    let c2 = commit(
        &s.repo,
        &[
            // A valid change that must not be applied either: the release is held whole.
            (
                "k3s/shop/cm-a.yaml",
                config_map(Some("shop"), "a", "v2", ""),
            ),
            // A namespace nobody creates (404 namespace not found).
            (
                "k3s/shop/ghost.yaml",
                config_map(Some("nowhere"), "ghost", "v1", ""),
            ),
            // A CRD the API server refuses (422: the name must be plural.group).
            (
                "k3s/shop/crd.yaml",
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: wrong}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets}\n  versions: [{name: v1, served: true, storage: true}]\n".to_string(),
            ),
        ],
        "invalid objects",
    );
    let st = s.agent.wait_status(T, "release refused", |st| {
        st["lastError"]["commit"].as_str() == Some(c2.as_str())
    });
    let err = &st["lastError"];
    assert_eq!(err["stage"], "prepare", "{st:#}");
    assert_eq!(err["retryable"], false, "{st:#}");
    let details: Vec<&str> = err["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(details.len(), 2, "{st:#}");
    assert!(
        details.iter().any(|d| d.contains("\"nowhere\"")),
        "{details:#?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("CustomResourceDefinition") && d.contains("spec.names.plural")),
        "{details:#?}"
    );
    assert_eq!(st["appliedCommit"].as_str(), Some(c1.as_str()), "{st:#}");

    // A non-retryable refusal is not redone until the ref moves.
    let dry_runs = s
        .standin
        .requests()
        .iter()
        .filter(|r| is_dry_run(r))
        .count();
    std::thread::sleep(Duration::from_millis(1000));
    let log = s.standin.requests();
    assert_eq!(log.iter().filter(|r| is_dry_run(r)).count(), dry_runs);

    assert_eq!(writes(&log), vec![], "{log:#?}");
    assert_eq!(
        stored(&s.standin, "ConfigMap", Some("shop"), "a").unwrap(),
        before,
        "the previous objects are untouched"
    );
    assert!(
        !s.standin
            .objects()
            .iter()
            .any(|o| o["metadata"]["name"] == "ghost" || o["metadata"]["name"] == "wrong"),
        "nothing of the refused release is stored"
    );
}

#[test]
fn a_field_owned_by_another_manager_holds_the_release_naming_field_and_manager() {
    let (s, c1) = site(
        &[
            ("k3s/shop/ns.yaml", namespace("shop")),
            ("k3s/shop/deploy.yaml", deployment(Some("shop"), "web", 1)),
        ],
        "200ms",
    );
    // Someone scales by hand with server-side apply (taking the field over).
    apply_as(
        &s.standin,
        "kubectl-edit",
        "/apis/apps/v1/namespaces/shop/deployments/web",
        true,
        &json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"replicas": 3}}),
    );
    s.standin.clear_requests();
    let c2 = commit(
        &s.repo,
        &[("k3s/shop/deploy.yaml", deployment(Some("shop"), "web", 2))],
        "scale to 2",
    );
    let st = s.agent.wait_status(T, "release held", |st| {
        st["lastError"]["commit"].as_str() == Some(c2.as_str())
    });
    let err = &st["lastError"];
    assert_eq!(err["stage"], "prepare", "{st:#}");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains(".spec.replicas"), "{st:#}");
    assert!(message.contains("kubectl-edit"), "{st:#}");
    assert!(message.contains("Deployment/shop/web"), "{st:#}");
    assert_eq!(st["appliedCommit"].as_str(), Some(c1.as_str()), "{st:#}");

    let log = s.standin.requests();
    assert_eq!(writes(&log), vec![], "{log:#?}");
    let web = stored(&s.standin, "Deployment", Some("shop"), "web").unwrap();
    assert_eq!(
        web["spec"]["replicas"], 3,
        "the other manager's value stays"
    );
}

#[test]
fn api_unavailable_during_a_release_is_retryable_and_the_release_applies_once_back() {
    let (s, c1) = site(
        &[
            ("k3s/shop/ns.yaml", namespace("shop")),
            (
                "k3s/shop/cm-a.yaml",
                config_map(Some("shop"), "a", "v1", ""),
            ),
        ],
        "200ms",
    );
    s.standin.fail_next(u32::MAX, 503);
    let c2 = commit(
        &s.repo,
        &[(
            "k3s/shop/cm-a.yaml",
            config_map(Some("shop"), "a", "v2", ""),
        )],
        "v2",
    );
    let st = s.agent.wait_status(T, "release failed", |st| {
        st["lastError"]["commit"].as_str() == Some(c2.as_str())
    });
    assert_eq!(st["lastError"]["retryable"], true, "{st:#}");
    let message = st["lastError"]["message"].as_str().unwrap();
    assert!(message.contains("unavailable"), "{st:#}");
    assert_eq!(st["appliedCommit"].as_str(), Some(c1.as_str()), "{st:#}");
    // Retried every cycle while the API is down; still nothing applied.
    std::thread::sleep(Duration::from_millis(600));
    let st = s.agent.status();
    assert_eq!(st["appliedCommit"].as_str(), Some(c1.as_str()), "{st:#}");
    assert_eq!(st["lastError"]["retryable"], true, "{st:#}");
    assert_eq!(
        stored(&s.standin, "ConfigMap", Some("shop"), "a").unwrap()["data"]["value"],
        "v1"
    );

    s.standin.fail_next(0, 503);
    let st = s
        .agent
        .wait_status(T, "release applied once the API is back", |st| {
            st["appliedCommit"].as_str() == Some(c2.as_str())
        });
    assert!(st["lastError"].is_null(), "{st:#}");
    assert_eq!(
        stored(&s.standin, "ConfigMap", Some("shop"), "a").unwrap()["data"]["value"],
        "v2"
    );
}

/// A site with a wasm http workload (app `front`) and the k3s workload `shop/backend`, both
/// running; then the agent stops, the API server goes away and the agent starts again.
fn restart_with_api_down() -> (Site, u16) {
    let port = free_port();
    let probe = std::fs::read(probe_http()).unwrap();
    let repo = TestRepo::new().unwrap();
    repo.commit_files(&[("components/probe.wasm", &probe)], "component")
        .unwrap();
    let c1 = commit(
        &repo,
        &[
            ("sites/s.yaml", site_yaml("store-1", "wasm, k3s")),
            ("apps/shop.yaml", k3s_app()),
            ("apps/front.yaml", http_app("front", "web", port, "hi", "")),
            ("k3s/shop/ns.yaml", namespace("shop")),
            ("k3s/shop/deploy.yaml", deployment(Some("shop"), "web", 1)),
        ],
        "release",
    );
    let mut standin = StandIn::start();
    let work = tempfile::tempdir().unwrap();
    let config = config_with_k3s(
        work.path(),
        &repo.file_url(),
        "200ms",
        standin.kubeconfig_path(),
    );
    let agent = Agent::start(&config);
    agent.wait_status(T, "release applied", applied(&c1));
    wait_body(port, "/", "hi", T).unwrap();
    make_ready(&standin, Some("shop"), "web");
    agent.wait_status(T, "promoted", |st| {
        st["lastKnownGoodCommit"].as_str() == Some(c1.as_str())
            && workload_state(st, WORKLOAD) == "running"
    });
    let exit = agent.terminate();
    assert!(exit.success(), "{exit}");

    standin.stop();
    let agent = Agent::start(&config);
    (
        Site {
            repo,
            standin,
            agent,
            _work: work,
        },
        port,
    )
}

#[test]
fn restart_with_the_api_unavailable_brings_wasm_workloads_back() {
    let (s, port) = restart_with_api_down();
    if let Err(e) = wait_body(port, "/", "hi", Duration::from_secs(20)) {
        panic!(
            "wasm workload did not come back: {e}\nstatus: {:#}\nlogs:\n{}",
            s.agent.status(),
            s.agent.logs()
        );
    }
    // The workload answers before the restarted agent first publishes its status (until then
    // status.json is the old agent's, written at shutdown).
    s.agent.wait_status(T, "front/web running", |st| {
        workload_state(st, "front/web") == "running"
    });
}

#[test]
fn restart_with_the_api_unavailable_shows_why_in_the_k3s_workload_status() {
    let (s, _port) = restart_with_api_down();
    // Let the agent restore and run a few cycles against the missing API server.
    let log_len = s.agent.logs().len();
    wait_for(&s.agent, T, "a cycle after the restart", || {
        s.agent.logs()[log_len..].contains("Kubernetes API unavailable")
    });
    std::thread::sleep(Duration::from_millis(600));
    let st = s.agent.status();
    let w = workload(&st, WORKLOAD);
    let reason = w["reason"].as_str().unwrap_or("").to_lowercase();
    assert!(
        reason.contains("unavailable") || reason.contains("unreachable"),
        "the k3s workload's status must say the API server cannot be reached, not guess at \
         the objects: {w:#}\nstatus: {st:#}"
    );
    assert_ne!(
        w["state"], "running",
        "health is unknown while the API is down: {w:#}"
    );
}

#[test]
fn namespaced_objects_without_a_namespace_go_to_default_and_report_health() {
    let (s, c1) = site(
        &[
            ("k3s/shop/cm.yaml", config_map(None, "settings", "v1", "")),
            ("k3s/shop/deploy.yaml", deployment(None, "web", 1)),
        ],
        "200ms",
    );
    assert!(stored(&s.standin, "ConfigMap", Some("default"), "settings").is_some());
    assert!(stored(&s.standin, "Deployment", Some("default"), "web").is_some());
    make_ready(&s.standin, None, "web");
    s.agent
        .wait_status(Duration::from_secs(20), "k3s workload running", |st| {
            workload_state(st, WORKLOAD) == "running"
        });
    s.agent
        .wait_status(Duration::from_secs(20), "release promoted", |st| {
            st["lastKnownGoodCommit"].as_str() == Some(c1.as_str())
        });
}

#[test]
fn container_images_are_pulled_into_the_store_and_pinned_by_digest_before_the_apply() {
    let registry = crate::testkit::registry::TestRegistry::start().unwrap();
    let image = format!("{}/shop/web:v1", registry.host());
    let (code, out, err) =
        crate::testkit::agent::fleetlet(&["push", probe_http().to_str().unwrap(), &image]);
    assert_eq!(code, 0, "{out}{err}");
    let pinned = out.trim().to_string();
    assert!(pinned.starts_with(&format!("{image}@sha256:")), "{pinned}");
    let web = deployment(Some("shop"), "web", 1).replace(
        "containers: [{name: web}]",
        &format!("containers: [{{name: web, image: \"{image}\"}}]"),
    );
    let (site, _) = site(
        &[
            ("k3s/shop/ns.yaml", namespace("shop")),
            ("k3s/shop/web.yaml", web),
        ],
        "200ms",
    );
    let live = stored(&site.standin, "Deployment", Some("shop"), "web").expect("applied");
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        json!(pinned),
        "the tag is pinned to the digest it resolved to"
    );
    // The image is in the site's store (the mirror serves it offline) and kept by GC.
    let state = site.agent.status();
    let digest = pinned.rsplit_once('@').unwrap().1;
    let roots = state["releaseRoots"][0]["digests"].as_array().unwrap();
    assert!(roots.iter().any(|d| d == digest), "{state:#}");
    let blob = site
        ._work
        .path()
        .join("state/oci/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    assert!(blob.exists(), "{}", blob.display());
    assert!(site.agent.terminate().success());
}
