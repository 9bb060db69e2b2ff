//! SSH signatures (`-----BEGIN SSH SIGNATURE-----`, the SSHSIG format) checked the way `git`
//! has `ssh-keygen` check them: `-Y find-principals` for the signing key, then `-Y verify -n git
//! -I <principal> -Overify-time=<commit time>`.

use ssh_key::{HashAlg, SshSig};

use super::allowed_signers::{AllowedSigner, AllowedSigners};
use super::time::format_utc;
use super::{CommitSigError, CommitSigner, SignatureKind};

/// The namespace `git` signs commits and tags in.
const GIT_NAMESPACE: &str = "git";

pub(crate) fn verify(
    signers: Option<&AllowedSigners>,
    signature: &[u8],
    signed_data: &[u8],
    time: i64,
    allowed: Option<&[String]>,
) -> Result<CommitSigner, CommitSigError> {
    let malformed = |message: String| CommitSigError::Malformed {
        kind: SignatureKind::Ssh,
        message,
    };
    let text = std::str::from_utf8(signature)
        .map_err(|_| malformed("signature is not ASCII armor".to_owned()))?;
    let sig = SshSig::from_pem(text.trim().as_bytes()).map_err(|e| malformed(e.to_string()))?;
    if sig.version() != SshSig::VERSION {
        return Err(malformed(format!(
            "unsupported SSHSIG version {}",
            sig.version()
        )));
    }
    // SSHSIG only defines these two; ssh-key refuses others on decode, this keeps it explicit.
    if !matches!(sig.hash_alg(), HashAlg::Sha256 | HashAlg::Sha512) {
        return Err(malformed(format!(
            "unsupported hash algorithm {}",
            sig.hash_alg()
        )));
    }
    let key = ssh_key::PublicKey::new(sig.public_key().clone(), "");
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();

    if sig.namespace() != GIT_NAMESPACE {
        return Err(CommitSigError::WrongNamespace {
            fingerprint,
            namespace: sig.namespace().to_owned(),
        });
    }
    // Check the cryptography first: a signature that does not verify means the data changed,
    // which matters more to an operator than whose key it was.
    key.verify(GIT_NAMESPACE, signed_data, &sig)
        .map_err(|e| CommitSigError::BadSignature {
            kind: SignatureKind::Ssh,
            fingerprint: fingerprint.clone(),
            message: e.to_string(),
        })?;

    let source = signers.map_or("allowed_signers (none configured)", |s| s.source.as_str());
    let candidates: Vec<&AllowedSigner> = signers
        .into_iter()
        .flat_map(|s| &s.entries)
        .filter(|e| e.key.key_data() == sig.public_key())
        .collect();
    if candidates.is_empty() {
        return Err(CommitSigError::UnknownKey {
            kind: SignatureKind::Ssh,
            fingerprint,
            searched: source.to_owned(),
        });
    }

    // The same key may be listed on several lines (different principals, namespaces or
    // windows); like ssh-keygen, any line that permits the signature is enough. Remember why
    // the others did not, to explain a refusal.
    let mut namespace_refusal = None;
    let mut time_refusal = None;
    let mut usable = Vec::new();
    for entry in candidates {
        if !entry.allows_namespace(GIT_NAMESPACE) {
            namespace_refusal
                .get_or_insert((entry.line, entry.namespaces.clone().unwrap_or_default()));
        } else if let Some(reason) = entry.invalid_at(time) {
            time_refusal.get_or_insert(format!("{source}:{}: {reason}", entry.line));
        } else {
            usable.push(entry);
        }
    }
    if usable.is_empty() {
        if let Some(reason) = time_refusal {
            return Err(CommitSigError::NotValidAt {
                kind: SignatureKind::Ssh,
                fingerprint,
                time: format_utc(time),
                reason,
            });
        }
        let (line, namespaces) = namespace_refusal.unwrap_or_default();
        return Err(CommitSigError::NamespaceNotAllowed {
            fingerprint,
            location: format!("{source}:{line}"),
            namespaces,
        });
    }

    let principal = match allowed {
        None => usable
            .iter()
            .find_map(|e| e.identities().next().map(str::to_owned)),
        Some(allowed) => {
            let admitted = usable.iter().find_map(|e| e.admitted_by(allowed));
            if admitted.is_none() {
                let principal = usable
                    .iter()
                    .map(|e| e.principals.join(","))
                    .collect::<Vec<_>>()
                    .join(" / ");
                return Err(CommitSigError::SignerNotAllowed {
                    kind: SignatureKind::Ssh,
                    principal,
                    fingerprint,
                    allowed: allowed.to_vec(),
                });
            }
            admitted
        }
    };
    // A line whose patterns are all negations vouches for nobody (ssh-keygen could not verify
    // any -I against it either).
    let principal = principal.ok_or_else(|| CommitSigError::UnknownKey {
        kind: SignatureKind::Ssh,
        fingerprint: fingerprint.clone(),
        searched: format!("{source} (its lines for this key name no usable principal)"),
    })?;
    Ok(CommitSigner {
        kind: SignatureKind::Ssh,
        principal,
        fingerprint,
    })
}
