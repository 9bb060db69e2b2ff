//! OpenPGP signatures (`-----BEGIN PGP SIGNATURE-----`, as `gpg` makes them for `git commit -S`)
//! checked with rpgp against the site's trusted public keys.
//!
//! rpgp parses keys but leaves policy to the caller, and its `SignedPublicKey::verify` insists
//! that *every* signature on a user ID is a self-signature (exported keys often carry
//! third-party certifications). So the key's self-signatures are evaluated here: a user ID,
//! subkey or revocation counts only if its signature verifies against the primary key; the
//! newest valid self-signature decides flags and expiry; a signing subkey needs its back
//! signature.

use pgp::composed::{Deserializable, SignedPublicKey, StandaloneSignature};
use pgp::packet::{Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, KeyId, PublicKeyTrait, Tag};

use super::time::format_utc;
use super::{CommitSigError, CommitSigner, SignatureKind};

/// The trusted OpenPGP keys, with their self-signatures already evaluated.
#[derive(Debug, Default)]
pub(crate) struct Keyring {
    keys: Vec<TrustedKey>,
    sources: Vec<String>,
}

#[derive(Debug)]
struct TrustedKey {
    key: SignedPublicKey,
    /// Upper-case hex, as `gpg` prints it.
    fingerprint: String,
    /// Valid, unrevoked user IDs; the one flagged primary first, then in key order.
    user_ids: Vec<String>,
    validity: Validity,
    /// Whether the primary key itself may make data signatures.
    primary_signs: bool,
    signing_subkeys: Vec<TrustedSubkey>,
}

#[derive(Debug)]
struct TrustedSubkey {
    index: usize,
    fingerprint: String,
    validity: Validity,
}

#[derive(Debug, Clone)]
struct Validity {
    created: i64,
    expires: Option<i64>,
    revoked: Option<String>,
}

impl Keyring {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds every public key found in `armored` (one or more armor blocks, each with one or more
    /// keys).
    pub(crate) fn add(&mut self, source: &str, armored: &str) -> Result<(), CommitSigError> {
        let fail = |message: String| CommitSigError::OpenPgpKey {
            origin: source.to_owned(),
            message,
        };
        let blocks = armor_blocks(armored, "PGP PUBLIC KEY BLOCK");
        if blocks.is_empty() {
            return Err(fail(
                "no '-----BEGIN PGP PUBLIC KEY BLOCK-----' found".to_owned(),
            ));
        }
        for block in blocks {
            let (keys, _headers) = SignedPublicKey::from_string_many(block)
                .map_err(|e| fail(format!("unreadable key block: {e}")))?;
            for key in keys {
                let key = key.map_err(|e| fail(format!("unreadable key: {e}")))?;
                self.keys.push(evaluate(key).map_err(fail)?);
            }
        }
        self.sources.push(source.to_owned());
        Ok(())
    }

    pub(crate) fn verify(
        &self,
        signature: &[u8],
        signed_data: &[u8],
        time: i64,
        allowed: Option<&[String]>,
    ) -> Result<CommitSigner, CommitSigError> {
        let malformed = |message: String| CommitSigError::Malformed {
            kind: SignatureKind::OpenPgp,
            message,
        };
        let (sigs, _headers) = StandaloneSignature::from_armor_many(signature)
            .map_err(|e| malformed(e.to_string()))?;
        let sigs: Vec<StandaloneSignature> = sigs
            .collect::<Result<_, _>>()
            .map_err(|e| malformed(e.to_string()))?;
        if sigs.is_empty() {
            return Err(malformed("no signature packet".to_owned()));
        }
        // gpg can put several signers' signatures in one block; one acceptable signer suffices.
        let mut first_err = None;
        for sig in &sigs {
            match self.verify_one(&sig.signature, signed_data, time, allowed) {
                Ok(signer) => return Ok(signer),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(CommitSigError::Unsigned))
    }

    fn verify_one(
        &self,
        sig: &Signature,
        signed_data: &[u8],
        time: i64,
        allowed: Option<&[String]>,
    ) -> Result<CommitSigner, CommitSigError> {
        if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
            return Err(CommitSigError::Malformed {
                kind: SignatureKind::OpenPgp,
                message: format!("not a document signature (type {:?})", sig.typ()),
            });
        }
        let issuer = issuer_name(sig);
        let Some((trusted, subkey)) = self.find_signer(sig) else {
            let searched = if self.sources.is_empty() {
                "the trusted OpenPGP keys (none configured)".to_owned()
            } else {
                format!("the trusted OpenPGP keys ({})", self.sources.join(", "))
            };
            return Err(CommitSigError::UnknownKey {
                kind: SignatureKind::OpenPgp,
                fingerprint: issuer,
                searched,
            });
        };

        let checked = match subkey {
            None => sig.verify(&trusted.key.primary_key, signed_data),
            Some(sub) => sig.verify(&trusted.key.public_subkeys[sub.index].key, signed_data),
        };
        checked.map_err(|e| CommitSigError::BadSignature {
            kind: SignatureKind::OpenPgp,
            fingerprint: trusted.fingerprint.clone(),
            message: e.to_string(),
        })?;

        // The key must be usable both when it signed and at the commit/tag time the caller
        // vouches for (the same instant allowed_signers windows are checked at for SSH).
        let sig_time = sig.created().map(|t| t.timestamp()).unwrap_or(time);
        let mut checks = vec![(&trusted.validity, trusted.fingerprint.as_str(), "key")];
        if let Some(sub) = subkey {
            checks.push((&sub.validity, sub.fingerprint.as_str(), "signing subkey"));
        }
        for (validity, fp, what) in checks {
            if let Some(reason) = &validity.revoked {
                return Err(CommitSigError::KeyRevoked {
                    fingerprint: fp.to_owned(),
                    reason: format!("{what} is revoked: {reason}"),
                });
            }
            for (at, label) in [(sig_time, "signature time"), (time, "commit time")] {
                // Creation is only checked against the signature's own time: commit dates are
                // often older than the key (rebases keep them, histories get re-signed).
                if label == "signature time" && at < validity.created {
                    return Err(CommitSigError::NotValidAt {
                        kind: SignatureKind::OpenPgp,
                        fingerprint: fp.to_owned(),
                        time: format_utc(at),
                        reason: format!(
                            "{label} is before the {what} was created ({})",
                            format_utc(validity.created)
                        ),
                    });
                }
                if let Some(expires) = validity.expires
                    && at > expires
                {
                    return Err(CommitSigError::NotValidAt {
                        kind: SignatureKind::OpenPgp,
                        fingerprint: fp.to_owned(),
                        time: format_utc(at),
                        reason: format!("{what} expired at {} ({label})", format_utc(expires)),
                    });
                }
            }
        }

        let first_uid = trusted.user_ids.first().cloned().unwrap_or_default();
        let principal = match allowed {
            None => first_uid,
            Some(allowed) => {
                admitted(trusted, allowed).ok_or_else(|| CommitSigError::SignerNotAllowed {
                    kind: SignatureKind::OpenPgp,
                    principal: first_uid,
                    fingerprint: trusted.fingerprint.clone(),
                    allowed: allowed.to_vec(),
                })?
            }
        };
        Ok(CommitSigner {
            kind: SignatureKind::OpenPgp,
            principal,
            fingerprint: trusted.fingerprint.clone(),
        })
    }

    /// The trusted key (and signing subkey, if not the primary) the signature names as issuer.
    fn find_signer(&self, sig: &Signature) -> Option<(&TrustedKey, Option<&TrustedSubkey>)> {
        let fps: Vec<String> = sig
            .issuer_fingerprint()
            .iter()
            .map(|fp| hex::encode_upper(fp.as_bytes()))
            .collect();
        let ids: Vec<&KeyId> = sig.issuer();
        let named = |fp: &str, id: KeyId| fps.iter().any(|f| f == fp) || ids.contains(&&id);
        for trusted in &self.keys {
            if trusted.primary_signs
                && named(&trusted.fingerprint, trusted.key.primary_key.key_id())
            {
                return Some((trusted, None));
            }
            for sub in &trusted.signing_subkeys {
                let id = trusted.key.public_subkeys[sub.index].key.key_id();
                if named(&sub.fingerprint, id) {
                    return Some((trusted, Some(sub)));
                }
            }
        }
        None
    }
}

/// Whether the per-call restriction admits the key: a pattern matches its fingerprint
/// (case-insensitively) or the e-mail address of one of its user IDs; returns that user ID.
fn admitted(trusted: &TrustedKey, allowed: &[String]) -> Option<String> {
    use super::pattern::{PatternMatch, match_pattern_list};
    let list = allowed.join(",").to_lowercase();
    let ok = |s: &str| match_pattern_list(&s.to_lowercase(), &list) == PatternMatch::Positive;
    let first_uid = trusted.user_ids.first().cloned().unwrap_or_default();
    if ok(&trusted.fingerprint) {
        return Some(first_uid);
    }
    trusted
        .user_ids
        .iter()
        .find(|uid| ok(email_of(uid)))
        .cloned()
}

/// `Alice <alice@example.com>` → `alice@example.com`; a bare user ID is taken as the address.
fn email_of(uid: &str) -> &str {
    match (uid.rfind('<'), uid.rfind('>')) {
        (Some(start), Some(end)) if start < end => &uid[start + 1..end],
        _ => uid.trim(),
    }
}

/// How to name a signature's issuer when its key is unknown.
fn issuer_name(sig: &Signature) -> String {
    if let Some(fp) = sig.issuer_fingerprint().first() {
        return hex::encode_upper(fp.as_bytes());
    }
    match sig.issuer().first() {
        Some(id) => format!("key ID {}", hex::encode_upper(id.as_ref())),
        None => "(no issuer recorded)".to_owned(),
    }
}

/// Evaluates a key's self-signatures; errors are messages for `OpenPgpKey`.
fn evaluate(key: SignedPublicKey) -> Result<TrustedKey, String> {
    let primary = &key.primary_key;
    let fingerprint = hex::encode_upper(primary.fingerprint().as_bytes());
    let created = primary.created_at().timestamp();

    let mut primary_uid = None;
    let mut user_ids = Vec::new();
    let mut self_sigs: Vec<&Signature> = Vec::new();
    for user in &key.details.users {
        let valid = user.signatures.iter().filter(|s| {
            s.is_certification()
                && s.verify_certification(primary, Tag::UserId, &user.id)
                    .is_ok()
        });
        let Some(latest) = newest(valid) else {
            continue; // no self-signature: someone else's claim, not the key owner's
        };
        if latest.typ() == Some(SignatureType::CertRevocation) {
            continue;
        }
        self_sigs.push(latest);
        let uid = String::from_utf8_lossy(user.id.id()).into_owned();
        if latest.is_primary() && primary_uid.is_none() {
            primary_uid = Some(user_ids.len());
        }
        user_ids.push(uid);
    }
    if let Some(i) = primary_uid {
        let uid = user_ids.remove(i);
        user_ids.insert(0, uid);
    }
    self_sigs.extend(newest(key.details.direct_signatures.iter().filter(|s| {
        s.typ() == Some(SignatureType::Key) && s.verify_key(primary).is_ok()
    })));
    let Some(binding) = newest(self_sigs.into_iter()) else {
        return Err(format!(
            "key {fingerprint} has no valid self-signature (no usable user ID)"
        ));
    };

    let revoked = key
        .details
        .revocation_signatures
        .iter()
        .find(|s| s.verify_key(primary).is_ok())
        .map(revocation_reason);
    let validity = Validity {
        created,
        expires: expiry(created, binding),
        revoked,
    };
    let primary_signs = if has_key_flags(binding) {
        binding.key_flags().sign()
    } else {
        primary.is_signing_key()
    };

    let mut signing_subkeys = Vec::new();
    for (index, sub) in key.public_subkeys.iter().enumerate() {
        let bindings = sub.signatures.iter().filter(|s| {
            s.typ() == Some(SignatureType::SubkeyBinding)
                && s.verify_subkey_binding(primary, &sub.key).is_ok()
        });
        let Some(binding) = newest(bindings) else {
            continue;
        };
        // A signing subkey must also sign the primary back, or anyone could bind someone
        // else's signing key to their own primary.
        let backsig_ok = binding
            .embedded_signature()
            .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
        if !binding.key_flags().sign() || !backsig_ok {
            continue;
        }
        let sub_created = sub.key.created_at().timestamp();
        let revoked = sub
            .signatures
            .iter()
            .find(|s| {
                s.typ() == Some(SignatureType::SubkeyRevocation)
                    && s.verify_subkey_binding(primary, &sub.key).is_ok()
            })
            .map(revocation_reason);
        signing_subkeys.push(TrustedSubkey {
            index,
            fingerprint: hex::encode_upper(sub.key.fingerprint().as_bytes()),
            validity: Validity {
                created: sub_created,
                expires: expiry(sub_created, binding),
                revoked,
            },
        });
    }
    if !primary_signs && signing_subkeys.is_empty() {
        return Err(format!(
            "key {fingerprint} has no signing-capable primary key or subkey"
        ));
    }

    Ok(TrustedKey {
        key,
        fingerprint,
        user_ids,
        validity,
        primary_signs,
        signing_subkeys,
    })
}

fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map(|t| t.timestamp()).unwrap_or(i64::MIN))
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

/// Key expiration is an offset from key creation; 0 or absent means it never expires.
fn expiry(created: i64, binding: &Signature) -> Option<i64> {
    binding
        .key_expiration_time()
        .map(|d| d.num_seconds())
        .filter(|&secs| secs > 0)
        .map(|secs| created.saturating_add(secs))
}

fn revocation_reason(sig: &Signature) -> String {
    let text = sig
        .revocation_reason_string()
        .map(|b| String::from_utf8_lossy(b).trim().to_owned())
        .filter(|s| !s.is_empty());
    match (sig.revocation_reason_code(), text) {
        (Some(code), Some(text)) => format!("{code:?}: {text}"),
        (Some(code), None) => format!("{code:?}"),
        (None, Some(text)) => text,
        (None, None) => "no reason given".to_owned(),
    }
}

/// The `-----BEGIN <label>-----` … `-----END <label>-----` blocks of `text`, in order.
/// rpgp reads one armor block per call; key files often concatenate several exports.
fn armor_blocks<'a>(text: &'a str, label: &str) -> Vec<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let Some(stop) = rest[start..].find(&end) else {
            // Unterminated: hand it to rpgp, whose error says what is wrong.
            blocks.push(&rest[start..]);
            break;
        };
        let stop = start + stop + end.len();
        blocks.push(&rest[start..stop]);
        rest = &rest[stop..];
    }
    blocks
}
