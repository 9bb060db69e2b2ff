//! `fleetlet keygen`, `sign` and `verify`: operator tooling so an air-gapped operator needs no
//! cosign. Keys are cosign's format, signatures cosign's key-based "simple signing" at
//! `sha256-<hex>.sig`; `verify` runs the same checks as the agent's verify step.

use crate::config::AgentConfig;
use crate::{Output, print_value};
use anyhow::{Context, bail};
use fleetlet_core::Digest;
use fleetlet_core::reference::{ArtifactRef, RegistryRef};
use fleetlet_engine::artifacts::{fetch_signatures, load_signature_manifests};
use fleetlet_engine::registry::{Descriptor, LAYOUT_REGISTRY, Registry};
use fleetlet_engine::trust::{SignatureManifest, cosign_signature_tag};
use fleetlet_oci::OciRegistry;
use fleetlet_store::{LayoutSource, OciStore};
use fleetlet_verify::cosign::{self, SigningKey};
use fleetlet_verify::policy::{Require, TrustConfig, TrustPolicy};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Environment variables read for the private key's passphrase (fleetlet's, then cosign's).
const PASSWORD_VARS: [&str; 2] = ["FLEETLET_PASSWORD", "COSIGN_PASSWORD"];

fn passphrase(confirm: bool) -> anyhow::Result<String> {
    for var in PASSWORD_VARS {
        if let Ok(p) = std::env::var(var) {
            return Ok(p);
        }
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no passphrase: set {} (or run in a terminal to be asked)",
            PASSWORD_VARS[0]
        );
    }
    let first = rpassword::prompt_password("Passphrase for the private key: ")
        .context("reading the passphrase")?;
    if confirm {
        let again = rpassword::prompt_password("Again: ").context("reading the passphrase")?;
        if again != first {
            bail!("the passphrases differ");
        }
    }
    Ok(first)
}

/// Opens a private key (cosign's encrypted format), asking for its passphrase as `sign` does.
pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    SigningKey::from_encrypted_pem(&pem, passphrase(false)?.as_bytes())
        .with_context(|| format!("opening private key {}", path.display()))
}

/// Writes `PREFIX.key` (encrypted) and `PREFIX.pub`; refuses to overwrite either.
pub fn keygen(prefix: &Path, output: Output) -> anyhow::Result<bool> {
    let private = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    for p in [&private, &public] {
        if p.exists() {
            bail!("{} exists; not overwriting a key", p.display());
        }
    }
    let password = passphrase(true)?;
    let key = SigningKey::generate()?;
    let pem = key.private_pem(password.as_bytes())?;
    write_new(&private, pem.as_bytes(), 0o600)?;
    write_new(&public, key.public_pem()?.as_bytes(), 0o644)?;
    match output {
        Output::Text => {
            println!("private key: {} (encrypted)", private.display());
            println!("public key:  {}", public.display());
        }
        o => print_value(
            &serde_json::json!({"privateKey": private, "publicKey": public}),
            o,
        )?,
    }
    Ok(true)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Where an artifact lives for signing and verifying: a registry, or a local OCI layout.
enum Target {
    Registry(Box<OciRegistry>, RegistryRef),
    Layout(LayoutSource, PathBuf, RegistryRef),
}

impl Target {
    fn open(
        reference: &str,
        config: Option<&Path>,
        rt: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Self> {
        Ok(match reference.parse::<ArtifactRef>()? {
            ArtifactRef::Registry(r) => Target::Registry(
                Box::new(OciRegistry::new(
                    crate::oci_cmd::registries(config)?.to_adapter(),
                    rt.handle().clone(),
                )?),
                r,
            ),
            ArtifactRef::Layout(l) => {
                let path = PathBuf::from(&l.path);
                let r = RegistryRef {
                    registry: LAYOUT_REGISTRY.into(),
                    repository: "local".into(),
                    tag: l.tag,
                    digest: l.digest,
                };
                Target::Layout(LayoutSource::new(&path), path, r)
            }
        })
    }

    fn registry(&self) -> &(dyn Registry + Send + Sync) {
        match self {
            Target::Registry(r, _) => r.as_ref(),
            Target::Layout(l, _, _) => l,
        }
    }

    fn reference(&self) -> &RegistryRef {
        match self {
            Target::Registry(_, r) | Target::Layout(_, _, r) => r,
        }
    }

    /// The reference pinned to the digest cosign signs: the top-level manifest or index.
    fn pinned(&self) -> anyhow::Result<RegistryRef> {
        let r = self.reference();
        let top = self
            .registry()
            .fetch_manifest(r)
            .with_context(|| format!("resolving {r}"))?;
        Ok(r.pinned(top.digest))
    }

    /// How the user names the artifact, pinned: `registry/repo:tag@sha256:…` or
    /// `oci:PATH:TAG@sha256:…`.
    fn display(&self, pinned: &RegistryRef) -> String {
        match self {
            Target::Registry(..) => pinned.to_string(),
            Target::Layout(_, path, r) => {
                let tag = r
                    .tag
                    .as_deref()
                    .map(|t| format!(":{t}"))
                    .unwrap_or_default();
                let digest = pinned.digest.map(|d| format!("@{d}")).unwrap_or_default();
                format!("oci:{}{tag}{digest}", path.display())
            }
        }
    }

    /// What policies match the artifact by (see the engine's policy reference).
    fn policy_ref(&self, digest: Digest) -> RegistryRef {
        match self {
            Target::Registry(_, r) => r.pinned(digest),
            Target::Layout(_, path, r) => RegistryRef {
                registry: LAYOUT_REGISTRY.into(),
                repository: path.to_string_lossy().trim_start_matches('/').to_string(),
                tag: r.tag.clone(),
                digest: Some(digest),
            },
        }
    }

    /// The signature manifests of `pinned`, read into a scratch store.
    fn signatures(&self, pinned: &RegistryRef) -> anyhow::Result<Vec<SignatureManifest>> {
        let scratch = tempfile::tempdir().context("creating a scratch store")?;
        let store = OciStore::open(scratch.path())?;
        let found = fetch_signatures(self.registry(), &store, pinned)
            .with_context(|| format!("fetching signatures of {pinned}"))?;
        load_signature_manifests(&store, &found).map_err(anyhow::Error::msg)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Signs `reference` with `key` and pushes the signature beside it, appending to any signature
/// manifest already there (as cosign does).
pub fn sign(
    reference: &str,
    key: &Path,
    annotations: &[String],
    config: Option<&Path>,
    output: Output,
) -> anyhow::Result<bool> {
    let annotations = parse_annotations(annotations)?;
    let pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let signing = SigningKey::from_encrypted_pem(&pem, passphrase(false)?.as_bytes())
        .with_context(|| format!("opening private key {}", key.display()))?;
    let rt = runtime()?;
    let target = Target::open(reference, config, &rt)?;
    let pinned = target.pinned()?;
    let digest = pinned.digest.context("resolved reference has a digest")?;
    let docker_reference = match &target {
        Target::Registry(_, r) => format!("{}/{}", r.registry, r.repository),
        Target::Layout(_, path, _) => path.display().to_string(),
    };
    let payload = cosign::simple_signing_payload(&docker_reference, &digest, &annotations);
    let signature = signing.sign(&payload)?;
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&signature)
    };
    let mut layers: Vec<(Vec<u8>, String)> = target
        .signatures(&pinned)?
        .iter()
        .filter(|m| cosign::is_signature_manifest(m))
        .flat_map(cosign::existing_layers)
        .collect();
    if !layers.iter().any(|(p, s)| *p == payload && *s == b64) {
        layers.push((payload.clone(), b64));
    }
    let max = fleetlet_engine::artifacts::MAX_SIGNATURE_LAYERS;
    if layers.len() > max {
        bail!(
            "{pinned} already has {} signatures; verifiers accept at most {max} per signature \
             manifest, so another one would make every signature unreadable",
            layers.len() - 1
        );
    }
    let (config_blob, manifest) = cosign::signature_manifest(&layers);
    let sig_ref = RegistryRef {
        tag: Some(cosign_signature_tag(&digest)),
        digest: None,
        ..pinned.clone()
    };
    let media_type = "application/vnd.oci.image.manifest.v1+json";
    match &target {
        Target::Registry(registry, _) => {
            registry.push_blob(&sig_ref, &Digest::of(&config_blob), &config_blob)?;
            for (p, _) in &layers {
                registry.push_blob(&sig_ref, &Digest::of(p), p)?;
            }
            registry
                .push_manifest(&sig_ref, &manifest, media_type)
                .with_context(|| format!("pushing the signature to {sig_ref}"))?;
        }
        Target::Layout(_, path, _) => {
            let store = OciStore::open(path)
                .with_context(|| format!("opening OCI layout {}", path.display()))?;
            store.put(&config_blob)?;
            for (p, _) in &layers {
                store.put(p)?;
            }
            let d = store.put(&manifest)?;
            store.set_ref(
                sig_ref.tag.as_deref().unwrap_or_default(),
                &Descriptor {
                    media_type: media_type.into(),
                    digest: d,
                    size: manifest.len() as u64,
                },
            )?;
        }
    }
    let shown = target.display(&pinned);
    let sig_shown = match &target {
        Target::Registry(..) => sig_ref.to_string(),
        Target::Layout(_, path, _) => {
            format!("oci:{}:{}", path.display(), cosign_signature_tag(&digest))
        }
    };
    match output {
        Output::Text => println!("signed {shown}; signature at {sig_shown}"),
        o => print_value(
            &serde_json::json!({"reference": shown, "signature": sig_shown, "signatures": layers.len()}),
            o,
        )?,
    }
    Ok(true)
}

fn parse_annotations(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("annotation {a:?}: expected KEY=VALUE"))
        })
        .collect()
}

/// Verifies `reference` against a key or an agent config's trust policy. Exit 1 with the
/// reasons when it does not pass.
pub fn verify(
    reference: &str,
    key: Option<&Path>,
    policy: Option<&Path>,
    annotations: &[String],
    output: Output,
) -> anyhow::Result<bool> {
    let (trust, registries_from) = match (key, policy) {
        (Some(k), None) => {
            let mut t = TrustConfig::default();
            t.keys.insert(
                "key".into(),
                std::path::absolute(k).with_context(|| format!("{}", k.display()))?,
            );
            t.artifacts.annotations = parse_annotations(annotations)?;
            t.commits.require = Require::None;
            (t, None)
        }
        (None, Some(p)) => (
            AgentConfig::load(p)
                .map_err(|e| crate::UsageError(format!("{e:#}")))?
                .trust,
            Some(p),
        ),
        _ => bail!("give exactly one of --key and --policy"),
    };
    let policy = TrustPolicy::load(&trust, Path::new(""))
        .map_err(|e| crate::UsageError(format!("loading the trust policy: {e}")))?;
    let rt = runtime()?;
    let target = Target::open(reference, registries_from, &rt)?;
    let pinned = target.pinned()?;
    let digest = pinned.digest.context("resolved reference has a digest")?;
    let subject = target.policy_ref(digest);
    use fleetlet_engine::trust::{Requirement, Verifier};
    let shown = target.display(&pinned);
    if policy.artifact_requirement(&subject) == Requirement::None {
        report(
            output,
            &shown,
            Ok(vec![]),
            "the policy requires no signature",
        )?;
        return Ok(true);
    }
    let material = target.signatures(&pinned)?;
    let result = policy.verify(&subject, &material);
    let ok = result.is_ok();
    report(output, &shown, result, "")?;
    Ok(ok)
}

fn report(
    output: Output,
    pinned: &str,
    result: Result<Vec<fleetlet_engine::trust::Signer>, String>,
    note: &str,
) -> anyhow::Result<()> {
    match output {
        Output::Text => match &result {
            Ok(signers) if signers.is_empty() => println!("{pinned}: ok ({note})"),
            Ok(signers) => {
                println!("{pinned}: verified");
                for s in signers {
                    println!("  signed by {s}");
                }
            }
            Err(reason) => println!("{pinned}: NOT verified: {reason}"),
        },
        o => {
            let v = match &result {
                Ok(signers) => {
                    serde_json::json!({"reference": pinned, "verified": true, "signers": signers, "note": note})
                }
                Err(reason) => {
                    serde_json::json!({"reference": pinned, "verified": false, "reason": reason})
                }
            };
            print_value(&v, o)?
        }
    }
    Ok(())
}
