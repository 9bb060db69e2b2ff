//! The audit events of the cycle, with in-memory fakes behind every port: an applied release
//! with its artifacts and who signed them, one event per distinct refusal of a commit retried
//! every cycle, returns to the previous release (failed activation, health gate, restore), k3s
//! prune and drift correction — and nothing for a cycle that changes nothing.

mod support;

use fleetlet_core::Digest;
use fleetlet_engine::{
    AuditAction, AuditArtifact, AuditEvent, AuditWorkload, CycleOutcome, Engine, Stage,
};
use serde_json::json;
use support::{
    CM, DEPLOY, FakeRuntime, FakeSource, MemBlobs, MemState, NS, Policy, World, artifact, k3s_app,
    ready_deployment, sign, signer, wasm_app,
};

/// Every commit signed `good`. The store keeps every blob: tests put artifacts' blobs in
/// beforehand, which a garbage collection between cycles would drop.
fn world() -> World {
    World {
        blobs: MemBlobs::default(),
        commit_signature: Some(b"good"),
        ..World::new()
    }
}

/// The engine checking commits and artifacts with the policy (unsigned commits pass, without a
/// signer), with the registry and the cluster.
fn engine(w: &World) -> Engine<FakeSource, FakeRuntime, MemBlobs, MemState> {
    w.engine()
        .with_verifier(Box::new(Policy {
            allows_unsigned: true,
            ..Policy::default()
        }))
        .with_registry(Box::new(w.reg.clone()))
        .with_cluster(Box::new(w.cluster.clone()))
}

fn actions(events: &[AuditEvent]) -> Vec<AuditAction> {
    events.iter().map(|e| e.action.clone()).collect()
}

fn workload(id: &str, artifacts: Vec<AuditArtifact>) -> AuditWorkload {
    AuditWorkload {
        id: id.into(),
        artifacts,
    }
}

#[test]
fn an_applied_release_is_reported_once_with_its_artifacts_and_signers() {
    let w = world();
    let (component, _) = artifact(&w.reg, &w.blobs, "fleet/b", "v1", true);
    let component_sig = sign(&w.reg, &w.blobs, "fleet/b", &component);
    let (image, _) = artifact(&w.reg, &w.blobs, "acme/web", "1.4", false);
    let image_sig = sign(&w.reg, &w.blobs, "acme/web", &image);
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  template:\n    spec:\n      containers: [{name: web, image: reg.test/acme/web:1.4}]\n";
    w.commit(
        "c1",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "one")),
            ("b.yaml", &wasm_app("b", "reg.test/fleet/b:v1", "b")),
            ("shop.yaml", &k3s_app("{}")),
            ("k3s/web/deploy.yaml", deploy),
        ],
    );
    w.repo.tag("c1", "release-1.0");
    let mut e = engine(&w);
    assert!(matches!(e.reconcile(10), CycleOutcome::Applied { .. }));
    let events = e.take_audit_events();
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [1]);
    let events: Vec<AuditEvent> = events
        .into_iter()
        .map(|e| AuditEvent { id: 0, ..e })
        .collect();
    let release = |name: &str| vec![signer(name)];
    assert_eq!(
        events,
        [AuditEvent {
            commit: Some("c1".into()),
            reference: Some("refs/heads/main".into()),
            tags: vec!["release-1.0".into()],
            commit_signers: release("alice"),
            workloads: vec![
                workload(
                    "a/w",
                    vec![AuditArtifact {
                        reference: "good.wasm".into(),
                        digest: Digest::of(b"good"),
                        signers: vec![],
                        material: vec![],
                    }]
                ),
                workload(
                    "b/w",
                    vec![AuditArtifact {
                        reference: format!("reg.test/fleet/b:v1@{component}"),
                        digest: component,
                        signers: release("release"),
                        material: vec![component_sig],
                    }]
                ),
                workload(
                    "shop/web",
                    vec![AuditArtifact {
                        reference: format!("reg.test/acme/web:1.4@{image}"),
                        digest: image,
                        signers: release("release"),
                        material: vec![image_sig],
                    }]
                ),
            ],
            ..AuditEvent::new(10, AuditAction::Applied)
        }]
    );
    assert!(e.take_audit_events().is_empty(), "taking drains");

    // Cycles that change nothing (the release is promoted, the source goes down and comes
    // back) report nothing.
    assert_eq!(e.reconcile(11), CycleOutcome::Unchanged);
    w.repo.0.borrow_mut().down = true;
    assert_eq!(e.reconcile(12), CycleOutcome::SourceUnavailable);
    w.repo.0.borrow_mut().down = false;
    assert_eq!(e.reconcile(13), CycleOutcome::Unchanged);
    assert_eq!(e.take_audit_events(), []);
}

#[test]
fn a_commit_retried_every_cycle_is_reported_once_per_distinct_failure() {
    let w = world();
    w.commit("c1", &[("a.yaml", &wasm_app("a", "good.wasm", "one"))]);
    let mut e = engine(&w);
    e.reconcile(1);
    e.take_audit_events();

    // c2's component is not signed (yet): the release is held and retried every cycle.
    let (component, layer) = artifact(&w.reg, &w.blobs, "fleet/a", "v2", true);
    w.commit(
        "c2",
        &[("a.yaml", &wasm_app("a", "reg.test/fleet/a:v2", "two"))],
    );
    for now in 2..5 {
        assert_eq!(
            e.reconcile(now),
            CycleOutcome::Rejected {
                commit: Some("c2".into()),
                stage: Stage::Verify
            }
        );
    }
    // An outage in between is no refusal, and does not make the next retry news.
    w.repo.0.borrow_mut().down = true;
    e.reconcile(5);
    w.repo.0.borrow_mut().down = false;
    e.reconcile(6);
    let events = e.take_audit_events();
    assert_eq!(actions(&events), [AuditAction::Rejected], "{events:#?}");
    let rejected = &events[0];
    assert_eq!(
        (
            rejected.at,
            rejected.commit.as_deref(),
            rejected.reference.as_deref(),
            rejected.stage
        ),
        (2, Some("c2"), Some("refs/heads/main"), Some(Stage::Verify))
    );
    assert!(
        rejected
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("no signature")),
        "{rejected:?}"
    );

    // A restart retries c2 (trust roots may have changed); failing the same way is not news.
    drop(e);
    let mut e = engine(&w);
    e.restore().unwrap();
    e.reconcile(7);
    assert_eq!(e.take_audit_events(), []);

    // Signed now, but it does not compile: another failure, reported once.
    sign(&w.reg, &w.blobs, "fleet/a", &component);
    w.host.0.borrow_mut().bad_prepare.push(layer);
    for now in 8..11 {
        assert_eq!(
            e.reconcile(now),
            CycleOutcome::Rejected {
                commit: Some("c2".into()),
                stage: Stage::Prepare
            }
        );
    }
    let events = e.take_audit_events();
    assert_eq!(actions(&events), [AuditAction::Rejected], "{events:#?}");
    assert_eq!((events[0].at, events[0].stage), (8, Some(Stage::Prepare)));
    assert!(
        events[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("does not compile"))
    );
}

#[test]
fn a_failed_activation_is_reported_as_a_return_to_the_previous_release() {
    let w = world();
    w.commit(
        "c1",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "one")),
            ("b.yaml", &wasm_app("b", "good.wasm", "b")),
        ],
    );
    let mut e = engine(&w);
    e.reconcile(1);
    let applied = e.take_audit_events().remove(0);
    w.commit(
        "c2",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "two")),
            ("b.yaml", &wasm_app("b", "bad.wasm", "b")),
        ],
    );
    w.host.0.borrow_mut().bad_activate.push(Digest::of(b"bad"));
    // A host failure: retried every cycle, reported once.
    for now in 2..4 {
        assert_eq!(
            e.reconcile(now),
            CycleOutcome::Rejected {
                commit: Some("c2".into()),
                stage: Stage::Apply
            }
        );
    }
    let events = e.take_audit_events();
    assert_eq!(
        actions(&events),
        [AuditAction::RolledBack, AuditAction::Rejected],
        "{events:#?}"
    );
    let back = &events[0];
    assert_eq!(
        (
            back.at,
            back.commit.as_deref(),
            back.from.as_deref(),
            back.stage
        ),
        (2, Some("c1"), Some("c2"), Some(Stage::Apply))
    );
    assert!(
        back.reason
            .as_deref()
            .is_some_and(|r| r.contains("activating b/w")),
        "{back:?}"
    );
    assert_eq!(back.workloads, applied.workloads, "what runs again");
    assert_eq!(back.commit_signers, [signer("alice")]);
    assert_eq!(events[1].commit.as_deref(), Some("c2"));

    // A failed first release returns to nothing.
    let w = world();
    w.commit(
        "c1",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "one")),
            ("b.yaml", &wasm_app("b", "bad.wasm", "b")),
        ],
    );
    w.host.0.borrow_mut().bad_activate.push(Digest::of(b"bad"));
    let mut e = engine(&w);
    e.reconcile(1);
    let events = e.take_audit_events();
    assert_eq!(
        actions(&events),
        [AuditAction::RolledBack, AuditAction::Rejected]
    );
    assert_eq!(
        (events[0].commit.as_deref(), events[0].from.as_deref()),
        (None, Some("c1"))
    );
}

#[test]
fn a_restore_that_falls_back_to_the_last_known_good_is_reported_with_the_next_cycle() {
    let w = world();
    w.commit("c1", &[("a.yaml", &wasm_app("a", "good.wasm", "one"))]);
    let mut e = engine(&w);
    e.reconcile(1);
    e.reconcile(2); // c1 becomes the last-known-good
    e.take_audit_events();
    w.commit(
        "c2",
        &[
            ("two.wasm", "two"),
            ("a.yaml", &wasm_app("a", "two.wasm", "two")),
        ],
    );
    e.reconcile(3);
    assert_eq!(actions(&e.take_audit_events()), [AuditAction::Applied]);
    drop(e);

    // After a restart c2 cannot start: c1 runs instead.
    w.host.0.borrow_mut().running.clear();
    w.host.0.borrow_mut().bad_activate.push(Digest::of(b"two"));
    let mut e = engine(&w);
    e.restore().unwrap_or_else(|err| panic!("{err:?}"));
    assert_eq!(e.take_audit_events(), [], "no time to stamp them with yet");
    w.repo.tag("c1", "release-1.0");
    e.reconcile(100);
    let events = e.take_audit_events();
    assert_eq!(actions(&events)[0], AuditAction::RolledBack, "{events:#?}");
    let back = &events[0];
    assert_eq!(
        (
            back.at,
            back.commit.as_deref(),
            back.from.as_deref(),
            back.tags.clone()
        ),
        (100, Some("c1"), Some("c2"), vec!["release-1.0".to_string()])
    );
}

#[test]
fn a_k3s_release_not_healthy_in_time_is_reported_as_rolled_back() {
    let w = world();
    let app = k3s_app("{healthTimeout: 5m}");
    w.commit(
        "c1",
        &[("shop.yaml", &app), ("k3s/web/deploy.yaml", DEPLOY)],
    );
    let mut e = engine(&w);
    e.reconcile(100);
    w.cluster
        .set_status("Deployment/shop/web", ready_deployment());
    e.reconcile(101);
    let v2 = DEPLOY
        .replace("generation: 1", "generation: 2")
        .replace("replicas: 1", "replicas: 2");
    w.commit("c2", &[("shop.yaml", &app), ("k3s/web/deploy.yaml", &v2)]);
    e.reconcile(200);
    assert_eq!(
        actions(&e.take_audit_events()),
        [AuditAction::Applied, AuditAction::Applied]
    );
    e.reconcile(400); // within the timeout
    assert_eq!(e.take_audit_events(), []);
    e.reconcile(501);
    let events = e.take_audit_events();
    assert_eq!(actions(&events), [AuditAction::RolledBack], "{events:#?}");
    let back = &events[0];
    assert_eq!(
        (
            back.at,
            back.commit.as_deref(),
            back.from.as_deref(),
            back.stage
        ),
        (501, Some("c1"), Some("c2"), Some(Stage::Health))
    );
    assert!(
        back.reason
            .as_deref()
            .is_some_and(|r| r.contains("timeout 5m")),
        "{back:?}"
    );
    // c2 stays refused; that is not reported again.
    assert_eq!(
        e.reconcile(502),
        CycleOutcome::Rejected {
            commit: Some("c2".into()),
            stage: Stage::Health
        }
    );
    assert_eq!(e.take_audit_events(), []);
}

#[test]
fn objects_pruned_from_the_cluster_are_reported_by_name() {
    let w = world();
    let app = k3s_app("{}");
    let extra = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: shop}\n";
    w.commit(
        "c1",
        &[
            ("shop.yaml", &app),
            ("k3s/web/ns.yaml", NS),
            ("k3s/web/cm.yaml", CM),
            ("k3s/web/extra.yaml", extra),
        ],
    );
    let mut e = engine(&w);
    e.reconcile(1);
    e.take_audit_events();
    w.commit("c2", &[("shop.yaml", &app), ("k3s/web/ns.yaml", NS)]);
    assert!(matches!(e.reconcile(2), CycleOutcome::Applied { .. }));
    let events = e.take_audit_events();
    assert_eq!(
        actions(&events),
        [AuditAction::Pruned, AuditAction::Applied],
        "{events:#?}"
    );
    let pruned = &events[0];
    assert_eq!(
        (
            pruned.at,
            pruned.commit.as_deref(),
            pruned.reference.as_deref()
        ),
        (2, Some("c2"), Some("refs/heads/main"))
    );
    // In reverse apply order, as they were deleted.
    assert_eq!(
        pruned.objects,
        ["ConfigMap/shop/extra", "ConfigMap/shop/settings"]
    );
}

#[test]
fn drift_is_reported_when_corrected_and_not_when_only_counted() {
    for (options, corrects) in [("{}", true), ("{drift: report}", false)] {
        let w = world();
        let app = k3s_app(options);
        w.commit(
            "c1",
            &[
                ("shop.yaml", &app),
                ("k3s/web/ns.yaml", NS),
                ("k3s/web/cm.yaml", CM),
            ],
        );
        let mut e = engine(&w).drift_interval(60);
        e.reconcile(1000);
        e.take_audit_events();
        w.cluster.edit_by_hand(
            "ConfigMap/shop/settings",
            "/data/greeting",
            json!("hacked"),
            ".data.greeting",
        );
        e.reconcile(1100);
        let events: Vec<AuditEvent> = e
            .take_audit_events()
            .into_iter()
            .map(|e| AuditEvent { id: 0, ..e })
            .collect();
        if !corrects {
            assert_eq!(events, [], "{options}");
            continue;
        }
        assert_eq!(
            events,
            [AuditEvent {
                commit: Some("c1".into()),
                reference: Some("refs/heads/main".into()),
                workloads: vec![workload("shop/web", vec![])],
                reason: Some(
                    "ConfigMap/shop/settings: .data.greeting (taken over by kubectl-edit)".into()
                ),
                objects: vec!["ConfigMap/shop/settings".into()],
                ..AuditEvent::new(1100, AuditAction::DriftCorrected)
            }]
        );
        // Undone: the next check finds nothing.
        e.reconcile(1200);
        assert_eq!(e.take_audit_events(), []);
    }
}

#[test]
fn events_wait_in_the_state_record_until_the_log_has_them() {
    let w = world();
    w.commit("c1", &[("a.yaml", &wasm_app("a", "good.wasm", "one"))]);
    let mut e = engine(&w);
    e.reconcile(10);
    let pending: Vec<u64> = e.pending_audit_events().iter().map(|e| e.id).collect();
    assert_eq!(pending, [1]);
    // The agent stops before writing them: a new start finds them again.
    drop(e);
    let mut e = engine(&w);
    assert_eq!(
        e.pending_audit_events()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        [1]
    );
    e.ack_audit(1);
    assert!(e.pending_audit_events().is_empty());
    w.commit("c2", &[("a.yaml", &wasm_app("a", "good.wasm", "two"))]);
    e.reconcile(20);
    // Numbering carries on, also past what a log kept beside a reset state record holds.
    assert_eq!(e.pending_audit_events()[0].id, 2);
    e.continue_audit_ids(41);
    e.ack_audit(2);
    w.commit("c3", &[("a.yaml", &wasm_app("a", "good.wasm", "three"))]);
    e.reconcile(30);
    assert_eq!(e.pending_audit_events()[0].id, 42);
}
