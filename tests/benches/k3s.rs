//! k3s apply benchmark (not a test: it prints figures).
//!
//!   cargo bench -p fleetlet-tests --bench k3s
//!
//! The engine in-process (a fleet repo in memory, a runtime that runs nothing, state in
//! memory) with the real adapter (`K3sCluster`, kube) against the in-process API-server
//! stand-in, one k3s app of 500 objects: 1 Namespace, 100 ConfigMaps, 100 Secrets,
//! 100 Services, 100 Deployments and 99 ServiceAccounts (the Deployments carry no container
//! image: images are pulled and pinned before the apply, and there is no registry here).
//! Prints the first apply's wall time and API requests by verb (the adapter's counters and the
//! stand-in's log), then the same for a no-op reconcile (nothing changed), against the target:
//! no write request and at most one read per kind. Env: BENCH_NOOP_CYCLES (default 5).

use fleetlet_engine::CycleOutcome;
use fleetlet_engine::cluster::{ApplyOptions, Cluster, ClusterError};
use fleetlet_k3s::standin::{RecordedRequest, StandIn};
use fleetlet_k3s::{K3sCluster, K3sConfig};
use fleetlet_store::OciStore;
use serde_json::Value;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

const PER_KIND: usize = 100;

/// The adapter shared between the engine and the benchmark (which reads its counters).
struct Shared(Rc<K3sCluster>);

impl Cluster for Shared {
    fn apply(&self, object: &Value, options: ApplyOptions) -> Result<Value, ClusterError> {
        self.0.apply(object, options)
    }
    fn get(&self, object: &fleetlet_core::k8s::ObjectRef) -> Result<Option<Value>, ClusterError> {
        self.0.get(object)
    }
    fn list(
        &self,
        api_version: &str,
        kind: &str,
        label_selector: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        self.0.list(api_version, kind, label_selector)
    }
    fn delete(&self, object: &fleetlet_core::k8s::ObjectRef) -> Result<bool, ClusterError> {
        self.0.delete(object)
    }
    fn namespaced(&self, api_version: &str, kind: &str) -> Result<Option<bool>, ClusterError> {
        self.0.namespaced(api_version, kind)
    }
}

/// The manifests: one file per kind, one document per object.
fn manifests() -> Vec<(String, String)> {
    let ns = "bench";
    let mut files = vec![(
        "k3s/big/00-namespace.yaml".to_string(),
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
    )];
    let docs =
        |f: &dyn Fn(usize) -> String, n: usize| (0..n).map(f).collect::<Vec<_>>().join("---\n");
    files.push((
        "k3s/big/configmaps.yaml".into(),
        docs(
            &|i| {
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}, namespace: {ns}}}\ndata: {{key: \"value {i}\", other: \"{}\"}}\n",
                    "x".repeat(64)
                )
            },
            PER_KIND,
        ),
    ));
    files.push((
        "k3s/big/secrets.yaml".into(),
        docs(
            &|i| {
                format!(
                    "apiVersion: v1\nkind: Secret\nmetadata: {{name: secret-{i}, namespace: {ns}}}\ntype: Opaque\nstringData: {{password: \"p{i}\"}}\n"
                )
            },
            PER_KIND,
        ),
    ));
    files.push((
        "k3s/big/services.yaml".into(),
        docs(
            &|i| {
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec:\n  selector: {{app: app-{i}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
                )
            },
            PER_KIND,
        ),
    ));
    files.push((
        "k3s/big/deployments.yaml".into(),
        docs(
            &|i| {
                format!(
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app-{i}, namespace: {ns}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: app-{i}}}}}\n  template:\n    metadata: {{labels: {{app: app-{i}}}}}\n    spec:\n      serviceAccountName: sa-{}\n      containers:\n        - name: app\n          ports: [{{containerPort: 8080}}]\n          env: [{{name: INDEX, value: \"{i}\"}}]\n",
                    i % (PER_KIND - 1)
                )
            },
            PER_KIND,
        ),
    ));
    files.push((
        "k3s/big/serviceaccounts.yaml".into(),
        docs(
            &|i| {
                format!(
                    "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa-{i}, namespace: {ns}}}\n"
                )
            },
            PER_KIND - 1,
        ),
    ));
    files
}

/// Requests of the stand-in's log by verb: DISCOVERY, LIST, GET (one object), PATCH_DRY_RUN,
/// PATCH, DELETE.
fn by_verb(log: &[RecordedRequest]) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for r in log {
        let verb = match r.method.as_str() {
            "PATCH" if r.param("dryRun") == Some("All") => "PATCH_DRY_RUN",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            "GET" if r.param("labelSelector").is_some() => "LIST",
            "GET" if r.path.split('/').filter(|s| !s.is_empty()).count() <= 3 => "DISCOVERY",
            "GET" => "GET",
            _ => "OTHER",
        };
        *out.entry(verb).or_default() += 1;
    }
    out
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn show<K: std::fmt::Display, V: std::fmt::Display>(m: &BTreeMap<K, V>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let noop_cycles: usize = std::env::var("BENCH_NOOP_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let standin = StandIn::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = Rc::new(
        K3sCluster::new(
            K3sConfig {
                kubeconfig: Some(standin.kubeconfig_path().to_path_buf()),
                timeout: Duration::from_secs(30),
            },
            rt.handle().clone(),
        )
        .unwrap(),
    );
    let state = tempfile::tempdir().unwrap();
    let store = OciStore::open(&state.path().join("oci")).unwrap();
    let files = manifests();
    let mut engine = fleetlet_engine::Engine::new(
        "s1".into(),
        fakes::Source::new(files),
        fakes::Runtime,
        store,
        fakes::State::default(),
    )
    .unwrap()
    .with_cluster(Box::new(Shared(cluster.clone())));

    // 1. First apply.
    standin.clear_requests();
    let before = cluster.requests();
    let t = Instant::now();
    let first = engine.reconcile(1);
    let first_s = t.elapsed().as_secs_f64();
    assert!(
        matches!(first, CycleOutcome::Applied { .. }),
        "{first:?}: {:?}",
        engine.state().last_error
    );
    let first_adapter = diff(&cluster.requests(), &before);
    let first_log = by_verb(&standin.requests());
    let objects = standin
        .objects()
        .iter()
        .filter(|o| o["metadata"]["labels"]["fleetlet.dev/app"] == "big")
        .count();
    assert_eq!(objects, 500, "every object applied");

    // 2. No-op reconciles (nothing changed; the drift check is not due).
    let mut noop_s = Vec::new();
    let mut worst_writes = 0;
    let mut worst_reads_per_kind = 0;
    let mut last_adapter = BTreeMap::new();
    let mut last_log = BTreeMap::new();
    let mut kinds = 0;
    for i in 0..noop_cycles {
        standin.clear_requests();
        let before = cluster.requests();
        let t = Instant::now();
        let outcome = engine.reconcile(2 + i as i64);
        noop_s.push(t.elapsed().as_secs_f64());
        assert_eq!(
            outcome,
            CycleOutcome::Unchanged,
            "{:?}",
            engine.state().last_error
        );
        let log = standin.requests();
        let mut reads: BTreeMap<&str, usize> = BTreeMap::new();
        for r in log.iter().filter(|r| r.method == "GET") {
            *reads.entry(r.path.as_str()).or_default() += 1;
        }
        kinds = kinds.max(reads.len());
        worst_reads_per_kind = worst_reads_per_kind.max(reads.values().copied().max().unwrap_or(0));
        worst_writes = worst_writes.max(log.iter().filter(|r| r.method != "GET").count());
        last_adapter = diff(&cluster.requests(), &before);
        last_log = by_verb(&log);
    }
    let mean = noop_s.iter().sum::<f64>() / noop_s.len() as f64;
    let max = noop_s.iter().copied().fold(0.0, f64::max);

    println!("k3s apply through the engine, K3sCluster (kube) -> in-process API-server stand-in:");
    println!(
        "  app of {objects} objects (1 Namespace, 100 ConfigMaps, 100 Secrets, 100 Services, 100 Deployments, 99 ServiceAccounts)"
    );
    println!(
        "  first apply (release + first heal, drift check included): {:>8.1} ms",
        first_s * 1e3
    );
    println!("    adapter requests:  {}", show(&first_adapter));
    println!("    stand-in log:      {}", show(&first_log));
    println!(
        "  no-op reconcile ({noop_cycles} cycles): mean {:>6.1} ms, max {:>6.1} ms",
        mean * 1e3,
        max * 1e3
    );
    println!("    adapter requests (last cycle): {}", show(&last_adapter));
    println!("    stand-in log (last cycle):     {}", show(&last_log));
    let met = worst_writes == 0 && worst_reads_per_kind <= 1;
    println!(
        "    writes per no-op cycle: {worst_writes} (max), reads per kind: {worst_reads_per_kind} (max, {kinds} kinds)   target: 0 writes, <= 1 read per kind: {}",
        if met { "met" } else { "MISSED" }
    );
}

/// Just enough of the other ports: a fleet repo in memory (site `s1` offering k3s, app `big`
/// with one k3s workload), a runtime that runs nothing, state in memory.
mod fakes {
    use fleetlet_core::render::DesiredWorkload;
    use fleetlet_core::{ObservedWorkload, RepoTree};
    use fleetlet_engine::AgentState;
    use fleetlet_engine::ports::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    pub struct Source(Vec<(String, String)>);

    impl Source {
        pub fn new(files: Vec<(String, String)>) -> Self {
            Source(files)
        }
    }

    impl fleetlet_engine::ports::Source for Source {
        fn poll(&mut self, _: Option<&str>) -> Result<Poll, SourceError> {
            Ok(Poll::Changed(Revision {
                commit: "c1".into(),
                reference: "refs/heads/main".into(),
                summary: String::new(),
                time: 0,
            }))
        }
        fn read_tree(&self, _: &str) -> Result<RepoTree, SourceError> {
            let mut t = RepoTree::new();
            t.insert(
                "site.yaml",
                "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {name: s1}\nspec: {runtimes: [k3s]}\n",
            );
            t.insert(
                "app.yaml",
                "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {name: big}\nspec:\n  targets: [{sites: [s1]}]\n  workloads:\n    - {name: all, runtime: k3s, manifests: k3s/big}\n",
            );
            for (path, text) in &self.0 {
                t.insert(path, text.clone());
            }
            Ok(t)
        }
        fn descends_from(&self, _: &str, _: &str) -> Result<bool, SourceError> {
            Ok(true)
        }
    }

    pub struct Runtime;

    impl WorkloadRuntime for Runtime {
        type Prepared = ();
        fn observe(&self) -> BTreeMap<String, ObservedWorkload> {
            BTreeMap::new()
        }
        fn prepare(&self, _: &DesiredWorkload, _: &[u8]) -> Result<(), RuntimeError> {
            Ok(())
        }
        fn activate(&self, _: ()) -> Result<(), RuntimeError> {
            Ok(())
        }
        fn stop(&self, _: &str) -> Result<(), RuntimeError> {
            Ok(())
        }
    }

    #[derive(Default)]
    pub struct State(RefCell<Option<AgentState>>);

    impl StateStore for State {
        fn load(&self) -> Result<Option<AgentState>, StateError> {
            Ok(self.0.borrow().clone())
        }
        fn save(&self, s: &AgentState) -> Result<(), StateError> {
            *self.0.borrow_mut() = Some(s.clone());
            Ok(())
        }
    }
}
