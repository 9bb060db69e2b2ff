//! The engine's k3s flows through the real adapter: apply → change → prune → drift (undone) →
//! a no-op cycle that writes nothing. Runs against the in-process stand-in always, and the
//! same flows against a real cluster when `FLEETLET_TEST_KUBECONFIG` names a kubeconfig (in a
//! namespace of its own, deleted at the end):
//!
//! ```sh
//! FLEETLET_TEST_KUBECONFIG=/etc/rancher/k3s/k3s.yaml \
//!     cargo test -p fleetlet-k3s --test flows -- --nocapture
//! ```

mod common;

use fleetlet_core::k8s::ObjectRef;
use fleetlet_core::render::DesiredWorkload;
use fleetlet_core::{ObservedWorkload, RepoTree};
use fleetlet_engine::cluster::Cluster;
use fleetlet_engine::ports::*;
use fleetlet_engine::{AgentState, CycleOutcome, Engine};
use fleetlet_k3s::{K3sCluster, K3sConfig};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Default)]
struct Source(Rc<RefCell<(u32, BTreeMap<String, String>)>>);

impl Source {
    fn commit(&self, files: &[(&str, String)]) {
        let mut s = self.0.borrow_mut();
        s.0 += 1;
        s.1 = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.clone()))
            .collect();
    }
}

impl fleetlet_engine::ports::Source for Source {
    fn poll(&mut self, _: Option<&str>) -> Result<Poll, SourceError> {
        Ok(Poll::Changed(Revision {
            commit: format!("c{}", self.0.borrow().0),
            reference: "refs/heads/main".into(),
            summary: String::new(),
            time: 0,
        }))
    }
    fn read_tree(&self, _: &str) -> Result<RepoTree, SourceError> {
        let mut t = RepoTree::new();
        for (p, c) in &self.0.borrow().1 {
            t.insert(p.as_str(), c.as_str());
        }
        Ok(t)
    }
    fn descends_from(&self, _: &str, _: &str) -> Result<bool, SourceError> {
        Ok(true)
    }
}

struct NoRuntime;
impl WorkloadRuntime for NoRuntime {
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
struct MemState(RefCell<Option<AgentState>>);
impl StateStore for MemState {
    fn load(&self) -> Result<Option<AgentState>, StateError> {
        Ok(self.0.borrow().clone())
    }
    fn save(&self, s: &AgentState) -> Result<(), StateError> {
        *self.0.borrow_mut() = Some(s.clone());
        Ok(())
    }
}

#[derive(Default)]
struct NoBlobs;
impl BlobStore for NoBlobs {
    fn put(&self, bytes: &[u8]) -> Result<fleetlet_core::Digest, StoreError> {
        Ok(fleetlet_core::Digest::of(bytes))
    }
    fn get(&self, _: &fleetlet_core::Digest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
}
impl fleetlet_engine::registry::ArtifactStore for NoBlobs {
    fn contains(&self, _: &fleetlet_core::Digest) -> bool {
        false
    }
    fn begin(
        &self,
        _: &fleetlet_core::Digest,
        _: u64,
    ) -> Result<Option<Box<dyn fleetlet_engine::registry::BlobUpload + '_>>, StoreError> {
        unreachable!("no images in these flows")
    }
    fn tag(&self, _: &str, _: &fleetlet_engine::registry::Descriptor) -> Result<(), StoreError> {
        Ok(())
    }
    fn collect_garbage(
        &self,
        _: &std::collections::BTreeSet<fleetlet_core::Digest>,
    ) -> Result<(usize, u64), StoreError> {
        Ok((0, 0))
    }
}

/// The adapter shared by the engine (boxed) and the test (to read back).
#[derive(Clone)]
struct Shared(Rc<K3sCluster>);
impl Cluster for Shared {
    fn apply(
        &self,
        o: &Value,
        options: fleetlet_engine::cluster::ApplyOptions,
    ) -> Result<Value, fleetlet_engine::cluster::ClusterError> {
        self.0.apply(o, options)
    }
    fn get(&self, r: &ObjectRef) -> Result<Option<Value>, fleetlet_engine::cluster::ClusterError> {
        self.0.get(r)
    }
    fn list(
        &self,
        a: &str,
        k: &str,
        s: &str,
    ) -> Result<Vec<Value>, fleetlet_engine::cluster::ClusterError> {
        self.0.list(a, k, s)
    }
    fn delete(&self, r: &ObjectRef) -> Result<bool, fleetlet_engine::cluster::ClusterError> {
        self.0.delete(r)
    }
    fn namespaced(
        &self,
        a: &str,
        k: &str,
    ) -> Result<Option<bool>, fleetlet_engine::cluster::ClusterError> {
        self.0.namespaced(a, k)
    }
}

fn site_and_app(app: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "site.yaml",
            "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {name: s1}\nspec: {runtimes: [k3s]}\n".into(),
        ),
        (
            "app.yaml",
            format!("apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {{name: {app}}}\nspec:\n  targets: [{{sites: [s1]}}]\n  workloads:\n    - {{name: web, runtime: k3s, manifests: k3s/web}}\n"),
        ),
    ]
}

fn cm(ns: &str, name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{greeting: {value}}}\n"
    )
}

fn get(cluster: &K3sCluster, ns: &str, name: &str) -> Option<Value> {
    cluster
        .get(&ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some(ns.into()),
            name: name.into(),
        })
        .unwrap()
}

/// The flows, for any cluster. `edit_by_hand` changes `.data.greeting` of a ConfigMap as
/// another field manager (as `kubectl edit` would).
fn flows(cluster: Rc<K3sCluster>, ns: &str, edit_by_hand: &dyn Fn(&str, &str)) {
    let source = Source::default();
    let mut engine = Engine::new(
        "s1".into(),
        source.clone(),
        NoRuntime,
        NoBlobs,
        MemState::default(),
    )
    .unwrap()
    .with_cluster(Box::new(Shared(cluster.clone())))
    .drift_interval(10);
    let namespace = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n");
    let mut files = site_and_app("shop");
    files.push(("k3s/web/ns.yaml", namespace.clone()));
    files.push(("k3s/web/a.yaml", cm(ns, "a", "hello")));
    files.push(("k3s/web/b.yaml", cm(ns, "b", "hello")));
    source.commit(&files);

    // 1. Apply: everything there, labelled, owned by fleetlet.
    let out = engine.reconcile(1000);
    assert!(
        matches!(out, CycleOutcome::Applied { .. }),
        "{out:?} {:?}",
        engine.state().last_error
    );
    let a = get(&cluster, ns, "a").expect("a applied");
    assert_eq!(a["metadata"]["labels"]["fleetlet.dev/app"], "shop");
    let managers: Vec<&str> = a["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"fleetlet"), "{managers:?}");
    assert_eq!(engine.status().workloads[0].state, "running");

    // 2. Change a, remove b: a updated, b pruned.
    let mut files = site_and_app("shop");
    files.push(("k3s/web/ns.yaml", namespace.clone()));
    files.push(("k3s/web/a.yaml", cm(ns, "a", "moin")));
    source.commit(&files);
    assert!(matches!(
        engine.reconcile(1001),
        CycleOutcome::Applied { .. }
    ));
    assert_eq!(get(&cluster, ns, "a").unwrap()["data"]["greeting"], "moin");
    assert!(get(&cluster, ns, "b").is_none(), "b pruned");

    // 3. Someone edits a by hand: the next drift check undoes it.
    edit_by_hand("a", "hacked");
    assert_eq!(
        get(&cluster, ns, "a").unwrap()["data"]["greeting"],
        "hacked"
    );
    engine.reconcile(1100);
    assert_eq!(get(&cluster, ns, "a").unwrap()["data"]["greeting"], "moin");
    let drift = engine.status().workloads[0]
        .drift
        .clone()
        .expect("drift recorded");
    assert_eq!((drift.detected, drift.corrected), (1, 1), "{drift:?}");

    // 4. Nothing changes: no writes, one read per kind at most.
    let before = cluster.requests();
    assert_eq!(engine.reconcile(1101), CycleOutcome::Unchanged);
    let after = cluster.requests();
    let delta =
        |verb: &str| after.get(verb).copied().unwrap_or(0) - before.get(verb).copied().unwrap_or(0);
    assert_eq!(
        delta("PATCH") + delta("DELETE") + delta("PATCH_DRY_RUN"),
        0,
        "{after:?}"
    );
    assert!(
        delta("LIST") <= 2,
        "Namespace and ConfigMap lists at most: {after:?}"
    );
}

#[test]
fn flows_against_the_stand_in() {
    let f = common::fixture();
    let standin = &f.standin;
    let cluster = Rc::new(f.cluster);
    flows(cluster, "shop", &|name, value| {
        let (code, body) = common::apply_as(
            standin,
            "kubectl-edit",
            &format!("/api/v1/namespaces/shop/configmaps/{name}"),
            true,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "shop"}, "data": {"greeting": value}}),
        );
        assert_eq!(code, 200, "{body}");
    });
}

#[test]
fn flows_against_a_real_cluster() {
    let Some(kubeconfig) = std::env::var_os("FLEETLET_TEST_KUBECONFIG") else {
        println!("skipped: set FLEETLET_TEST_KUBECONFIG to run against a real cluster");
        return;
    };
    let runtime = common::runtime();
    let cluster = Rc::new(
        K3sCluster::new(
            K3sConfig {
                kubeconfig: Some(kubeconfig.into()),
                timeout: Duration::from_secs(30),
            },
            runtime.handle().clone(),
        )
        .unwrap(),
    );
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ns = format!("fleetlet-flows-{}-{stamp}", std::process::id());
    let client = runtime.block_on(async {
        kube::Client::try_from(
            kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(
                    std::env::var_os("FLEETLET_TEST_KUBECONFIG").unwrap(),
                )
                .unwrap(),
                &Default::default(),
            )
            .await
            .unwrap(),
        )
        .unwrap()
    });
    let edit = |name: &str, value: &str| {
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client.clone(), &ns);
        let patch = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"greeting": value}});
        runtime
            .block_on(api.patch(
                name,
                &kube::api::PatchParams::apply("kubectl-edit").force(),
                &kube::api::Patch::Apply(patch),
            ))
            .unwrap();
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        flows(cluster.clone(), &ns, &edit)
    }));
    let _ = cluster.delete(&ObjectRef {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: ns.clone(),
    });
    let _ = cluster.delete(&ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: Some("fleetlet-system".into()),
        name: "fleetlet-inventory-shop".into(),
    });
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
