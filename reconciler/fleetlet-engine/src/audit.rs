//! What the cycle reports for the site's audit log: one event per outcome that changes, or
//! refuses to change, what runs — a release applied, a commit rejected, a return to the previous
//! release, drift undone, objects pruned. Pure data: the engine fills a buffer the agent drains
//! ([`crate::Engine::take_audit_events`]) and writes into its tamper-evident log; the engine does
//! no I/O for it.
//!
//! Events name artifacts by pinned reference and digest, with who signed them and the digests of
//! the signature manifests kept in the store, so an auditor can verify a past release again from
//! the store alone.

use crate::record::{AppliedRelease, Stage};
use crate::trust::Signer;
use fleetlet_core::Digest;
use fleetlet_core::reference::ArtifactRef;
use fleetlet_core::render::DesiredWorkload;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuditAction {
    /// A release was applied: it runs now.
    Applied,
    /// A commit was refused or held; what ran before keeps running.
    Rejected,
    /// The site returned to the previous release (or, for a failed first release, to nothing).
    RolledBack,
    /// Changes made on the cluster to objects fleetlet applied were undone.
    DriftCorrected,
    /// Objects that left the release were deleted from the cluster.
    Pruned,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditArtifact {
    /// Pinned reference (`registry/repo@sha256:…`, or `oci:PATH@sha256:…`), or the repo path of
    /// a component carried in Git.
    pub reference: String,
    /// The artifact's digest (manifest digest for registry artifacts; the component blob's
    /// digest for one carried in Git).
    pub digest: Digest,
    /// Who signed it (empty when the policy required no signature).
    pub signers: Vec<Signer>,
    /// Digests of the signature manifests it was verified with (kept in the store), for
    /// re-verification later.
    pub material: Vec<Digest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditWorkload {
    /// `app/workload`.
    pub id: String,
    /// What it runs: its Wasm component, or its k3s container images. Empty in drift events,
    /// which name objects rather than artifacts.
    pub artifacts: Vec<AuditArtifact>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Numbers the site's events from 1, so that one written to the log twice (the agent
    /// stopped between writing it and the state record noting so) is written once.
    #[serde(default)]
    pub id: u64,
    /// Unix seconds (the `now` the cycle was given).
    pub at: i64,
    pub action: AuditAction,
    /// The release concerned (for RolledBack: the release moved back TO — `None` when a failed
    /// first release left nothing to return to; `from` says which was left).
    pub commit: Option<String>,
    /// The ref the commit was followed on (`refs/heads/main`), when known.
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Names of annotated tags at the commit, when known (release tags), so an auditor can ask
    /// by tag.
    pub tags: Vec<String>,
    pub commit_signers: Vec<Signer>,
    pub workloads: Vec<AuditWorkload>,
    /// Rejected: the stage and message; RolledBack: the stage that failed and why. Applied: the
    /// workloads held back at their previous version, if any; DriftCorrected: the fields that
    /// had changed; Pruned: the app.
    pub stage: Option<Stage>,
    pub reason: Option<String>,
    /// DriftCorrected / Pruned: the objects concerned (`Kind/namespace/name`, or `Kind/name`
    /// for cluster-scoped objects).
    pub objects: Vec<String>,
}

impl AuditEvent {
    /// An event that says nothing yet but what happened and when.
    pub fn new(at: i64, action: AuditAction) -> Self {
        AuditEvent {
            id: 0,
            at,
            action,
            commit: None,
            reference: None,
            from: None,
            tags: vec![],
            commit_signers: vec![],
            workloads: vec![],
            stage: None,
            reason: None,
            objects: vec![],
        }
    }

    /// An event about `release`: its commit, ref, commit signers and every workload with its
    /// artifacts.
    pub fn of_release(at: i64, action: AuditAction, release: &AppliedRelease) -> Self {
        AuditEvent {
            commit: Some(release.revision.commit.clone()),
            reference: Some(release.revision.reference.clone()),
            commit_signers: release.commit_signers.clone(),
            workloads: audit_workloads(release),
            ..AuditEvent::new(at, action)
        }
    }
}

/// Every workload of `release` (by id) with the artifacts it runs, and how each was verified
/// where the release recorded it.
pub fn audit_workloads(release: &AppliedRelease) -> Vec<AuditWorkload> {
    release
        .desired
        .workloads
        .iter()
        .map(|(id, w)| AuditWorkload {
            id: id.clone(),
            artifacts: workload_artifacts(w)
                .into_iter()
                .map(|(reference, digest)| {
                    let verified = release.artifacts.get(&reference);
                    AuditArtifact {
                        signers: verified.map(|v| v.signers.clone()).unwrap_or_default(),
                        material: verified.map(|v| v.material.clone()).unwrap_or_default(),
                        reference,
                        digest,
                    }
                })
                .collect(),
        })
        .collect()
}

/// (reference, digest) of each artifact a workload runs. A component carried in the repo is
/// named by its path and blob digest; an image component by its pinned reference and manifest
/// digest. Container images without a digest (not pinned: the site has no cluster, so they were
/// never pulled) name nothing that could be checked, and are left out.
fn workload_artifacts(w: &DesiredWorkload) -> Vec<(String, Digest)> {
    let mut out = Vec::new();
    if let Some(c) = w.wasm.as_ref().map(|s| &s.component) {
        match (&c.path, &c.pinned, c.digest) {
            (Some(path), _, Some(blob)) => out.push((path.clone(), blob)),
            (None, Some(pinned), blob) => {
                // The blob digest only if the reference somehow names none: an artifact that
                // ran must not be missing from the log.
                if let Some(d) = pinned_digest(pinned).or(blob) {
                    out.push((pinned.clone(), d));
                }
            }
            _ => {}
        }
    }
    for image in w.container_images() {
        if let Some(d) = pinned_digest(&image) {
            out.push((image, d));
        }
    }
    out
}

/// The manifest digest a pinned reference names (registry or local layout).
fn pinned_digest(reference: &str) -> Option<Digest> {
    match reference.parse::<ArtifactRef>().ok()? {
        ArtifactRef::Registry(r) => r.digest,
        ArtifactRef::Layout(l) => l.digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Revision;
    use crate::record::VerifiedArtifact;
    use crate::trust::SignerKind;
    use fleetlet_core::render::{ComponentRef, DesiredState};
    use std::collections::BTreeMap;

    fn digest(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn signer() -> Signer {
        Signer {
            kind: SignerKind::Key,
            identity: "release".into(),
            detail: None,
            log_index: None,
        }
    }

    /// A workload deserialized from the shape render produces, with `component` as given.
    fn wasm_workload(component: ComponentRef) -> DesiredWorkload {
        let mut w: DesiredWorkload = serde_json::from_value(serde_json::json!({
            "app": "a", "name": "w", "runtime": "wasm",
            "wasm": {
                "component": {},
                "kind": {"type": "command", "args": []},
                "env": {},
                "limits": {"memory": "128Mi", "cpuTimePerRequest": "10s", "maxConcurrentRequests": 1},
                "capabilities": {},
            },
            "hash": Digest::of(b"").to_string(),
        }))
        .expect("a wasm workload");
        w.wasm.as_mut().unwrap().component = component;
        w
    }

    #[test]
    fn workloads_name_each_artifact_with_its_digest_and_verification() {
        let manifest = digest("manifest");
        let layout = digest("layout");
        let registry = format!("reg.test/fleet/a:v1@{manifest}");
        let oci = format!("oci:/media/usb/a@{layout}");
        // The artifact a component is named by: (reference, digest).
        type Named = Option<(String, Digest)>;
        // (component, what names it, verified in the release)
        let cases: Vec<(ComponentRef, Named, bool)> = vec![
            (
                ComponentRef {
                    path: Some("components/a.wasm".into()),
                    image: None,
                    pinned: None,
                    digest: Some(digest("blob")),
                    size: Some(4),
                },
                Some(("components/a.wasm".into(), digest("blob"))),
                false,
            ),
            (
                ComponentRef {
                    path: None,
                    image: Some("reg.test/fleet/a:v1".into()),
                    pinned: Some(registry.clone()),
                    digest: Some(digest("layer")),
                    size: Some(5),
                },
                Some((registry.clone(), manifest)),
                true,
            ),
            (
                ComponentRef {
                    path: None,
                    image: Some("oci:/media/usb/a:v1".into()),
                    pinned: Some(oci.clone()),
                    digest: Some(digest("layer")),
                    size: Some(5),
                },
                Some((oci.clone(), layout)),
                true,
            ),
            (
                ComponentRef {
                    path: None,
                    image: Some("reg.test/fleet/a:v1".into()),
                    pinned: None,
                    digest: None,
                    size: None,
                },
                None,
                false,
            ),
        ];
        for (component, want, verified) in cases {
            let w = wasm_workload(component.clone());
            let mut artifacts = BTreeMap::new();
            if verified {
                let pinned = component.pinned.clone().unwrap();
                artifacts.insert(
                    pinned,
                    VerifiedArtifact {
                        material: vec![digest("sig")],
                        signers: vec![signer()],
                    },
                );
            }
            let release = AppliedRelease {
                revision: Revision {
                    commit: "c1".into(),
                    reference: "refs/heads/main".into(),
                    summary: String::new(),
                    time: 0,
                },
                desired: DesiredState {
                    site: "s1".parse().unwrap(),
                    revision: "c1".into(),
                    workloads: BTreeMap::from([(w.id(), w)]),
                    hash: digest(""),
                },
                applied_at: 0,
                commit_signers: vec![],
                artifacts,
                held: BTreeMap::new(),
            };
            let got = audit_workloads(&release);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].id, "a/w");
            let expected: Vec<AuditArtifact> = want
                .into_iter()
                .map(|(reference, digest)| AuditArtifact {
                    reference,
                    digest,
                    signers: if verified { vec![signer()] } else { vec![] },
                    material: if verified {
                        vec![super::Digest::of(b"sig")]
                    } else {
                        vec![]
                    },
                })
                .collect();
            assert_eq!(got[0].artifacts, expected, "{component:?}");
        }
    }

    #[test]
    fn k3s_workloads_name_their_pinned_container_images() {
        let manifest = digest("image manifest");
        let pinned = format!("reg.test/acme/web:1.4@{manifest}");
        let w: DesiredWorkload = serde_json::from_value(serde_json::json!({
            "app": "shop", "name": "web", "runtime": "k3s",
            "k3s": {
                "manifests": "k3s/web",
                "objects": [{
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": "shop"},
                    "spec": {"template": {"spec": {"containers": [
                        {"name": "web", "image": pinned},
                        {"name": "sidecar", "image": "reg.test/acme/sidecar:1"},
                    ]}}},
                }],
                "healthTimeout": "5m", "onUnhealthy": "rollback", "drift": "correct",
            },
            "hash": Digest::of(b"").to_string(),
        }))
        .expect("a k3s workload");
        assert_eq!(
            workload_artifacts(&w),
            [(pinned, manifest)],
            "the unpinned sidecar names no digest"
        );
    }

    #[test]
    fn events_serialize_in_camel_case_without_an_absent_from() {
        let mut e = AuditEvent::new(7, AuditAction::RolledBack);
        e.commit_signers = vec![signer()];
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["action"], "rolledBack");
        assert!(json.get("from").is_none() && json.get("commitSigners").is_some());
        let back: AuditEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
