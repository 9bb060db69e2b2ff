//! Load and validate a fleet repo from a [`RepoTree`]: every YAML file is parsed, every fleetlet
//! document checked field by field, then across documents. All problems are collected, each
//! naming file, line and field, so one run of `fleetlet validate` shows everything.

use crate::lines::{LineIndex, index_documents};
use crate::model::{
    API_GROUP_PREFIX, API_VERSION, App, Runtime, Site, Target, Workload, check_dns_label,
};
use crate::tree::{RepoTree, normalize};
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in the repo, pointing at file, line and field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        if self.field.is_empty() {
            write!(f, "{}:{}: {sev}{}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {sev}{}: {}",
                self.file, self.line, self.field, self.message
            )
        }
    }
}

/// A document together with where it came from.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub file: String,
    pub index: LineIndex,
    pub doc: T,
}

impl<T> Located<T> {
    pub fn line_of(&self, path: &str) -> usize {
        self.index.line_of(path)
    }
}

/// The fleet repo's documents, by name. Only meaningful when loading found no errors.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub sites: BTreeMap<String, Located<Site>>,
    pub apps: BTreeMap<String, Located<App>>,
    /// (app, workload) names of workloads that did not parse: already reported, so references
    /// to them are not reported again.
    pub unparsed_workloads: BTreeSet<(String, String)>,
}

/// What [`load_fleet`] found: the documents it could read and every problem.
#[derive(Debug, Clone, Default)]
pub struct LoadOutcome {
    pub fleet: Fleet,
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadOutcome {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

/// A parsed YAML document of any kind, kept until we know which folders hold k3s manifests.
struct RawDoc {
    file: String,
    index: LineIndex,
    value: Value,
}

struct Diags(Vec<Diagnostic>);

impl Diags {
    fn push(
        &mut self,
        severity: Severity,
        file: &str,
        line: usize,
        field: &str,
        message: impl Into<String>,
    ) {
        self.0.push(Diagnostic {
            file: file.to_string(),
            line,
            field: field.to_string(),
            severity,
            message: message.into(),
        });
    }
    fn error(&mut self, file: &str, line: usize, field: &str, message: impl Into<String>) {
        self.push(Severity::Error, file, line, field, message)
    }
    fn warn(&mut self, file: &str, line: usize, field: &str, message: impl Into<String>) {
        self.push(Severity::Warning, file, line, field, message)
    }
}

fn is_yaml(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

fn is_hidden(path: &str) -> bool {
    path.split('/').any(|p| p.starts_with('.'))
}

/// Parses every YAML file of the tree (hidden folders such as `.github/` excepted), then validates
/// the fleetlet documents among them.
pub fn load_fleet(tree: &RepoTree) -> LoadOutcome {
    let mut diags = Diags(Vec::new());
    let mut raw = Vec::new();
    for (path, bytes) in tree.iter().filter(|(p, _)| is_yaml(p) && !is_hidden(p)) {
        parse_file(path, bytes, &mut raw, &mut diags);
    }

    let mut fleet = Fleet::default();
    let mut others = Vec::new();
    for doc in raw {
        classify(doc, &mut fleet, &mut others, &mut diags);
    }
    validate_fleet(&fleet, tree, &others, &mut diags);
    diags.0.sort();
    diags.0.dedup();
    LoadOutcome {
        fleet,
        diagnostics: diags.0,
    }
}

fn parse_file(path: &str, bytes: &[u8], out: &mut Vec<RawDoc>, diags: &mut Diags) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        diags.error(path, 1, "", "not valid UTF-8");
        return;
    };
    let indexes = match index_documents(text) {
        Ok(i) => i,
        Err((line, msg)) => {
            diags.error(path, line.max(1), "", format!("invalid YAML: {msg}"));
            return;
        }
    };
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = indexes.get(i).cloned().unwrap_or_default();
        match Value::deserialize_from(de) {
            Ok(Value::Null) => {}
            Ok(value) => out.push(RawDoc {
                file: path.to_string(),
                index,
                value,
            }),
            Err(e) => {
                let line = e.location().map(|l| l.line()).unwrap_or(index.start.max(1));
                diags.error(
                    path,
                    line,
                    "",
                    format!("invalid YAML: {}", strip_location(&e.to_string())),
                );
                return;
            }
        }
    }
}

trait DeserializeFrom: Sized {
    fn deserialize_from(de: serde_yaml::Deserializer) -> Result<Self, serde_yaml::Error>;
}

impl DeserializeFrom for Value {
    fn deserialize_from(de: serde_yaml::Deserializer) -> Result<Self, serde_yaml::Error> {
        serde::Deserialize::deserialize(de)
    }
}

/// serde_yaml appends " at line L column C"; we print the line ourselves.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn classify(doc: RawDoc, fleet: &mut Fleet, others: &mut Vec<RawDoc>, diags: &mut Diags) {
    let api = str_field(&doc.value, "apiVersion");
    let kind = str_field(&doc.value, "kind");
    let file = doc.file.clone();
    let is_ours = match api {
        Some(a) => a.starts_with(API_GROUP_PREFIX),
        None => matches!(kind, Some("Site" | "App")),
    };
    if !is_ours {
        others.push(doc);
        return;
    }
    if api != Some(API_VERSION) {
        let got = api
            .map(|a| format!("{a:?}"))
            .unwrap_or_else(|| "nothing".into());
        diags.error(
            &file,
            doc.index.line_of("apiVersion"),
            "apiVersion",
            format!("expected {API_VERSION:?}, got {got}"),
        );
        return;
    }
    match kind {
        Some("Site") => {
            if let Some(site) = parse_part::<Site>(&doc, &doc.value, "", diags) {
                insert_unique(
                    &mut fleet.sites,
                    "Site",
                    site.metadata.name.clone(),
                    doc,
                    site,
                    diags,
                );
            }
        }
        Some("App") => {
            if let Some(app) = parse_app(&doc, diags) {
                let workloads = doc
                    .value
                    .get("spec")
                    .and_then(|s| s.get("workloads"))
                    .and_then(Value::as_sequence);
                for name in workloads
                    .into_iter()
                    .flatten()
                    .filter_map(|w| str_field(w, "name"))
                {
                    if !app.spec.workloads.iter().any(|w| w.name == name) {
                        fleet
                            .unparsed_workloads
                            .insert((app.metadata.name.clone(), name.to_string()));
                    }
                }
                insert_unique(
                    &mut fleet.apps,
                    "App",
                    app.metadata.name.clone(),
                    doc,
                    app,
                    diags,
                );
            }
        }
        other => {
            let got = other
                .map(|k| format!("{k:?}"))
                .unwrap_or_else(|| "nothing".into());
            diags.error(
                &file,
                doc.index.line_of("kind"),
                "kind",
                format!("unknown kind {got}: expected \"Site\" or \"App\""),
            );
        }
    }
}

fn insert_unique<T>(
    map: &mut BTreeMap<String, Located<T>>,
    kind: &str,
    name: String,
    raw: RawDoc,
    doc: T,
    diags: &mut Diags,
) {
    let line = raw.index.line_of("metadata.name");
    if let Some(first) = map.get(&name) {
        diags.error(
            &raw.file,
            line,
            "metadata.name",
            format!(
                "duplicate {kind} {name:?}: also defined at {}:{}",
                first.file,
                first.line_of("metadata.name")
            ),
        );
        return;
    }
    map.insert(
        name,
        Located {
            file: raw.file,
            index: raw.index,
            doc,
        },
    );
}

/// Deserializes `value` (the node at `prefix` of `doc`) as `T`, reporting the failing field.
fn parse_part<T: DeserializeOwned>(
    doc: &RawDoc,
    value: &Value,
    prefix: &str,
    diags: &mut Diags,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let field = join_path(prefix, if inner == "." { "" } else { &inner });
            let msg = e.into_inner().to_string();
            // For an unknown field, point at the field itself.
            let line_path = match msg
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                Some(unknown) => join_path(&field, unknown),
                None => field.clone(),
            };
            diags.error(&doc.file, doc.index.line_of(&line_path), &field, msg);
            None
        }
    }
}

fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (_, true) => prefix.to_string(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

/// An App is checked part by part (each target, workload and override on its own) so that one
/// bad workload does not hide the problems of the next.
fn parse_app(doc: &RawDoc, diags: &mut Diags) -> Option<App> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Envelope {
        api_version: String,
        kind: String,
        metadata: Value,
        spec: SpecEnvelope,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SpecEnvelope {
        targets: Vec<Value>,
        workloads: Vec<Value>,
        #[serde(default)]
        overrides: Vec<Value>,
    }
    let envelope = parse_part::<Envelope>(doc, &doc.value, "", diags)?;
    let metadata =
        parse_part::<crate::model::Metadata>(doc, &envelope.metadata, "metadata", diags)?;
    // Keep the parts that parse, so cross-document checks still run on them.
    fn parts<T: DeserializeOwned>(
        doc: &RawDoc,
        items: &[Value],
        list: &str,
        diags: &mut Diags,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            out.extend(parse_part::<T>(
                doc,
                item,
                &format!("spec.{list}[{i}]"),
                diags,
            ));
        }
        out
    }
    Some(App {
        api_version: envelope.api_version,
        kind: envelope.kind,
        metadata,
        spec: crate::model::AppSpec {
            targets: parts(doc, &envelope.spec.targets, "targets", diags),
            workloads: parts(doc, &envelope.spec.workloads, "workloads", diags),
            overrides: parts(doc, &envelope.spec.overrides, "overrides", diags),
        },
    })
}

fn validate_fleet(fleet: &Fleet, tree: &RepoTree, others: &[RawDoc], diags: &mut Diags) {
    for (name, site) in &fleet.sites {
        check_name(site, name, diags);
        if site.doc.spec.runtimes.is_empty() {
            diags.error(
                &site.file,
                site.line_of("spec.runtimes"),
                "spec.runtimes",
                "a site must offer at least one runtime (wasm, k3s)",
            );
        }
        for k in site.doc.metadata.labels.keys() {
            if k.is_empty() {
                diags.error(
                    &site.file,
                    site.line_of("metadata.labels"),
                    "metadata.labels",
                    "empty label key",
                );
            }
        }
    }
    let mut manifest_dirs = BTreeSet::new();
    for (name, app) in &fleet.apps {
        check_name(app, name, diags);
        validate_app(app, fleet, tree, diags, &mut manifest_dirs);
    }
    validate_manifests(&manifest_dirs, others, diags);
}

fn check_name<T>(doc: &Located<T>, name: &str, diags: &mut Diags) {
    if let Err(e) = check_dns_label(name) {
        diags.error(&doc.file, doc.line_of("metadata.name"), "metadata.name", e);
    }
}

/// The sites a target selects, and problems with the target itself.
fn targeted_sites<'f>(target: &Target, fleet: &'f Fleet) -> Vec<&'f str> {
    fleet
        .sites
        .iter()
        .filter(|(name, site)| target_matches(target, name, &site.doc))
        .map(|(name, _)| name.as_str())
        .collect()
}

/// Whether `target` selects the site: by name, by selector, or both.
pub fn target_matches(target: &Target, name: &str, site: &Site) -> bool {
    let by_name = target.sites.is_empty() || target.sites.iter().any(|s| s == name);
    let by_selector = target
        .selector
        .as_ref()
        .is_none_or(|sel| sel.matches(&site.metadata.labels));
    by_name && by_selector && (!target.sites.is_empty() || target.selector.is_some())
}

fn check_target(app: &Located<App>, target: &Target, path: &str, fleet: &Fleet, diags: &mut Diags) {
    let file = &app.file;
    if target.sites.is_empty() && target.selector.is_none() {
        diags.error(
            file,
            app.line_of(path),
            path,
            "a target needs `sites`, `selector` or both",
        );
        return;
    }
    for (i, s) in target.sites.iter().enumerate() {
        if !fleet.sites.contains_key(s) {
            let field = format!("{path}.sites[{i}]");
            diags.error(
                file,
                app.line_of(&field),
                &field,
                format!("site {s:?} is not defined by any Site document"),
            );
        }
    }
    if let Some(sel) = &target.selector {
        for (field, msg) in sel.problems() {
            let field = format!("{path}.selector.{field}");
            diags.error(file, app.line_of(&field), &field, msg);
        }
        if !fleet
            .sites
            .values()
            .any(|s| sel.matches(&s.doc.metadata.labels))
        {
            let field = format!("{path}.selector");
            diags.warn(
                file,
                app.line_of(&field),
                &field,
                "selector matches no site",
            );
        }
    }
}

fn validate_app(
    app: &Located<App>,
    fleet: &Fleet,
    tree: &RepoTree,
    diags: &mut Diags,
    manifest_dirs: &mut BTreeSet<String>,
) {
    let file = &app.file;
    let spec = &app.doc.spec;
    if spec.targets.is_empty() {
        diags.error(
            file,
            app.line_of("spec.targets"),
            "spec.targets",
            "an app needs at least one target",
        );
    }
    let mut sites = BTreeSet::new();
    for (i, t) in spec.targets.iter().enumerate() {
        check_target(app, t, &format!("spec.targets[{i}]"), fleet, diags);
        sites.extend(targeted_sites(t, fleet));
    }
    if sites.is_empty() && !spec.targets.is_empty() {
        diags.error(
            file,
            app.line_of("spec.targets"),
            "spec.targets",
            format!("app {:?} targets no existing site", app.doc.metadata.name),
        );
    }
    let mut names = BTreeMap::new();
    for (i, w) in spec.workloads.iter().enumerate() {
        let path = format!("spec.workloads[{i}]");
        if let Some(first) = names.insert(w.name.clone(), i) {
            let field = format!("{path}.name");
            diags.error(
                file,
                app.line_of(&field),
                &field,
                format!(
                    "duplicate workload {:?}: also spec.workloads[{first}]",
                    w.name
                ),
            );
        }
        for (field, msg) in workload_problems(w, tree) {
            let field = join_path(&path, &field);
            diags.error(file, app.line_of(&field), &field, msg);
        }
        if let Some(d) = w.manifests.as_deref().and_then(normalize) {
            manifest_dirs.insert(d);
        }
        // A wasm workload that runs on k3s needs the site's k3s and its Wasm RuntimeClass.
        let on_k3s =
            w.runtime == crate::model::Runtime::Wasm && w.run_on == Some(crate::model::RunOn::K3s);
        for site in &sites {
            let s = &fleet.sites[*site].doc;
            if on_k3s {
                if !s.spec.runtimes.contains(&crate::model::Runtime::K3s)
                    || s.spec.wasm_runtime_class.is_none()
                {
                    let field = format!("{path}.runOn");
                    diags.error(
                        file,
                        app.line_of(&field),
                        &field,
                        format!(
                            "targeted site {site:?} does not run Wasm on k3s (it needs runtime k3s and a wasmRuntimeClass)"
                        ),
                    );
                }
                continue;
            }
            if !s.spec.runtimes.contains(&w.runtime) {
                let field = format!("{path}.runtime");
                diags.error(
                    file,
                    app.line_of(&field),
                    &field,
                    format!(
                        "targeted site {site:?} does not offer runtime {} (it offers: {})",
                        w.runtime,
                        list(&s.spec.runtimes)
                    ),
                );
            }
        }
    }
    for (i, o) in spec.overrides.iter().enumerate() {
        let path = format!("spec.overrides[{i}]");
        check_target(app, &o.target(), &path, fleet, diags);
        for (name, patch) in &o.workloads {
            let field = format!("{path}.workloads.{name}");
            let Some(base) = spec.workloads.iter().find(|w| &w.name == name) else {
                if fleet
                    .unparsed_workloads
                    .contains(&(app.doc.metadata.name.clone(), name.clone()))
                {
                    continue;
                }
                diags.error(
                    file,
                    app.line_of(&field),
                    &field,
                    format!("no workload {name:?} in this app"),
                );
                continue;
            };
            match apply_override(base, patch) {
                Ok(w) => {
                    for (f, msg) in workload_problems(&w, tree) {
                        let f = join_path(&field, &f);
                        diags.error(file, app.line_of(&f), &f, format!("after override: {msg}"));
                    }
                }
                Err(msg) => diags.error(file, app.line_of(&field), &field, msg),
            }
        }
    }
}

fn list(runtimes: &[Runtime]) -> String {
    runtimes
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies one override's merge patch to a workload and reads the result back as a workload.
pub fn apply_override(base: &Workload, patch: &serde_json::Value) -> Result<Workload, String> {
    let mut doc = serde_json::to_value(base).map_err(|e| e.to_string())?;
    merge_patch(&mut doc, patch);
    let w: Workload = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        format!(
            "patch makes an invalid workload: {}: {}",
            path,
            e.into_inner()
        )
    })?;
    if w.name != base.name {
        return Err("an override cannot rename a workload".into());
    }
    // Which sites may run a workload is checked against its runtime; an override must not
    // move it to another one behind that check's back.
    if w.runtime != base.runtime {
        return Err("an override cannot change a workload's runtime".into());
    }
    Ok(w)
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value as J;
    match patch {
        J::Object(p) => {
            if !target.is_object() {
                *target = J::Object(Default::default());
            }
            let t = target.as_object_mut().expect("just made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(J::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Problems of one workload on its own, as (field relative to the workload, message).
pub fn workload_problems(w: &Workload, tree: &RepoTree) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut err = |f: &str, m: String| out.push((f.to_string(), m));
    if let Err(e) = check_dns_label(&w.name) {
        err("name", e);
    }
    match w.runtime {
        Runtime::Wasm => {
            match &w.component {
                None => err("component", "a wasm workload needs a component".into()),
                Some(c) => {
                    if let Err(e) = crate::render::component_source(c, tree) {
                        err("component", e);
                    }
                }
            }
            match (&w.http, &w.command) {
                (None, None) => err(
                    "http",
                    "a wasm workload needs `http` (a wasi:http handler) or `command`".into(),
                ),
                (Some(_), Some(_)) => err(
                    "command",
                    "a wasm workload is either `http` or `command`, not both".into(),
                ),
                _ => {}
            }
            if w.manifests.is_some() {
                err("manifests", "only k3s workloads take manifests".into());
            }
            if w.k3s.is_some() && w.run_on != Some(crate::model::RunOn::K3s) {
                err(
                    "k3s",
                    "only k3s workloads (and wasm workloads with runOn: k3s) take k3s options"
                        .into(),
                );
            }
            for k in w.env.keys() {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    err("env", format!("invalid environment variable name {k:?}"));
                }
            }
            if let Some(l) = &w.limits {
                if l.memory.is_some_and(|m| m.0 < 1 << 16) {
                    err(
                        "limits.memory",
                        "must be at least 64Ki (one Wasm page)".into(),
                    );
                }
                if l.cpu_time_per_request.is_some_and(|d| d.0 == 0) {
                    err("limits.cpuTimePerRequest", "must be more than 0ms".into());
                }
                if l.max_concurrent_requests == Some(0) {
                    err("limits.maxConcurrentRequests", "must be at least 1".into());
                }
            }
            let mut seen = BTreeSet::new();
            for (i, d) in w.capabilities.dirs.iter().enumerate() {
                let f = format!("capabilities.dirs[{i}].path");
                let segments_ok = d.path.len() > 1
                    && d.path[1..]
                        .split('/')
                        .all(|p| !p.is_empty() && p != ".." && p != ".");
                if !d.path.starts_with('/') || !segments_ok {
                    err(
                        &f,
                        format!(
                            "expected an absolute guest path below / without '..', '.', '//' or a trailing '/', got {:?}",
                            d.path
                        ),
                    );
                } else if !seen.insert(d.path.clone()) {
                    err(&f, format!("{:?} is declared twice", d.path));
                }
            }
            for (i, h) in w.capabilities.outbound_hosts.iter().enumerate() {
                if let Err(m) = check_host_pattern(h) {
                    err(&format!("capabilities.outboundHosts[{i}]"), m);
                }
            }
        }
        Runtime::K3s => {
            match &w.manifests {
                None => err(
                    "manifests",
                    "a k3s workload needs a manifests folder".into(),
                ),
                Some(m) => match normalize(m) {
                    None => err(
                        "manifests",
                        format!("{m:?} must be a relative path inside the repo"),
                    ),
                    Some(p) => {
                        let has_yaml = tree.files_under(&p).any(|(f, _)| is_yaml(f));
                        if !has_yaml {
                            err(
                                "manifests",
                                format!("{m:?} is not a folder of YAML manifests in the repo"),
                            );
                        }
                    }
                },
            }
            for (field, present) in [
                ("runOn", w.run_on.is_some()),
                ("component", w.component.is_some()),
                ("http", w.http.is_some()),
                ("command", w.command.is_some()),
                ("env", !w.env.is_empty()),
                ("limits", w.limits.is_some()),
                ("capabilities", !w.capabilities.is_empty()),
            ] {
                if present {
                    err(field, "only wasm workloads take this field; k3s workloads say it in their manifests".into());
                }
            }
        }
    }
    out
}

fn check_host_pattern(h: &str) -> Result<(), String> {
    crate::hostpattern::HostPattern::parse(h).map(drop)
}

/// Each Kubernetes manifest under a k3s workload's folder must name its apiVersion, kind and
/// metadata.name.
fn validate_manifests(dirs: &BTreeSet<String>, others: &[RawDoc], diags: &mut Diags) {
    for doc in others {
        let in_dir = dirs.iter().any(|d| doc.file.starts_with(&format!("{d}/")));
        if !in_dir {
            continue;
        }
        let v = &doc.value;
        if !v.is_mapping() {
            diags.error(
                &doc.file,
                doc.index.start.max(1),
                "",
                "expected a Kubernetes object (a mapping)",
            );
            continue;
        }
        for field in ["apiVersion", "kind"] {
            if str_field(v, field).is_none_or(str::is_empty) {
                diags.error(
                    &doc.file,
                    doc.index.line_of(field),
                    field,
                    "a Kubernetes manifest needs a non-empty string here",
                );
            }
        }
        let is_list = str_field(v, "kind").is_some_and(|k| k.ends_with("List"));
        if !is_list
            && v.get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            diags.error(
                &doc.file,
                doc.index.line_of("metadata.name"),
                "metadata.name",
                "a Kubernetes manifest needs a name",
            );
        }
    }
}
