//! Checking a release before it becomes visible to the cycle: what a sync-bundle import runs
//! on the commit and artifacts it has staged, so that a bundle the site's policy would refuse is
//! rejected whole at the door rather than held by the engine later.
//!
//! It runs the same checks, in the same order, as the engine's release step — history (no
//! rollback without a signed instruction), commit signature, render, release tag, then every
//! artifact resolved, complete, and signed as the policy requires — through the same ports, but
//! applies nothing and records nothing. The engine still checks everything again when it
//! reconciles from the published release: this is a gate, not a shortcut.

use crate::artifacts::{Platform, fetch_signatures, load_signature_manifests, pull, wasm_layer};
use crate::engine::desired_state;
use crate::ports::{BlobStore, Revision, Source, StoreError};
use crate::record::Stage;
use crate::registry::{ArtifactStore, BlobUpload, Descriptor, Registry};
use crate::trust::{Requirement, Signer, Verifier};
use fleetlet_core::Digest;
use fleetlet_core::reference::ArtifactRef;
use std::collections::{BTreeMap, BTreeSet};

/// What a release must be checked against.
pub struct Preflight<'a> {
    /// The site the release is for.
    pub site: &'a str,
    /// The commit the site runs now, if any: the release must descend from it.
    pub applied: Option<&'a str>,
    /// The site's trust policy; `None` checks completeness only.
    pub verifier: Option<&'a dyn Verifier>,
    /// Where the release's artifacts are resolved (the staged bundle).
    pub registry: &'a (dyn Registry + Sync),
    /// Where pulled artifacts are found or kept (the staged bundle over the site's store).
    pub store: &'a (dyn ArtifactStore + Sync),
    pub platform: Platform,
    /// Whether the container images of k3s workloads are checked too (the site applies them).
    pub container_images: bool,
}

/// A release that passed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checked {
    pub commit_signers: Vec<Signer>,
    /// Workload ids the release runs on the site.
    pub workloads: Vec<String>,
    /// Every registry artifact, pinned (`registry/repo@sha256:…`), with who signed it (empty
    /// when the policy requires no signature).
    pub artifacts: BTreeMap<String, Vec<Signer>>,
    /// With a non-atomic policy, workloads whose artifacts failed verification and that the
    /// engine will hold at their previous version: id → reason.
    pub held: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PreflightError {
    pub stage: Stage,
    pub message: String,
    /// Every problem found, when there are several.
    pub details: Vec<String>,
}

fn fail(stage: Stage, message: String) -> PreflightError {
    PreflightError {
        stage,
        message,
        details: vec![],
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Checks `rev` of `source` for `p.site`; see the module docs for what is checked.
pub fn check_release(
    source: &dyn Source,
    rev: &Revision,
    p: &Preflight<'_>,
) -> Result<Checked, PreflightError> {
    let source_err = |e: crate::ports::SourceError| fail(Stage::Source, e.to_string());
    let mut checked = Checked::default();

    if let Some(base) = p.applied.filter(|b| *b != rev.commit)
        && !source
            .descends_from(&rev.commit, base)
            .map_err(source_err)?
    {
        let what = format!(
            "commit {} does not descend from {}, the commit this site runs (an older release \
             replayed, or rewritten history)",
            rev.commit, base
        );
        let Some(v) = p.verifier else {
            return Err(fail(Stage::Verify, format!("{what}; refused")));
        };
        let tags = source.tags_at(&rev.commit).map_err(source_err)?;
        let signer = v
            .verify_rollback(base, &rev.commit, &tags)
            .map_err(|reason| fail(Stage::Verify, format!("{what}; refused: {reason}")))?;
        checked.commit_signers.push(signer);
    }
    if let Some(v) = p.verifier {
        let signed = source.commit_signature(&rev.commit).map_err(source_err)?;
        let signers = v.verify_commit(rev, signed.as_ref()).map_err(|reason| {
            fail(
                Stage::Verify,
                format!("commit {}: {reason}", short(&rev.commit)),
            )
        })?;
        checked.commit_signers.extend(signers);
    }
    let tree = source.read_tree(&rev.commit).map_err(source_err)?;
    let (desired, labels) =
        desired_state(&tree, p.site, &rev.commit).map_err(|(stage, message, details)| {
            PreflightError {
                stage,
                message,
                details,
            }
        })?;
    if let Some(v) = p.verifier {
        let tags = source.tags_at(&rev.commit).map_err(source_err)?;
        let signers = v.verify_release_tag(&labels, &tags).map_err(|reason| {
            fail(
                Stage::Verify,
                format!("commit {}: {reason}", short(&rev.commit)),
            )
        })?;
        checked.commit_signers.extend(signers);
    }

    // Each artifact once, with the workloads that use it (for the hold list and messages).
    let mut wanted: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
    for w in desired.workloads.values() {
        checked.workloads.push(w.id());
        if let Some(c) = w.wasm.as_ref().map(|s| &s.component)
            && c.path.is_none()
            && let Some(image) = &c.image
        {
            let entry = wanted.entry(image.clone()).or_default();
            entry.0 = true;
            entry.1.push(w.id());
        }
        if p.container_images {
            for image in w.container_images() {
                wanted.entry(image).or_default().1.push(w.id());
            }
        }
    }
    let mut problems = Vec::new();
    let mut unverified: Vec<(Vec<String>, String)> = Vec::new();
    for (image, (component, users)) in &wanted {
        let reference = match image.parse::<ArtifactRef>() {
            Ok(ArtifactRef::Registry(r)) => r,
            // A site-local layout is opened by the agent from the folders its config allows;
            // no bundle can carry it.
            Ok(ArtifactRef::Layout(_)) => continue,
            Err(e) => {
                problems.push(format!("{image}: {e}"));
                continue;
            }
        };
        let pulled = match pull(p.registry, p.store, &reference, &p.platform) {
            Ok(pulled) => pulled,
            Err(e) => {
                problems.push(format!("{image} (used by {}): {e}", users.join(", ")));
                continue;
            }
        };
        if *component && wasm_layer(&pulled.resolved.config, &pulled.resolved.layers).is_none() {
            problems.push(format!(
                "{}: not a Wasm component artifact (no application/wasm layer)",
                pulled.resolved.pinned
            ));
            continue;
        }
        let pinned = pulled.resolved.pinned;
        let signers = match p.verifier {
            Some(v) if v.artifact_requirement(&pinned) == Requirement::Signed => {
                let verdict = fetch_signatures(p.registry, p.store, &pinned)
                    .map_err(|e| format!("fetching signatures: {e}"))
                    .and_then(|material| load_signature_manifests(p.store, &material))
                    .and_then(|manifests| v.verify_artifact(&pinned, &manifests));
                match verdict {
                    Ok(signers) => signers,
                    Err(reason) => {
                        unverified.push((users.clone(), format!("{pinned}: {reason}")));
                        continue;
                    }
                }
            }
            _ => vec![],
        };
        checked.artifacts.insert(pinned.to_string(), signers);
    }
    if !problems.is_empty() {
        return Err(PreflightError {
            stage: Stage::Store,
            message: format!(
                "{} artifact(s) of the release are neither in the bundle nor on the site; first: {}",
                problems.len(),
                problems[0]
            ),
            details: problems,
        });
    }
    let atomic = p.verifier.is_none_or(|v| v.atomic());
    if !unverified.is_empty() && atomic {
        let details: Vec<String> = unverified.iter().map(|(_, r)| r.clone()).collect();
        return Err(PreflightError {
            stage: Stage::Verify,
            message: format!(
                "{} artifact(s) failed verification; first: {}",
                details.len(),
                details[0]
            ),
            details,
        });
    }
    for (users, reason) in unverified {
        for id in users {
            checked.held.entry(id).or_insert_with(|| reason.clone());
        }
    }
    Ok(checked)
}

/// One store seen through another: reads find a blob in `upper` (a staged bundle) or `lower`
/// (the site's store), writes go to `upper` only. So a delta bundle that omits blobs the site
/// has checks complete, and checking it never writes to the site.
pub struct Layered<'a> {
    pub upper: &'a (dyn ArtifactStore + Sync),
    pub lower: &'a (dyn ArtifactStore + Sync),
}

impl BlobStore for Layered<'_> {
    fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        if self.lower.contains(&digest) {
            return Ok(digest);
        }
        self.upper.put(bytes)
    }

    fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        match self.upper.get(digest)? {
            Some(bytes) => Ok(Some(bytes)),
            None => self.lower.get(digest),
        }
    }
}

impl ArtifactStore for Layered<'_> {
    fn contains(&self, digest: &Digest) -> bool {
        self.upper.contains(digest) || self.lower.contains(digest)
    }

    fn begin(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<Box<dyn BlobUpload + '_>>, StoreError> {
        if self.lower.contains(digest) {
            return Ok(None);
        }
        self.upper.begin(digest, size)
    }

    fn tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), StoreError> {
        self.upper.tag(name, descriptor)
    }

    fn collect_garbage(&self, _roots: &BTreeSet<Digest>) -> Result<(usize, u64), StoreError> {
        // Never collected: the lower store's roots are not known here.
        Ok((0, 0))
    }
}
