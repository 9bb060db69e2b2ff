//! `fleetlet`: the binary. CLI parsing, config, wiring of adapters into the engine, and the
//! agent's HTTP endpoint. Errors are `anyhow` here, with context naming what was being done.

mod agent;
mod audit_cmd;
mod bundle;
mod cache_cmd;
mod config;
mod fs_tree;
mod inbox;
mod metrics;
mod oci_cmd;
mod progress;
mod schema;
mod site_key;
mod trust_cmd;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use fleetlet_core::load::load_fleet;
use fleetlet_core::{RepoTree, Severity, render};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fleetlet",
    version,
    about = "A pull-based GitOps agent for edge fleets",
    propagate_version = true
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "FLEETLET_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Artifacts, blobs, sizes, and which releases use them.
    Ls,
    /// Re-hash every blob; remove (and name) each corrupt one, so the next pull repairs it.
    /// Exit 1 when any was corrupt.
    Verify,
    /// Remove blobs that none of the recorded releases uses (and that are older than 15 min).
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print this site's public key as a line for the fleet's site-keys file (made at first
    /// use).
    SiteKey,
    /// The entries of this site's audit log.
    Log {
        /// Only entries from this time on (RFC 3339 or Unix seconds).
        #[arg(long)]
        since: Option<String>,
        /// Only entries about this release: a commit (7+ characters) or a tag.
        #[arg(long)]
        release: Option<String>,
    },
    /// Recompute the chain, check every checkpoint's signature and the journal against its
    /// mirror, and re-verify the recorded artifact signatures from cached material (with
    /// --config). Exit 1 naming the first bad entry.
    Verify {
        /// The site's public key as the fleet keeps it (PEM), rather than the copy beside the
        /// log.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Write the log to a portable file signed with the site key (a container `fleetlet
    /// audit report` reads; `fleetlet bundle inspect` shows its head).
    Export {
        #[arg(long)]
        out: PathBuf,
    },
    /// Merge many sites' exports and answer, for one release: which sites ran it, from when to
    /// when, with which digests signed by whom, and which never did (and when each was last
    /// heard from). Exit 1 when any export fails its checks.
    Report {
        /// A commit (7+ hex digits) or a tag.
        #[arg(long)]
        release: String,
        /// A folder of export files.
        #[arg(long)]
        exports: PathBuf,
        /// Lines `<site> <base64 public key>`, as `fleetlet audit site-key` prints them.
        #[arg(long)]
        site_keys: PathBuf,
        /// The same as `-o` (kept for scripts written before `-o html`).
        #[arg(long = "format", short = 'f', value_enum, hide = true)]
        format: Option<ReportFormat>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Yaml,
    Html,
}

#[derive(Subcommand)]
pub enum BundleCommand {
    /// Pack a release for air-gapped sites: the Git objects to reach it, every artifact the
    /// selected sites need with its signatures, signed with the operator's key. Deterministic.
    Create {
        /// The fleet repo: a path or a Git URL.
        #[arg(long)]
        repo: String,
        /// Branch or tag of the release.
        #[arg(long, default_value = "main")]
        rev: String,
        /// A site to carry the release to; repeatable.
        #[arg(long = "site", required_unless_present = "selector")]
        sites: Vec<String>,
        /// Sites whose labels match all of `key=value,...`.
        #[arg(long)]
        selector: Option<String>,
        /// Make a delta: only what changed after this commit (the sites must have it).
        #[arg(long)]
        since: Option<String>,
        /// Leave out blobs a site already has: its inventory, or the status file from
        /// `fleetlet bundle export-status`.
        #[arg(long)]
        site_inventory: Option<PathBuf>,
        /// The operator's private key (`fleetlet keygen`); passphrase from FLEETLET_PASSWORD.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Split into FILE.part-001, -002, … of at most this size (e.g. 4Gi for FAT32 media).
        #[arg(long, value_parser = fleetlet_core::units::ByteSize::parse)]
        max_size: Option<fleetlet_core::units::ByteSize>,
        /// The branch the sites see the release on (default: --rev when it is a branch, else main).
        #[arg(long)]
        branch: Option<String>,
        /// os/arch[/variant] of the sites (default: this machine's).
        #[arg(long)]
        platform: Option<String>,
        /// Agent config whose `registries` section (credentials, CAs) to use.
        #[arg(long, short, env = "FLEETLET_CONFIG")]
        config: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Show what a bundle or status file carries, for which sites, signed by whom.
    Inspect {
        /// The file, or every part of a split bundle.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Verify the signature against this public key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Verify the signature against this agent config's bundle signers.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Verify a bundle against this site's trust policy and make its release the site's next
    /// one — all of it or nothing. Exit 1 when it is rejected.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The site's agent config (its trust roots decide what is accepted).
        #[arg(long, short, env = "FLEETLET_CONFIG", default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
        /// Override the config's state dir.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Write this site's status and import records, signed with the site key, for a technician
    /// to carry back.
    ExportStatus {
        #[arg(long)]
        out: PathBuf,
        /// Only records from this time on (RFC 3339 or Unix seconds).
        #[arg(long)]
        since: Option<String>,
        /// The site's agent config (default /etc/fleetlet/agent.yaml, unless --state-dir is
        /// given: then the config must be named, as it names the site).
        #[arg(long, short, env = "FLEETLET_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the site agent: pull the fleet repo, render this site, run its workloads.
    Agent {
        #[arg(long, short, env = "FLEETLET_CONFIG", default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a fleet repo (a directory) and list every problem; exit 1 when there is any error.
    Validate {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Print the desired state of one site.
    Render {
        /// A directory (its files as they are), or a Git repo path/URL when --rev is given.
        #[arg(long)]
        repo: String,
        /// Branch or tag to render (reads the repo through Git).
        #[arg(long)]
        rev: Option<String>,
        #[arg(long)]
        site: String,
        /// Agent config whose `registries` section is used to pin image components to digests.
        #[arg(long, short, env = "FLEETLET_CONFIG")]
        config: Option<PathBuf>,
        /// Do not contact registries: show image components as written, unpinned.
        #[arg(long)]
        no_pin: bool,
        #[arg(short, long, value_enum, default_value = "yaml")]
        output: Output,
    },
    /// Show what runs on this site, from which commit, the last error and the last sync.
    Status {
        #[arg(long, conflicts_with = "config")]
        state_dir: Option<PathBuf>,
        #[arg(long, short, env = "FLEETLET_CONFIG")]
        config: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Publish a Wasm component as an OCI artifact (CNCF Wasm layout) and print its digest.
    Push {
        /// The component (`.wasm`).
        file: PathBuf,
        /// `registry/repo:tag`, or `oci:PATH:TAG` for a local OCI layout.
        reference: String,
        /// Agent config whose `registries` section (credentials, CAs) to use.
        #[arg(long, short, env = "FLEETLET_CONFIG")]
        config: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Pull an image or component into the site's artifact store by hand.
    Pull {
        reference: String,
        #[arg(long, conflicts_with = "config")]
        state_dir: Option<PathBuf>,
        #[arg(long, short, env = "FLEETLET_CONFIG")]
        config: Option<PathBuf>,
        /// os/arch[/variant] to pick from an index (default: this machine's).
        #[arg(long)]
        platform: Option<String>,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The site's artifact store: list, verify, collect garbage.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
        #[arg(long, global = true, conflicts_with = "config")]
        state_dir: Option<PathBuf>,
        #[arg(long, short, global = true, env = "FLEETLET_CONFIG")]
        config: Option<PathBuf>,
        #[arg(short, long, global = true, value_enum, default_value = "text")]
        output: Output,
    },
    /// Make a signing key pair (ECDSA P-256, cosign's format): PREFIX.key, encrypted with a
    /// passphrase (FLEETLET_PASSWORD or COSIGN_PASSWORD, else asked), and PREFIX.pub.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, default_value = "cosign")]
        out: PathBuf,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Sign an artifact with a private key (cosign-compatible) and push the signature beside it
    /// (`sha256-<hex>.sig`), keeping any signatures already there.
    Sign {
        /// `registry/repo:tag`, `registry/repo@sha256:…`, or `oci:PATH:TAG`.
        reference: String,
        /// The private key (`fleetlet keygen` or `cosign generate-key-pair`).
        #[arg(long)]
        key: PathBuf,
        /// An annotation in the signed payload (`-a env=prod`); repeatable.
        #[arg(short = 'a', long = "annotation")]
        annotations: Vec<String>,
        /// Agent config whose `registries` section (credentials, CAs) to use.
        #[arg(long, short, env = "FLEETLET_CONFIG")]
        config: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Verify an artifact's signatures against a public key or a site's trust policy; exit 1
    /// with the reasons when it does not pass.
    Verify {
        reference: String,
        /// A public key (PEM).
        #[arg(long, conflicts_with = "policy", required_unless_present = "policy")]
        key: Option<PathBuf>,
        /// An agent config: its `trust` policy and its `registries` access.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// With --key: an annotation the signed payload must carry; repeatable.
        #[arg(short = 'a', long = "annotation", requires = "key")]
        annotations: Vec<String>,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The site's tamper-evident audit log: what ran, when, signed by whom.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        #[arg(long, global = true, conflicts_with = "config")]
        state_dir: Option<PathBuf>,
        #[arg(long, short, global = true, env = "FLEETLET_CONFIG")]
        config: Option<PathBuf>,
        /// text, json or yaml; html too for `audit report`.
        #[arg(short, long, global = true, value_enum, default_value = "text")]
        output: ReportFormat,
    },
    /// Air-gap sync bundles: create, inspect, import; carry status back.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Write the JSON Schemas of every document kind.
    Schemas {
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let result = match cli.command {
        Command::Agent { config } => match config::AgentConfig::load(&config) {
            Ok(cfg) => {
                // Trust roots are part of the config: a policy that cannot work is a usage error
                // too, found before anything is created on disk.
                let policy =
                    match fleetlet_verify::policy::TrustPolicy::load(&cfg.trust, Path::new("")) {
                        Ok(p) => p,
                        Err(e) => {
                            eprintln!("error: agent config {}: {e}", config.display());
                            return ExitCode::from(2);
                        }
                    };
                agent::run(cfg, policy).map(|_| true)
            }
            Err(e) => {
                // A config the agent cannot use is a usage error (exit 2), not a failed run.
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        },
        Command::Validate { repo, output } => validate(&repo, output),
        Command::Render {
            repo,
            rev,
            site,
            config,
            no_pin,
            output,
        } => render_cmd(
            &repo,
            rev.as_deref(),
            &site,
            (!no_pin).then_some(config.as_deref()),
            output,
        ),
        Command::Status {
            state_dir,
            config,
            output,
        } => status_cmd(state_dir, config, output),
        Command::Cache {
            command,
            state_dir,
            config,
            output,
        } => resolve_state_dir(state_dir, config).and_then(|dir| match command {
            CacheCommand::Ls => cache_cmd::ls(&dir, output),
            CacheCommand::Verify => cache_cmd::verify(&dir, output),
            CacheCommand::Gc { dry_run } => cache_cmd::gc(&dir, dry_run, output),
        }),
        Command::Push {
            file,
            reference,
            config,
            output,
        } => oci_cmd::push(&file, &reference, config.as_deref(), output),
        Command::Pull {
            reference,
            state_dir,
            config,
            platform,
            output,
        } => resolve_state_dir(state_dir, config.clone()).and_then(|dir| {
            oci_cmd::pull_cmd(
                &reference,
                dir,
                config.as_deref(),
                platform.as_deref(),
                output,
            )
        }),
        Command::Keygen { out, output } => trust_cmd::keygen(&out, output),
        Command::Sign {
            reference,
            key,
            annotations,
            config,
            output,
        } => trust_cmd::sign(&reference, &key, &annotations, config.as_deref(), output),
        Command::Verify {
            reference,
            key,
            policy,
            annotations,
            output,
        } => trust_cmd::verify(
            &reference,
            key.as_deref(),
            policy.as_deref(),
            &annotations,
            output,
        ),
        Command::Bundle { command } => bundle::cli::run(command),
        Command::Audit {
            command,
            state_dir,
            config,
            output,
        } => audit(command, state_dir, config, output),
        Command::Schemas { out } => write_schemas(&out).map(|_| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},cranelift_codegen=warn,wasmtime_cranelift=warn,sled=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A command used wrongly (a config or policy that cannot work): exit 2, not 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn print_value<T: serde::Serialize>(v: &T, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json | Output::Text => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(v)?),
    }
    Ok(())
}

fn validate(repo: &Path, output: Output) -> anyhow::Result<bool> {
    let tree = fs_tree::read_dir_tree(repo)?;
    let loaded = load_fleet(&tree);
    let mut diags = loaded.diagnostics.clone();
    // Rendering every site finds what only shows per site (port clashes, undefined values).
    if !loaded.has_errors() {
        for name in loaded.fleet.sites.keys() {
            if let Err(errs) = render(&loaded.fleet, &tree, name, "working-tree") {
                diags.extend(errs.into_iter().map(|e| fleetlet_core::Diagnostic {
                    file: String::new(),
                    line: 0,
                    field: String::new(),
                    severity: Severity::Error,
                    message: e.to_string(),
                }));
            }
        }
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    match output {
        Output::Text => {
            for d in &diags {
                if d.file.is_empty() {
                    println!("{}", d.message);
                } else {
                    println!("{d}");
                }
            }
            let warnings = diags.len() - errors;
            if errors == 0 {
                println!(
                    "ok: {} site(s), {} app(s), {warnings} warning(s)",
                    loaded.fleet.sites.len(),
                    loaded.fleet.apps.len()
                );
            } else {
                println!("{errors} error(s), {warnings} warning(s)");
            }
        }
        o => print_value(&diags, o)?,
    }
    Ok(errors == 0)
}

/// `pin`: `None` leaves images unpinned; `Some(config)` pins them through registries.
fn render_cmd(
    repo: &str,
    rev: Option<&str>,
    site: &str,
    pin: Option<Option<&Path>>,
    output: Output,
) -> anyhow::Result<bool> {
    let (tree, revision) = match rev {
        None if Path::new(repo).is_dir() => (
            fs_tree::read_dir_tree(Path::new(repo))?,
            "working-tree".to_string(),
        ),
        _ => agent::read_git_tree(repo, rev.unwrap_or("main"))?,
    };
    render_tree(&tree, site, &revision, pin, output)
}

fn render_tree(
    tree: &RepoTree,
    site: &str,
    revision: &str,
    pin: Option<Option<&Path>>,
    output: Output,
) -> anyhow::Result<bool> {
    let loaded = load_fleet(tree);
    if loaded.has_errors() {
        for d in loaded.errors() {
            eprintln!("{d}");
        }
        bail!("the fleet repo at {revision} is invalid: run `fleetlet validate`");
    }
    match render(&loaded.fleet, tree, site, revision) {
        Ok(mut desired) => {
            if let Some(config) = pin {
                oci_cmd::pin_images(&mut desired, config)?;
            }
            print_value(
                &desired,
                if output == Output::Text {
                    Output::Yaml
                } else {
                    output
                },
            )?;
            Ok(true)
        }
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            Ok(false)
        }
    }
}

fn resolve_state_dir(
    state_dir: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
    Ok(
        match (state_dir, config.or_else(config::installed_config)) {
            (Some(d), _) => d,
            (None, Some(c)) => config::AgentConfig::load(&c)?.state_dir,
            (None, None) => PathBuf::from("/var/lib/fleetlet"),
        },
    )
}

fn status_cmd(
    state_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    output: Output,
) -> anyhow::Result<bool> {
    let dir = resolve_state_dir(state_dir, config)?;
    let path = dir.join(agent::STATUS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (has the agent run with this state dir?)",
            path.display()
        )
    })?;
    let status: fleetlet_engine::Status =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    // Sites fed by sync bundles: the last import, accepted or not (its reason is what a
    // technician needs on the spot).
    let last_import = bundle::import::read_records(&dir, None).pop();
    if output != Output::Text {
        let mut value = serde_json::to_value(&status)?;
        if let (Some(r), Some(map)) = (&last_import, value.as_object_mut()) {
            map.insert("lastImport".into(), serde_json::to_value(r)?);
        }
        print_value(&value, output)?;
        return Ok(status.last_error.is_none());
    }
    let time = |t: Option<i64>| t.map(agent::format_time).unwrap_or_else(|| "never".into());
    println!("site:            {}", status.site);
    match &status.applied_commit {
        Some(c) => println!(
            "applied:         {c} \"{}\" at {}",
            status.applied_summary.as_deref().unwrap_or(""),
            time(status.applied_at)
        ),
        None => println!("applied:         nothing yet"),
    }
    for signer in &status.commit_signers {
        println!("  signed by      {signer}");
    }
    println!(
        "last-known-good: {}",
        status.last_known_good_commit.as_deref().unwrap_or("none")
    );
    println!(
        "last seen:       {}",
        status.last_seen_commit.as_deref().unwrap_or("none")
    );
    println!("last sync:       {}", time(status.last_sync));
    if let Some(stale) = &status.stale_source {
        println!("STALE SOURCE:    {stale}");
    }
    if let Some(r) = &last_import {
        println!(
            "last bundle:     {} {} at {}{}",
            r.outcome,
            r.files.join(", "),
            agent::format_time(r.at),
            r.reason
                .as_deref()
                .or(r.commit.as_deref())
                .map(|t| format!(": {}", t.lines().next().unwrap_or(t)))
                .unwrap_or_default()
        );
    }
    match &status.last_error {
        Some(e) => {
            println!(
                "last error:      [{:?}] {} ({}{})",
                e.stage,
                e.message,
                time(Some(e.at)),
                e.commit
                    .as_deref()
                    .map(|c| format!(", commit {c}"))
                    .unwrap_or_default()
            );
            for d in &e.details {
                println!("                 {d}");
            }
        }
        None => println!("last error:      none"),
    }
    println!("workloads:");
    for w in &status.workloads {
        let port = w.port.map(|p| format!(" :{p}")).unwrap_or_default();
        let reason = w
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        println!(
            "  {:<32} {:<5} {:<11}{port} {}{reason}",
            w.id, w.runtime, w.state, w.artifact
        );
        for signer in &w.signers {
            println!("  {:<32} signed by {signer}", "");
        }
        if let Some(held) = &w.held {
            println!(
                "  {:<32} HELD: the commit's version failed verification: {held}",
                ""
            );
        }
    }
    Ok(status.last_error.is_none())
}

fn audit(
    command: AuditCommand,
    state_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    report_format: ReportFormat,
) -> anyhow::Result<bool> {
    // html is a rendering of the report only; every other audit command prints data.
    let output = match (report_format, &command) {
        (_, AuditCommand::Report { .. }) | (ReportFormat::Text, _) => Output::Text,
        (ReportFormat::Json, _) => Output::Json,
        (ReportFormat::Yaml, _) => Output::Yaml,
        (ReportFormat::Html, _) => {
            return Err(UsageError("-o html is only for `fleetlet audit report`".into()).into());
        }
    };
    // On a site, the installed config names the site and its state dir (a report needs none).
    let config = match (&state_dir, &command) {
        (Some(_), _) | (_, AuditCommand::Report { .. }) => config,
        (None, _) => config.or_else(config::installed_config),
    };
    let cfg = config
        .as_deref()
        .map(config::AgentConfig::load)
        .transpose()?;
    let dir = match (&state_dir, &cfg) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => c.state_dir.clone(),
        (None, None) => PathBuf::from("/var/lib/fleetlet"),
    };
    match command {
        AuditCommand::SiteKey => {
            let site = cfg
                .as_ref()
                .map(|c| c.site.to_string())
                .ok_or_else(|| UsageError("give --config: the site's name is in it".into()))?;
            audit_cmd::site_key(&dir, &site, output)
        }
        AuditCommand::Log { since, release } => {
            let since = since.as_deref().map(bundle::cli::parse_time).transpose()?;
            audit_cmd::log(&dir, since, release.as_deref(), output)
        }
        AuditCommand::Export { out } => {
            let site = cfg
                .as_ref()
                .map(|c| c.site.to_string())
                .ok_or_else(|| UsageError("give --config: the site's name is in it".into()))?;
            audit_cmd::export(&dir, &site, &out, output)
        }
        AuditCommand::Report {
            release,
            exports,
            site_keys,
            format,
        } => audit_cmd::report(
            &release,
            &exports,
            &site_keys,
            format.unwrap_or(report_format),
        ),
        AuditCommand::Verify { key } => {
            let policy = cfg
                .as_ref()
                .map(|c| fleetlet_verify::policy::TrustPolicy::load(&c.trust, Path::new("")))
                .transpose()?;
            let site = cfg.as_ref().map(|c| c.site.to_string());
            audit_cmd::verify(
                &dir,
                site.as_deref(),
                key.as_deref(),
                policy.as_ref(),
                output,
            )
        }
    }
}

fn write_schemas(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, text) in schema::all() {
        std::fs::write(out.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}
