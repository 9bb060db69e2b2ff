//! Portable exports of a site's log (`fleetlet audit export`): the JSON Lines log, verbatim, in
//! a sync-bundle container signed with the site key, so it can travel by any means (a USB
//! stick from an air-gapped site) and still prove where it came from. The container's
//! signature covers the whole log, including the entries after its last checkpoint.
//!
//! The manifest's meta says what it is: `{"type": "audit", "site", "siteKey" (public PEM),
//! "createdAt" (Unix seconds)}`; the one entry is [`LOG_ENTRY`]. Opening an export trusts
//! nothing it says about itself: the site's key comes from the fleet's site-keys file.

use crate::sitekeys::SiteKeys;
use crate::verify::{Problem, Verified, verify, verify_with};
use crate::{Entry, VERSION};
use fleetlet_bundle::{BundleError, BundleReader, BundleWriter, Limits, VerifiedBundle};
use fleetlet_verify::cosign::{KeyError, SigningKey, TrustedKey};
use serde::Serialize;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// `meta.type` of an audit export.
pub const EXPORT_TYPE: &str = "audit";
/// The container entry holding the log.
pub const LOG_ENTRY: &str = "audit.jsonl";
/// Largest log an export may unpack to: years of a busy site, yet a bound on what a hostile
/// file can make a report write to its scratch space.
pub const MAX_EXPORT_BYTES: u64 = 4 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the site key: {0}")]
    Key(#[from] KeyError),
    #[error("the audit log {} is broken, so it is not exported: {problem}", path.display())]
    BrokenLog { path: PathBuf, problem: Problem },
    #[error("the audit log {} is the log of site {found:?}, not of {expected:?}", path.display())]
    OtherSite {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{}: {source}", path.display())]
    Container { path: PathBuf, source: BundleError },
    #[error("{}: not an audit export ({detail})", path.display())]
    NotAnExport { path: PathBuf, detail: String },
    #[error(
        "{}: an export of site {site:?}, signed by key {fingerprint}, but the site-keys file does not list that site",
        path.display()
    )]
    UnknownSite {
        path: PathBuf,
        site: String,
        fingerprint: String,
    },
    #[error(
        "{}: an export of site {site:?} signed by key {found}, but the site-keys file lists key {listed} for that site",
        path.display()
    )]
    WrongKey {
        path: PathBuf,
        site: String,
        listed: String,
        found: String,
    },
    #[error("{}: the log of site {site:?} in this export is broken: {problem}", path.display())]
    BrokenExport {
        path: PathBuf,
        site: String,
        problem: Problem,
    },
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportSummary {
    pub site: String,
    /// Fingerprint of the site key that signed the export.
    pub key: String,
    pub entries: u64,
    pub checkpoints: u64,
    /// Hash of the last entry.
    pub head: String,
    /// Entries after the last checkpoint (the export's signature covers them).
    pub unanchored: u64,
    /// Bytes after the log's last complete line, left out: a line being written while the log
    /// was read, or the torn end of a crash that the agent's next start repairs.
    pub torn_tail: u64,
    /// The files written.
    pub files: Vec<PathBuf>,
}

/// Exports the log `log` of `site` to `out`, signed with the site key `key`. The log is
/// copied first (the agent may be appending to it) and the copy verified with the same key:
/// a broken log is refused, naming its first problem.
pub fn export(
    log: &Path,
    site: &str,
    key: &SigningKey,
    created_at: i64,
    out: &Path,
) -> Result<ExportSummary, ExportError> {
    let public_pem = key.public_pem()?;
    let public = TrustedKey::from_pem(site, public_pem.as_bytes())?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (snapshot, torn_tail) = snapshot(log, &dir)?;
    let snapshot_file = File::open(snapshot.path()).map_err(io_err(snapshot.path()))?;
    let verified = verify(BufReader::new(snapshot_file), Some(&public)).map_err(|problem| {
        ExportError::BrokenLog {
            path: log.to_path_buf(),
            problem,
        }
    })?;
    if let Some(found) = verified.site.as_deref().filter(|s| *s != site) {
        return Err(ExportError::OtherSite {
            path: log.to_path_buf(),
            found: found.to_string(),
            expected: site.to_string(),
        });
    }
    let meta = serde_json::json!({
        "type": EXPORT_TYPE,
        "v": VERSION,
        "site": site,
        "siteKey": public_pem,
        "createdAt": created_at,
    });
    let container = |source| ExportError::Container {
        path: out.to_path_buf(),
        source,
    };
    let mut writer = BundleWriter::new(meta).spool_in(&dir);
    writer
        .add_path(LOG_ENTRY, snapshot.path())
        .map_err(container)?;
    let files = writer.finish(key, out, None).map_err(container)?;
    Ok(ExportSummary {
        site: site.to_string(),
        key: public.fingerprint(),
        entries: verified.entries,
        checkpoints: verified.checkpoints,
        head: verified.head,
        unanchored: verified.unanchored,
        torn_tail,
        files,
    })
}

/// A copy of `log`'s complete lines as of now, in `dir`; and how many bytes of a last,
/// incomplete line were left out.
fn snapshot(log: &Path, dir: &Path) -> Result<(tempfile::NamedTempFile, u64), ExportError> {
    let mut source = File::open(log).map_err(io_err(log))?;
    // Only what is there now: lines appended meanwhile belong to the next export.
    let len = source.metadata().map_err(io_err(log))?.len();
    let mut copy = tempfile::Builder::new()
        .prefix(".fleetlet-audit-export-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    let mut reader = (&mut source).take(len);
    let mut buf = vec![0u8; 256 << 10];
    let (mut copied, mut complete) = (0u64, 0u64);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(log)(e)),
        };
        copy.write_all(&buf[..n]).map_err(io_err(copy.path()))?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            complete = copied + i as u64 + 1;
        }
        copied += n as u64;
    }
    copy.as_file()
        .set_len(complete)
        .map_err(io_err(copy.path()))?;
    Ok((copy, copied - complete))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An export opened and verified: signed by the key the site-keys file lists for its site, and
/// its log intact. The extracted log is removed when this is dropped.
#[derive(Debug)]
pub struct OpenedExport {
    /// The export's file (its first part, when split).
    pub path: PathBuf,
    pub site: String,
    /// When the site made the export (Unix seconds, as the site's clock said).
    pub created_at: i64,
    /// Fingerprint of the site key that signed it.
    pub signer: String,
    /// What the log holds.
    pub verified: Verified,
    bundle: VerifiedBundle,
}

impl OpenedExport {
    /// The extracted log (JSON Lines).
    pub fn log_path(&self) -> PathBuf {
        self.bundle.dir().join(LOG_ENTRY)
    }
}

/// What an export says about itself in its manifest (unverified until the container is).
struct Meta {
    site: String,
    site_key: String,
    created_at: i64,
}

fn parse_meta(path: &Path, meta: &serde_json::Value) -> Result<Meta, ExportError> {
    let not_export = |detail: String| ExportError::NotAnExport {
        path: path.to_path_buf(),
        detail,
    };
    match meta.get("type").and_then(|t| t.as_str()) {
        Some(EXPORT_TYPE) => {}
        Some(other) => {
            return Err(not_export(format!(
                "a bundle of type {:?}",
                other.chars().take(40).collect::<String>()
            )));
        }
        None => return Err(not_export("a bundle with no type".into())),
    }
    let field = |name: &str| {
        meta.get(name)
            .ok_or_else(|| not_export(format!("its meta has no {name}")))
    };
    Ok(Meta {
        site: field("site")?
            .as_str()
            .ok_or_else(|| not_export("site is not a string".into()))?
            .to_string(),
        site_key: field("siteKey")?
            .as_str()
            .ok_or_else(|| not_export("siteKey is not a string".into()))?
            .to_string(),
        created_at: field("createdAt")?
            .as_i64()
            .ok_or_else(|| not_export("createdAt is not a number of seconds".into()))?,
    })
}

/// Opens the export made of `parts` (one file, or its `.part-NNN` files), extracting into a
/// fresh directory under `scratch`: the site it names must be listed in `site_keys`, the
/// container must be signed by that site's key, and the log must verify with it.
pub fn open_export(
    parts: &[PathBuf],
    site_keys: &SiteKeys,
    scratch: &Path,
) -> Result<OpenedExport, ExportError> {
    open_export_with(parts, site_keys, scratch, |_| {})
}

/// [`open_export`], calling `visit` with every entry of the log as it is verified (a report
/// collects what it needs in the same pass).
pub fn open_export_with(
    parts: &[PathBuf],
    site_keys: &SiteKeys,
    scratch: &Path,
    visit: impl FnMut(&Entry),
) -> Result<OpenedExport, ExportError> {
    let path = parts.first().cloned().unwrap_or_default();
    // The head first: which site it claims to be from decides the one key it may be signed by.
    let (manifest, claimed) =
        BundleReader::inspect(parts).map_err(|source| ExportError::Container { path, source })?;
    open_from_head(parts, &manifest.meta, claimed, site_keys, scratch, visit)
}

/// [`open_export_with`] once the head was read ([`BundleReader::inspect`]): its `meta` and
/// the fingerprint of the key it claims to be signed by choose the key; the signature and the
/// log are then checked in full.
pub(crate) fn open_from_head(
    parts: &[PathBuf],
    meta: &serde_json::Value,
    claimed: String,
    site_keys: &SiteKeys,
    scratch: &Path,
    visit: impl FnMut(&Entry),
) -> Result<OpenedExport, ExportError> {
    let path = parts.first().cloned().unwrap_or_default();
    let container = |source| ExportError::Container {
        path: path.clone(),
        source,
    };
    let meta = parse_meta(&path, meta)?;
    // Printable, bounded: the name is the exporter's word and may be hostile.
    let site: String = meta.site.chars().take(100).collect();
    let Some(listed) = site_keys.get(&site) else {
        let fingerprint = TrustedKey::from_pem(&site, meta.site_key.as_bytes())
            .map(|k| k.fingerprint())
            .unwrap_or(claimed);
        return Err(ExportError::UnknownSite {
            path,
            site,
            fingerprint,
        });
    };
    let wrong_key = |found: String| ExportError::WrongKey {
        path: path.clone(),
        site: site.clone(),
        listed: listed.fingerprint(),
        found,
    };
    // Both the key the container names and the one its meta carries must be the listed one;
    // the signature check below is what proves it, these make the message precise.
    if claimed != listed.fingerprint() {
        return Err(wrong_key(claimed));
    }
    match TrustedKey::from_pem(&site, meta.site_key.as_bytes()) {
        Ok(k) if k.spki_der == listed.spki_der => {}
        Ok(k) => return Err(wrong_key(k.fingerprint())),
        Err(e) => {
            return Err(ExportError::NotAnExport {
                path,
                detail: format!("its siteKey: {e}"),
            });
        }
    }
    let limits = Limits {
        max_unpacked: MAX_EXPORT_BYTES,
        max_entries: 1,
    };
    let bundle = BundleReader::open_scratch(parts, limits, std::slice::from_ref(listed), scratch)
        .map_err(|e| match e {
        BundleError::UntrustedSigner { fingerprint } => wrong_key(fingerprint),
        other => container(other),
    })?;
    // The head read first chose the key; the signed one must say the same (the file may have
    // been replaced in between).
    let signed = parse_meta(&path, &bundle.manifest.meta)?;
    if signed.site != meta.site || signed.site_key != meta.site_key {
        return Err(ExportError::NotAnExport {
            path,
            detail: "it changed while it was read".into(),
        });
    }
    if bundle.manifest.entry(LOG_ENTRY).is_none() {
        return Err(ExportError::NotAnExport {
            path,
            detail: format!("it holds no {LOG_ENTRY}"),
        });
    }
    let log = bundle.dir().join(LOG_ENTRY);
    let file = File::open(&log).map_err(io_err(&log))?;
    let broken = |problem| ExportError::BrokenExport {
        path: path.clone(),
        site: site.clone(),
        problem,
    };
    let verified = verify_with(
        BufReader::with_capacity(256 << 10, file),
        Some(listed),
        visit,
    )
    .map_err(broken)?;
    if let Some(found) = verified.site.as_deref().filter(|s| *s != site) {
        return Err(broken(Problem::OtherSite {
            line: 1,
            found: found.to_string(),
            expected: site.clone(),
        }));
    }
    Ok(OpenedExport {
        path: path.clone(),
        site,
        created_at: signed.created_at,
        signer: bundle.signer.clone(),
        verified,
        bundle,
    })
}
