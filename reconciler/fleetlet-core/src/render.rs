//! Render: fleet + repo tree + site name → the site's desired state. Pure and deterministic: the
//! same inputs give the same value and the same content hash, whatever the order of files.

use crate::digest::Digest;
use crate::load::{Fleet, apply_override, target_matches};
use crate::model::{Capabilities, DriftMode, OnUnhealthy, Runtime, Site, SiteName, Workload};
use crate::reference::ArtifactRef;
use crate::tree::{RepoTree, normalize};
use crate::units::{ByteSize, DurationSpec, Port};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Limits applied when a workload does not set its own.
pub const DEFAULT_MEMORY: ByteSize = ByteSize(128 << 20);
pub const DEFAULT_CPU_TIME_PER_REQUEST: DurationSpec = DurationSpec(10_000);
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: u32 = 256;

/// Everything one site must run at one revision. Versioned: readers refuse what they do not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DesiredState {
    pub site: SiteName,
    /// The commit (or other revision id) this was rendered from.
    pub revision: String,
    /// Workloads by id (`app/workload`), sorted.
    pub workloads: BTreeMap<String, DesiredWorkload>,
    /// Hash of the workloads (not of the revision): two commits that change nothing for this site
    /// render the same hash.
    pub hash: Digest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DesiredWorkload {
    pub app: String,
    pub name: String,
    pub runtime: Runtime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3sSpec>,
    /// Hash of everything above: equal hashes mean nothing to change.
    pub hash: Digest,
}

impl DesiredWorkload {
    pub fn id(&self) -> String {
        workload_id(&self.app, &self.name)
    }
}

pub fn workload_id(app: &str, name: &str) -> String {
    format!("{app}/{name}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WasmSpec {
    pub component: ComponentRef,
    pub kind: WasmKind,
    pub env: BTreeMap<String, String>,
    pub limits: ResolvedLimits,
    pub capabilities: Capabilities,
}

/// Where a component's bytes come from, and the digest they must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentRef {
    /// A path in the fleet repo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// An OCI reference as the repo wrote it (`registry/repo:tag`, `…@sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// For an image: the reference pinned to the manifest digest it resolved to for this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// Digest of the component bytes (of an image: its `application/wasm` layer). Unset only for
    /// an image that is not pinned yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl ComponentRef {
    /// What to show a person: the digest when known, else where it comes from.
    pub fn describe(&self) -> String {
        match (&self.digest, &self.image, &self.path) {
            (Some(d), _, _) => d.to_string(),
            (None, Some(i), _) => i.clone(),
            (None, None, Some(p)) => p.clone(),
            _ => String::new(),
        }
    }
}

impl DesiredWorkload {
    /// Pins an image component to what the release resolved it to, and re-hashes.
    pub fn pin_component(&mut self, pinned: String, digest: Digest, size: u64) {
        if let Some(spec) = &mut self.wasm {
            spec.component.pinned = Some(pinned);
            spec.component.digest = Some(digest);
            spec.component.size = Some(size);
        }
        self.rehash();
    }

    /// Every container image a k3s workload's manifests name (sorted, once each).
    pub fn container_images(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .k3s
            .iter()
            .flat_map(|k| k.objects.iter())
            .flat_map(crate::k8s::images)
            .map(|(_, image)| image)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Rewrites the container images of a k3s workload's manifests to the pinned references in
    /// `pins` (image as written → `…@sha256:…`).
    pub fn pin_images(&mut self, pins: &std::collections::BTreeMap<String, String>) {
        if let Some(k) = &mut self.k3s {
            for o in &mut k.objects {
                crate::k8s::pin_images(o, pins);
            }
        }
        self.rehash();
    }

    fn rehash(&mut self) {
        self.hash = Digest::from_bytes([0; 32]);
        self.hash = Digest::of(&canonical_json(&*self));
    }
}

impl DesiredState {
    /// Recomputes the state's hash after workloads changed (e.g. were pinned).
    pub fn rehash(&mut self) {
        self.hash = Digest::of(&canonical_json(&self.workloads));
    }
}

/// Internally tagged (`{type: http, port: 8080}`) so YAML output needs no `!tags`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum WasmKind {
    Http { port: Port },
    Command { args: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResolvedLimits {
    pub memory: ByteSize,
    pub cpu_time_per_request: DurationSpec,
    pub max_concurrent_requests: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K3sSpec {
    pub manifests: String,
    /// The manifests' documents, in path order then document order.
    pub objects: Vec<serde_json::Value>,
    /// How long the objects may take to become Ready after an apply.
    pub health_timeout: DurationSpec,
    pub on_unhealthy: OnUnhealthy,
    pub drift: DriftMode,
}

/// Default time k3s objects have to become Ready after an apply: 5 minutes (Flux's default
/// health-check timeout is the apply interval; rollouts of edge images over slow links take
/// minutes).
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 5 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("site {0:?} is not defined in the fleet repo")]
    UnknownSite(String),
    #[error("{file}: app {app:?}, workload {workload:?}: {message}")]
    Workload {
        file: String,
        app: String,
        workload: String,
        message: String,
    },
    #[error("site {site:?}: port {port} is claimed by both {first} and {second}")]
    PortConflict {
        site: String,
        port: Port,
        first: String,
        second: String,
    },
}

/// Renders what `site` must run. Collects every problem rather than stopping at the first.
pub fn render(
    fleet: &Fleet,
    tree: &RepoTree,
    site: &str,
    revision: &str,
) -> Result<DesiredState, Vec<RenderError>> {
    let Some(site_doc) = fleet.sites.get(site) else {
        return Err(vec![RenderError::UnknownSite(site.to_string())]);
    };
    let site_doc = &site_doc.doc;
    let site_name: SiteName = site
        .parse()
        .map_err(|_| vec![RenderError::UnknownSite(site.to_string())])?;
    let mut errors = Vec::new();
    let mut workloads = BTreeMap::new();
    let mut ports: BTreeMap<Port, String> = BTreeMap::new();

    for (app_name, app) in &fleet.apps {
        let spec = &app.doc.spec;
        if !spec
            .targets
            .iter()
            .any(|t| target_matches(t, site, site_doc))
        {
            continue;
        }
        for base in &spec.workloads {
            let fail = |message: String| RenderError::Workload {
                file: app.file.clone(),
                app: app_name.clone(),
                workload: base.name.clone(),
                message,
            };
            let mut w = base.clone();
            for (i, o) in spec.overrides.iter().enumerate() {
                if !target_matches(&o.target(), site, site_doc) {
                    continue;
                }
                if let Some(patch) = o.workloads.get(&base.name) {
                    match apply_override(&w, patch) {
                        Ok(patched) => w = patched,
                        Err(m) => errors.push(fail(format!("spec.overrides[{i}]: {m}"))),
                    }
                }
            }
            match resolve(app_name, &w, site, site_doc, tree) {
                Ok(dw) => {
                    if let Some(WasmKind::Http { port }) = dw.wasm.as_ref().map(|s| &s.kind)
                        && let Some(first) = ports.insert(*port, dw.id())
                    {
                        errors.push(RenderError::PortConflict {
                            site: site.to_string(),
                            port: *port,
                            first,
                            second: dw.id(),
                        });
                    }
                    workloads.insert(dw.id(), dw);
                }
                Err(m) => errors.push(fail(m)),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let hash = Digest::of(&canonical_json(&workloads));
    Ok(DesiredState {
        site: site_name,
        revision: revision.to_string(),
        workloads,
        hash,
    })
}

/// Canonical JSON bytes: serde_json with BTreeMaps (sorted keys) and no whitespace.
pub fn canonical_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Going through Value sorts the keys of every object, whatever the struct order.
    let value = serde_json::to_value(v).expect("desired state serialises");
    serde_json::to_vec(&value).expect("a JSON value serialises")
}

fn resolve(
    app: &str,
    w: &Workload,
    site: &str,
    site_doc: &Site,
    tree: &RepoTree,
) -> Result<DesiredWorkload, String> {
    if w.runtime == Runtime::Wasm && w.run_on == Some(crate::model::RunOn::K3s) {
        return wasm_on_k3s(app, w, site, site_doc, tree);
    }
    if !site_doc.spec.runtimes.contains(&w.runtime) {
        return Err(format!(
            "site {site:?} does not offer runtime {}",
            w.runtime
        ));
    }
    let mut out = DesiredWorkload {
        app: app.to_string(),
        name: w.name.clone(),
        runtime: w.runtime,
        wasm: None,
        k3s: None,
        hash: Digest::from_bytes([0; 32]),
    };
    match w.runtime {
        Runtime::Wasm => {
            let source = w
                .component
                .as_deref()
                .ok_or("a wasm workload needs a component")?;
            let component = component_source(source, tree)?;
            let kind = match (&w.http, &w.command) {
                (Some(h), None) => WasmKind::Http { port: h.port },
                (None, Some(c)) => WasmKind::Command {
                    args: c
                        .args
                        .iter()
                        .map(|a| substitute(a, site, site_doc))
                        .collect::<Result<_, _>>()?,
                },
                _ => return Err("a wasm workload is either `http` or `command`".into()),
            };
            let env = w
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), substitute(v, site, site_doc)?)))
                .collect::<Result<_, String>>()?;
            let l = w.limits.clone().unwrap_or_default();
            out.wasm = Some(WasmSpec {
                component,
                kind,
                env,
                limits: ResolvedLimits {
                    memory: l.memory.unwrap_or(DEFAULT_MEMORY),
                    cpu_time_per_request: l
                        .cpu_time_per_request
                        .unwrap_or(DEFAULT_CPU_TIME_PER_REQUEST),
                    max_concurrent_requests: l
                        .max_concurrent_requests
                        .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS),
                },
                capabilities: w.capabilities.clone(),
            });
        }
        Runtime::K3s => {
            let dir = w
                .manifests
                .as_deref()
                .and_then(normalize)
                .ok_or("a k3s workload needs a manifests folder inside the repo")?;
            let mut objects = Vec::new();
            for (file, bytes) in tree
                .files_under(&dir)
                .filter(|(f, _)| f.ends_with(".yaml") || f.ends_with(".yml"))
            {
                let text = std::str::from_utf8(bytes).map_err(|_| format!("{file}: not UTF-8"))?;
                for de in serde_yaml::Deserializer::from_str(text) {
                    let v: serde_json::Value =
                        serde::Deserialize::deserialize(de).map_err(|e| format!("{file}: {e}"))?;
                    if !v.is_null() {
                        objects.push(v);
                    }
                }
            }
            let options = w.k3s.clone().unwrap_or_default();
            out.k3s = Some(K3sSpec {
                manifests: dir,
                objects,
                health_timeout: options
                    .health_timeout
                    .unwrap_or(DurationSpec(DEFAULT_HEALTH_TIMEOUT_MS)),
                on_unhealthy: options.on_unhealthy.unwrap_or(OnUnhealthy::Rollback),
                drift: options.drift.unwrap_or(DriftMode::Correct),
            });
        }
    }
    out.hash = Digest::of(&canonical_json(&out));
    Ok(out)
}

/// A wasm workload that runs as a pod on the site's k3s, through the Wasm RuntimeClass the
/// site declares: rendered as a Namespace (the app's), a Deployment and — for HTTP handlers —
/// a Service. The component image goes into the pod spec, so the engine verifies and pins it
/// like any container image of a k3s workload.
fn wasm_on_k3s(
    app: &str,
    w: &Workload,
    site: &str,
    site_doc: &Site,
    tree: &RepoTree,
) -> Result<DesiredWorkload, String> {
    if !site_doc.spec.runtimes.contains(&Runtime::K3s) {
        return Err(format!(
            "runOn: k3s, but site {site:?} does not offer runtime k3s"
        ));
    }
    let class = site_doc
        .spec
        .wasm_runtime_class
        .as_deref()
        .ok_or_else(|| format!("runOn: k3s, but site {site:?} declares no wasmRuntimeClass"))?;
    let source = w
        .component
        .as_deref()
        .ok_or("a wasm workload needs a component")?;
    let image = match component_source(source, tree)? {
        ComponentRef {
            image: Some(image), ..
        } if !image.starts_with("oci:") => image,
        _ => {
            return Err(format!(
                "runOn: k3s needs the component as an image in a registry (containerd pulls it), not {source:?}"
            ));
        }
    };
    let env: BTreeMap<String, String> = w
        .env
        .iter()
        .map(|(k, v)| Ok((k.clone(), substitute(v, site, site_doc)?)))
        .collect::<Result<_, String>>()?;
    let labels = serde_json::json!({
        "app.kubernetes.io/name": w.name,
        "fleetlet.dev/workload": format!("{app}.{}", w.name),
    });
    let mut container = serde_json::json!({
        "name": w.name,
        "image": image,
        "env": env.iter().map(|(k, v)| serde_json::json!({"name": k, "value": v})).collect::<Vec<_>>(),
    });
    if let Some(memory) = w.limits.as_ref().and_then(|l| l.memory) {
        container["resources"] = serde_json::json!({"limits": {"memory": memory.0.to_string()}});
    }
    let mut objects = vec![serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": app},
    })];
    match (&w.http, &w.command) {
        (Some(h), None) => {
            container["ports"] = serde_json::json!([{"containerPort": h.port.0}]);
            objects.push(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": w.name, "namespace": app},
                "spec": {"selector": labels, "ports": [{"port": h.port.0, "targetPort": h.port.0}]},
            }));
        }
        (None, Some(c)) => {
            let args = c
                .args
                .iter()
                .map(|a| substitute(a, site, site_doc))
                .collect::<Result<Vec<_>, _>>()?;
            container["args"] = serde_json::json!(args);
        }
        _ => return Err("a wasm workload is either `http` or `command`".into()),
    }
    objects.insert(
        1,
        serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": w.name, "namespace": app, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"runtimeClassName": class, "containers": [container]},
                },
            },
        }),
    );
    let options = w.k3s.clone().unwrap_or_default();
    let mut out = DesiredWorkload {
        app: app.to_string(),
        name: w.name.clone(),
        runtime: Runtime::K3s,
        wasm: None,
        k3s: Some(K3sSpec {
            manifests: format!("(wasm workload {} on RuntimeClass {class})", w.name),
            objects,
            health_timeout: options
                .health_timeout
                .unwrap_or(DurationSpec(DEFAULT_HEALTH_TIMEOUT_MS)),
            on_unhealthy: options.on_unhealthy.unwrap_or(OnUnhealthy::Rollback),
            drift: options.drift.unwrap_or(DriftMode::Correct),
        }),
        hash: Digest::from_bytes([0; 32]),
    };
    out.rehash();
    Ok(out)
}

/// A repo path that exists is a path (digest known now); otherwise an OCI reference (pinned by
/// the engine when the release is pulled).
pub fn component_source(source: &str, tree: &RepoTree) -> Result<ComponentRef, String> {
    if let Some(path) = normalize(source)
        && let Some(bytes) = tree.get(&path)
    {
        return Ok(ComponentRef {
            path: Some(path),
            image: None,
            pinned: None,
            digest: Some(Digest::of(bytes)),
            size: Some(bytes.len() as u64),
        });
    }
    if !source.contains(':') && !source.contains('@') {
        return Err(match normalize(source) {
            None => format!("{source:?} must be a relative path inside the repo"),
            Some(_) => format!("{source:?} does not exist in the repo"),
        });
    }
    match source.parse::<ArtifactRef>() {
        Ok(r) => Ok(ComponentRef {
            path: None,
            image: Some(r.to_string()),
            pinned: None,
            digest: None,
            size: None,
        }),
        Err(e) => Err(format!(
            "{source:?} is not a repo path nor a valid OCI reference: {}",
            e.reason
        )),
    }
}

/// Substitutes `${site.name}`, `${site.labels.KEY}` and `${values.KEY}`; `$${` is a literal `${`.
pub fn substitute(input: &str, site: &str, doc: &Site) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {input:?}"))?;
            let key = &r[..end];
            let value = if key == "site.name" {
                Some(site)
            } else if let Some(l) = key.strip_prefix("site.labels.") {
                doc.metadata.labels.get(l).map(String::as_str)
            } else if let Some(v) = key.strip_prefix("values.") {
                doc.spec.values.get(v).map(String::as_str)
            } else {
                None
            };
            let value = value.ok_or_else(|| {
                format!("${{{key}}} is not defined for site {site:?} (known: site.name, site.labels.*, values.*)")
            })?;
            out.push_str(value);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_fleet;

    const SITES: &str = "
apiVersion: fleetlet.dev/v1alpha1
kind: Site
metadata: {name: store-1, labels: {tier: store, region: eu}}
spec: {runtimes: [wasm], values: {city: Berlin}}
---
apiVersion: fleetlet.dev/v1alpha1
kind: Site
metadata: {name: store-2, labels: {tier: store, region: us}}
spec: {runtimes: [wasm]}
---
apiVersion: fleetlet.dev/v1alpha1
kind: Site
metadata: {name: tower-1, labels: {tier: tower}}
spec: {runtimes: [wasm]}
";

    const APP: &str = "
apiVersion: fleetlet.dev/v1alpha1
kind: App
metadata: {name: hello}
spec:
  targets: [{selector: {matchLabels: {tier: store}}}]
  workloads:
    - name: web
      runtime: wasm
      component: c/hello.wasm
      http: {port: 8080}
      env: {GREETING: 'hi from ${site.name}', PRICE: '$${literal}'}
      limits: {memory: 32Mi}
  overrides:
    - selector: {matchLabels: {region: eu}}
      workloads: {web: {env: {GREETING: 'hallo aus ${values.city}'}, http: {port: 9090}}}
    - sites: [store-1]
      workloads: {web: {limits: null}}
";

    fn tree(files: &[(&str, &str)]) -> RepoTree {
        let mut t = RepoTree::new();
        for (p, c) in files {
            t.insert(*p, *c);
        }
        t
    }

    fn rendered(t: &RepoTree, site: &str) -> Result<DesiredState, Vec<RenderError>> {
        let loaded = load_fleet(t);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        render(&loaded.fleet, t, site, "c0ffee")
    }

    #[test]
    fn applies_overrides_in_order_and_substitutes() {
        let t = tree(&[
            ("sites.yaml", SITES),
            ("app.yaml", APP),
            ("c/hello.wasm", "wasm-bytes"),
        ]);
        let eu = rendered(&t, "store-1").unwrap();
        let w = &eu.workloads["hello/web"];
        let spec = w.wasm.as_ref().unwrap();
        assert_eq!(spec.env["GREETING"], "hallo aus Berlin");
        assert_eq!(spec.env["PRICE"], "${literal}");
        assert_eq!(spec.kind, WasmKind::Http { port: Port(9090) });
        // The second override removed the limits: defaults apply.
        assert_eq!(spec.limits.memory, DEFAULT_MEMORY);
        assert_eq!(spec.component.digest, Some(Digest::of(b"wasm-bytes")));

        let us = rendered(&t, "store-2").unwrap();
        let spec = us.workloads["hello/web"].wasm.clone().unwrap();
        assert_eq!(spec.env["GREETING"], "hi from store-2");
        assert_eq!(spec.limits.memory, ByteSize(32 << 20));

        let tower = rendered(&t, "tower-1").unwrap();
        assert!(tower.workloads.is_empty());
        assert!(matches!(
            rendered(&t, "nowhere").unwrap_err()[0],
            RenderError::UnknownSite(_)
        ));
    }

    #[test]
    fn is_deterministic_and_hash_tracks_content() {
        let t1 = tree(&[
            ("sites.yaml", SITES),
            ("app.yaml", APP),
            ("c/hello.wasm", "v1"),
        ]);
        let a = rendered(&t1, "store-2").unwrap();
        let b = rendered(&t1, "store-2").unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        let mut unrelated = t1.clone();
        unrelated.insert("README.md", "docs");
        assert_eq!(rendered(&unrelated, "store-2").unwrap().hash, a.hash);
        let t2 = tree(&[
            ("sites.yaml", SITES),
            ("app.yaml", APP),
            ("c/hello.wasm", "v2"),
        ]);
        let c = rendered(&t2, "store-2").unwrap();
        assert_ne!(c.hash, a.hash);
        assert_ne!(c.workloads["hello/web"].hash, a.workloads["hello/web"].hash);
    }

    #[test]
    fn reports_port_conflicts_and_unknown_values() {
        let clash = APP
            .replace("name: hello", "name: hello2")
            .replace("${site.name}", "${values.nope}");
        let t = tree(&[
            ("sites.yaml", SITES),
            ("app.yaml", APP),
            ("b.yaml", &clash),
            ("c/hello.wasm", "x"),
        ]);
        let errs = rendered(&t, "store-2").unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|e| e.contains("${values.nope} is not defined")),
            "{text:?}"
        );
        let t = tree(&[
            ("sites.yaml", SITES),
            ("app.yaml", APP),
            ("b.yaml", &APP.replace("name: hello", "name: hello2")),
            ("c/hello.wasm", "x"),
        ]);
        let errs = rendered(&t, "store-2").unwrap_err();
        assert!(
            matches!(
                errs[0],
                RenderError::PortConflict {
                    port: Port(8080),
                    ..
                }
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn substitution_table() {
        let loaded = load_fleet(&tree(&[("sites.yaml", SITES)]));
        let site = &loaded.fleet.sites["store-1"].doc;
        for (input, want) in [
            ("plain", Ok("plain")),
            ("${site.name}", Ok("store-1")),
            ("${site.labels.region}-x", Ok("eu-x")),
            ("$5 and $${x}", Ok("$5 and ${x}")),
            ("${values.missing}", Err(())),
            ("${unclosed", Err(())),
        ] {
            assert_eq!(
                substitute(input, "store-1", site).ok().as_deref(),
                want.ok(),
                "{input}"
            );
        }
    }
}

#[cfg(test)]
mod wasm_on_k3s_tests {
    use super::*;
    use crate::load::load_fleet;

    fn render_site(site: &str, app: &str) -> Result<DesiredState, Vec<RenderError>> {
        let mut tree = RepoTree::new();
        tree.insert("sites.yaml", site);
        tree.insert("app.yaml", app);
        let loaded = load_fleet(&tree);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        render(&loaded.fleet, &tree, "edge-1", "c1")
    }

    const APP: &str = "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {name: shop}\nspec:\n  targets: [{sites: [edge-1]}]\n  workloads:\n    - {name: web, runtime: wasm, runOn: k3s, component: registry.local/shop/web:1.0, http: {port: 8080}, env: {SITE: '${site.name}'}, limits: {memory: 32Mi}, k3s: {healthTimeout: 2m}}\n";

    #[test]
    fn a_wasm_workload_on_k3s_renders_a_deployment_on_the_runtime_class() {
        let site = "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {name: edge-1}\nspec: {runtimes: [k3s], wasmRuntimeClass: wasmtime-spin}\n";
        let d = render_site(site, APP).unwrap();
        let w = &d.workloads["shop/web"];
        assert_eq!(w.runtime, Runtime::K3s);
        assert!(w.wasm.is_none());
        let k = w.k3s.as_ref().unwrap();
        assert_eq!(k.health_timeout.to_string(), "2m");
        let kinds: Vec<&str> = k
            .objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["Namespace", "Deployment", "Service"]);
        let pod = &k.objects[1]["spec"]["template"]["spec"];
        assert_eq!(pod["runtimeClassName"], "wasmtime-spin");
        assert_eq!(pod["containers"][0]["image"], "registry.local/shop/web:1.0");
        assert_eq!(pod["containers"][0]["env"][0]["value"], "edge-1");
        assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 8080);
        assert_eq!(
            pod["containers"][0]["resources"]["limits"]["memory"],
            "33554432"
        );
        assert_eq!(w.container_images(), ["registry.local/shop/web:1.0"]);
    }

    #[test]
    fn wasm_on_k3s_needs_a_runtime_class_and_a_registry_image() {
        let no_class = "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {name: edge-1}\nspec: {runtimes: [k3s]}\n";
        let mut tree = RepoTree::new();
        tree.insert("sites.yaml", no_class);
        tree.insert("app.yaml", APP);
        let loaded = load_fleet(&tree);
        let errors: Vec<String> = loaded.errors().map(|d| d.to_string()).collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("runOn") && e.contains("wasmRuntimeClass")),
            "{errors:?}"
        );
        let site = "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {name: edge-1}\nspec: {runtimes: [k3s], wasmRuntimeClass: spin}\n";
        let path_app = APP.replace("registry.local/shop/web:1.0", "c/web.wasm");
        let mut tree = RepoTree::new();
        tree.insert("sites.yaml", site);
        tree.insert("app.yaml", path_app.as_str());
        tree.insert("c/web.wasm", "\0asm");
        let loaded = load_fleet(&tree);
        let errs = render(&loaded.fleet, &tree, "edge-1", "c1").unwrap_err();
        assert!(
            errs[0]
                .to_string()
                .contains("needs the component as an image in a registry"),
            "{errs:?}"
        );
    }
}
