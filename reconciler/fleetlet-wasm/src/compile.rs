//! The shared wasmtime `Engine` and the on-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes seconds on an edge box; loading a precompiled one
//! is a memory map. The cache key is the component's sha256 (re-checked against the bytes) plus
//! the engine's compatibility hash, so an agent upgrade or a config change never loads code
//! compiled for another engine. Files are written to a temp name, fsynced and renamed, so a
//! crash never leaves a half-written `.cwasm` under a real name.

use crate::PoolingOptions;
use fleetlet_core::Digest;
use sha2::{Digest as _, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The engine every workload shares: component model, async, epoch interruption.
pub(crate) fn build_engine(pooling: Option<&PoolingOptions>) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    if let Some(p) = pooling {
        let mut pc = PoolingAllocationConfig::new();
        pc.total_component_instances(p.max_instances)
            .total_core_instances(p.max_instances)
            .total_memories(p.max_instances)
            .total_tables(p.max_instances)
            .total_stacks(p.max_instances)
            .max_memory_size(usize::try_from(p.max_memory_per_instance).unwrap_or(usize::MAX));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pc));
    }
    Engine::new(&config)
}

/// Counters of the compiled-component cache, for tests and `/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Components compiled by this host (cache misses).
    pub compiled: u64,
    /// Components loaded from `<compiled_cache_dir>` without compiling.
    pub loaded_from_cache: u64,
}

pub(crate) struct CompiledCache {
    dir: PathBuf,
    compat: String,
    compiled: AtomicU64,
    loaded: AtomicU64,
    tmp_counter: AtomicU64,
}

/// Feeds `Hash` output into sha256: unlike `DefaultHasher`, stable across Rust releases.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        // Never used: the full digest is read from the inner state instead.
        0
    }
}

impl CompiledCache {
    pub fn new(engine: &Engine, dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut h = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat = hex::encode(&h.0.finalize()[..8]);
        Ok(CompiledCache {
            dir,
            compat,
            compiled: AtomicU64::new(0),
            loaded: AtomicU64::new(0),
            tmp_counter: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> HostStats {
        HostStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            loaded_from_cache: self.loaded.load(Ordering::Relaxed),
        }
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", digest.hex(), self.compat))
    }

    /// The compiled component for `bytes`, which must hash to `digest`. Errors are messages
    /// about the component (not the host): a cache write failure only logs.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<Component, String> {
        let actual = Digest::of(bytes);
        if actual != *digest {
            return Err(format!(
                "component bytes have digest {actual}, expected {digest}"
            ));
        }
        let path = self.path(digest);
        if path.exists() {
            // SAFETY: `deserialize_file` trusts the file to be wasmtime's own output. Only this
            // cache writes into the directory (atomically, under a name bound to the verified
            // digest and this engine's compatibility hash); wasmtime still checks the header.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => {
                    self.loaded.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(path = %path.display(), "loaded compiled component from cache");
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unusable compiled component in cache; recompiling");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let started = std::time::Instant::now();
        let component = Component::new(engine, bytes)
            .map_err(|e| format!("component {} cannot be compiled: {e:#}", digest.short()))?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        tracing::info!(component = %digest.short(), elapsed_ms = started.elapsed().as_millis() as u64, "compiled component");
        match component.serialize() {
            Ok(code) => match self.store(&path, &code) {
                Ok(()) => {
                    // Run from the cache file, as after a restart: its code is a file mapping the
                    // kernel can reclaim, and the compiler's heap goes back to the OS.
                    drop((component, code));
                    release_heap();
                    // SAFETY: as above; the file was just written from wasmtime's own output.
                    return unsafe { Component::deserialize_file(engine, &path) }.map_err(|e| {
                        format!("loading compiled component {}: {e:#}", path.display())
                    });
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write compiled component to cache")
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot serialize compiled component"),
        }
        Ok(component)
    }

    fn store(&self, path: &Path, code: &[u8]) -> std::io::Result<()> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(code)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // Make the rename itself durable.
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Returns freed heap pages to the OS. Compiling a component allocates tens of MiB that glibc
/// would otherwise keep for the life of the agent.
fn release_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
