//! Commit signatures: decides who signed the Git commit (or annotated tag) the agent is about to
//! apply, and whether that signer is trusted — by this site, for this branch.
//!
//! Two kinds of signature are accepted, the two `git` itself makes:
//! - SSH (`gpg.format=ssh`): checked against an `allowed_signers` file exactly as `git` has
//!   `ssh-keygen -Y verify -n git` check it, including the `namespaces`, `valid-after` and
//!   `valid-before` options evaluated at the commit's time ([`allowed_signers`], `ssh`).
//! - OpenPGP (`gpg.format=openpgp`): checked with rpgp against the site's armored public keys,
//!   refusing revoked and expired keys (`openpgp`).
//!
//! The caller hands over bytes only — the armored signature and the exact signed bytes, as
//! `git2::Repository::extract_signature` returns them for a commit or [`split_signed_tag`] for a
//! tag — so this module never touches a repository and behaves the same offline.

pub mod allowed_signers;
mod openpgp;
mod pattern;
mod ssh;
mod time;

use std::path::{Path, PathBuf};

use allowed_signers::AllowedSigners;

/// What kind of signature a commit carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureKind {
    Ssh,
    OpenPgp,
}

impl std::fmt::Display for SignatureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignatureKind::Ssh => "SSH",
            SignatureKind::OpenPgp => "OpenPGP",
        })
    }
}

/// Who signed: the outcome of a successful [`CommitSigners::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitSigner {
    pub kind: SignatureKind,
    /// SSH: the allowed_signers principal that vouches for the key (the restriction's
    /// matching identity when one was given). OpenPGP: the key's primary user ID, or the user ID
    /// whose e-mail the restriction matched.
    pub principal: String,
    /// SSH: `SHA256:…` as `ssh-keygen -l` prints it. OpenPGP: the primary key's fingerprint in
    /// upper-case hex, as `gpg` prints it.
    pub fingerprint: String,
}

/// Why a commit's signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CommitSigError {
    #[error("not signed")]
    Unsigned,
    #[error("malformed {kind} signature: {message}")]
    Malformed {
        kind: SignatureKind,
        message: String,
    },
    #[error("unsupported signature format: {0}")]
    Unsupported(String),
    #[error("{kind} signature by key {fingerprint} is not in {searched}")]
    UnknownKey {
        kind: SignatureKind,
        fingerprint: String,
        /// Where the key was looked for (the allowed_signers source, the OpenPGP key files).
        searched: String,
    },
    #[error("{kind} signature by key {fingerprint} does not match the signed data: {message}")]
    BadSignature {
        kind: SignatureKind,
        fingerprint: String,
        message: String,
    },
    #[error(
        "SSH signature by key {fingerprint} was made for namespace '{namespace}', but git signatures use 'git'"
    )]
    WrongNamespace {
        fingerprint: String,
        namespace: String,
    },
    #[error(
        "SSH key {fingerprint} is in {location} but only for namespaces=\"{namespaces}\", which excludes 'git'"
    )]
    NamespaceNotAllowed {
        fingerprint: String,
        location: String,
        namespaces: String,
    },
    #[error("{kind} key {fingerprint} is not valid at {time}: {reason}")]
    NotValidAt {
        kind: SignatureKind,
        fingerprint: String,
        /// The instant checked, RFC 3339 UTC.
        time: String,
        reason: String,
    },
    #[error("OpenPGP key {fingerprint}: {reason}")]
    KeyRevoked { fingerprint: String, reason: String },
    #[error(
        "signed by {principal} ({kind} key {fingerprint}), who is not allowed here (allowed: {})",
        allowed.join(", ")
    )]
    SignerNotAllowed {
        kind: SignatureKind,
        principal: String,
        fingerprint: String,
        allowed: Vec<String>,
    },
    /// `origin` names the allowed_signers text (a path or config key). Not called `source`:
    /// thiserror would take a field of that name for the underlying error.
    #[error("{origin}:{line}: {message}")]
    AllowedSigners {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    OpenPgpKey { origin: String, message: String },
    #[error("reading {}: {error}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

/// The site's commit-signing trust roots: an `allowed_signers` file for SSH signatures and
/// armored public keys for OpenPGP signatures.
#[derive(Debug, Default)]
pub struct CommitSigners {
    allowed_signers: Option<AllowedSigners>,
    openpgp: openpgp::Keyring,
}

impl CommitSigners {
    /// Builds the trust roots from text: `allowed_signers` is `(source name, text)` (the text may
    /// be empty), `openpgp_keys` are `(source name, armored key blocks)`; source names appear in
    /// error messages.
    pub fn new(
        allowed_signers: Option<(&str, &str)>,
        openpgp_keys: &[(String, String)],
    ) -> Result<Self, CommitSigError> {
        let allowed_signers = allowed_signers
            .map(|(source, text)| AllowedSigners::parse(source, text))
            .transpose()?;
        let mut openpgp = openpgp::Keyring::default();
        for (source, armored) in openpgp_keys {
            openpgp.add(source, armored)?;
        }
        Ok(Self {
            allowed_signers,
            openpgp,
        })
    }

    /// Like [`CommitSigners::new`], reading the files; paths serve as source names.
    pub fn load(
        allowed_signers: Option<&Path>,
        openpgp_keys: &[PathBuf],
    ) -> Result<Self, CommitSigError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|error| CommitSigError::Io {
                path: path.to_owned(),
                error,
            })
        };
        let allowed_signers = allowed_signers
            .map(|p| Ok::<_, CommitSigError>((p.display().to_string(), read(p)?)))
            .transpose()?;
        let keys = openpgp_keys
            .iter()
            .map(|p| Ok((p.display().to_string(), read(p)?)))
            .collect::<Result<Vec<_>, CommitSigError>>()?;
        Self::new(
            allowed_signers
                .as_ref()
                .map(|(source, text)| (source.as_str(), text.as_str())),
            &keys,
        )
    }

    /// True when no key at all is trusted (every signed commit would be refused).
    pub fn is_empty(&self) -> bool {
        self.allowed_signers
            .as_ref()
            .is_none_or(AllowedSigners::is_empty)
            && self.openpgp.is_empty()
    }

    /// Verifies `signature` (armored, SSH or OpenPGP) over exactly `signed_data`.
    ///
    /// `time` is the commit's committer time or the tag's tagger time (Unix seconds): SSH
    /// `valid-after`/`valid-before` and OpenPGP key expiry are judged at that instant, as `git`
    /// does with `ssh-keygen -Overify-time`. `allowed`, when given, is a pattern list (`*`, `?`,
    /// leading `!` negates) the signer must match: for SSH the allowed_signers principal (or an
    /// identity the principal patterns accept), for OpenPGP the fingerprint or a user ID's
    /// e-mail address.
    pub fn verify(
        &self,
        signature: &[u8],
        signed_data: &[u8],
        time: i64,
        allowed: Option<&[String]>,
    ) -> Result<CommitSigner, CommitSigError> {
        let armor = trim_ascii(signature);
        if armor.is_empty() {
            return Err(CommitSigError::Unsigned);
        }
        if armor.starts_with(SSH_BEGIN) {
            ssh::verify(
                self.allowed_signers.as_ref(),
                armor,
                signed_data,
                time,
                allowed,
            )
        } else if armor.starts_with(PGP_BEGIN) || armor.starts_with(PGP_MESSAGE_BEGIN) {
            self.openpgp.verify(armor, signed_data, time, allowed)
        } else if armor.starts_with(X509_BEGIN) {
            Err(CommitSigError::Unsupported(
                "X.509 (gpgsm) signatures are not supported".to_owned(),
            ))
        } else {
            Err(CommitSigError::Unsupported(
                "signature is neither SSH nor OpenPGP armor".to_owned(),
            ))
        }
    }
}

const SSH_BEGIN: &[u8] = b"-----BEGIN SSH SIGNATURE-----";
const PGP_BEGIN: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
const PGP_MESSAGE_BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const X509_BEGIN: &[u8] = b"-----BEGIN SIGNED MESSAGE-----";

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Splits a raw annotated tag object into (signed data, armored signature); `None` when the tag
/// is unsigned.
///
/// Like git's `parse_signed_buffer`, the signature starts at the *last* line that begins with a
/// signature armor header, so a tag message quoting such a line earlier is not cut short.
pub fn split_signed_tag(raw: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut start = None;
    let mut offset = 0;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if [SSH_BEGIN, PGP_BEGIN, PGP_MESSAGE_BEGIN, X509_BEGIN]
            .iter()
            .any(|marker| line.starts_with(marker))
        {
            start = Some(offset);
        }
        offset += line.len();
    }
    let start = start?;
    Some((raw[..start].to_vec(), raw[start..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_tags_at_the_last_armor_line() {
        let raw = b"object 1\ntype commit\ntag v1\ntagger T <t@x> 1 +0000\n\nmsg\n-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n";
        let (data, sig) = split_signed_tag(raw).unwrap();
        assert_eq!(
            data,
            b"object 1\ntype commit\ntag v1\ntagger T <t@x> 1 +0000\n\nmsg\n"
        );
        assert_eq!(
            sig,
            b"-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n"
        );

        let quoting = b"tag v1\n\n-----BEGIN SSH SIGNATURE-----\nquoted\n-----BEGIN SSH SIGNATURE-----\nreal\n";
        let (data, sig) = split_signed_tag(quoting).unwrap();
        assert!(data.ends_with(b"quoted\n"));
        assert_eq!(sig, b"-----BEGIN SSH SIGNATURE-----\nreal\n");

        assert_eq!(
            split_signed_tag(b"object 1\ntype commit\n\nunsigned\n"),
            None
        );
        assert_eq!(split_signed_tag(b""), None);
    }

    #[test]
    fn empty_and_foreign_signatures() {
        let signers = CommitSigners::new(None, &[]).unwrap();
        assert!(signers.is_empty());
        assert!(matches!(
            signers.verify(b"  \n", b"data", 0, None),
            Err(CommitSigError::Unsigned)
        ));
        assert!(matches!(
            signers.verify(b"-----BEGIN SIGNED MESSAGE-----\n", b"data", 0, None),
            Err(CommitSigError::Unsupported(_))
        ));
        assert!(matches!(
            signers.verify(b"hello", b"data", 0, None),
            Err(CommitSigError::Unsupported(_))
        ));
        assert!(matches!(
            signers.verify(
                b"-----BEGIN SSH SIGNATURE-----\nnope\n-----END SSH SIGNATURE-----\n",
                b"data",
                0,
                None
            ),
            Err(CommitSigError::Malformed {
                kind: SignatureKind::Ssh,
                ..
            })
        ));
        assert!(matches!(
            signers.verify(
                b"-----BEGIN PGP SIGNATURE-----\n\nnope\n-----END PGP SIGNATURE-----\n",
                b"data",
                0,
                None
            ),
            Err(CommitSigError::Malformed {
                kind: SignatureKind::OpenPgp,
                ..
            })
        ));
    }
}
