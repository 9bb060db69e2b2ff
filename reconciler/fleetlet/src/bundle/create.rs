//! `fleetlet bundle create`: everything the selected sites need to run one release, with no
//! network on their side — the Git objects to reach the commit, every artifact the sites'
//! workloads name (pinned, with its signature material), in one signed file. The same inputs
//! give a byte-identical bundle: entries are sorted, metadata is zeroed, nothing records when
//! or where the bundle was made.

use super::{ArtifactMeta, Meta, PACK_ENTRY, ReleaseMeta, TagMeta, human_bytes};
use crate::progress::ProgressStore;
use crate::{Output, print_value};
use anyhow::{Context, anyhow, bail};
use fleetlet_core::Digest;
use fleetlet_core::load::load_fleet;
use fleetlet_core::reference::{ArtifactRef, RegistryRef};
use fleetlet_engine::artifacts::{Platform, fetch_signatures, pull, resolve};
use fleetlet_engine::engine::desired_state;
use fleetlet_engine::ports::Source;
use fleetlet_engine::registry::{Descriptor, Registry};
use fleetlet_store::OciStore;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub struct CreateArgs {
    pub repo: String,
    pub rev: String,
    pub sites: Vec<String>,
    pub selector: Option<String>,
    pub since: Option<String>,
    pub site_inventory: Option<PathBuf>,
    pub key: PathBuf,
    pub out: PathBuf,
    pub max_size: Option<u64>,
    pub config: Option<PathBuf>,
    pub platform: Option<String>,
    pub branch: Option<String>,
    pub output: Output,
}

/// `k=v,k2=v2`: every pair must match.
fn parse_selector(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--selector {text:?}: {pair:?} is not key=value"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    if out.is_empty() {
        bail!("--selector {text:?} selects nothing: give key=value pairs");
    }
    Ok(out)
}

/// The images the release's workloads on `site` name, as written in the fleet repo.
fn site_images(
    tree: &fleetlet_core::RepoTree,
    site: &str,
    commit: &str,
) -> anyhow::Result<Vec<String>> {
    let (desired, _) = desired_state(tree, site, commit).map_err(|(_, message, details)| {
        anyhow!(
            "{message}{}",
            if details.len() > 1 {
                format!(" (and {} more)", details.len() - 1)
            } else {
                String::new()
            }
        )
    })?;
    let mut images = BTreeSet::new();
    for w in desired.workloads.values() {
        if let Some(c) = w.wasm.as_ref().map(|s| &s.component)
            && c.path.is_none()
            && let Some(image) = &c.image
        {
            images.insert(image.clone());
        }
        images.extend(w.container_images());
    }
    Ok(images.into_iter().collect())
}

/// Blob digests listed in a site inventory: `{"blobs": ["sha256:…", …]}` as `fleetlet bundle
/// export-status` writes it (inside its status file, or on its own).
fn read_inventory(path: &Path) -> anyhow::Result<BTreeSet<Digest>> {
    #[derive(serde::Deserialize)]
    struct Inventory {
        blobs: Vec<Digest>,
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let json = if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        super::status::read_status_entry(path, super::status::INVENTORY_ENTRY)?
    } else {
        bytes
    };
    let inv: Inventory = serde_json::from_slice(&json)
        .with_context(|| format!("{}: not a site inventory", path.display()))?;
    Ok(inv.blobs.into_iter().collect())
}

pub fn run(args: CreateArgs) -> anyhow::Result<bool> {
    let key = crate::trust_cmd::load_signing_key(&args.key)?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)
            .ok_or_else(|| anyhow!("--platform {p:?}: expected os/arch[/variant]"))?,
        None => Platform::host(),
    };
    let out_dir = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    // Next to the output: the spool may be as large as the bundle, too large for /tmp.
    let work = tempfile::Builder::new()
        .prefix(".fleetlet-bundle-work-")
        .tempdir_in(&out_dir)
        .with_context(|| format!("creating a work directory in {}", out_dir.display()))?;

    let fetched = crate::agent::fetch_repo(&args.repo, &args.rev, work.path())?;
    let commit = fetched.revision.commit.clone();
    let tree = fetched
        .source
        .read_tree(&commit)
        .with_context(|| format!("reading commit {commit}"))?;

    // Which sites.
    let loaded = load_fleet(&tree);
    if loaded.has_errors() {
        let first = loaded
            .errors()
            .next()
            .map(|d| d.to_string())
            .unwrap_or_default();
        bail!("the fleet repo at {commit} is invalid: {first}");
    }
    let mut sites: Vec<String> = args.sites.clone();
    if let Some(sel) = &args.selector {
        let want = parse_selector(sel)?;
        for (name, site) in &loaded.fleet.sites {
            let labels = &site.doc.metadata.labels;
            if want.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                sites.push(name.clone());
            }
        }
    }
    sites.sort();
    sites.dedup();
    if sites.is_empty() {
        bail!("no site selected: give --site NAME or a --selector that matches a Site's labels");
    }
    for s in &sites {
        if !loaded.fleet.sites.contains_key(s) {
            bail!("site {s:?} is not defined in the fleet repo at {commit}");
        }
    }
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &sites {
        for image in
            site_images(&tree, s, &commit).with_context(|| format!("rendering site {s}"))?
        {
            wanted.entry(image).or_default().push(s.clone());
        }
    }

    let rt = crate::oci_cmd::runtime()?;
    let registry = fleetlet_oci::OciRegistry::new(
        crate::oci_cmd::registries(args.config.as_deref())?.to_adapter(),
        rt.handle().clone(),
    )
    .context("configuring registry access")?;

    // What the site already has: blobs the bundle may leave out.
    let mut site_has: BTreeSet<Digest> = BTreeSet::new();
    if let Some(inv) = &args.site_inventory {
        site_has.extend(read_inventory(inv)?);
    }
    let since = match &args.since {
        None => None,
        Some(rev) => {
            let base = fleetlet_git::pack::rev_commit(&fetched.mirror, rev).map_err(|_| {
                anyhow!(
                    "--since {rev:?} is not a commit in the history of {} at {}",
                    args.repo,
                    args.rev
                )
            })?;
            let base_tree = fetched.source.read_tree(&base)?;
            for s in &sites {
                // A site that did not exist at the base has nothing to reuse.
                let Ok(images) = site_images(&base_tree, s, &base) else {
                    continue;
                };
                for image in images {
                    let Ok(ArtifactRef::Registry(r)) = image.parse::<ArtifactRef>() else {
                        continue;
                    };
                    if let Ok(res) = resolve(&registry, &r, &platform) {
                        site_has.insert(res.config.digest);
                        site_has.extend(res.layers.iter().map(|l| l.digest));
                    }
                }
            }
            Some(base)
        }
    };

    // Artifacts and their signatures into a fresh layout, in sorted order (the index's tag
    // sequence numbers follow the order of pulls).
    let store =
        OciStore::open(&work.path().join("oci")).context("creating the bundle's OCI layout")?;
    let progress = ProgressStore::new(&store, "pulling");
    let mut keep: BTreeSet<Digest> = BTreeSet::new();
    let mut artifact_blobs: BTreeSet<Digest> = BTreeSet::new();
    let mut artifacts = Vec::new();
    for (image, users) in &wanted {
        let reference = match image.parse::<ArtifactRef>() {
            Ok(ArtifactRef::Registry(r)) => r,
            Ok(ArtifactRef::Layout(_)) => {
                eprintln!(
                    "warning: {image} is a site-local OCI layout: not carried (used by {})",
                    users.join(", ")
                );
                continue;
            }
            Err(e) => bail!("{image}: {e}"),
        };
        let pulled = pull(&registry, &progress, &reference, &platform)
            .with_context(|| format!("pulling {image}"))?;
        keep.extend(pulled.resolved.documents.iter().map(|d| d.digest));
        artifact_blobs.insert(pulled.resolved.config.digest);
        artifact_blobs.extend(pulled.resolved.layers.iter().map(|l| l.digest));
        let pinned = pulled.resolved.pinned.clone();
        let material = fetch_signatures(&registry, &progress, &pinned)
            .with_context(|| format!("fetching the signatures of {pinned}"))?;
        for m in &material {
            keep.insert(*m);
            if let Some(bytes) = store.read(m)? {
                keep.extend(fleetlet_store::children(&bytes));
            }
        }
        // The referrers index itself, under the tag-schema fallback name, so the site finds
        // it offline the way it would on a registry without the referrers API.
        if let Some(index) = registry
            .referrers(&pinned)
            .with_context(|| format!("listing referrers of {pinned}"))?
        {
            store.put(&index.bytes)?;
            keep.insert(index.digest);
            let digest = pinned.digest.context("a pinned reference has a digest")?;
            let name = RegistryRef {
                tag: Some(fleetlet_engine::trust::referrers_tag(&digest)),
                digest: Some(index.digest),
                ..pinned.clone()
            };
            store.set_ref(
                &name.to_string(),
                &Descriptor {
                    media_type: index.media_type.clone(),
                    digest: index.digest,
                    size: index.bytes.len() as u64,
                },
            )?;
        }
        artifacts.push(ArtifactMeta {
            reference: image.clone(),
            pinned: pinned.to_string(),
            sites: users.clone(),
            signatures: material.len(),
        });
    }
    progress.finish();
    let omit: BTreeSet<Digest> = artifact_blobs
        .intersection(&site_has)
        .filter(|d| !keep.contains(d))
        .copied()
        .collect();

    let pack = fleetlet_git::pack::export_pack(&fetched.mirror, &commit, since.as_deref())
        .context("packing the Git objects")?;
    let pack_path = work.path().join("release.pack");
    std::fs::write(&pack_path, &pack.pack)
        .with_context(|| format!("writing {}", pack_path.display()))?;

    let reference = match (&args.branch, fetched.branch) {
        (Some(b), _) => b.clone(),
        (None, true) => args.rev.clone(),
        (None, false) => "main".to_string(),
    };
    let reference = if reference.starts_with("refs/") {
        reference
    } else {
        format!("refs/heads/{reference}")
    };
    let meta = Meta::Release(ReleaseMeta {
        sites: sites.clone(),
        selector: args.selector.clone(),
        reference,
        commit: commit.clone(),
        summary: fetched.revision.summary.clone(),
        commit_time: fetched.revision.time,
        since: since.clone(),
        tags: pack
            .tags
            .iter()
            .map(|(name, object)| TagMeta {
                name: name.clone(),
                object: object.clone(),
            })
            .collect(),
        artifacts,
        omitted_blobs: omit.len(),
        platform: platform.to_string(),
    });
    let mut writer =
        fleetlet_bundle::BundleWriter::new(serde_json::to_value(&meta)?).spool_in(work.path());
    writer.add_path(PACK_ENTRY, &pack_path)?;
    writer.add_path("oci/oci-layout", &store.root().join("oci-layout"))?;
    writer.add_path("oci/index.json", &store.root().join("index.json"))?;
    for (digest, _) in store.blobs()? {
        if !omit.contains(&digest) {
            writer.add_path(
                &format!("{}{}", super::BLOB_PREFIX, digest.hex()),
                &store.path_of(&digest),
            )?;
        }
    }
    let manifest = writer.manifest();
    let bar = crate::progress::CounterBar::start("writing", manifest.total_size());
    let written = writer
        .with_progress(bar.counter())
        .finish(&key, &args.out, args.max_size)
        .with_context(|| format!("writing {}", args.out.display()))?;
    drop(bar);
    let size: u64 = written
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();

    let Meta::Release(meta) = meta else {
        unreachable!()
    };
    match args.output {
        Output::Text => {
            println!(
                "bundle {} for {}: commit {}{} ({} artifact(s), {} entries, {} unpacked, {} written{})",
                args.out.display(),
                sites.join(", "),
                &commit[..12],
                since
                    .as_deref()
                    .map(|b| format!(" since {}", &b[..12.min(b.len())]))
                    .unwrap_or_default(),
                meta.artifacts.len(),
                manifest.entries.len(),
                human_bytes(manifest.total_size()),
                human_bytes(size),
                if written.len() > 1 {
                    format!(" in {} parts", written.len())
                } else {
                    String::new()
                },
            );
        }
        o => print_value(
            &serde_json::json!({
                "files": written,
                "size": size,
                "unpacked": manifest.total_size(),
                "entries": manifest.entries.len(),
                "meta": meta,
            }),
            o,
        )?,
    }
    Ok(true)
}
