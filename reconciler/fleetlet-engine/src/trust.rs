//! The verify step's port: what the engine hands the verifier (signature manifests read from the
//! store, signed commit and tag objects read from the source) and what comes back (who signed,
//! or why not). The verifier decides from bytes alone, so the same checks run online, offline
//! and again after a restart, from what the store cached.

use crate::ports::Revision;
use fleetlet_core::Digest;
use fleetlet_core::reference::RegistryRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where cosign keeps key-based signatures: the tag `sha256-<hex>.sig` in the artifact's
/// repository.
pub fn cosign_signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// The referrers tag schema fallback (OCI 1.1) for registries without the referrers API: an
/// index tagged `sha256-<hex>` lists the artifacts whose `subject` is the digest.
pub fn referrers_tag(digest: &Digest) -> String {
    format!("sha256-{}", digest.hex())
}

/// A manifest that may carry signatures for an artifact (a cosign `.sig` manifest, or a
/// referrer such as a sigstore bundle), with the blobs it names, all read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureManifest {
    pub digest: Digest,
    /// The manifest's exact bytes.
    pub bytes: Vec<u8>,
    /// Its config and layer blobs, by digest.
    pub blobs: BTreeMap<Digest, Vec<u8>>,
}

/// Who signed something, as reported in status, logs and (later) the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Signer {
    pub kind: SignerKind,
    /// A key's configured name, a certificate's subject, an SSH principal or an OpenPGP user id.
    pub identity: String,
    /// The OIDC issuer (keyless) or the key fingerprint (SSH, OpenPGP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The transparency log index, when a log entry was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            SignerKind::Key => "key",
            SignerKind::Keyless => "keyless",
            SignerKind::Ssh => "ssh",
            SignerKind::OpenPgp => "openpgp",
        };
        write!(f, "{kind} '{}'", self.identity)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SignerKind {
    Key,
    Keyless,
    Ssh,
    OpenPgp,
}

/// A signature and the exact bytes it signs (a commit's `gpgsig` header and the commit without
/// it; a tag object split at its signature block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedObject {
    pub signature: Vec<u8>,
    pub payload: Vec<u8>,
}

/// An annotated tag that points at a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEvidence {
    /// Short name (`release-1.4`, `fleetlet-rollback/2026-11-27`).
    pub name: String,
    /// The tag message.
    pub message: String,
    /// Tagger time, Unix seconds.
    pub time: i64,
    /// `None` for an unsigned tag.
    pub signed: Option<SignedObject>,
}

/// What the policy asks of one artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// At least one signature by a signer the policy allows for it.
    Signed,
    /// Nothing (the policy says so explicitly).
    None,
}

/// The site's verifier. Every method is a decision over bytes: no I/O, no clock.
pub trait Verifier: Send + Sync {
    /// What the policy requires of the artifact at `reference` (`registry/repository`).
    fn artifact_requirement(&self, reference: &RegistryRef) -> Requirement;

    /// Checks that `material` holds a signature over exactly `pinned`'s digest by a signer the
    /// policy allows for it; returns every such signer, or why there is none.
    fn verify_artifact(
        &self,
        pinned: &RegistryRef,
        material: &[SignatureManifest],
    ) -> Result<Vec<Signer>, String>;

    /// Checks the signature of the commit about to be applied. `Ok(None)`: the policy does not
    /// require commit signatures (and the commit carries none we could check).
    fn verify_commit(
        &self,
        revision: &Revision,
        signed: Option<&SignedObject>,
    ) -> Result<Option<Signer>, String>;

    /// Checks the policy's release-tag rule for a site with `site_labels`: when it applies, a
    /// signed tag matching its pattern must point at the commit. `Ok(None)`: no rule applies.
    fn verify_release_tag(
        &self,
        site_labels: &BTreeMap<String, String>,
        tags: &[TagEvidence],
    ) -> Result<Option<Signer>, String>;

    /// Checks for a signed instruction (among `tags` on the new commit) that allows moving from
    /// `from` to `to` although `to` does not descend from `from`.
    fn verify_rollback(&self, from: &str, to: &str, tags: &[TagEvidence])
    -> Result<Signer, String>;

    /// Whether one failed artifact holds the whole release (default) or only its workloads.
    fn atomic(&self) -> bool;

    /// After how many seconds without the source advancing a freeze is reported.
    fn max_source_age(&self) -> Option<i64>;
}

// The agent shares one policy between the engine and the sync-bundle inbox.
impl<T: Verifier + ?Sized> Verifier for std::sync::Arc<T> {
    fn artifact_requirement(&self, reference: &RegistryRef) -> Requirement {
        (**self).artifact_requirement(reference)
    }
    fn verify_artifact(
        &self,
        pinned: &RegistryRef,
        material: &[SignatureManifest],
    ) -> Result<Vec<Signer>, String> {
        (**self).verify_artifact(pinned, material)
    }
    fn verify_commit(
        &self,
        rev: &crate::ports::Revision,
        signed: Option<&SignedObject>,
    ) -> Result<Option<Signer>, String> {
        (**self).verify_commit(rev, signed)
    }
    fn verify_release_tag(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
        tags: &[TagEvidence],
    ) -> Result<Option<Signer>, String> {
        (**self).verify_release_tag(labels, tags)
    }
    fn verify_rollback(
        &self,
        from: &str,
        to: &str,
        tags: &[TagEvidence],
    ) -> Result<Signer, String> {
        (**self).verify_rollback(from, to, tags)
    }
    fn atomic(&self) -> bool {
        (**self).atomic()
    }
    fn max_source_age(&self) -> Option<i64> {
        (**self).max_source_age()
    }
}
