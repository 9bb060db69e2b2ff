//! The verifier: decides whether an artifact or a commit was signed by someone the site trusts,
//! from bytes alone (signature manifests, bundles and commit objects the engine hands over), so
//! verification works offline and re-runs after a restart from the cache.
//!
//! - [`cosign`]: key-based cosign signatures (`sha256-<hex>.sig`), verified and made.
//! - [`policy`]: the `trust:` config and [`policy::TrustPolicy`], the engine's `Verifier`.
//! - [`keyless`]: sigstore bundles (Fulcio certificates, Rekor entries) against an offline
//!   `trusted_root.json`, including the checks sigstore 0.15 leaves out (the signed entry
//!   timestamp and the Merkle inclusion proof).
//! - [`commit`]: SSH and OpenPGP signatures on Git commits and tags, against `allowed_signers`
//!   and OpenPGP public keys.

pub mod commit;
pub mod cosign;
pub mod keyless;
pub mod legacy;
pub mod policy;
