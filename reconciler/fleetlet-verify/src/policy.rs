//! The site's trust policy: the `trust:` section of the agent config (trust roots provisioned on
//! the site, never taken from the fleet repo), loaded once into a [`TrustPolicy`] that
//! implements the engine's `Verifier` port. It decides which signers may sign which artifacts
//! and refs, and turns every failure into a reason a person can act on.

use crate::commit::{CommitSigError, CommitSigners, SignatureKind};
use crate::cosign::{self, TrustedKey};
use crate::keyless::{self, KeylessIdentity, TrustedRoot};
use fleetlet_core::reference::RegistryRef;
use fleetlet_core::units::DurationSpec;
use fleetlet_engine::ports::Revision;
use fleetlet_engine::trust::{
    Requirement, SignatureManifest, SignedObject, Signer, SignerKind, TagEvidence, Verifier,
};
use globset::{GlobBuilder, GlobMatcher};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The line a rollback instruction (a signed annotated tag on the older commit) must carry.
pub const ROLLBACK_MARKER: &str = "fleetlet-rollback-from:";

/// `trust:` in the agent config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrustConfig {
    /// Public keys (PEM; ECDSA P-256 or Ed25519) by the name policies use for them.
    #[serde(default)]
    pub keys: BTreeMap<String, PathBuf>,
    /// Keyless (Fulcio/Rekor) signers, verified offline against a `trusted_root.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<KeylessConfig>,
    /// Who may sign commits and tags.
    #[serde(default)]
    pub commit_signers: CommitSignersConfig,
    #[serde(default)]
    pub artifacts: ArtifactPolicy,
    #[serde(default)]
    pub commits: CommitPolicy,
    /// Who may sign sync bundles (air-gap imports).
    #[serde(default)]
    pub bundles: BundlePolicy,
    /// One artifact failing verification holds the whole release (default). When false, only
    /// its workloads are held (at their previous version) and the rest goes ahead.
    #[serde(default = "yes")]
    pub atomic: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeylessConfig {
    /// Sigstore's `trusted_root.json` (Fulcio CAs, Rekor and CT log keys), provisioned offline.
    pub trusted_root: PathBuf,
    /// Allowed identities by name.
    pub identities: BTreeMap<String, IdentityConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentityConfig {
    /// The OIDC issuer, exactly (`https://token.actions.githubusercontent.com`).
    pub issuer: String,
    /// The certificate's subject (email or URI), exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Or a regular expression the subject must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_reg_exp: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommitSignersConfig {
    /// An SSH `allowed_signers` file (as `ssh-keygen -Y verify` and Git read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_signers: Option<PathBuf>,
    /// Armored OpenPGP public keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub openpgp_keys: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Require {
    /// A valid signature by an allowed signer.
    #[default]
    Signed,
    /// Nothing: for development, or artifacts whose trust comes from elsewhere.
    None,
}

/// Who may sign the sync bundles a site imports. A bundle's signature only vouches that the
/// bundle arrived as its maker wrote it; the commit and artifacts inside are still verified
/// against the rest of the policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BundlePolicy {
    /// Names of `keys` whose signature on a bundle is accepted. None by default: a key
    /// trusted to sign artifacts (a vendor's, say) is not thereby trusted to carry releases.
    #[serde(default)]
    pub signers: Vec<String>,
}

/// What artifacts (container images and Wasm components pulled from registries or layouts)
/// must carry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArtifactPolicy {
    #[serde(default)]
    pub require: Require,
    /// Names of keys or keyless identities allowed; empty: any configured one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<String>,
    /// Annotations the signature payload must carry (cosign signatures; sigstore bundles carry
    /// none, so they cannot satisfy this).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Key-based cosign signatures must also carry a Rekor entry (`dev.sigstore.cosign/bundle`)
    /// that verifies against the trusted root. Entries present are always checked when a
    /// trusted root is configured.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tlog: bool,
    /// Per-artifact exceptions; the first whose pattern matches `registry/repository` (or
    /// `oci-layout/PATH`) wins, its unset fields taken from above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ArtifactRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArtifactRule {
    /// A glob over `registry/repository`: `registry.example.com/team-a/**`.
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<Require>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What commits (and tags) of the fleet repo must carry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommitPolicy {
    #[serde(default)]
    pub require: Require,
    /// Principal patterns (SSH principals; OpenPGP emails or fingerprints) allowed to sign;
    /// empty: anyone in the commit signers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<String>,
    /// Per-ref signers: the first rule whose glob matches the followed ref
    /// (`refs/heads/main`, `refs/tags/v*`) replaces `signers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<RefRule>,
    /// Also require a signed annotated tag on the commit, for sites with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_tag: Option<ReleaseTagRule>,
    /// Report a possible freeze attack when the newest commit is older than this (`14d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<DurationSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RefRule {
    #[serde(rename = "match")]
    pub pattern: String,
    pub signers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReleaseTagRule {
    /// A glob over tag names: `release-*`.
    pub pattern: String,
    /// The rule applies to sites whose labels (in the fleet repo) include all of these; empty:
    /// to every site.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub site_labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("trust.{field}: reading {path}: {source}")]
    Read {
        field: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trust.{field}: {message}")]
    Invalid { field: String, message: String },
}

/// The loaded policy: trust roots parsed, patterns compiled, names checked.
pub struct TrustPolicy {
    config: TrustConfig,
    keys: Vec<TrustedKey>,
    root: Option<TrustedRoot>,
    identities: Vec<(String, KeylessIdentity)>,
    commit_signers: CommitSigners,
    rules: Vec<(GlobMatcher, ArtifactRule)>,
    ref_rules: Vec<(GlobMatcher, RefRule)>,
    release_tag: Option<GlobMatcher>,
}

fn glob(field: &str, pattern: &str) -> Result<GlobMatcher, PolicyError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| PolicyError::Invalid {
            field: field.to_string(),
            message: format!("pattern {pattern:?}: {e}"),
        })
}

impl TrustPolicy {
    /// Reads every trust root the config names; relative paths are taken from `base`.
    pub fn load(config: &TrustConfig, base: &Path) -> Result<Self, PolicyError> {
        let read = |field: String, path: &Path| {
            let path = base.join(path);
            std::fs::read(&path).map_err(|source| PolicyError::Read {
                field,
                path,
                source,
            })
        };
        let invalid = |field: String, message: String| PolicyError::Invalid { field, message };
        let mut keys = Vec::new();
        for (name, path) in &config.keys {
            let pem = read(format!("keys.{name}"), path)?;
            keys.push(
                TrustedKey::from_pem(name, &pem)
                    .map_err(|e| invalid(format!("keys.{name}"), e.to_string()))?,
            );
        }
        let (root, identities) = match &config.keyless {
            None => (None, vec![]),
            Some(k) => {
                let json = read("keyless.trustedRoot".into(), &k.trusted_root)?;
                let root = TrustedRoot::from_json(&json)
                    .map_err(|e| invalid("keyless.trustedRoot".into(), e.to_string()))?;
                let mut ids = Vec::new();
                for (name, id) in &k.identities {
                    let field = format!("keyless.identities.{name}");
                    if config.keys.contains_key(name) {
                        return Err(invalid(field, "a key has the same name".into()));
                    }
                    let identity = KeylessIdentity::new(
                        &id.issuer,
                        id.subject.as_deref(),
                        id.subject_reg_exp.as_deref(),
                    )
                    .map_err(|e| invalid(field, e.to_string()))?;
                    ids.push((name.clone(), identity));
                }
                (Some(root), ids)
            }
        };
        let signers_path = config.commit_signers.allowed_signers.as_ref();
        let allowed_text = signers_path
            .map(|p| read("commitSigners.allowedSigners".into(), p))
            .transpose()?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let mut pgp = Vec::new();
        for (i, p) in config.commit_signers.openpgp_keys.iter().enumerate() {
            let bytes = read(format!("commitSigners.openpgpKeys[{i}]"), p)?;
            pgp.push((
                p.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        let source_name = signers_path.map(|p| p.display().to_string());
        let commit_signers =
            CommitSigners::new(source_name.as_deref().zip(allowed_text.as_deref()), &pgp)
                .map_err(|e| invalid("commitSigners".into(), e.to_string()))?;

        let known = |name: &String| {
            config.keys.contains_key(name) || identities.iter().any(|(n, _)| n == name)
        };
        let check_names = |field: String, names: &[String]| match names.iter().find(|n| !known(n)) {
            Some(n) => Err(invalid(
                field,
                format!("no key or keyless identity is named {n:?}"),
            )),
            None => Ok(()),
        };
        check_names("artifacts.signers".into(), &config.artifacts.signers)?;
        if let Some(n) = config
            .bundles
            .signers
            .iter()
            .find(|n| !config.keys.contains_key(*n))
        {
            return Err(invalid(
                "bundles.signers".into(),
                format!("no key is named {n:?} (bundles are signed with keys, not keyless)"),
            ));
        }
        let mut rules = Vec::new();
        for (i, r) in config.artifacts.rules.iter().enumerate() {
            let field = format!("artifacts.rules[{i}]");
            if let Some(s) = &r.signers {
                check_names(format!("{field}.signers"), s)?;
            }
            rules.push((glob(&format!("{field}.match"), &r.pattern)?, r.clone()));
        }
        let mut ref_rules = Vec::new();
        for (i, r) in config.commits.refs.iter().enumerate() {
            ref_rules.push((
                glob(&format!("commits.refs[{i}].match"), &r.pattern)?,
                r.clone(),
            ));
        }
        let release_tag = config
            .commits
            .release_tag
            .as_ref()
            .map(|t| glob("commits.releaseTag.pattern", &t.pattern))
            .transpose()?;

        let policy = TrustPolicy {
            config: config.clone(),
            keys,
            root,
            identities,
            commit_signers,
            rules,
            ref_rules,
            release_tag,
        };
        policy.check_roots_exist()?;
        Ok(policy)
    }

    /// A policy that requires signatures needs someone who can give them.
    fn check_roots_exist(&self) -> Result<(), PolicyError> {
        let signs_artifacts = !self.keys.is_empty() || !self.identities.is_empty();
        let artifacts_need = self.config.artifacts.require == Require::Signed
            || self
                .config
                .artifacts
                .rules
                .iter()
                .any(|r| r.require == Some(Require::Signed));
        if artifacts_need && !signs_artifacts {
            return Err(PolicyError::Invalid {
                field: "artifacts.require".into(),
                message: "signatures are required but no keys or keyless identities are \
                          configured (trust.keys, trust.keyless); set require: none to run \
                          unsigned artifacts"
                    .into(),
            });
        }
        if self.config.artifacts.require_tlog && self.root.is_none() {
            return Err(PolicyError::Invalid {
                field: "artifacts.requireTlog".into(),
                message: "transparency log entries are checked against the Rekor keys of a \
                          trusted root: set trust.keyless.trustedRoot"
                    .into(),
            });
        }
        let commits_need =
            self.config.commits.require == Require::Signed || self.release_tag.is_some();
        if commits_need && self.commit_signers.is_empty() {
            return Err(PolicyError::Invalid {
                field: "commits.require".into(),
                message: "signed commits are required but no commit signers are configured \
                          (trust.commitSigners.allowedSigners, .openpgpKeys); set require: none \
                          to accept unsigned commits"
                    .into(),
            });
        }
        Ok(())
    }

    /// The rule for an artifact: (require, allowed signer names, required annotations).
    fn artifact_rule(
        &self,
        reference: &RegistryRef,
    ) -> (Require, &[String], &BTreeMap<String, String>) {
        let a = &self.config.artifacts;
        let subject = format!("{}/{}", reference.registry, reference.repository);
        match self.rules.iter().find(|(g, _)| g.is_match(&subject)) {
            Some((_, r)) => (
                r.require.unwrap_or(a.require),
                r.signers.as_deref().unwrap_or(&a.signers),
                r.annotations.as_ref().unwrap_or(&a.annotations),
            ),
            None => (a.require, &a.signers, &a.annotations),
        }
    }

    fn commit_principals(&self, reference: &str) -> Option<&[String]> {
        let signers = self
            .ref_rules
            .iter()
            .find(|(g, _)| g.is_match(reference))
            .map(|(_, r)| r.signers.as_slice())
            .unwrap_or(&self.config.commits.signers);
        (!signers.is_empty()).then_some(signers)
    }

    fn check_signed(
        &self,
        signed: &SignedObject,
        time: i64,
        allowed: Option<&[String]>,
    ) -> Result<Signer, CommitSigError> {
        let s = self
            .commit_signers
            .verify(&signed.signature, &signed.payload, time, allowed)?;
        Ok(Signer {
            kind: match s.kind {
                SignatureKind::Ssh => SignerKind::Ssh,
                SignatureKind::OpenPgp => SignerKind::OpenPgp,
            },
            identity: s.principal,
            detail: Some(s.fingerprint),
            log_index: None,
        })
    }

    /// The keys whose signature on a sync bundle this site accepts.
    pub fn bundle_keys(&self) -> Vec<TrustedKey> {
        let allowed = &self.config.bundles.signers;
        self.keys
            .iter()
            .filter(|k| allowed.contains(&k.name))
            .cloned()
            .collect()
    }

    /// Verifies a single artifact against this policy (what `fleetlet verify --policy` runs).
    pub fn verify(
        &self,
        pinned: &RegistryRef,
        material: &[SignatureManifest],
    ) -> Result<Vec<Signer>, String> {
        self.verify_artifact(pinned, material)
    }
}

impl Verifier for TrustPolicy {
    fn artifact_requirement(&self, reference: &RegistryRef) -> Requirement {
        match self.artifact_rule(reference).0 {
            Require::Signed => Requirement::Signed,
            Require::None => Requirement::None,
        }
    }

    fn verify_artifact(
        &self,
        pinned: &RegistryRef,
        material: &[SignatureManifest],
    ) -> Result<Vec<Signer>, String> {
        let Some(digest) = pinned.digest else {
            return Err(format!("{pinned} is not pinned to a digest"));
        };
        let (_, allowed, annotations) = self.artifact_rule(pinned);
        let allows = |name: &str| allowed.is_empty() || allowed.iter().any(|a| a == name);
        let keys: Vec<&TrustedKey> = self.keys.iter().filter(|k| allows(&k.name)).collect();
        let identities: Vec<KeylessIdentity> = self
            .identities
            .iter()
            .filter(|(n, _)| allows(n))
            .map(|(_, i)| i.clone())
            .collect();
        if material.is_empty() {
            return Err(format!(
                "unsigned: no cosign signature (tag {}) and no sigstore bundle referrer",
                fleetlet_engine::trust::cosign_signature_tag(&digest)
            ));
        }
        let mut signers = Vec::new();
        let mut problems = Vec::new();
        for m in material {
            if cosign::is_signature_manifest(m) {
                let checks = cosign::Checks {
                    keys: &keys,
                    annotations,
                    root: self.root.as_ref(),
                    identities: &identities,
                    require_tlog: self.config.artifacts.require_tlog,
                };
                match cosign::verify_signatures(m, &digest, &checks) {
                    Ok(found) => signers.extend(found.into_iter().map(|s| {
                        match s.issuer {
                            Some(issuer) => Signer {
                                kind: SignerKind::Keyless,
                                identity: s.key,
                                detail: Some(issuer),
                                log_index: s.log_index,
                            },
                            None => Signer {
                                kind: SignerKind::Key,
                                detail: self
                                    .keys
                                    .iter()
                                    .find(|k| k.name == s.key)
                                    .map(|k| k.fingerprint()),
                                identity: s.key,
                                log_index: s.log_index,
                            },
                        }
                    })),
                    Err(p) => problems.extend(p),
                }
                continue;
            }
            if !annotations.is_empty() {
                // A bundle signs the artifact, not a payload: it cannot vouch for annotations.
                problems.push(format!(
                    "referrer {}: a sigstore bundle carries no annotations, and the policy \
                     requires {}",
                    m.digest.short(),
                    annotations
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            }
            match bundle_json(m) {
                Err(p) => problems.push(p),
                Ok(json) => match self.verify_bundle(&json, &digest, &keys, &identities) {
                    Ok(s) => signers.push(s),
                    Err(p) => problems.push(format!("bundle {}: {p}", m.digest.short())),
                },
            }
        }
        if signers.is_empty() {
            let who = if allowed.is_empty() {
                "any trusted signer".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(format!(
                "no valid signature by {who}: {}",
                problems.join("; ")
            ));
        }
        signers.dedup();
        Ok(signers)
    }

    fn verify_commit(
        &self,
        revision: &Revision,
        signed: Option<&SignedObject>,
    ) -> Result<Option<Signer>, String> {
        if self.config.commits.require == Require::None {
            return Ok(None);
        }
        let Some(signed) = signed else {
            return Err("unsigned commit; this site requires signed commits".into());
        };
        let allowed = self.commit_principals(&revision.reference);
        self.check_signed(signed, revision.time, allowed)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    fn verify_release_tag(
        &self,
        site_labels: &BTreeMap<String, String>,
        tags: &[TagEvidence],
    ) -> Result<Option<Signer>, String> {
        let (Some(rule), Some(pattern)) = (&self.config.commits.release_tag, &self.release_tag)
        else {
            return Ok(None);
        };
        if !rule
            .site_labels
            .iter()
            .all(|(k, v)| site_labels.get(k) == Some(v))
        {
            return Ok(None);
        }
        let mut seen = Vec::new();
        for t in tags.iter().filter(|t| pattern.is_match(&t.name)) {
            match &t.signed {
                None => seen.push(format!("{} (unsigned)", t.name)),
                Some(s) => match self.check_signed(
                    s,
                    t.time,
                    self.commit_principals(&format!("refs/tags/{}", t.name)),
                ) {
                    Ok(signer) => return Ok(Some(signer)),
                    Err(e) => seen.push(format!("{} ({e})", t.name)),
                },
            }
        }
        Err(format!(
            "this site requires a signed tag matching {:?} on the commit; {}",
            rule.pattern,
            if seen.is_empty() {
                "there is none".to_string()
            } else {
                format!("found: {}", seen.join(", "))
            }
        ))
    }

    fn verify_rollback(
        &self,
        from: &str,
        to: &str,
        tags: &[TagEvidence],
    ) -> Result<Signer, String> {
        let wanted = format!("{ROLLBACK_MARKER} {from}");
        let mut seen = Vec::new();
        for t in tags {
            if !t.message.lines().any(|l| l.trim() == wanted) {
                continue;
            }
            match &t.signed {
                None => seen.push(format!("{} (unsigned)", t.name)),
                Some(s) => match self.check_signed(s, t.time, self.config.commits_signers()) {
                    Ok(signer) => return Ok(signer),
                    Err(e) => seen.push(format!("{} ({e})", t.name)),
                },
            }
        }
        Err(format!(
            "no valid signed rollback instruction{}: push a signed annotated tag on {to} whose \
             message has the line '{wanted}'",
            if seen.is_empty() {
                String::new()
            } else {
                format!(" (found: {})", seen.join(", "))
            }
        ))
    }

    fn atomic(&self) -> bool {
        self.config.atomic
    }

    fn max_source_age(&self) -> Option<i64> {
        self.config
            .commits
            .max_age
            .map(|d| (d.as_duration().as_secs()) as i64)
    }
}

impl TrustConfig {
    fn commits_signers(&self) -> Option<&[String]> {
        (!self.commits.signers.is_empty()).then_some(self.commits.signers.as_slice())
    }
}

impl TrustPolicy {
    fn verify_bundle(
        &self,
        json: &[u8],
        digest: &fleetlet_core::Digest,
        keys: &[&TrustedKey],
        identities: &[KeylessIdentity],
    ) -> Result<Signer, String> {
        let root = self
            .root
            .as_ref()
            .ok_or("no trusted root is configured (trust.keyless.trustedRoot)")?;
        let hash = digest_bytes(digest);
        let has_certificate = serde_json::from_slice::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v.get("verificationMaterial").cloned())
            .is_some_and(|m| m.get("publicKey").is_none());
        if has_certificate {
            let s =
                keyless::verify_bundle(json, &hash, root, identities).map_err(|e| e.to_string())?;
            Ok(Signer {
                kind: SignerKind::Keyless,
                identity: s.subject.unwrap_or_default(),
                detail: s.issuer,
                log_index: Some(s.log_index),
            })
        } else {
            let pairs: Vec<(String, Vec<u8>)> = keys
                .iter()
                .map(|k| (k.name.clone(), k.spki_der.clone()))
                .collect();
            let s =
                keyless::verify_key_bundle(json, &hash, root, &pairs).map_err(|e| e.to_string())?;
            Ok(Signer {
                kind: SignerKind::Key,
                identity: s.key.unwrap_or_default(),
                detail: None,
                log_index: Some(s.log_index),
            })
        }
    }
}

fn digest_bytes(d: &fleetlet_core::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(v) = hex::decode(d.hex()) {
        out.copy_from_slice(&v);
    }
    out
}

/// The sigstore bundle a referrer manifest carries: its one bundle layer.
fn bundle_json(m: &SignatureManifest) -> Result<Vec<u8>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Layer {
        media_type: String,
        digest: String,
    }
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        layers: Vec<Layer>,
    }
    let doc: Doc = serde_json::from_slice(&m.bytes)
        .map_err(|e| format!("referrer {}: not valid JSON: {e}", m.digest.short()))?;
    let layer = doc
        .layers
        .iter()
        .find(|l| {
            l.media_type
                .starts_with("application/vnd.dev.sigstore.bundle")
        })
        .ok_or_else(|| format!("referrer {}: no sigstore bundle layer", m.digest.short()))?;
    layer
        .digest
        .parse::<fleetlet_core::Digest>()
        .ok()
        .and_then(|d| m.blobs.get(&d).cloned())
        .ok_or_else(|| format!("referrer {}: bundle blob is missing", m.digest.short()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        /// A directory with two public keys (`release.pub`, `ci.pub`) and an allowed_signers
        /// file naming one SSH key.
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            for name in ["release", "ci"] {
                let key = crate::cosign::SigningKey::generate().unwrap();
                std::fs::write(
                    dir.path().join(format!("{name}.pub")),
                    key.public_pem().unwrap(),
                )
                .unwrap();
            }
            std::fs::write(
                dir.path().join("allowed_signers"),
                "ops@example.com namespaces=\"git\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB40fHFiFZH9uAZH3qn4W3QZH8LCkvPimObBh9ir7T6O\n",
            )
            .unwrap();
            Fixture { dir }
        }

        fn load(&self, yaml: &str) -> Result<TrustPolicy, PolicyError> {
            let config: TrustConfig = serde_yaml::from_str(yaml).unwrap();
            TrustPolicy::load(&config, self.dir.path())
        }
    }

    fn reference(s: &str) -> RegistryRef {
        let (registry, repository) = s.split_once('/').unwrap();
        RegistryRef {
            registry: registry.into(),
            repository: repository.into(),
            tag: None,
            digest: Some(fleetlet_core::Digest::of(b"x")),
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let f = Fixture::new();
        for (yaml, field, fragment) in [
            ("{}", "artifacts.require", "no keys or keyless identities"),
            (
                "{keys: {release: release.pub}}",
                "commits.require",
                "no commit signers",
            ),
            (
                "{keys: {release: missing.pub}, commits: {require: none}}",
                "keys.release",
                "missing.pub",
            ),
            (
                "{keys: {release: allowed_signers}, commits: {require: none}}",
                "keys.release",
                "PUBLIC KEY",
            ),
            (
                "{keys: {release: release.pub}, artifacts: {signers: [nobody]}, commits: {require: none}}",
                "artifacts.signers",
                "\"nobody\"",
            ),
            (
                "{keys: {release: release.pub}, artifacts: {rules: [{match: 'a/[', require: none}]}, commits: {require: none}}",
                "artifacts.rules[0].match",
                "a/[",
            ),
            (
                "{artifacts: {require: none, rules: [{match: 'r/x', require: signed}]}, commits: {require: none}}",
                "artifacts.require",
                "no keys",
            ),
        ] {
            let err = match f.load(yaml) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{yaml} should not load"),
            };
            assert!(
                err.starts_with(&format!("trust.{field}")) && err.contains(fragment),
                "{yaml}: {err}"
            );
        }
        // Nothing required: loads without any trust root.
        f.load("{artifacts: {require: none}, commits: {require: none}}")
            .unwrap();
    }

    #[test]
    fn the_first_matching_rule_decides_what_an_artifact_needs() {
        let f = Fixture::new();
        let p = f
            .load(
                "keys: {release: release.pub, ci: ci.pub}
commitSigners: {allowedSigners: allowed_signers}
artifacts:
  signers: [release]
  annotations: {env: prod}
  rules:
    - {match: 'registry.local/dev/**', require: none}
    - {match: 'registry.local/team-a/*', signers: [ci]}
",
            )
            .unwrap();
        for (r, require, signers, annotations) in [
            ("registry.local/app", Require::Signed, vec!["release"], 1),
            ("registry.local/dev/x/y", Require::None, vec!["release"], 1),
            ("registry.local/team-a/web", Require::Signed, vec!["ci"], 1),
            // `*` does not cross a `/`.
            (
                "registry.local/team-a/web/x",
                Require::Signed,
                vec!["release"],
                1,
            ),
            ("other.registry/dev/x", Require::Signed, vec!["release"], 1),
        ] {
            let (req, s, a) = p.artifact_rule(&reference(r));
            assert_eq!(
                (req, s.to_vec(), a.len()),
                (
                    require,
                    signers.iter().map(|s| s.to_string()).collect(),
                    annotations
                ),
                "{r}"
            );
        }
        assert_eq!(
            p.artifact_requirement(&reference("registry.local/dev/x")),
            Requirement::None
        );
    }

    #[test]
    fn transparency_log_entries_can_be_required_of_key_based_signatures() {
        use base64::Engine as _;
        let f = Fixture::new();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sigstore/sigstore_trusted_root.json");
        let err = f
            .load("{keys: {release: release.pub}, artifacts: {requireTlog: true}, commits: {require: none}}")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("trust.artifacts.requireTlog"), "{err}");
        let signer = crate::cosign::SigningKey::generate().unwrap();
        std::fs::write(
            f.dir.path().join("release.pub"),
            signer.public_pem().unwrap(),
        )
        .unwrap();
        let p = f
            .load(&format!(
                "{{keys: {{release: release.pub}}, keyless: {{trustedRoot: {}, identities: {{}}}}, artifacts: {{requireTlog: true}}, commits: {{require: none}}}}",
                root.display()
            ))
            .unwrap();
        let subject = reference("r.local/app");
        let digest = subject.digest.unwrap();
        let payload = cosign::simple_signing_payload("r.local/app", &digest, &BTreeMap::new());
        let sig = base64::engine::general_purpose::STANDARD.encode(signer.sign(&payload).unwrap());
        let (config, bytes) = cosign::signature_manifest(&[(payload.clone(), sig)]);
        let manifest = SignatureManifest {
            digest: fleetlet_core::Digest::of(&bytes),
            bytes,
            blobs: BTreeMap::from([
                (fleetlet_core::Digest::of(&payload), payload),
                (fleetlet_core::Digest::of(&config), config),
            ]),
        };
        let err = p.verify_artifact(&subject, &[manifest]).unwrap_err();
        assert!(err.contains("no verified transparency log entry"), "{err}");
    }

    #[test]
    fn unsigned_artifacts_and_commits_are_refused_with_the_reason() {
        let f = Fixture::new();
        let p = f
            .load(
                "{keys: {release: release.pub}, commitSigners: {allowedSigners: allowed_signers}}",
            )
            .unwrap();
        let err = p
            .verify_artifact(&reference("r.local/app"), &[])
            .unwrap_err();
        assert!(err.contains("unsigned") && err.contains(".sig"), "{err}");
        let rev = Revision {
            commit: "c".repeat(40),
            reference: "refs/heads/main".into(),
            summary: String::new(),
            time: 0,
        };
        assert_eq!(
            p.verify_commit(&rev, None).unwrap_err(),
            "unsigned commit; this site requires signed commits"
        );
        let garbage = SignedObject {
            signature: b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"
                .to_vec(),
            payload: b"tree x\n".to_vec(),
        };
        assert!(p.verify_commit(&rev, Some(&garbage)).is_err());
        // Without a release-tag rule, tags are not required.
        assert_eq!(p.verify_release_tag(&BTreeMap::new(), &[]), Ok(None));
    }

    #[test]
    fn release_tags_are_required_only_for_matching_sites_and_rollbacks_name_their_start() {
        let f = Fixture::new();
        let p = f
            .load(
                "keys: {release: release.pub}
commitSigners: {allowedSigners: allowed_signers}
commits: {releaseTag: {pattern: 'release-*', siteLabels: {env: production}}, maxAge: 14d}
",
            )
            .unwrap();
        assert_eq!(p.max_source_age(), Some(14 * 86400));
        let prod = BTreeMap::from([("env".to_string(), "production".to_string())]);
        let lab = BTreeMap::from([("env".to_string(), "lab".to_string())]);
        assert_eq!(p.verify_release_tag(&lab, &[]), Ok(None));
        let unsigned = TagEvidence {
            name: "release-1".into(),
            message: format!("{ROLLBACK_MARKER} {}\n", "a".repeat(40)),
            time: 0,
            signed: None,
        };
        let other = TagEvidence {
            name: "v1".into(),
            ..unsigned.clone()
        };
        let err = p
            .verify_release_tag(&prod, &[unsigned.clone(), other])
            .unwrap_err();
        assert!(
            err.contains("release-*")
                && err.contains("release-1 (unsigned)")
                && !err.contains("v1"),
            "{err}"
        );
        assert!(
            p.verify_release_tag(&prod, &[])
                .unwrap_err()
                .contains("there is none")
        );
        let err = p
            .verify_rollback(&"a".repeat(40), &"b".repeat(40), &[unsigned])
            .unwrap_err();
        assert!(err.contains("release-1 (unsigned)"), "{err}");
        let err = p
            .verify_rollback(&"c".repeat(40), &"b".repeat(40), &[])
            .unwrap_err();
        assert!(
            err.contains(&format!("{ROLLBACK_MARKER} {}", "c".repeat(40))),
            "{err}"
        );
    }
}
