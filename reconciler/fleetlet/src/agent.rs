//! The long-running agent: wires the adapters (Git source, blob store, Wasm host, sled state)
//! into the engine, runs the cycle on a poll interval and on file-watch triggers, serves
//! `/healthz`, `/readyz`, `/status` and `/metrics`, and shuts down gracefully on SIGTERM/SIGINT.
//!
//! Threads: the engine runs on the main thread (its adapters block); tokio runs the HTTP endpoint,
//! the Wasm servers and the signal handlers. They meet through a trigger channel and a shared
//! status snapshot.

use crate::config::AgentConfig;
use crate::inbox::{Candidate, Inbox, Verdict};
use crate::metrics::Metrics;
use anyhow::{Context, anyhow};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use fleetlet_engine::ports::{Source, WorkloadRuntime};
use fleetlet_engine::{Engine, Status};
use fleetlet_git::{Follow, GitSource, GitSourceConfig};
use fleetlet_state::SledStateStore;
use fleetlet_store::OciStore;
use fleetlet_wasm::{PoolingOptions, WasmHost, WasmHostConfig};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

pub const STATUS_FILE: &str = "status.json";

/// How soon to look again at a release that waits to become last-known-good.
const PROMOTION_CHECK: Duration = Duration::from_secs(1);

/// A burst of file events is coalesced for at most this long.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// Why the engine loop wakes up.
#[derive(Debug)]
enum Trigger {
    /// The local fleet repo changed on disk.
    Changed,
    Shutdown,
}

struct Shared {
    status: RwLock<Status>,
    ready: AtomicBool,
    metrics: Metrics,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC (the audit log's rendering, so every time fleetlet prints reads alike).
pub fn format_time(t: i64) -> String {
    fleetlet_audit::render::format_time(t)
}

fn git_source_config(cfg: &AgentConfig) -> GitSourceConfig {
    let mirror = cfg.state_dir.join("git");
    let Some(git) = &cfg.source.git else {
        // Releases come only from imported sync bundles: the mirror is the whole source.
        return GitSourceConfig::new("sync bundles", Follow::Imported, mirror);
    };
    let follow = match (&git.tag, &git.branch) {
        (Some(t), _) => Follow::TagPattern(t.clone()),
        (None, b) => Follow::Branch(b.clone().unwrap_or_else(|| "main".into())),
    };
    let mut c = GitSourceConfig::new(git.url.clone(), follow, mirror);
    c.ca_file = git.ca_file.clone();
    c.ssh_key = git.ssh_key.clone();
    c.known_hosts = git.known_hosts.clone();
    c.timeout = git.timeout.as_duration();
    c
}

/// The fleet repo fetched into a private mirror (a local path is fetched like a URL, so only
/// committed state travels, as on a site).
pub struct Fetched {
    _dir: tempfile::TempDir,
    pub mirror: std::path::PathBuf,
    pub source: GitSource,
    pub revision: fleetlet_engine::ports::Revision,
    /// Whether `rev` named a branch (else a tag).
    pub branch: bool,
}

pub fn fetch_repo(repo: &str, rev: &str, work: &Path) -> anyhow::Result<Fetched> {
    let dir = tempfile::Builder::new()
        .prefix(".git-")
        .tempdir_in(work)
        .context("creating a temporary mirror")?;
    let url = if Path::new(repo).exists() {
        Path::new(repo)
            .canonicalize()?
            .to_string_lossy()
            .into_owned()
    } else {
        repo.to_string()
    };
    let mut last_err = None;
    for (follow, branch) in [
        (Follow::Branch(rev.to_string()), true),
        (Follow::TagPattern(rev.to_string()), false),
    ] {
        let mirror = dir.path().join(if branch { "branch" } else { "tag" });
        let mut source =
            GitSource::open(GitSourceConfig::new(url.clone(), follow, mirror.clone()))?;
        match source.poll(None) {
            Ok(p) => {
                return Ok(Fetched {
                    revision: p.revision().clone(),
                    _dir: dir,
                    mirror,
                    source,
                    branch,
                });
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(anyhow!(
        "no branch or tag {rev:?} in {repo}: {}",
        last_err.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// Reads a fleet repo through Git at a branch or tag (for `fleetlet render --rev`).
pub fn read_git_tree(repo: &str, rev: &str) -> anyhow::Result<(fleetlet_core::RepoTree, String)> {
    let fetched = fetch_repo(repo, rev, &std::env::temp_dir())?;
    let commit = fetched.revision.commit.clone();
    Ok((fetched.source.read_tree(&commit)?, commit))
}

pub fn run(cfg: AgentConfig, policy: fleetlet_verify::policy::TrustPolicy) -> anyhow::Result<()> {
    let policy = Arc::new(policy);
    let state_dir = cfg.state_dir.clone();
    for sub in ["", "compiled", "volumes"] {
        std::fs::create_dir_all(state_dir.join(sub))
            .with_context(|| format!("creating {}", state_dir.join(sub).display()))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fleetlet-io")
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    let store = SledStateStore::open(&state_dir.join("db"))
        .context("opening the state store (is another agent running on this state dir?)")?;
    // Only now that the state store's lock is ours: a temp file is another agent's write in flight
    // until then, and after it, one a kill -9 left behind.
    sweep_temp_files(&state_dir);
    clear_mirror_locks(&state_dir);
    // The audit log: its journal beside the state record, its JSON Lines mirror for shippers,
    // its checkpoints signed with the site key (made now if this is the first start).
    let key_path = state_dir.join(crate::site_key::SITE_KEY);
    let existing_key = if key_path.exists() {
        Some(crate::site_key::load_or_create(&state_dir).context("loading the site key")?)
    } else {
        None
    };
    let existing_pub = existing_key
        .as_ref()
        .map(|k| -> anyhow::Result<_> {
            Ok(fleetlet_verify::cosign::TrustedKey::from_pem(
                "site",
                k.public_pem()?.as_bytes(),
            )?)
        })
        .transpose()?;
    // Checked (in the same read that opens it) before anything is signed over it: a chain
    // someone edited while the agent was down must not be laundered by the next checkpoint.
    // The site keeps running; the log keeps recording (the break stays visible to `fleetlet
    // audit verify`), unsigned.
    let (mut audit, intact) = fleetlet_audit::AuditLog::open_verified(
        &cfg.site.to_string(),
        Box::new(store.audit_journal().context("opening the audit journal")?),
        Some(&crate::audit_cmd::audit_path(&state_dir)),
        existing_pub.as_ref(),
    )
    .context("opening the audit log")?;
    // A log signed before with a key that is now gone: making a new one would hide that (and
    // every later check would fail at the first old checkpoint). A human decides.
    if audit.has_checkpoints() && existing_key.is_none() {
        anyhow::bail!(
            "the audit log in {} has checkpoints signed by the site key, but {} is missing: \
             restore it from a backup (or move the log aside to start a new one)",
            state_dir.display(),
            key_path.display()
        );
    }
    let site_key = match existing_key {
        Some(k) => k,
        None => crate::site_key::load_or_create(&state_dir).context("loading the site key")?,
    };
    let sign_checkpoints = match intact {
        Ok(_) => true,
        Err(problem) => {
            tracing::error!(%problem, "the audit log is damaged: no checkpoint will be signed over it");
            false
        }
    };
    let checkpoint_every = cfg.audit.checkpoint_interval.as_duration();
    let mut last_checkpoint = Instant::now();
    let blobs =
        Arc::new(OciStore::open(&state_dir.join("oci")).context("opening the artifact store")?);
    let mut host_config = WasmHostConfig::new(
        state_dir.join("compiled"),
        state_dir.join("volumes"),
        cfg.runtimes.wasm.bind_address,
        rt.handle().clone(),
    );
    if cfg.runtimes.wasm.max_instances > 0 {
        host_config.pooling = Some(PoolingOptions {
            max_instances: cfg.runtimes.wasm.max_instances,
            ..PoolingOptions::default()
        });
    }
    let host = WasmHost::new(host_config).context("starting the Wasm runtime")?;
    let source = GitSource::open(git_source_config(&cfg)).context("opening the Git mirror")?;
    let mirror_store = blobs.clone();
    let import_store = blobs.clone();
    let registry = fleetlet_oci::OciRegistry::new(cfg.registries.to_adapter(), rt.handle().clone())
        .context("configuring registry access")?;
    // Uplink down or air-gapped: what the store already holds still applies.
    let registry = fleetlet_engine::registry::FallbackRegistry::new(
        Box::new(registry),
        Box::new(fleetlet_store::StoreRegistry::new(blobs.clone())),
    );
    let cluster = match &cfg.runtimes.k3s {
        None => None,
        Some(k) => Some(
            fleetlet_k3s::K3sCluster::new(
                fleetlet_k3s::K3sConfig {
                    kubeconfig: k.kubeconfig.clone(),
                    timeout: k.timeout.as_duration(),
                },
                rt.handle().clone(),
            )
            .context("configuring access to the k3s API server")?,
        ),
    };
    let mut engine = Engine::new(cfg.site.to_string(), source, host, blobs, store)
        .context("loading agent state")?
        .with_verifier(Box::new(policy.clone()))
        .allow_history_rewrite(cfg.source.git.as_ref().is_some_and(|g| g.allow_force_push))
        .with_registry(Box::new(registry))
        .with_layouts(Box::new(AllowedLayouts(
            cfg.registries.local_layouts.clone(),
        )))
        .keep_releases(cfg.registries.keep_releases);
    if let Some(cluster) = cluster {
        info!(source = %cluster.source(), "applying k3s workloads");
        let interval = cfg
            .runtimes
            .k3s
            .as_ref()
            .map(|k| k.drift_interval.as_duration().as_secs() as i64)
            .unwrap_or(fleetlet_engine::engine::DEFAULT_DRIFT_INTERVAL);
        engine = engine
            .with_cluster(Box::new(cluster))
            .drift_interval(interval);
    }
    // Event numbers carry on past what the log holds (a state record reset beside a kept log
    // must not have its new events taken for repeats).
    engine.continue_audit_ids(audit.last_event_id());

    let shared = Arc::new(Shared {
        status: RwLock::new(engine.status()),
        ready: AtomicBool::new(false),
        metrics: Metrics::new(),
    });
    let (tx, rx) = std::sync::mpsc::channel();

    let listener = rt
        .block_on(tokio::net::TcpListener::bind(cfg.listen.status))
        .with_context(|| format!("binding the status endpoint on {}", cfg.listen.status))?;
    info!(address = %cfg.listen.status, site = %cfg.site, "agent starting");
    let http_shutdown = Arc::new(tokio::sync::Notify::new());
    rt.spawn(serve_http(listener, shared.clone(), http_shutdown.clone()));
    if let Some(addr) = cfg.listen.registry_mirror {
        let mirror = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("binding the registry mirror on {addr}"))?;
        info!(address = %addr, "serving the artifact store as a registry mirror");
        let shutdown = http_shutdown.clone();
        rt.spawn(fleetlet_mirror::serve(mirror, mirror_store, async move {
            shutdown.notified().await
        }));
    }
    // Installed before any work, so an early SIGTERM drains rather than kills.
    let signals = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    });
    match signals {
        Ok((term, int)) => {
            rt.spawn(watch_signals(
                term,
                int,
                tx.clone(),
                state_dir.join(crate::bundle::import::BUNDLES_DIR),
            ));
        }
        Err(e) => warn!(error = %e, "cannot install signal handlers"),
    }
    let _watcher = cfg
        .source
        .git
        .as_ref()
        .and_then(|g| fleetlet_git::local_path(&g.url))
        .and_then(|p| watch_repo(&p, &state_dir, tx.clone()));
    let mut inbox = match cfg.source.bundles.as_ref().and_then(|b| b.inbox.as_ref()) {
        None => None,
        Some(dir) => {
            let settle = cfg
                .source
                .bundles
                .as_ref()
                .map(|b| b.settle.as_duration())
                .unwrap_or_default();
            let inbox = Inbox::open(dir, settle)
                .with_context(|| format!("opening the bundle inbox {}", dir.display()))?;
            let wake = tx.clone();
            let watcher = inbox
                .watch(move || {
                    let _ = wake.send(Trigger::Changed);
                })
                .map_err(|e| warn!(error = %e, "cannot watch the bundle inbox; looking at each interval"))
                .ok();
            info!(inbox = %dir.display(), "importing sync bundles dropped into the inbox");
            Some((inbox, watcher))
        }
    };

    // Bring back what ran before, from local state only: the site serves before any network.
    let started = Instant::now();
    match engine.restore() {
        Ok(n) if n > 0 => info!(
            workloads = n,
            ms = started.elapsed().as_millis() as u64,
            "restored workloads from local state"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e.message, "could not restore workloads from local state"),
    }
    // Events a kill kept from the log (saved with the state change, not yet journalled) go
    // first: the release they record must not be recorded again as found running.
    flush_audit(&mut engine, &mut audit);
    // A release running that the log does not show running (the log began after it was
    // applied; a rollback to it is shown as running) is recorded now, saying so.
    if let Some(release) = engine.state().applied.clone()
        && audit.running() != Some(release.revision.commit.as_str())
        && !engine.pending_audit_events().iter().any(|e| {
            e.action == fleetlet_engine::audit::AuditAction::Applied
                && e.commit.as_deref() == Some(release.revision.commit.as_str())
        })
    {
        let mut event = fleetlet_engine::audit::AuditEvent::of_release(
            now(),
            fleetlet_engine::audit::AuditAction::Applied,
            &release,
        );
        event.reason = Some(format!(
            "running since {} when the audit log started recording it",
            format_time(release.applied_at)
        ));
        if let Err(e) = audit.record(audit_event(event)) {
            warn!(error = %e, "recording the running release in the audit log");
        }
    }
    publish(&engine, &shared, &state_dir);
    shared.ready.store(true, Ordering::SeqCst);

    let interval = cfg.source.interval();
    let mut inbox_check: Option<Duration> = None;
    loop {
        if let Some((inbox, _)) = inbox.as_mut() {
            inbox_check = import_from_inbox(inbox, &cfg, &policy, &import_store, &shared.metrics);
        }
        let t = Instant::now();
        let outcome = engine.reconcile(now());
        flush_audit(&mut engine, &mut audit);
        shared
            .metrics
            .set_audit(audit.len(), audit.checkpointed_len());
        if sign_checkpoints && last_checkpoint.elapsed() >= checkpoint_every {
            last_checkpoint = Instant::now();
            if let Err(e) = audit.checkpoint(&site_key, now()) {
                warn!(error = %e, "signing an audit checkpoint");
            }
        }
        let status = publish(&engine, &shared, &state_dir);
        shared
            .metrics
            .record(&outcome, t.elapsed().as_secs_f64(), &status);
        // A fresh release is promoted to last-known-good at the next cycle: come back soon.
        let next = if engine.awaiting_promotion() {
            interval.min(PROMOTION_CHECK)
        } else {
            interval
        };
        // A bundle still being copied is looked at again once it may have settled.
        let next = inbox_check.map_or(next, |d| next.min(d.max(Duration::from_millis(50))));
        if wait(&rx, next) {
            break;
        }
    }

    // Whatever happened since the last checkpoint is signed before the agent goes.
    if sign_checkpoints && let Err(e) = audit.checkpoint(&site_key, now()) {
        warn!(error = %e, "signing the audit checkpoint at shutdown");
    }
    info!("shutting down: draining workloads (a second signal exits at once)");
    shared.ready.store(false, Ordering::SeqCst);
    let ids: Vec<String> = engine.runtime().observe().into_keys().collect();
    // In parallel: each drain may take up to its timeout, and systemd's stop timeout is shared.
    std::thread::scope(|scope| {
        for id in &ids {
            let runtime = engine.runtime();
            scope.spawn(move || {
                if let Err(e) = runtime.stop(id) {
                    warn!(error = %e, "stopping {id}");
                }
            });
        }
    });
    publish(&engine, &shared, &state_dir);
    http_shutdown.notify_waiters();
    rt.shutdown_timeout(Duration::from_secs(5));
    info!("stopped");
    Ok(())
}

/// The engine's account of an outcome in the audit log's documented format.
fn audit_event(e: fleetlet_engine::audit::AuditEvent) -> fleetlet_audit::Event {
    use fleetlet_audit::{Action, Artifact, Event, Signer, Workload};
    use fleetlet_engine::audit::AuditAction;
    let signer = |s: fleetlet_engine::trust::Signer| Signer {
        kind: serde_json::to_value(s.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        identity: s.identity,
        detail: s.detail,
    };
    Event {
        event_id: (e.id > 0).then_some(e.id),
        time: e.at,
        action: match e.action {
            AuditAction::Applied => Action::Applied,
            AuditAction::Rejected => Action::Rejected,
            AuditAction::RolledBack => Action::RolledBack,
            AuditAction::DriftCorrected => Action::DriftCorrected,
            AuditAction::Pruned => Action::Pruned,
        },
        commit: e.commit,
        reference: e.reference,
        from: e.from,
        tags: e.tags,
        commit_signers: e.commit_signers.into_iter().map(signer).collect(),
        workloads: e
            .workloads
            .into_iter()
            .map(|w| Workload {
                id: w.id,
                artifacts: w
                    .artifacts
                    .into_iter()
                    .map(|a| Artifact {
                        reference: a.reference,
                        digest: a.digest.to_string(),
                        signers: a.signers.into_iter().map(signer).collect(),
                        material: a.material.iter().map(|d| d.to_string()).collect(),
                    })
                    .collect(),
            })
            .collect(),
        stage: e.stage.and_then(|s| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
        }),
        reason: e.reason,
        objects: e.objects,
    }
}

/// Imports every complete bundle in the inbox, then files it under done/ or rejected/.
/// Returns when to look again for files still being copied.
fn import_from_inbox(
    inbox: &mut Inbox,
    cfg: &AgentConfig,
    policy: &fleetlet_verify::policy::TrustPolicy,
    store: &OciStore,
    metrics: &Metrics,
) -> Option<Duration> {
    let (ready, next) = inbox.ready();
    let site_name = cfg.site.to_string();
    let branch = crate::bundle::cli::bundles_branch(cfg);
    let site = crate::bundle::import::Site {
        name: &site_name,
        state_dir: &cfg.state_dir,
        policy,
        store,
        max_unpacked: crate::bundle::cli::max_unpacked(cfg),
        k3s: cfg.runtimes.k3s.is_some(),
        branch: &branch,
        interrupt_limit: Some(crate::bundle::attempt::INBOX_LIMIT),
    };
    use crate::bundle::import::ImportError;
    // A delta copied in together with its base may come first by name: it is tried again
    // after the rest of the batch.
    let mut queue: std::collections::VecDeque<(Candidate, bool)> =
        ready.into_iter().map(|c| (c, true)).collect();
    while let Some((candidate, first_try)) = queue.pop_front() {
        let verdict = match crate::bundle::import::import(&candidate.files, &site, None, false) {
            Ok(imported) => {
                info!(bundle = %candidate.name, commit = %imported.commit, "imported sync bundle");
                Verdict::Done(imported.summary_line())
            }
            // A hand-run import holds the site: these bundles are offered again soon.
            Err(ImportError::Busy) => return Some(PROMOTION_CHECK),
            Err(ImportError::MissingBase(_)) if first_try => {
                queue.push_back((candidate, false));
                continue;
            }
            Err(ImportError::Truncated(reason))
                if crate::bundle::import::is_split(&candidate.files) =>
            {
                info!(bundle = %candidate.name, "split bundle incomplete; waiting for its last part");
                Verdict::Wait(reason)
            }
            Err(ImportError::Local(reason)) => {
                // The site's own fault (a full disk, permissions): filed as rejected all
                // the same, with the reason, so the technician sees it and drops it again
                // once fixed.
                warn!(bundle = %candidate.name, error = %reason, "importing sync bundle failed on this site");
                Verdict::Rejected(format!("could not import on this site: {reason}"))
            }
            Err(e) => {
                warn!(bundle = %candidate.name, reason = %e, "sync bundle rejected");
                Verdict::Rejected(e.to_string())
            }
        };
        metrics.record_import(match &verdict {
            Verdict::Done(_) => "imported",
            Verdict::Rejected(_) => "rejected",
            Verdict::Wait(_) => "incomplete",
        });
        if let Err(e) = inbox.finish(&candidate, &verdict) {
            warn!(bundle = %candidate.name, error = %e, "cannot move the bundle out of the inbox");
        }
    }
    next
}

/// Local OCI layouts a fleet repo may name: only under the folders the site's config allows.
struct AllowedLayouts(Vec<std::path::PathBuf>);

impl fleetlet_engine::registry::Layouts for AllowedLayouts {
    fn open(
        &self,
        path: &str,
    ) -> Result<Box<dyn fleetlet_engine::registry::Registry + Send + Sync>, String> {
        let real = Path::new(path)
            .canonicalize()
            .map_err(|e| format!("local OCI layout {path}: {e}"))?;
        let allowed = self
            .0
            .iter()
            .filter_map(|root| root.canonicalize().ok())
            .any(|root| real.starts_with(root));
        if !allowed {
            return Err(format!(
                "local OCI layout {path} is not under a folder listed in registries.localLayouts of this agent's config"
            ));
        }
        Ok(Box::new(fleetlet_store::LayoutSource::new(&real)))
    }
}

/// Waits for the next cycle. Returns true on shutdown. File-change bursts are coalesced.
fn wait(rx: &Receiver<Trigger>, interval: Duration) -> bool {
    match rx.recv_timeout(interval) {
        Ok(Trigger::Shutdown) | Err(RecvTimeoutError::Disconnected) => true,
        Err(RecvTimeoutError::Timeout) => false,
        Ok(Trigger::Changed) => {
            // A commit touches several files; wait for the burst to settle, but not forever on
            // a tree that never stops changing.
            let started = Instant::now();
            loop {
                if started.elapsed() > MAX_DEBOUNCE {
                    return false;
                }
                match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(Trigger::Changed) => continue,
                    Ok(Trigger::Shutdown) | Err(RecvTimeoutError::Disconnected) => return true,
                    Err(RecvTimeoutError::Timeout) => return false,
                }
            }
        }
    }
}

/// Writes the engine's pending audit events (a cycle's outcomes, and any a crash kept from the
/// log) with one wait for the disk; they leave the state record only once the journal has them.
fn flush_audit<S, R, B, St>(engine: &mut Engine<S, R, B, St>, audit: &mut fleetlet_audit::AuditLog)
where
    S: Source,
    R: WorkloadRuntime,
    B: fleetlet_engine::registry::ArtifactStore + Sync,
    St: fleetlet_engine::ports::StateStore,
{
    let pending = engine.pending_audit_events().to_vec();
    let Some(through) = pending.iter().map(|e| e.id).max() else {
        return;
    };
    match audit.record_all(pending.into_iter().map(audit_event).collect()) {
        Ok(_) => engine.ack_audit(through),
        Err(e @ fleetlet_audit::AuditError::Mirror { .. }) => {
            warn!(error = %e, "mirroring the audit log (the journal has the entries)");
            engine.ack_audit(through);
        }
        Err(e) => {
            warn!(error = %e, "recording the cycle's outcomes in the audit log; kept for the next cycle");
        }
    }
}

fn publish<S, R, B, St>(engine: &Engine<S, R, B, St>, shared: &Shared, state_dir: &Path) -> Status
where
    S: Source,
    R: WorkloadRuntime,
    B: fleetlet_engine::registry::ArtifactStore + Sync,
    St: fleetlet_engine::ports::StateStore,
{
    let status = engine.status();
    if let Err(e) = write_atomic(
        &state_dir.join(STATUS_FILE),
        &serde_json::to_vec_pretty(&status).unwrap_or_default(),
    ) {
        warn!(error = %e, "writing status.json");
    }
    shared.metrics.set_status(&status);
    *shared.status.write().unwrap_or_else(|e| e.into_inner()) = status.clone();
    status
}

/// Temp files of [`write_atomic`] are named `.<file>.<random>.tmp`, so a sweep at start can
/// tell them from everything else and readers of the state dir can ignore them.
const TEMP_SUFFIX: &str = ".tmp";

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Removes the lock files a killed fetch or import left in the Git mirror (without this, one
/// kill -9 mid-fetch would keep the site from following its repo ever after), and records an
/// import that was killed. Skipped (and said) while a hand-run import holds the site: its locks
/// and marker are live.
fn clear_mirror_locks(state_dir: &Path) {
    let mirror = state_dir.join("git");
    match crate::bundle::import::hold_if_idle(state_dir) {
        Ok(Some(held)) => {
            // Holding the import lock, an import killed while the agent was down is recorded
            // now, so the status shows it before the next import.
            if held.is_some() {
                crate::bundle::import::record_leftover(state_dir);
            }
            match fleetlet_git::clear_stale_locks(&mirror) {
                Ok(removed) => {
                    for path in removed {
                        warn!(file = %path.display(), "removed a lock file a killed Git write left in the mirror");
                    }
                }
                Err(e) => {
                    warn!(mirror = %mirror.display(), error = %e, "clearing stale lock files in the Git mirror")
                }
            }
        }
        Ok(None) => info!("an import is running: the Git mirror's lock files are left to it"),
        Err(e) => warn!(error = %e, "taking the import lock to clear the Git mirror's lock files"),
    }
}

/// Removes `.<file>.<random>.tmp` files a killed [`write_atomic`] left in `dir`.
fn sweep_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Ours, and `.tmpXXXXXX`: what agents before these names left (status, site key).
        let ours = name.starts_with('.')
            && name.ends_with(TEMP_SUFFIX)
            && name.len() > TEMP_SUFFIX.len() + 1;
        let older = name.len() == 10
            && name.starts_with(".tmp")
            && name[4..].bytes().all(|b| b.is_ascii_alphanumeric());
        if (ours || older) && entry.file_type().is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    info!(file = %entry.path().display(), "removed a temp file left by a killed write")
                }
                Err(e) => {
                    warn!(file = %entry.path().display(), error = %e, "removing a stale temp file")
                }
            }
        }
    }
}

fn watch_repo(
    path: &Path,
    state_dir: &Path,
    tx: Sender<Trigger>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    // Our own writes (a state dir inside the repo) must not trigger cycles.
    let state_dir = state_dir
        .canonicalize()
        .unwrap_or_else(|_| state_dir.to_path_buf());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !ev.kind.is_access()
            && !ev.paths.iter().all(|p| p.starts_with(&state_dir))
        {
            let _ = tx.send(Trigger::Changed);
        }
    })
    .map_err(|e| warn!(error = %e, "cannot watch the fleet repo; relying on polling"))
    .ok()?;
    match watcher.watch(path, RecursiveMode::Recursive) {
        Ok(()) => {
            info!(path = %path.display(), "watching the local fleet repo for changes");
            Some(watcher)
        }
        Err(e) => {
            warn!(error = %e, path = %path.display(), "cannot watch the fleet repo; relying on polling");
            None
        }
    }
}

async fn watch_signals(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
    tx: Sender<Trigger>,
    bundles: std::path::PathBuf,
) {
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    // An import under way cannot be cut short; if it outlasts the stop timeout the kill that
    // follows must not count against the bundle.
    match crate::bundle::attempt::note_stop(&bundles) {
        Ok(true) => info!("stopping during a bundle import: it finishes first"),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "noting the stop for the import under way"),
    }
    let _ = tx.send(Trigger::Shutdown);
    // An operator who signals again does not want to wait for the drain.
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    warn!("second signal: exiting without draining");
    std::process::exit(1);
}

async fn serve_http(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: Arc<tokio::sync::Notify>,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(shared);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.notified().await })
        .await;
    if let Err(e) = result {
        warn!(error = %e, "status endpoint stopped");
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn status(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let status = s.status.read().unwrap_or_else(|e| e.into_inner()).clone();
    axum::Json(status)
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_leave_nothing_but_the_file_and_the_sweep_takes_only_their_temps() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join(STATUS_FILE);
        write_atomic(&status, b"{}").unwrap();
        write_atomic(&status, b"{\"a\":1}").unwrap();
        assert_eq!(std::fs::read(&status).unwrap(), b"{\"a\":1}");
        let names = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(dir.path()), [STATUS_FILE]);

        // What a kill -9 between create and rename leaves, beside files the sweep must keep.
        for name in [
            ".status.json.Ab12Cd.tmp",
            ".tmpQx81Zz",
            ".lock",
            "site.key",
            "x.tmp",
            ".tmp",
            ".tmpQx81Zz9",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        // A directory of that shape is not a temp file (a state dir's `.tmpXXXXXX` scratch).
        std::fs::create_dir(dir.path().join(".tmpDir123")).unwrap();
        sweep_temp_files(dir.path());
        assert_eq!(
            names(dir.path()),
            [
                ".lock",
                ".tmp",
                ".tmpDir123",
                ".tmpQx81Zz9",
                "site.key",
                STATUS_FILE,
                "x.tmp"
            ]
        );
    }
}
