//! The cycle's rules with in-memory fakes behind every port: last-known-good, all-or-nothing
//! prepare, rollback on a failed activation, restore without a source, no retry of a refused
//! commit.

mod support;

use fleetlet_core::reference::RegistryRef;
use fleetlet_core::{Digest, WorkloadHealth};
use fleetlet_engine::ports::Revision;
use fleetlet_engine::trust::{
    Requirement, SignatureManifest, SignedObject, Signer, SignerKind, TagEvidence, Verifier,
};
use fleetlet_engine::{AgentState, CycleOutcome, Engine, Stage};
use std::collections::BTreeMap;
use support::{World, wasm_app};

#[test]
fn applies_then_keeps_last_known_good_through_bad_commits() {
    let w = World::new();
    w.commit(
        "c1",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "one")),
            ("b.yaml", &wasm_app("b", "good.wasm", "b")),
        ],
    );
    let mut e = w.engine();
    assert_eq!(
        e.reconcile(1),
        CycleOutcome::Applied {
            commit: "c1".into(),
            changes: 2
        }
    );
    assert_eq!(w.activations(), ["a/w=one", "b/w=b"]);
    assert!(
        e.state().last_known_good.is_none(),
        "not promoted in the cycle that applied it"
    );
    assert_eq!(
        e.state().workloads["a/w"].health,
        Some(WorkloadHealth::Running)
    );

    // Unchanged source: nothing happens but the promotion of the healthy release.
    assert_eq!(e.reconcile(2), CycleOutcome::Unchanged);
    assert!(w.activations().is_empty());
    assert_eq!(
        e.state().last_known_good.as_ref().unwrap().revision.commit,
        "c1"
    );

    // Invalid YAML: refused, nothing touched, and not re-read on the next poll.
    w.commit("c2", &[("a.yaml", "kind: App\nmetadata: [")]);
    assert_eq!(
        e.reconcile(3),
        CycleOutcome::Rejected {
            commit: Some("c2".into()),
            stage: Stage::Validate
        }
    );
    let reads = w.repo.0.borrow().reads;
    assert_eq!(
        e.reconcile(4),
        CycleOutcome::Rejected {
            commit: Some("c2".into()),
            stage: Stage::Validate
        }
    );
    assert_eq!(
        w.repo.0.borrow().reads,
        reads,
        "a refused commit is not re-read"
    );
    assert!(w.activations().is_empty());
    assert_eq!(e.state().applied.as_ref().unwrap().revision.commit, "c1");

    // One of two changed workloads cannot compile: the whole release is held.
    w.commit(
        "c3",
        &[
            ("a.yaml", &wasm_app("a", "bad.wasm", "two")),
            ("b.yaml", &wasm_app("b", "good.wasm", "b2")),
        ],
    );
    w.host.0.borrow_mut().bad_prepare.push(Digest::of(b"bad"));
    let out = e.reconcile(5);
    assert_eq!(
        out,
        CycleOutcome::Rejected {
            commit: Some("c3".into()),
            stage: Stage::Prepare
        }
    );
    assert!(w.activations().is_empty(), "nothing of a held release runs");
    let err = e.state().last_error.clone().unwrap();
    assert!(
        err.message.contains("a/w") && err.message.contains("does not compile"),
        "{err:?}"
    );

    // The source goes down: recorded, nothing changes, the refusal of c3 is not forgotten.
    w.repo.0.borrow_mut().down = true;
    assert_eq!(e.reconcile(6), CycleOutcome::SourceUnavailable);
    assert_eq!(e.state().last_error.as_ref().unwrap().stage, Stage::Source);
    assert_eq!(e.state().last_sync, Some(5));
    w.repo.0.borrow_mut().down = false;
    let reads = w.repo.0.borrow().reads;
    assert_eq!(
        e.reconcile(7),
        CycleOutcome::Rejected {
            commit: Some("c3".into()),
            stage: Stage::Prepare
        }
    );
    assert_eq!(
        w.repo.0.borrow().reads,
        reads,
        "c3 is not redone after the outage"
    );
    assert_eq!(e.state().last_error.as_ref().unwrap().stage, Stage::Prepare);

    // Moving the branch back to the applied commit clears the refusal.
    w.repo.0.borrow_mut().head = Some("c1".into());
    assert_eq!(e.reconcile(8), CycleOutcome::Unchanged);
    assert!(e.state().last_error.is_none() && e.state().refused.is_none());
}

#[test]
fn transient_failures_are_retried_and_a_crashed_workload_is_restarted() {
    let w = World::new();
    w.commit("c1", &[("a.yaml", &wasm_app("a", "good.wasm", "one"))]);
    let mut e = w.engine();
    e.reconcile(1);
    w.activations();
    // c2 cannot bind its port (a host problem): refused, but retried next cycle.
    w.commit("c2", &[("a.yaml", &wasm_app("a", "bad.wasm", "two"))]);
    w.host.0.borrow_mut().bad_activate.push(Digest::of(b"bad"));
    assert_eq!(
        e.reconcile(2),
        CycleOutcome::Rejected {
            commit: Some("c2".into()),
            stage: Stage::Apply
        }
    );
    assert!(e.state().refused.as_ref().unwrap().retryable);
    assert!(w.activations().is_empty(), "c1 kept running, untouched");
    w.host.0.borrow_mut().bad_activate.clear();
    assert_eq!(
        e.reconcile(3),
        CycleOutcome::Applied {
            commit: "c2".into(),
            changes: 1
        }
    );
    assert_eq!(w.activations(), ["a/w=two"]);

    // The workload disappears (crashed host side): the next cycle starts it again.
    w.host.0.borrow_mut().running.clear();
    assert_eq!(e.reconcile(4), CycleOutcome::Unchanged);
    assert_eq!(w.activations(), ["a/w=two"]);
}

#[test]
fn a_failed_first_release_leaves_nothing_running() {
    let w = World::new();
    w.commit(
        "c1",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "one")),
            ("b.yaml", &wasm_app("b", "bad.wasm", "b")),
        ],
    );
    w.host.0.borrow_mut().bad_activate.push(Digest::of(b"bad"));
    let mut e = w.engine();
    assert_eq!(
        e.reconcile(1),
        CycleOutcome::Rejected {
            commit: Some("c1".into()),
            stage: Stage::Apply
        }
    );
    assert!(
        w.host.0.borrow().running.is_empty(),
        "a/w was started, then stopped again"
    );
    assert!(e.state().applied.is_none());
}

#[test]
fn a_failed_activation_returns_to_the_previous_release() {
    let w = World::new();
    w.commit(
        "c1",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "one")),
            ("b.yaml", &wasm_app("b", "good.wasm", "b")),
        ],
    );
    let mut e = w.engine();
    e.reconcile(1);
    w.activations();
    // a/w activates fine at the new version, then b/w fails: a/w must go back to "one".
    w.commit(
        "c2",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "two")),
            ("b.yaml", &wasm_app("b", "bad.wasm", "b")),
        ],
    );
    w.host.0.borrow_mut().bad_activate.push(Digest::of(b"bad"));
    assert_eq!(
        e.reconcile(2),
        CycleOutcome::Rejected {
            commit: Some("c2".into()),
            stage: Stage::Apply
        }
    );
    assert_eq!(w.activations(), ["a/w=two", "a/w=one"]);
    assert_eq!(e.state().applied.as_ref().unwrap().revision.commit, "c1");
}

#[test]
fn restore_needs_no_source_and_k3s_workloads_wait_for_their_applier() {
    let w = World::new();
    let k3s = "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {name: k}\nspec:\n  targets: [{sites: [s1]}]\n  workloads: [{name: m, runtime: k3s, manifests: k3s}]\n";
    w.commit(
        "c1",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "one")),
            ("k.yaml", k3s),
            (
                "k3s/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            ),
        ],
    );
    let mut e = w.engine();
    assert!(matches!(e.reconcile(1), CycleOutcome::Applied { .. }));
    assert_eq!(
        w.activations(),
        ["a/w=one"],
        "the k3s workload is not sent to the Wasm runtime"
    );
    let status = e.status();
    let k = status.workloads.iter().find(|w| w.id == "k/m").unwrap();
    assert_eq!(k.state, "notApplied");
    drop(e);

    // A restart: the runtime is empty, the source is gone.
    w.host.0.borrow_mut().running.clear();
    w.repo.0.borrow_mut().down = true;
    let mut e = w.engine();
    assert_eq!(e.restore().unwrap(), 1);
    assert_eq!(w.activations(), ["a/w=one"]);
    assert_eq!(
        w.repo.0.borrow().reads,
        1,
        "restore reads nothing from the source"
    );
}

#[test]
fn refuses_state_from_a_newer_agent() {
    let w = World::new();
    *w.state.0.borrow_mut() = Some(AgentState {
        version: 99,
        ..Default::default()
    });
    let err = Engine::new(
        "s1".into(),
        w.repo.clone(),
        w.host.clone(),
        w.blobs.clone(),
        w.state.clone(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("version 99"), "{err}");
}

#[test]
fn garbage_collection_keeps_the_last_releases_and_last_known_good() {
    let w = World::new();
    let mut e = Engine::new(
        "s1".into(),
        w.repo.clone(),
        w.host.clone(),
        w.blobs.clone(),
        w.state.clone(),
    )
    .unwrap()
    .keep_releases(2);
    let mut now = 0;
    for (commit, comp) in [("c1", "one"), ("c2", "two"), ("c3", "three")] {
        w.commit(
            commit,
            &[
                (&format!("{comp}.wasm"), comp),
                ("a.yaml", &wasm_app("a", &format!("{comp}.wasm"), comp)),
            ],
        );
        now += 10;
        assert!(matches!(e.reconcile(now), CycleOutcome::Applied { .. }));
        if commit == "c1" {
            now += 10;
            e.reconcile(now); // promote c1 to last-known-good
        }
    }
    let kept = w.blobs.digests();
    // c3 and c2 are the last two releases; c1 is still the last-known-good (c2, c3 not promoted).
    for comp in ["one", "two", "three"] {
        assert!(kept.contains(&Digest::of(comp.as_bytes())), "{comp} kept");
    }
    now += 10;
    e.reconcile(now); // c3 promoted: c1 is now neither recent nor last-known-good
    w.commit(
        "c4",
        &[
            ("four.wasm", "four"),
            ("a.yaml", &wasm_app("a", "four.wasm", "four")),
        ],
    );
    e.reconcile(now + 10);
    let kept = w.blobs.digests();
    assert!(
        !kept.contains(&Digest::of(b"one")),
        "c1's component collected"
    );
    assert!(
        !kept.contains(&Digest::of(b"two")),
        "c2's component collected"
    );
    assert!(kept.contains(&Digest::of(b"three")) && kept.contains(&Digest::of(b"four")));
}

/// Accepts what is signed `good` (by "ops"), refuses the rest; checks nothing of artifacts (the
/// integration tests verify real ones). Maximum source age: one hour.
struct FakeVerifier;

fn ops() -> Signer {
    Signer {
        kind: SignerKind::Ssh,
        identity: "ops".into(),
        detail: None,
        log_index: None,
    }
}

impl Verifier for FakeVerifier {
    fn artifact_requirement(&self, _: &RegistryRef) -> Requirement {
        Requirement::None
    }
    fn verify_artifact(
        &self,
        _: &RegistryRef,
        _: &[SignatureManifest],
    ) -> Result<Vec<Signer>, String> {
        unreachable!("no artifact requires a signature here")
    }
    fn verify_commit(
        &self,
        _: &Revision,
        signed: Option<&SignedObject>,
    ) -> Result<Option<Signer>, String> {
        match signed {
            None => Err("unsigned commit".into()),
            Some(s) if s.signature == b"good" => Ok(Some(ops())),
            Some(_) => Err("signed by a key not in allowed_signers".into()),
        }
    }
    fn verify_release_tag(
        &self,
        _: &BTreeMap<String, String>,
        _: &[TagEvidence],
    ) -> Result<Option<Signer>, String> {
        Ok(None)
    }
    fn verify_rollback(&self, from: &str, _: &str, tags: &[TagEvidence]) -> Result<Signer, String> {
        tags.iter()
            .find(|t| {
                t.message.contains(&format!("rollback-from: {from}"))
                    && t.signed.as_ref().is_some_and(|s| s.signature == b"good")
            })
            .map(|_| ops())
            .ok_or_else(|| "no valid signed rollback instruction".into())
    }
    fn atomic(&self) -> bool {
        true
    }
    fn max_source_age(&self) -> Option<i64> {
        Some(3600)
    }
}

#[test]
fn unsigned_or_badly_signed_commits_are_refused_before_their_tree_is_read() {
    let w = World::new();
    w.commit("c1", &[("a.yaml", &wasm_app("a", "good.wasm", "one"))]);
    w.repo.sign("c1", b"good");
    let mut e = w.engine().with_verifier(Box::new(FakeVerifier));
    assert!(matches!(e.reconcile(1), CycleOutcome::Applied { .. }));
    assert_eq!(e.status().commit_signers, vec![ops()]);
    assert_eq!(w.activations(), ["a/w=one"]);

    for (commit, signature, reason) in [
        ("c2", None, "unsigned commit"),
        ("c3", Some(&b"forged"[..]), "not in allowed_signers"),
    ] {
        w.commit(commit, &[("a.yaml", &wasm_app("a", "good.wasm", commit))]);
        if let Some(s) = signature {
            w.repo.sign(commit, s);
        }
        let reads = w.repo.0.borrow().reads;
        assert_eq!(
            e.reconcile(2),
            CycleOutcome::Rejected {
                commit: Some(commit.into()),
                stage: Stage::Verify
            }
        );
        let err = e.state().last_error.clone().unwrap();
        assert!(err.message.contains(reason) && !err.retryable, "{err:?}");
        assert_eq!(
            w.repo.0.borrow().reads,
            reads,
            "{commit}'s tree is never read"
        );
        assert!(w.activations().is_empty(), "nothing of {commit} runs");
        assert_eq!(e.state().applied.as_ref().unwrap().revision.commit, "c1");
    }

    w.commit("c4", &[("a.yaml", &wasm_app("a", "good.wasm", "four"))]);
    w.repo.sign("c4", b"good");
    assert!(matches!(e.reconcile(3), CycleOutcome::Applied { .. }));
    assert_eq!(w.activations(), ["a/w=four"]);
}

#[test]
fn moving_to_a_commit_that_does_not_descend_needs_a_signed_rollback_instruction() {
    let w = World::new();
    for (c, g) in [("c1", "one"), ("c2", "two")] {
        w.commit(c, &[("a.yaml", &wasm_app("a", "good.wasm", g))]);
        w.repo.sign(c, b"good");
    }
    let mut e = w.engine().with_verifier(Box::new(FakeVerifier));
    assert!(matches!(e.reconcile(1), CycleOutcome::Applied { .. }));
    w.activations();

    // An old release replayed: the branch moves back to c1.
    w.repo.0.borrow_mut().head = Some("c1".into());
    let refused = CycleOutcome::Rejected {
        commit: Some("c1".into()),
        stage: Stage::Verify,
    };
    assert_eq!(e.reconcile(2), refused);
    let err = e.state().last_error.clone().unwrap();
    assert!(
        err.message
            .contains("does not descend from the applied commit c2")
            && err.message.contains("no valid signed rollback instruction")
            && err.retryable,
        "{err:?}"
    );
    assert!(w.activations().is_empty());

    // An unsigned instruction, or one for another starting point, does not count.
    let tag = |message: &str, signature: Option<&[u8]>| TagEvidence {
        name: "rollback-1".into(),
        message: message.into(),
        time: 0,
        signed: signature.map(|s| SignedObject {
            signature: s.to_vec(),
            payload: vec![],
        }),
    };
    w.repo.0.borrow_mut().tags.insert(
        "c1".into(),
        vec![
            tag("rollback-from: c2", None),
            tag("rollback-from: c9", Some(b"good")),
        ],
    );
    assert_eq!(e.reconcile(3), refused);

    w.repo.0.borrow_mut().tags.insert(
        "c1".into(),
        vec![tag("back\nrollback-from: c2\n", Some(b"good"))],
    );
    assert!(matches!(e.reconcile(4), CycleOutcome::Applied { .. }));
    assert_eq!(w.activations(), ["a/w=one"]);
    assert_eq!(e.status().commit_signers, vec![ops(), ops()]);

    // Where the site allows history rewrites, no instruction is needed.
    let w = World::new();
    for c in ["c1", "c2"] {
        w.commit(c, &[("a.yaml", &wasm_app("a", "good.wasm", c))]);
        w.repo.sign(c, b"good");
    }
    let mut e = w
        .engine()
        .with_verifier(Box::new(FakeVerifier))
        .allow_history_rewrite(true);
    e.reconcile(1);
    w.repo.0.borrow_mut().head = Some("c1".into());
    assert!(matches!(e.reconcile(2), CycleOutcome::Applied { .. }));
}

#[test]
fn a_source_that_stops_advancing_is_reported_while_the_release_keeps_running() {
    let w = World::new();
    w.commit("c1", &[("a.yaml", &wasm_app("a", "good.wasm", "one"))]);
    w.repo.sign("c1", b"good");
    let mut e = w.engine().with_verifier(Box::new(FakeVerifier));
    // The fake's commits are from time 0; the policy allows an hour.
    assert!(matches!(e.reconcile(3000), CycleOutcome::Applied { .. }));
    assert!(e.status().stale_source.is_none());
    assert_eq!(e.reconcile(7200), CycleOutcome::Unchanged);
    let stale = e.status().stale_source.expect("stale after an hour");
    assert!(stale.contains("freeze") && stale.contains("2h"), "{stale}");
    assert_eq!(e.status().workloads[0].state, "running");

    // Unreachable for longer than the maximum age: reported too.
    w.repo.0.borrow_mut().down = true;
    assert_eq!(e.reconcile(7200 + 4000), CycleOutcome::SourceUnavailable);
    let stale = e.status().stale_source.unwrap();
    assert!(stale.contains("no answer from the source"), "{stale}");
}
