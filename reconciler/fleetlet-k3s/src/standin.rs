//! An in-process stand-in for a Kubernetes API server, for tests of the adapter (no real API
//! server, k3s or envtest can run where fleetlet is developed). It is an axum HTTP server on
//! 127.0.0.1 (plain HTTP, a random port) that `kube`'s client reaches through a generated
//! kubeconfig, keeps objects in memory and logs every request so tests can assert exactly
//! what the adapter sent.
//!
//! What it models:
//! - discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}/{version}` for core v1
//!   (namespaces, configmaps, secrets, services, serviceaccounts, pods), apps/v1, batch/v1,
//!   rbac.authorization.k8s.io/v1 and apiextensions.k8s.io/v1 (customresourcedefinitions);
//!   an applied CRD makes its group/version/plural/scope discoverable at once and is marked
//!   `Established` in its status; deleting it removes the kind and its objects. Unknown
//!   group/versions answer a plain-text `404 page not found`, unknown resources the JSON
//!   `NotFound` "the server could not find the requested resource" — as the real server does;
//! - server-side apply (`PATCH`, `application/apply-patch+yaml`, `fieldManager` required,
//!   `force`, `dryRun=All`): create when absent; field ownership per manager as the set of
//!   leaf paths it applied (rendered as `metadata.managedFields` in `FieldsV1` form);
//!   a leaf owned by another manager that this apply sets to a different value is a 409
//!   Conflict whose Status causes name the field (`.spec.replicas`) and the manager
//!   (`conflict with "m" using apps/v1`), unless `force=true`, which takes the field over;
//!   leaves a manager stops applying are removed when nobody else owns them;
//!   `resourceVersion` moves only when the stored object changes, `metadata.generation` only
//!   when something outside `metadata` and `status` changes; a dry run answers the merged
//!   object without storing it; the body must match the URL (apiVersion, kind, name,
//!   namespace: 400 otherwise) and a namespaced object's namespace must exist (404
//!   `namespaces "x" not found`). `.status` in an applied body is ignored, as the main
//!   resource does for kinds with a status subresource;
//! - `GET`; `LIST` per namespace or across namespaces with `labelSelector` (`k=v`, `k==v`,
//!   `k!=v`, `k`, `!k`, comma-separated); list items of built-in kinds come without
//!   `apiVersion`/`kind` (as from a real server), custom resources with them;
//! - `DELETE` (the object is gone at once; a Namespace takes its objects with it);
//! - injected failures ([`StandIn::fail_next`]) answered as Status objects.
//!
//! What it does NOT model: full structured-merge semantics (lists are atomic leaves — no
//! merge by key, no `x-kubernetes-list-type`; `null` is a value, not a deletion; a JSON merge
//! of the applied leaves is all there is), other patch types and `Update` operations,
//! admission and validation beyond the identity checks above, defaulting, OpenAPI schemas,
//! version conversion (each kind is stored as applied), controllers (nothing rolls out, no
//! garbage collection by owner references, no finalizers or `Terminating` phase — tests write
//! `.status` with [`StandIn::set_status`]), subresources, watch, field selectors, pagination,
//! authentication, RBAC, TLS and aggregated discovery.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use fleetlet_core::k8s::ObjectRef;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const APPLY_PATCH: &str = "application/apply-patch+yaml";
const CRD_GROUP: &str = "apiextensions.k8s.io";

/// One request as the stand-in received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// The body as JSON (YAML apply bodies parsed), `Null` when empty.
    pub body: Value,
}

impl RecordedRequest {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running stand-in. Stops when dropped. Its methods must not be called from inside an
/// async context (it owns and shuts down its own runtime).
pub struct StandIn {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    kubeconfig: PathBuf,
    state: Arc<Mutex<Server>>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("addr", &self.addr)
            .field("running", &self.runtime.is_some())
            .finish()
    }
}

impl StandIn {
    /// Starts a stand-in on a free port of 127.0.0.1 with its own one-worker runtime and
    /// writes a kubeconfig for it. Panics when it cannot (a test fixture).
    pub fn start() -> StandIn {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("k8s-standin")
            .enable_all()
            .build()
            .expect("stand-in runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("stand-in listener on 127.0.0.1");
        let addr = listener.local_addr().expect("stand-in address");
        let state = Arc::new(Mutex::new(Server::new()));
        let app = Router::new().fallback(handle).with_state(state.clone());
        runtime.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "stand-in server stopped");
            }
        });
        let kubeconfig = std::env::temp_dir().join(format!(
            "fleetlet-k8s-standin-{}-{}.kubeconfig",
            std::process::id(),
            addr.port()
        ));
        write_kubeconfig(&kubeconfig, &format!("http://{addr}")).expect("stand-in kubeconfig");
        StandIn {
            runtime: Some(runtime),
            addr,
            kubeconfig,
            state,
        }
    }

    /// A kubeconfig pointing at this stand-in (context `standin`, namespace `default`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn server(&self) -> MutexGuard<'_, Server> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server().log.clone()
    }

    /// Forgets the request log (to assert on the requests of one step).
    pub fn clear_requests(&self) {
        self.server().log.clear();
    }

    /// Every stored object (including the seeded namespaces `default`, `kube-system`,
    /// `kube-public` and `kube-node-lease`), ordered by group, plural, namespace, name.
    pub fn objects(&self) -> Vec<Value> {
        self.server()
            .objects
            .values()
            .map(|s| s.object.clone())
            .collect()
    }

    /// Writes `.status` of a stored object, as a controller would (`resourceVersion` moves,
    /// `generation` does not). Errors when the kind or the object is unknown.
    pub fn set_status(&self, object: &ObjectRef, status: Value) -> Result<(), String> {
        let mut server = self.server();
        let rt = server
            .resource_by_kind(&object.api_version, &object.kind)
            .ok_or_else(|| format!("{} {} is not served", object.api_version, object.kind))?;
        let namespace = if rt.namespaced {
            object.namespace.clone().unwrap_or_else(|| "default".into())
        } else {
            String::new()
        };
        let key = (
            rt.group.clone(),
            rt.plural.clone(),
            namespace,
            object.name.clone(),
        );
        let rv = server.next_resource_version();
        let stored = server
            .objects
            .get_mut(&key)
            .ok_or_else(|| format!("{object} does not exist"))?;
        stored.object["status"] = status;
        stored.object["metadata"]["resourceVersion"] = Value::String(rv);
        Ok(())
    }

    /// Answers the next `n` requests (whatever they are, discovery included) with `code` and
    /// a Status body, without touching the stored objects.
    pub fn fail_next(&self, n: u32, code: u16) {
        self.server().fail = Some((n, code));
    }

    /// Stops serving: the port refuses connections and open connections are closed.
    /// Idempotent.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// Writes a kubeconfig for an API server at `server` (no credentials).
pub fn write_kubeconfig(path: &Path, server: &str) -> std::io::Result<()> {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {server}\n\
             contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n    namespace: default\n\
             current-context: standin\nusers:\n- name: standin\n  user: {{}}\n"
        ),
    )
}

/// A kind the stand-in serves.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourceType {
    group: String,
    version: String,
    kind: String,
    plural: String,
    singular: String,
    namespaced: bool,
    builtin: bool,
}

impl ResourceType {
    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            namespaced,
            builtin: true,
        }
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, `configmaps`: how error messages name the resource.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// A leaf path of an object (`["spec", "replicas"]`).
type FieldPath = Vec<String>;

fn display_path(path: &FieldPath) -> String {
    path.iter().map(|s| format!(".{s}")).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Manager {
    fields: BTreeSet<FieldPath>,
    api_version: String,
    time: String,
}

#[derive(Debug, Clone)]
struct Stored {
    object: Value,
    managers: BTreeMap<String, Manager>,
}

/// (group, plural, namespace or "", name)
type Key = (String, String, String, String);

struct Server {
    resources: Vec<ResourceType>,
    objects: BTreeMap<Key, Stored>,
    resource_version: u64,
    uids: u64,
    log: Vec<RecordedRequest>,
    fail: Option<(u32, u16)>,
}

/// An answer: JSON (objects, Status) or plain text (the real server's bare 404 page).
enum Reply {
    Json(u16, Value),
    Text(u16, &'static str),
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let code = |c: u16| StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self {
            Reply::Json(c, body) => (
                code(c),
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response(),
            Reply::Text(c, body) => (
                code(c),
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                body,
            )
                .into_response(),
        }
    }
}

fn status(code: u16, reason: &str, message: impl Into<String>, details: Option<Value>) -> Reply {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code,
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    Reply::Json(code, body)
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// What the real server answers for a path under a served group/version it does not know.
fn resource_not_served() -> Reply {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(
            json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}),
        ),
    )
}

fn object_not_found(rt: &ResourceType, name: &str) -> Reply {
    status(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", rt.qualified()),
        Some(json!({"name": name, "group": rt.group, "kind": rt.plural})),
    )
}

async fn handle(
    State(state): State<Arc<Mutex<Server>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let query = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .or_else(|_| serde_yaml::from_slice(&body))
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let request = RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query,
        content_type,
        body,
    };
    let mut server = state.lock().unwrap_or_else(|p| p.into_inner());
    server.log.push(request.clone());
    if let Some((n, code)) = server.fail.take() {
        if n > 1 {
            server.fail = Some((n - 1, code));
        }
        if n > 0 {
            return status(
                code,
                reason_for(code),
                format!("stand-in: injected {code}"),
                None,
            );
        }
    }
    server.route(&request)
}

impl Server {
    fn new() -> Server {
        use ResourceType as R;
        let resources = vec![
            R::builtin("", "v1", "Namespace", "namespaces", false),
            R::builtin("", "v1", "ConfigMap", "configmaps", true),
            R::builtin("", "v1", "Secret", "secrets", true),
            R::builtin("", "v1", "Service", "services", true),
            R::builtin("", "v1", "ServiceAccount", "serviceaccounts", true),
            R::builtin("", "v1", "Pod", "pods", true),
            R::builtin("apps", "v1", "Deployment", "deployments", true),
            R::builtin("apps", "v1", "StatefulSet", "statefulsets", true),
            R::builtin("apps", "v1", "DaemonSet", "daemonsets", true),
            R::builtin("apps", "v1", "ReplicaSet", "replicasets", true),
            R::builtin("batch", "v1", "Job", "jobs", true),
            R::builtin("batch", "v1", "CronJob", "cronjobs", true),
            R::builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
            R::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
                true,
            ),
            R::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                false,
            ),
            R::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
                false,
            ),
            R::builtin(
                CRD_GROUP,
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            ),
        ];
        let mut server = Server {
            resources,
            objects: BTreeMap::new(),
            resource_version: 1000,
            uids: 0,
            log: Vec::new(),
            fail: None,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let object = json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {
                    "name": ns, "uid": server.next_uid(),
                    "resourceVersion": server.next_resource_version(),
                    "creationTimestamp": now_rfc3339(),
                    "labels": {"kubernetes.io/metadata.name": ns},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            });
            server.objects.insert(
                (String::new(), "namespaces".into(), String::new(), ns.into()),
                Stored {
                    object,
                    managers: BTreeMap::new(),
                },
            );
        }
        server
    }

    fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn next_uid(&mut self) -> String {
        self.uids += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.uids)
    }

    fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    fn resource_by_kind(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        self.resources
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
    }

    fn group_versions(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in &self.resources {
            groups
                .entry(r.group.clone())
                .or_default()
                .insert(r.version.clone());
        }
        groups
    }

    fn route(&mut self, request: &RecordedRequest) -> Reply {
        let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
        let is_get = request.method == "GET";
        match segments.as_slice() {
            ["version"] if is_get => Reply::Json(
                200,
                json!({
                    "major": "1", "minor": "33", "gitVersion": "v1.33.0+fleetlet-standin",
                    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
                    "platform": "linux/amd64",
                }),
            ),
            ["api"] if is_get => Reply::Json(
                200,
                json!({"kind": "APIVersions", "versions": ["v1"],
                       "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            ),
            ["apis"] if is_get => self.group_list(),
            ["api", "v1"] if is_get => self.resource_list("", "v1"),
            ["apis", group, version] if is_get => self.resource_list(group, version),
            ["api", "v1", rest @ ..] => self.resource_request("", "v1", rest, request),
            ["apis", group, version, rest @ ..]
                if self
                    .group_versions()
                    .get(*group)
                    .is_some_and(|v| v.contains(*version)) =>
            {
                self.resource_request(group, version, rest, request)
            }
            _ => Reply::Text(404, "404 page not found"),
        }
    }

    fn group_list(&self) -> Reply {
        let groups: Vec<Value> = self
            .group_versions()
            .into_iter()
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, versions)| {
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                    .collect();
                json!({"name": g, "preferredVersion": versions[0].clone(), "versions": versions})
            })
            .collect();
        Reply::Json(
            200,
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        )
    }

    fn resource_list(&self, group: &str, version: &str) -> Reply {
        let resources: Vec<Value> = self
            .resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .map(|r| {
                json!({
                    "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update"],
                })
            })
            .collect();
        if resources.is_empty() {
            return Reply::Text(404, "404 page not found");
        }
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Reply::Json(
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                   "resources": resources}),
        )
    }

    fn resource_request(
        &mut self,
        group: &str,
        version: &str,
        rest: &[&str],
        request: &RecordedRequest,
    ) -> Reply {
        // `namespaces/{ns}/{plural}[/{name}]` when {plural} is a namespaced resource; otherwise
        // `{plural}[/{name}]` (which includes the Namespace object `namespaces/{name}`).
        let namespaced_path = match rest {
            ["namespaces", ns, plural, tail @ ..] => self
                .resource(group, version, plural)
                .filter(|r| r.namespaced)
                .map(|r| (r, Some(*ns), tail)),
            _ => None,
        };
        let (rt, namespace, tail) = match namespaced_path {
            Some(found) => found,
            None => match rest {
                [plural, tail @ ..] => match self.resource(group, version, plural) {
                    Some(r) => (r, None, tail),
                    None => return resource_not_served(),
                },
                [] => return resource_not_served(),
            },
        };
        let name = match tail {
            [] => None,
            [name] => Some(*name),
            // Subresources (status, scale, ...) are not modelled.
            _ => return resource_not_served(),
        };
        // A namespaced kind is only reachable without a namespace for a list across all of them.
        if rt.namespaced && namespace.is_none() && name.is_some() {
            return resource_not_served();
        }
        match (request.method.as_str(), name) {
            ("GET", None) => self.list(&rt, namespace, request),
            ("GET", Some(name)) => self.get(&rt, namespace, name),
            ("PATCH", Some(name)) => self.apply(&rt, namespace, name, request),
            ("DELETE", Some(name)) => self.delete(&rt, namespace, name),
            (method, _) => status(
                405,
                "MethodNotAllowed",
                format!("the stand-in does not model {method} on {}", request.path),
                None,
            ),
        }
    }

    fn key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> Key {
        (
            rt.group.clone(),
            rt.plural.clone(),
            namespace.unwrap_or_default().to_string(),
            name.to_string(),
        )
    }

    fn get(&self, rt: &ResourceType, namespace: Option<&str>, name: &str) -> Reply {
        match self.objects.get(&Self::key(rt, namespace, name)) {
            Some(stored) => Reply::Json(200, stored.object.clone()),
            None => object_not_found(rt, name),
        }
    }

    fn list(&self, rt: &ResourceType, namespace: Option<&str>, request: &RecordedRequest) -> Reply {
        let selector = match parse_selector(request.param("labelSelector").unwrap_or("")) {
            Ok(s) => s,
            Err(message) => return status(400, "BadRequest", message, None),
        };
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((g, p, ns, _), _)| {
                *g == rt.group && *p == rt.plural && namespace.is_none_or(|want| want == ns)
            })
            .filter(|(_, stored)| selector.iter().all(|term| term.matches(&stored.object)))
            .map(|(_, stored)| {
                let mut item = stored.object.clone();
                if rt.builtin
                    && let Some(fields) = item.as_object_mut()
                {
                    fields.remove("apiVersion");
                    fields.remove("kind");
                }
                item
            })
            .collect();
        Reply::Json(
            200,
            json!({
                "kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": self.resource_version.to_string()},
                "items": items,
            }),
        )
    }

    fn delete(&mut self, rt: &ResourceType, namespace: Option<&str>, name: &str) -> Reply {
        let Some(stored) = self.objects.remove(&Self::key(rt, namespace, name)) else {
            return object_not_found(rt, name);
        };
        self.next_resource_version();
        if rt.group.is_empty() && rt.plural == "namespaces" {
            self.objects.retain(|(_, _, ns, _), _| ns != name);
        }
        if rt.group == CRD_GROUP && rt.plural == "customresourcedefinitions" {
            let spec = &stored.object["spec"];
            let group = spec["group"].as_str().unwrap_or_default().to_string();
            let plural = spec["names"]["plural"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            self.resources
                .retain(|r| r.builtin || r.group != group || r.plural != plural);
            self.objects
                .retain(|(g, p, _, _), _| *g != group || *p != plural);
        }
        Reply::Json(200, stored.object)
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.objects.contains_key(&(
            String::new(),
            "namespaces".into(),
            String::new(),
            namespace.into(),
        ))
    }

    fn apply(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        request: &RecordedRequest,
    ) -> Reply {
        let content_type = request.content_type.as_deref().unwrap_or("");
        if content_type != APPLY_PATCH {
            return status(
                415,
                "UnsupportedMediaType",
                format!(
                    "the stand-in models only server-side apply ({APPLY_PATCH}), not {content_type:?}"
                ),
                None,
            );
        }
        let Some(manager) = request.param("fieldManager").filter(|m| !m.is_empty()) else {
            return status(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                None,
            );
        };
        let force = request.param("force") == Some("true");
        let dry_run = request.param("dryRun") == Some("All");
        let Some(body) = request.body.as_object() else {
            return status(400, "BadRequest", "the apply body is not an object", None);
        };
        let api_version = rt.api_version();
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        if text(body.get("apiVersion")) != api_version || text(body.get("kind")) != rt.kind {
            return status(
                400,
                "BadRequest",
                format!(
                    "the object ({} {}) does not match the URL ({api_version} {})",
                    text(body.get("apiVersion")),
                    text(body.get("kind")),
                    rt.kind
                ),
                None,
            );
        }
        let metadata = body.get("metadata");
        if text(metadata.and_then(|m| m.get("name"))) != name {
            return status(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
                None,
            );
        }
        let body_namespace = metadata
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str);
        if let (Some(ns), Some(url_ns)) = (body_namespace, namespace)
            && ns != url_ns
        {
            return status(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
                None,
            );
        }
        if let Some(ns) = namespace
            && !self.namespace_exists(ns)
        {
            return status(
                404,
                "NotFound",
                format!("namespaces \"{ns}\" not found"),
                Some(json!({"name": ns, "kind": "namespaces"})),
            );
        }
        let is_crd = rt.group == CRD_GROUP && rt.plural == "customresourcedefinitions";
        if is_crd && let Err(message) = check_crd(body, name) {
            return status(
                422,
                "Invalid",
                format!(
                    "CustomResourceDefinition.apiextensions.k8s.io \"{name}\" is invalid: {message}"
                ),
                None,
            );
        }

        let leaves = applied_leaves(body);
        let key = Self::key(rt, namespace, name);
        let existing = self.objects.get(&key).cloned();
        let created = existing.is_none();
        let mut stored = existing.clone().unwrap_or_else(|| {
            let mut metadata = json!({"name": name});
            if let Some(ns) = namespace {
                metadata["namespace"] = json!(ns);
            }
            Stored {
                object: json!({"apiVersion": api_version, "kind": rt.kind, "metadata": metadata}),
                managers: BTreeMap::new(),
            }
        });

        // Conflicts: a leaf another manager owns that this apply would change.
        let mut conflicts: Vec<(FieldPath, String)> = Vec::new();
        for (path, value) in &leaves {
            for (other, owned) in &stored.managers {
                if other != manager
                    && owned.fields.contains(path)
                    && lookup(&stored.object, path) != Some(value)
                {
                    conflicts.push((path.clone(), other.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return conflict_status(&api_version, &conflicts);
        }
        for (path, other) in &conflicts {
            if let Some(owned) = stored.managers.get_mut(other) {
                owned.fields.remove(path);
            }
        }

        // Leaves this manager applied before but not now go, unless someone else owns them.
        let applied: BTreeSet<FieldPath> = leaves.keys().cloned().collect();
        let previous = stored
            .managers
            .get(manager)
            .map(|m| m.fields.clone())
            .unwrap_or_default();
        for path in previous.difference(&applied) {
            let shared = stored
                .managers
                .iter()
                .any(|(m, owned)| m != manager && owned.fields.contains(path));
            if !shared {
                remove_leaf(&mut stored.object, path);
            }
        }
        for (path, value) in &leaves {
            set_leaf(&mut stored.object, path, value.clone());
        }
        let unchanged_fields = stored
            .managers
            .get(manager)
            .is_some_and(|m| m.fields == applied && m.api_version == api_version);
        if !unchanged_fields {
            stored.managers.insert(
                manager.to_string(),
                Manager {
                    fields: applied,
                    api_version: api_version.clone(),
                    time: now_rfc3339(),
                },
            );
        }
        stored.managers.retain(|_, m| !m.fields.is_empty());
        stored.object["metadata"]["managedFields"] = render_managed_fields(&stored.managers);
        // Established once per spec: re-stamping condition times would make every no-op
        // apply of a CRD a write.
        let same_crd_spec = existing
            .as_ref()
            .is_some_and(|s| s.object["spec"] == stored.object["spec"]);
        if is_crd && !same_crd_spec {
            stored.object["status"] = crd_status(&stored.object);
        }

        let old = existing.as_ref().map(|s| &s.object);
        if old == Some(&stored.object) {
            // A no-op apply writes nothing: same resourceVersion, same generation.
            return Reply::Json(200, stored.object);
        }
        let spec_changed = old.is_none_or(|old| without_meta(old) != without_meta(&stored.object));
        let generation = old
            .and_then(|o| o["metadata"]["generation"].as_i64())
            .unwrap_or(0);
        if created {
            stored.object["metadata"]["uid"] = json!(self.next_uid());
            stored.object["metadata"]["creationTimestamp"] = json!(now_rfc3339());
        }
        if spec_changed {
            stored.object["metadata"]["generation"] = json!(generation + 1);
        }
        if dry_run {
            // A dry run answers what the object would become; nothing is stored or counted.
            return Reply::Json(if created { 201 } else { 200 }, stored.object);
        }
        stored.object["metadata"]["resourceVersion"] = json!(self.next_resource_version());
        let answer = stored.object.clone();
        if is_crd {
            self.register_crd(&stored.object);
        }
        self.objects.insert(key, stored);
        Reply::Json(if created { 201 } else { 200 }, answer)
    }

    /// Makes an applied CRD's kind servable (every served version).
    fn register_crd(&mut self, crd: &Value) {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let names = &spec["names"];
        let kind = names["kind"].as_str().unwrap_or_default();
        let plural = names["plural"].as_str().unwrap_or_default();
        let singular = names["singular"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| kind.to_lowercase());
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        self.resources
            .retain(|r| r.builtin || r.group != group || r.plural != plural);
        for version in spec["versions"].as_array().into_iter().flatten() {
            if version["served"].as_bool() == Some(false) {
                continue;
            }
            if let Some(v) = version["name"].as_str() {
                self.resources.push(ResourceType {
                    group: group.into(),
                    version: v.into(),
                    kind: kind.into(),
                    plural: plural.into(),
                    singular: singular.clone(),
                    namespaced,
                    builtin: false,
                });
            }
        }
    }
}

/// The identity checks the real server makes of a CRD before it can be established.
fn check_crd(body: &Map<String, Value>, name: &str) -> Result<(), String> {
    let spec = body.get("spec").ok_or("spec: Required value")?;
    let group = spec["group"].as_str().ok_or("spec.group: Required value")?;
    let plural = spec["names"]["plural"]
        .as_str()
        .ok_or("spec.names.plural: Required value")?;
    spec["names"]["kind"]
        .as_str()
        .ok_or("spec.names.kind: Required value")?;
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    match spec["versions"].as_array() {
        Some(v) if !v.is_empty() => Ok(()),
        _ => Err(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .into(),
        ),
    }
}

fn crd_status(crd: &Value) -> Value {
    let now = now_rfc3339();
    let condition = |kind: &str, reason: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason, "message": ""});
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    json!({
        "conditions": [condition("NamesAccepted", "NoConflicts"), condition("Established", "InitialNamesAccepted")],
        "acceptedNames": crd["spec"]["names"],
        "storedVersions": stored,
    })
}

fn conflict_status(api_version: &str, conflicts: &[(FieldPath, String)]) -> Reply {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(path, manager)| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{manager}\" using {api_version}"),
                "field": display_path(path),
            })
        })
        .collect();
    let summary: Vec<String> = conflicts
        .iter()
        .map(|(path, manager)| {
            format!(
                "conflict with \"{manager}\" using {api_version}: {}",
                display_path(path)
            )
        })
        .collect();
    let n = conflicts.len();
    status(
        409,
        "Conflict",
        format!(
            "Apply failed with {n} conflict{}: {}",
            if n == 1 { "" } else { "s" },
            summary.join("\n")
        ),
        Some(json!({"causes": causes})),
    )
}

/// The leaves an apply body sets, by path. Identity (`apiVersion`, `kind`, name, namespace),
/// server-owned metadata and `.status` are not owned by appliers.
fn applied_leaves(body: &Map<String, Value>) -> BTreeMap<FieldPath, Value> {
    const SERVER_METADATA: [&str; 9] = [
        "name",
        "namespace",
        "managedFields",
        "resourceVersion",
        "uid",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "selfLink",
    ];
    let mut leaves = BTreeMap::new();
    for (field, value) in body {
        match field.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                if let Some(metadata) = value.as_object() {
                    for (m, v) in metadata {
                        if !SERVER_METADATA.contains(&m.as_str()) {
                            collect_leaves(vec!["metadata".into(), m.clone()], v, &mut leaves);
                        }
                    }
                }
            }
            _ => collect_leaves(vec![field.clone()], value, &mut leaves),
        }
    }
    leaves
}

/// Objects are walked; everything else (scalars, lists, empty objects) is a leaf.
fn collect_leaves(path: FieldPath, value: &Value, out: &mut BTreeMap<FieldPath, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let mut child = path.clone();
                child.push(k.clone());
                collect_leaves(child, v, out);
            }
        }
        _ => {
            out.insert(path, value.clone());
        }
    }
}

fn lookup<'a>(object: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    path.iter().try_fold(object, |v, k| v.get(k))
}

fn set_leaf(object: &mut Value, path: &FieldPath, value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = object;
    for key in parents {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        current = current
            .as_object_mut()
            .expect("just made an object")
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
    }
    if let Some(map) = current.as_object_mut() {
        map.insert(last.clone(), value);
    }
}

/// Removes a leaf and the objects it leaves empty (never the top-level fields).
fn remove_leaf(object: &mut Value, path: &FieldPath) {
    fn remove(value: &mut Value, path: &[String], depth: usize) {
        let Some(map) = value.as_object_mut() else {
            return;
        };
        match path {
            [] => {}
            [last] => {
                map.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(child) = map.get_mut(first) {
                    remove(child, rest, depth + 1);
                    if depth > 0 && child.as_object().is_some_and(Map::is_empty) {
                        map.remove(first);
                    }
                }
            }
        }
    }
    remove(object, path, 0);
}

/// `metadata.managedFields` as the real server writes it (`FieldsV1`: `{"f:spec": {"f:replicas": {}}}`).
fn render_managed_fields(managers: &BTreeMap<String, Manager>) -> Value {
    let entries: Vec<Value> = managers
        .iter()
        .map(|(name, m)| {
            let mut fields = Value::Object(Map::new());
            for path in &m.fields {
                let prefixed: FieldPath = path.iter().map(|s| format!("f:{s}")).collect();
                if lookup(&fields, &prefixed).is_none() {
                    set_leaf(&mut fields, &prefixed, json!({}));
                }
            }
            json!({
                "manager": name, "operation": "Apply", "apiVersion": m.api_version,
                "time": m.time, "fieldsType": "FieldsV1", "fieldsV1": fields,
            })
        })
        .collect();
    Value::Array(entries)
}

/// The object without `metadata` and `status`: what `generation` tracks.
fn without_meta(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

/// One term of an equality-based label selector.
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl Term {
    fn matches(&self, object: &Value) -> bool {
        let label = |k: &str| object["metadata"]["labels"][k].as_str().map(String::from);
        match self {
            Term::Equals(k, v) => label(k).as_deref() == Some(v),
            Term::NotEquals(k, v) => label(k).as_deref() != Some(v),
            Term::Exists(k) => label(k).is_some(),
            Term::Absent(k) => label(k).is_none(),
        }
    }
}

fn parse_selector(selector: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    for raw in selector.split(',') {
        let term = raw.trim();
        if term.is_empty() {
            continue;
        }
        if term.contains(" in ") || term.contains(" notin ") || term.contains('(') {
            return Err(format!(
                "set-based label selectors are not modelled by the stand-in: {term:?}"
            ));
        }
        let parsed = if let Some((k, v)) = term.split_once("!=") {
            Term::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once("==") {
            Term::Equals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once('=') {
            Term::Equals(k.trim().into(), v.trim().into())
        } else if let Some(k) = term.strip_prefix('!') {
            Term::Absent(k.trim().into())
        } else {
            Term::Exists(term.into())
        };
        terms.push(parsed);
    }
    Ok(terms)
}

/// Now as RFC 3339 UTC (`2026-11-27T17:20:00Z`), without a date crate.
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn leaves_skip_identity_and_status_and_keep_lists_whole() {
        let body = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "a", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web"}]}}, "x": {}},
            "status": {"readyReplicas": 1},
        });
        let leaves = applied_leaves(body.as_object().unwrap());
        let paths: Vec<String> = leaves.keys().map(display_path).collect();
        assert_eq!(
            paths,
            [
                ".metadata.labels.app",
                ".spec.replicas",
                ".spec.template.spec.containers",
                ".spec.x"
            ]
        );
    }

    #[test]
    fn selector_terms() {
        let object = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let matches = |s: &str| {
            parse_selector(s)
                .unwrap()
                .iter()
                .all(|t| t.matches(&object))
        };
        assert!(matches("app=web,tier==front"));
        assert!(matches("app,!gone,tier!=back"));
        assert!(!matches("app=web,tier=back"));
        assert!(parse_selector("app in (web)").is_err());
    }
}
