//! The engine's k3s steps with an in-memory cluster: apply with labels and inventory, prune
//! (never what opts out or what fleetlet did not create), a no-op cycle that writes nothing
//! and lists each kind once, a dry run that holds an invalid release, an API that goes away.

mod support;

use fleetlet_core::RepoTree;
use fleetlet_engine::ports::{Poll, Revision, SourceError};
use fleetlet_engine::{CycleOutcome, Engine, Stage};
use serde_json::json;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use support::{
    CM, DEPLOY, FakeCluster, FakeRuntime, MemBlobs, MemState, NS, k3s_app, ready_deployment,
};

/// A k3s-only site with the app `shop`; each commit replaces what else the tree holds and is
/// numbered `c1`, `c2`…
#[derive(Clone, Default)]
struct Source(Rc<RefCell<(u32, BTreeMap<String, String>)>>);

impl Source {
    fn commit(&self, files: &[(&str, &str)]) {
        let mut s = self.0.borrow_mut();
        s.0 += 1;
        s.1 = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect();
    }
}

impl fleetlet_engine::ports::Source for Source {
    fn poll(&mut self, _: Option<&str>) -> Result<Poll, SourceError> {
        Ok(Poll::Changed(Revision {
            commit: format!("c{}", self.0.borrow().0),
            reference: "refs/heads/main".into(),
            summary: String::new(),
            time: 0,
        }))
    }
    fn read_tree(&self, _: &str) -> Result<RepoTree, SourceError> {
        let mut t = RepoTree::new();
        t.insert(
            "site.yaml",
            "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {name: s1}\nspec: {runtimes: [k3s]}\n",
        );
        t.insert(
            "app.yaml",
            "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {name: shop}\nspec:\n  targets: [{sites: [s1]}]\n  workloads:\n    - {name: web, runtime: k3s, manifests: k3s/web}\n",
        );
        for (p, c) in &self.0.borrow().1 {
            t.insert(p.as_str(), c.as_str());
        }
        Ok(t)
    }
    fn descends_from(&self, _: &str, _: &str) -> Result<bool, SourceError> {
        Ok(true)
    }
}

/// Nothing runs on the Wasm runtime and no artifact is pulled: the k3s workloads need neither.
fn world() -> (
    Source,
    FakeCluster,
    Engine<Source, FakeRuntime, MemBlobs, MemState>,
) {
    let source = Source::default();
    let cluster = FakeCluster::default();
    let engine = Engine::new(
        "s1".into(),
        source.clone(),
        FakeRuntime::default(),
        MemBlobs::default(),
        MemState::default(),
    )
    .unwrap()
    .with_cluster(Box::new(cluster.clone()));
    (source, cluster, engine)
}

#[test]
fn applies_in_order_with_labels_then_a_no_op_cycle_writes_nothing() {
    let (source, cluster, mut e) = world();
    source.commit(&[
        ("k3s/web/deploy.yaml", DEPLOY),
        ("k3s/web/ns.yaml", NS),
        ("k3s/web/cm.yaml", CM),
    ]);
    assert!(matches!(e.reconcile(1), CycleOutcome::Applied { .. }));
    let writes: Vec<String> = cluster
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PATCH"))
        .collect();
    assert_eq!(
        writes,
        [
            "PATCH Namespace/shop",
            "PATCH ConfigMap/settings",
            "PATCH Deployment/web",
            "PATCH Namespace/fleetlet-system",
            "PATCH ConfigMap/fleetlet-inventory-shop"
        ],
        "namespaces first, then config, then workloads; then the inventory record"
    );
    let record = cluster
        .inventory_record("shop")
        .expect("inventory on the cluster");
    assert_eq!(record["entries"].as_array().unwrap().len(), 3, "{record}");
    let deploy = cluster
        .0
        .borrow()
        .objects
        .values()
        .find(|o| o["kind"] == "Deployment")
        .cloned()
        .unwrap();
    assert_eq!(deploy["metadata"]["labels"]["fleetlet.dev/app"], "shop");
    assert_eq!(
        deploy["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "fleetlet"
    );
    assert_eq!(e.state().inventories["shop"].entries.len(), 3);
    assert_eq!(
        e.status().workloads[0].state,
        "progressing",
        "{:?}",
        e.status().workloads
    );

    // The Deployment rolls out; the same commit again: no write, one list per kind.
    cluster.set_status("Deployment/shop/web", ready_deployment());
    assert_eq!(e.reconcile(2), CycleOutcome::Unchanged);
    let requests = cluster.requests();
    assert!(
        requests.iter().all(|r| r.starts_with("LIST")),
        "{requests:?}"
    );
    assert!(requests.len() <= 3, "{requests:?}");
    assert_eq!(e.status().workloads[0].state, "running");
    assert_eq!(e.status().last_known_good_commit.as_deref(), Some("c1"));
}

#[test]
fn prunes_what_left_the_repo_but_never_what_opts_out_or_is_not_ours() {
    let (source, cluster, mut e) = world();
    let kept = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept, namespace: shop, annotations: {fleetlet.dev/prune: disabled}}\n";
    source.commit(&[
        ("k3s/web/ns.yaml", NS),
        ("k3s/web/cm.yaml", CM),
        ("k3s/web/kept.yaml", kept),
    ]);
    e.reconcile(1);
    // Someone else's object that happens to share a name fleetlet once applied is not touched.
    cluster.insert_foreign(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "theirs", "namespace": "shop"}}));
    source.commit(&[("k3s/web/ns.yaml", NS)]);
    cluster.requests();
    assert!(matches!(e.reconcile(2), CycleOutcome::Applied { .. }));
    let deletes: Vec<String> = cluster
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("DELETE"))
        .collect();
    assert_eq!(deletes, ["DELETE ConfigMap/settings"]);
    assert_eq!(
        cluster.names(),
        [
            "ConfigMap/shop/kept",
            "Namespace/shop",
            "Secret/shop/theirs"
        ]
    );
    assert_eq!(e.state().inventories["shop"].entries.len(), 1);
}

#[test]
fn an_object_the_api_refuses_holds_the_release_before_anything_changes() {
    let (source, cluster, mut e) = world();
    source.commit(&[("k3s/web/ns.yaml", NS), ("k3s/web/cm.yaml", CM)]);
    e.reconcile(1);
    cluster.requests();
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad, namespace: shop}\nspec: {invalid: true}\n";
    source.commit(&[("k3s/web/ns.yaml", NS), ("k3s/web/bad.yaml", bad)]);
    assert_eq!(
        e.reconcile(2),
        CycleOutcome::Rejected {
            commit: Some("c2".into()),
            stage: Stage::Prepare
        }
    );
    assert!(
        cluster
            .requests()
            .iter()
            .all(|r| !r.starts_with("PATCH") && !r.starts_with("DELETE"))
    );
    let err = e.state().last_error.clone().unwrap();
    assert!(
        err.message.contains("ConfigMap/shop/bad") && !err.retryable,
        "{err:?}"
    );
    assert!(
        cluster
            .names()
            .contains(&"ConfigMap/shop/settings".to_string()),
        "nothing pruned"
    );
}

#[test]
fn an_api_that_goes_away_is_retried_and_nothing_is_recorded_as_applied() {
    let (source, cluster, mut e) = world();
    source.commit(&[("k3s/web/ns.yaml", NS)]);
    e.reconcile(1);
    source.commit(&[("k3s/web/ns.yaml", NS), ("k3s/web/cm.yaml", CM)]);
    cluster.0.borrow_mut().down = true;
    let out = e.reconcile(2);
    assert!(matches!(out, CycleOutcome::Rejected { .. }), "{out:?}");
    let err = e.state().last_error.clone().unwrap();
    assert!(
        err.retryable && err.message.contains("unavailable"),
        "{err:?}"
    );
    assert_eq!(e.state().applied.as_ref().unwrap().revision.commit, "c1");
    cluster.0.borrow_mut().down = false;
    assert!(matches!(e.reconcile(3), CycleOutcome::Applied { .. }));
    assert!(
        cluster
            .names()
            .contains(&"ConfigMap/shop/settings".to_string())
    );
}

#[test]
fn a_release_not_healthy_in_time_returns_to_the_last_known_good_or_is_reported() {
    for (options, rolls_back) in [
        ("{healthTimeout: 5m}", true),
        ("{healthTimeout: 5m, onUnhealthy: report}", false),
    ] {
        let (source, cluster, mut e) = world();
        let app = k3s_app(options);
        source.commit(&[("app.yaml", &app), ("k3s/web/deploy.yaml", DEPLOY)]);
        assert!(matches!(e.reconcile(100), CycleOutcome::Applied { .. }));
        cluster.set_status("Deployment/shop/web", ready_deployment());
        e.reconcile(101);
        assert_eq!(e.status().last_known_good_commit.as_deref(), Some("c1"));

        // c2 changes the Deployment; its rollout never finishes.
        let v2 = DEPLOY
            .replace("generation: 1", "generation: 2")
            .replace("replicas: 1", "replicas: 2");
        source.commit(&[("app.yaml", &app), ("k3s/web/deploy.yaml", &v2)]);
        assert!(matches!(e.reconcile(200), CycleOutcome::Applied { .. }));
        assert_eq!(e.status().workloads[0].state, "progressing");
        // Within the timeout: waiting, no verdict.
        assert_eq!(e.reconcile(400), CycleOutcome::Unchanged);
        assert!(e.state().last_error.is_none(), "{:?}", e.state().last_error);
        // After it: unhealthy.
        e.reconcile(501);
        let err = e.state().last_error.clone().unwrap();
        assert_eq!(err.stage, Stage::Health, "{err:?}");
        assert!(
            err.message.contains("shop/web") && err.message.contains("timeout 5m"),
            "{err:?}"
        );
        let replicas = cluster
            .0
            .borrow()
            .objects
            .values()
            .find(|o| o["kind"] == "Deployment")
            .unwrap()["spec"]["replicas"]
            .clone();
        if rolls_back {
            assert!(
                err.message
                    .contains("rolled back to the last-known-good c1"),
                "{err:?}"
            );
            assert_eq!(e.state().applied.as_ref().unwrap().revision.commit, "c1");
            assert_eq!(replicas, json!(1), "the last-known-good manifests are back");
            // c2 is not applied again until the ref moves.
            assert_eq!(
                e.reconcile(502),
                CycleOutcome::Rejected {
                    commit: Some("c2".into()),
                    stage: Stage::Health
                }
            );
        } else {
            assert_eq!(e.state().applied.as_ref().unwrap().revision.commit, "c2");
            assert_eq!(replicas, json!(2), "reported, kept");
        }
    }
}

#[test]
fn changes_made_on_the_cluster_are_undone_or_reported_per_workload() {
    for (options, corrects) in [("{}", true), ("{drift: report}", false)] {
        let (source, cluster, e) = world();
        let mut e = e.drift_interval(60);
        let app = k3s_app(options);
        source.commit(&[
            ("app.yaml", &app),
            ("k3s/web/ns.yaml", NS),
            ("k3s/web/cm.yaml", CM),
        ]);
        e.reconcile(1000);
        // kubectl edit: another field manager now owns .data.greeting.
        cluster.edit_by_hand(
            "ConfigMap/shop/settings",
            "/data/greeting",
            json!("hacked"),
            ".data.greeting",
        );
        // Within the interval: not looked at.
        e.reconcile(1030);
        assert_eq!(
            cluster.value("ConfigMap/shop/settings", "/data/greeting"),
            json!("hacked")
        );
        e.reconcile(1100);
        let drift = e.status().workloads[0]
            .drift
            .clone()
            .expect("drift recorded");
        assert_eq!(drift.detected, 1, "{drift:?}");
        assert!(
            drift
                .last
                .as_deref()
                .unwrap()
                .contains(".data.greeting (taken over by kubectl-edit)"),
            "{drift:?}"
        );
        if corrects {
            assert_eq!(drift.corrected, 1);
            assert_eq!(
                cluster.value("ConfigMap/shop/settings", "/data/greeting"),
                json!("hello")
            );
        } else {
            assert_eq!(drift.corrected, 0);
            assert_eq!(
                cluster.value("ConfigMap/shop/settings", "/data/greeting"),
                json!("hacked")
            );
        }
    }
}

#[test]
fn a_reinstalled_agent_finds_the_inventory_on_the_cluster_and_prunes_from_it() {
    let (source, cluster, mut e) = world();
    source.commit(&[("k3s/web/ns.yaml", NS), ("k3s/web/cm.yaml", CM)]);
    e.reconcile(1);
    drop(e);
    // The agent is reinstalled: its state is gone; the cluster still has its objects.
    let mut e = Engine::new(
        "s1".into(),
        source.clone(),
        FakeRuntime::default(),
        MemBlobs::default(),
        MemState::default(),
    )
    .unwrap()
    .with_cluster(Box::new(cluster.clone()));
    source.commit(&[("k3s/web/ns.yaml", NS)]);
    assert!(matches!(e.reconcile(2), CycleOutcome::Applied { .. }));
    assert_eq!(
        cluster.names(),
        ["Namespace/shop"],
        "the ConfigMap left the repo: pruned"
    );
    let record = cluster.inventory_record("shop").unwrap();
    assert_eq!(record["entries"].as_array().unwrap().len(), 1, "{record}");
}
