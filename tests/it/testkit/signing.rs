//! Independent signature producers for the trust tests: keys and signatures made with the real
//! `openssl` CLI, cosign "simple signing" manifests and sigstore public-key bundles assembled
//! here by hand (from the published formats, not from fleetlet's code), a synthetic Rekor-like
//! log (RFC 6962 Merkle tree, signed entry timestamp, signed checkpoint) with its
//! `trusted_root.json`, and a plain HTTP/1.1 client for the registry API (push and read
//! manifests and blobs as any client would, delete blobs to break a repository on purpose).

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use fleetlet_core::Digest;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// cosign's simple-signing layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation carrying cosign's base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// A sigstore bundle (artifact type and layer media type of a bundle referrer).
pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

// ── Plain HTTP against the registry ──────────────────────────────────────────────────────

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close` to `host` (`127.0.0.1:PORT`).
pub fn http(
    host: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response> {
    let mut stream = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the response")?;
    let text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("bad status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The registry's HTTP API, spoken plainly (no fleetlet code in between).
#[derive(Clone)]
pub struct RegistryHttp {
    pub host: String,
}

impl RegistryHttp {
    pub fn new(host: &str) -> Self {
        RegistryHttp { host: host.into() }
    }

    /// Uploads a blob (POST, then PUT with the digest); returns its digest.
    pub fn put_blob(&self, repo: &str, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        let started = http(
            &self.host,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            b"",
        )?;
        if started.status != 202 {
            bail!(
                "starting an upload: {} {}",
                started.status,
                String::from_utf8_lossy(&started.body)
            );
        }
        let location = started.header("Location").context("upload Location")?;
        // An absolute URL or a path; keep path and query.
        let path = match location.find("/v2/") {
            Some(i) => &location[i..],
            None => location,
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let done = http(
            &self.host,
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            bytes,
        )?;
        if done.status != 201 {
            bail!(
                "finishing the upload of {digest}: {} {}",
                done.status,
                String::from_utf8_lossy(&done.body)
            );
        }
        Ok(digest)
    }

    /// PUT a manifest (or index) under `reference` (a tag or its digest); returns its digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let r = http(
            &self.host,
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            bytes,
        )?;
        if r.status != 201 {
            bail!(
                "pushing manifest {repo}:{reference}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        Ok(Digest::of(bytes))
    }

    /// The manifest bytes at `reference`, exactly as stored.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<Vec<u8>> {
        let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}");
        let r = http(
            &self.host,
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", &accept)],
            b"",
        )?;
        if r.status != 200 {
            bail!("manifest {repo}:{reference}: {}", r.status);
        }
        Ok(r.body)
    }

    pub fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let r = http(
            &self.host,
            "GET",
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            b"",
        )?;
        if r.status != 200 {
            bail!("blob {repo}@{digest}: {}", r.status);
        }
        Ok(r.body)
    }

    /// Deletes a blob from the repository (the manifests naming it stay).
    pub fn delete_blob(&self, repo: &str, digest: &Digest) -> Result<()> {
        let r = http(
            &self.host,
            "DELETE",
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            b"",
        )?;
        if r.status != 202 {
            bail!("deleting blob {digest}: {}", r.status);
        }
        Ok(())
    }

    /// A small Wasm-shaped OCI artifact (config + one `application/wasm` layer whose bytes
    /// depend on `salt`) at `repo:tag`; returns the manifest's digest and bytes.
    pub fn push_artifact(&self, repo: &str, tag: &str, salt: &str) -> Result<(Digest, Vec<u8>)> {
        let mut layer = b"\0asm\x0d\0\x01\0".to_vec();
        layer.extend_from_slice(salt.as_bytes());
        let config = br#"{"architecture":"wasm","os":"wasip2","layerDigests":[]}"#;
        let layer_digest = self.put_blob(repo, &layer)?;
        let config_digest = self.put_blob(repo, config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                       "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/wasm",
                        "digest": layer_digest.to_string(), "size": layer.len()}],
        }))?;
        let digest = self.put_manifest(repo, tag, &manifest, OCI_MANIFEST)?;
        Ok((digest, manifest))
    }
}

// ── Keys and signatures with the openssl CLI ─────────────────────────────────────────────

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    P256,
    Ed25519,
}

/// A key pair made by `openssl genpkey`, as PEM files `NAME.pem` (PKCS#8) and `NAME.pub`.
#[derive(Debug, Clone)]
pub struct OpensslKey {
    pub alg: Alg,
    pub private: PathBuf,
    pub public: PathBuf,
}

fn openssl(args: &[&str], paths: &[&Path]) -> Result<Vec<u8>> {
    let mut cmd = Command::new("openssl");
    cmd.args(args).args(paths);
    let out = cmd.output().context("running openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {args:?} {paths:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

impl OpensslKey {
    pub fn generate(dir: &Path, name: &str, alg: Alg) -> Result<Self> {
        let private = dir.join(format!("{name}.pem"));
        let public = dir.join(format!("{name}.pub"));
        match alg {
            Alg::P256 => openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                ],
                &[&private],
            )?,
            Alg::Ed25519 => openssl(&["genpkey", "-algorithm", "ed25519", "-out"], &[&private])?,
        };
        openssl(
            &["pkey", "-pubout", "-in"],
            &[&private, Path::new("-out"), &public],
        )?;
        Ok(OpensslKey {
            alg,
            private,
            public,
        })
    }

    /// The signature cosign would make over `message`: ECDSA P-256 with SHA-256 (DER) via
    /// `openssl dgst -sha256 -sign`, or pure Ed25519 via `openssl pkeyutl -sign -rawin`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let scratch = tempfile::tempdir()?;
        let msg = scratch.path().join("msg");
        let sig = scratch.path().join("sig");
        std::fs::write(&msg, message)?;
        match self.alg {
            Alg::P256 => openssl(
                &["dgst", "-sha256", "-sign"],
                &[&self.private, Path::new("-out"), &sig, &msg],
            )?,
            Alg::Ed25519 => openssl(
                &["pkeyutl", "-sign", "-rawin", "-inkey"],
                &[
                    &self.private,
                    Path::new("-in"),
                    &msg,
                    Path::new("-out"),
                    &sig,
                ],
            )?,
        };
        Ok(std::fs::read(sig)?)
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Result<Vec<u8>> {
        openssl(
            &["pkey", "-pubin", "-outform", "DER", "-in"],
            &[&self.public],
        )
    }

    pub fn public_pem(&self) -> Result<String> {
        Ok(std::fs::read_to_string(&self.public)?)
    }
}

/// `openssl dgst -sha256 -verify PUB -signature SIG MSG` (ECDSA), or
/// `openssl pkeyutl -verify -rawin` (Ed25519 public keys): whether `signature` verifies.
pub fn openssl_verify(public: &Path, message: &[u8], signature: &[u8]) -> Result<bool> {
    let scratch = tempfile::tempdir()?;
    let msg = scratch.path().join("msg");
    let sig = scratch.path().join("sig");
    std::fs::write(&msg, message)?;
    std::fs::write(&sig, signature)?;
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(&sig)
        .arg(&msg)
        .output()
        .context("running openssl dgst -verify")?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK"))
}

// ── cosign simple signing, built by hand ─────────────────────────────────────────────────

/// cosign's payload, byte for byte (no trailing newline): `optional` is `null`, or the
/// annotations as a JSON object of strings (in the order given).
pub fn cosign_payload(
    docker_reference: &str,
    digest: &Digest,
    optional: &[(&str, &str)],
) -> Vec<u8> {
    let optional = if optional.is_empty() {
        "null".to_string()
    } else {
        let fields: Vec<String> = optional
            .iter()
            .map(|(k, v)| format!("{}:{}", json!(k), json!(v)))
            .collect();
        format!("{{{}}}", fields.join(","))
    };
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{docker_reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":{optional}}}"#
    )
    .into_bytes()
}

/// `sha256-<hex>.sig`, where cosign puts the signatures of `digest`.
pub fn sig_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// `sha256-<hex>`, the referrers tag schema's index of `digest`.
pub fn referrers_tag(digest: &Digest) -> String {
    format!("sha256-{}", digest.hex())
}

/// One layer of a signature manifest.
#[derive(Debug, Clone)]
pub struct SigLayer {
    pub media_type: String,
    pub blob: Vec<u8>,
    pub annotations: Vec<(String, String)>,
}

impl SigLayer {
    /// A simple-signing layer over `payload` with the annotation `signature` (as given: it
    /// may be deliberately broken) or none.
    pub fn simple(payload: Vec<u8>, signature: Option<String>) -> Self {
        SigLayer {
            media_type: SIMPLE_SIGNING.into(),
            blob: payload,
            annotations: signature
                .map(|s| vec![(SIGNATURE_ANNOTATION.to_string(), s)])
                .unwrap_or_default(),
        }
    }

    /// `payload` signed by `key` (base64 without line breaks, as cosign writes it).
    pub fn signed(key: &OpensslKey, payload: Vec<u8>) -> Result<Self> {
        let sig = B64.encode(key.sign(&payload)?);
        Ok(Self::simple(payload, Some(sig)))
    }

    /// A layer of some other media type.
    pub fn foreign(media_type: &str, blob: Vec<u8>) -> Self {
        SigLayer {
            media_type: media_type.into(),
            blob,
            annotations: vec![],
        }
    }
}

/// Pushes a cosign signature manifest for `subject` (blobs, a cosign-style config, the
/// manifest tagged `sha256-<hex>.sig`); returns the manifest's digest and bytes.
pub fn push_cosign_signature(
    reg: &RegistryHttp,
    repo: &str,
    subject: &Digest,
    layers: &[SigLayer],
) -> Result<(Digest, Vec<u8>)> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| Digest::of(&l.blob).to_string())
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    reg.put_blob(repo, &config)?;
    put_blobs(reg, repo, layers.iter().map(|l| l.blob.as_slice()))?;
    let mut descs = Vec::new();
    for l in layers {
        let d = Digest::of(&l.blob);
        let mut desc =
            json!({"mediaType": l.media_type, "size": l.blob.len(), "digest": d.to_string()});
        if !l.annotations.is_empty() {
            let map: serde_json::Map<String, Value> = l
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            desc["annotations"] = Value::Object(map);
        }
        descs.push(desc);
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": config.len(), "digest": Digest::of(&config).to_string()},
        "layers": descs,
    }))?;
    let d = reg.put_manifest(repo, &sig_tag(subject), &manifest, OCI_MANIFEST)?;
    Ok((d, manifest))
}

/// Uploads blobs a few at a time (a signature manifest may have dozens of layers).
pub fn put_blobs<'a>(
    reg: &RegistryHttp,
    repo: &str,
    blobs: impl Iterator<Item = &'a [u8]>,
) -> Result<()> {
    let mut unique: Vec<&[u8]> = blobs.collect();
    unique.sort();
    unique.dedup();
    let queue = std::sync::Mutex::new(unique);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    while let Some(b) = queue.lock().unwrap().pop() {
                        reg.put_blob(repo, b)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("upload thread"))
    })
}

// ── A synthetic Rekor-like log and public-key sigstore bundles ───────────────────────────

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let joined: Vec<u8> = parts.concat();
    let hex = Digest::of(&joined).hex();
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digest");
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 6962 MTH, from the definition.
pub fn mth(leaves: &[Vec<u8>]) -> [u8; 32] {
    match leaves.len() {
        0 => sha256(&[]),
        1 => sha256(&[&[0u8], &leaves[0]]),
        n => {
            let k = n.next_power_of_two() / 2;
            sha256(&[&[1u8], &mth(&leaves[..k]), &mth(&leaves[k..])])
        }
    }
}

/// RFC 6962 PATH(m, D[n]).
pub fn audit_path(m: usize, leaves: &[Vec<u8>]) -> Vec<[u8; 32]> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = n.next_power_of_two() / 2;
    if m < k {
        let mut p = audit_path(m, &leaves[..k]);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = audit_path(m - k, &leaves[k..]);
        p.push(mth(&leaves[..k]));
        p
    }
}

/// The log's origin line in checkpoints.
const LOG_ORIGIN: &str = "rekor.test - 1";
/// When the synthetic log "integrated" entries (inside the trusted root's validity).
pub const INTEGRATED_TIME: i64 = 1_750_000_000;

/// A transparency log of our own: its key (an openssl P-256 key) signs entry timestamps and
/// checkpoints.
pub struct TestLog {
    pub key: OpensslKey,
}

impl TestLog {
    pub fn new(dir: &Path) -> Result<Self> {
        Ok(TestLog {
            key: OpensslKey::generate(dir, "rekor", Alg::P256)?,
        })
    }

    fn log_id(&self) -> Result<[u8; 32]> {
        Ok(sha256(&[&self.key.spki_der()?]))
    }

    /// A `trusted_root.json` naming only this log (no Fulcio CA, no CT log).
    pub fn trusted_root_json(&self) -> Result<String> {
        let spki = self.key.spki_der()?;
        Ok(serde_json::to_string_pretty(&json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": B64.encode(&spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                              "validFor": {"start": "2024-01-01T00:00:00Z"}},
                "logId": {"keyId": B64.encode(self.log_id()?)}
            }],
            "certificateAuthorities": [],
            "ctlogs": []
        }))?)
    }

    /// A v0.3 public-key bundle (hashedrekord) over the artifact whose manifest bytes are
    /// `artifact`, signed by `signer` (hint `hint`), logged at `index` of a log of `leaves`.
    pub fn key_bundle(
        &self,
        signer: &OpensslKey,
        hint: &str,
        artifact: &[u8],
        leaves: usize,
        index: usize,
    ) -> Result<Value> {
        let digest = sha256(&[artifact]);
        // ECDSA over SHA-256(artifact): the signature of the artifact's digest.
        let sig = B64.encode(signer.sign(artifact)?);
        let pem = signer.public_pem()?;
        let body = serde_json::to_vec(&json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex(&digest)}},
                "signature": {"content": sig, "publicKey": {"content": B64.encode(&pem)}}}}))?;
        let entries: Vec<Vec<u8>> = (0..leaves)
            .map(|i| {
                if i == index {
                    body.clone()
                } else {
                    format!("{{\"other\":{i}}}").into_bytes()
                }
            })
            .collect();
        let root_hash = mth(&entries);
        let path = audit_path(index, &entries);
        let log_id = self.log_id()?;
        let log_index = 1000 + index as u64;
        let set_payload = format!(
            r#"{{"body":"{}","integratedTime":{INTEGRATED_TIME},"logID":"{}","logIndex":{log_index}}}"#,
            B64.encode(&body),
            hex(&log_id)
        );
        let text = format!("{LOG_ORIGIN}\n{leaves}\n{}\n", B64.encode(root_hash));
        let mut cp_sig = log_id[..4].to_vec();
        cp_sig.extend(self.key.sign(text.as_bytes())?);
        Ok(json!({
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {
                "publicKey": {"hint": hint},
                "tlogEntries": [{
                    "logIndex": log_index.to_string(),
                    "logId": {"keyId": B64.encode(log_id)},
                    "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
                    "integratedTime": INTEGRATED_TIME.to_string(),
                    "inclusionPromise": {"signedEntryTimestamp":
                                         B64.encode(self.key.sign(set_payload.as_bytes())?)},
                    "inclusionProof": {
                        "logIndex": index.to_string(),
                        "rootHash": B64.encode(root_hash),
                        "treeSize": leaves.to_string(),
                        "hashes": path.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
                        "checkpoint": {"envelope":
                            format!("{text}\n\u{2014} rekor.test {}\n", B64.encode(cp_sig))}
                    },
                    "canonicalizedBody": B64.encode(&body)
                }]
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(digest)},
                "signature": sig
            }
        }))
    }
}

/// Attaches `bundle` to `subject` as an OCI 1.1 referrer through the tag-schema fallback: a
/// manifest (`artifactType` the bundle's, `subject` the artifact, one bundle layer) pushed by
/// digest, and an index tagged `sha256-<hex>` listing it. Returns the referrer's digest.
pub fn push_bundle_referrer(
    reg: &RegistryHttp,
    repo: &str,
    subject: &Digest,
    subject_manifest: &[u8],
    bundle: &[u8],
) -> Result<Digest> {
    let empty = b"{}";
    reg.put_blob(repo, empty)?;
    let layer = reg.put_blob(repo, bundle)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_V03,
        "config": {"mediaType": OCI_EMPTY, "digest": Digest::of(empty).to_string(), "size": 2},
        "layers": [{"mediaType": BUNDLE_V03, "digest": layer.to_string(), "size": bundle.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(),
                    "size": subject_manifest.len()},
    }))?;
    let digest = Digest::of(&manifest);
    reg.put_manifest(repo, &digest.to_string(), &manifest, OCI_MANIFEST)?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest.to_string(),
                       "size": manifest.len(), "artifactType": BUNDLE_V03}],
    }))?;
    reg.put_manifest(repo, &referrers_tag(subject), &index, OCI_INDEX)?;
    Ok(digest)
}
