//! Drift: do the fields fleetlet set still hold the values it set?

use super::group_kind;
use serde_json::Value;
use std::collections::BTreeSet;

/// `metadata` fields the API server owns; never compared, removed by [`strip_server_fields`].
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Removes what the API server adds to an object and no manifest sets: top-level `status` and
/// `metadata.{managedFields, resourceVersion, uid, creationTimestamp, generation, selfLink,
/// deletionTimestamp, deletionGracePeriodSeconds}`. What is left reads like a manifest (plus
/// defaulted fields), fit to show or store.
pub fn strip_server_fields(object: &mut Value) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    map.remove("status");
    if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_METADATA {
            metadata.remove(*field);
        }
    }
}

/// The fields of `applied` whose value differs in `dry_run_result` (what a server-side dry-run
/// apply of the same manifest returns: the live object with fleetlet's fields re-applied, or
/// the live object as is when another manager owns and changed them), sorted.
///
/// Rules — only the leaves fleetlet set count, as in Flux's drift detection (which also diffs
/// a server-side dry run against the live object):
/// - Fields in `dry_run_result` that are not in `applied` (defaults, other managers' fields)
///   are ignored; so are top-level `status` and the server's `metadata` fields (see
///   [`strip_server_fields`]), and `null` in `applied` (it sets nothing).
/// - Maps compare key by key. An empty map or list in `applied` matches a missing field (the
///   server drops empty values).
/// - Lists of scalars (`args`, `command`) are atomic: equal or drifted as a whole.
/// - Lists of objects that all carry a unique merge key (`name`, `mountPath`, `devicePath`,
///   `containerPort`, `port`, `ip`, tried in that order) match elements by key; elements other
///   managers added (an injected sidecar) are not drift. Other lists of objects are atomic in
///   server-side apply: a length change is drift of the list, else elements compare by index.
/// - Scalars compare by value; numbers numerically (`1` equals `1.0`); quantities by amount
///   (`0.5` equals `500m`, `1Gi` equals `1073741824`), since the server normalises them.
/// - A Secret's `stringData.<key>` matches `data.<key>` holding its base64 (the server moves
///   `stringData` into `data`).
///
/// Paths: `.spec.replicas`, `.spec.template.spec.containers[name="web"].image`,
/// `.spec.rules[0].host`, `.metadata.labels["app.kubernetes.io/name"]` (keys that are not
/// plain identifiers are quoted). Not an object: `.` when unequal.
pub fn drifted(applied: &Value, dry_run_result: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    let Some(applied_map) = applied.as_object() else {
        if !scalar_eq(applied, dry_run_result) {
            out.insert(".".to_string());
        }
        return out.into_iter().collect();
    };
    let live = dry_run_result.as_object();
    let get = |key: &str| live.and_then(|m| m.get(key));
    let is_secret = group_kind(applied) == ("", "Secret");
    for (key, value) in applied_map {
        let path = field_path("", key);
        match key.as_str() {
            "status" => {}
            "metadata" => match (value.as_object(), get("metadata")) {
                (Some(metadata), Some(Value::Object(live_metadata))) => {
                    for (k, v) in metadata {
                        if !SERVER_METADATA.contains(&k.as_str()) {
                            compare(v, live_metadata.get(k), field_path(&path, k), &mut out);
                        }
                    }
                }
                _ => compare(value, get("metadata"), path, &mut out),
            },
            "stringData" if is_secret => {
                string_data(value, get("stringData"), get("data"), &path, &mut out)
            }
            _ => compare(value, get(key), path, &mut out),
        }
    }
    out.into_iter().collect()
}

/// A Secret's `stringData`: each key as written, or base64-encoded under `data`.
fn string_data(
    applied: &Value,
    live_string_data: Option<&Value>,
    live_data: Option<&Value>,
    path: &str,
    out: &mut BTreeSet<String>,
) {
    let Some(applied) = applied.as_object() else {
        compare(applied, live_string_data, path.to_string(), out);
        return;
    };
    for (k, v) in applied {
        let as_written = live_string_data.and_then(|m| m.get(k)) == Some(v);
        let encoded = match (v.as_str(), live_data.and_then(|m| m.get(k))) {
            (Some(s), Some(Value::String(data))) => base64(s.as_bytes()) == *data,
            _ => false,
        };
        if !as_written && !encoded && !v.is_null() {
            out.insert(field_path(path, k));
        }
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn compare(applied: &Value, live: Option<&Value>, path: String, out: &mut BTreeSet<String>) {
    match (applied, live) {
        (Value::Null, _) => {}
        (a, None | Some(Value::Null)) if is_empty_container(a) => {}
        (Value::Object(a), Some(Value::Object(l))) => {
            for (k, v) in a {
                compare(v, l.get(k), field_path(&path, k), out);
            }
        }
        (Value::Array(a), Some(Value::Array(l))) => compare_list(a, l, path, out),
        (Value::Object(_) | Value::Array(_), _) => {
            out.insert(path);
        }
        (a, Some(l)) if scalar_eq(a, l) => {}
        _ => {
            out.insert(path);
        }
    }
}

const MERGE_KEYS: &[&str] = &[
    "name",
    "mountPath",
    "devicePath",
    "containerPort",
    "port",
    "ip",
];

/// The merge key of a list of objects: the first of [`MERGE_KEYS`] that every element carries
/// as a string or number, with no two elements sharing a value.
fn merge_key(list: &[Value]) -> Option<&'static str> {
    if list.is_empty() || !list.iter().all(Value::is_object) {
        return None;
    }
    MERGE_KEYS.iter().copied().find(|key| {
        let mut seen = BTreeSet::new();
        list.iter().all(|e| match e.get(*key) {
            Some(v @ (Value::String(_) | Value::Number(_))) => seen.insert(v.to_string()),
            _ => false,
        })
    })
}

fn compare_list(applied: &[Value], live: &[Value], path: String, out: &mut BTreeSet<String>) {
    if let Some(key) = merge_key(applied) {
        for element in applied {
            let value = &element[key];
            let selector = format!("{path}[{key}={value}]");
            let found = live.iter().find(|l| l.get(key) == Some(value));
            match found {
                Some(l) => compare(element, Some(l), selector, out),
                None => {
                    out.insert(selector);
                }
            }
        }
        return;
    }
    if applied.len() != live.len() {
        out.insert(path);
        return;
    }
    if applied.iter().all(|v| !v.is_object() && !v.is_array()) {
        if !applied.iter().zip(live).all(|(a, l)| scalar_eq(a, l)) {
            out.insert(path);
        }
        return;
    }
    for (i, (a, l)) in applied.iter().zip(live).enumerate() {
        compare(a, Some(l), format!("{path}[{i}]"), out);
    }
}

/// `parent.key`, or `parent["key"]` when the key is not a plain identifier.
fn field_path(parent: &str, key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-');
    if plain {
        format!("{parent}.{key}")
    } else {
        format!("{parent}[{}]", Value::String(key.to_string()))
    }
}

/// Scalars equal as the API server sees them: identical, numerically equal, or equal
/// quantities.
fn scalar_eq(applied: &Value, live: &Value) -> bool {
    if applied == live {
        return true;
    }
    match (applied, live) {
        (Value::Number(a), Value::Number(l)) => a.as_f64() == l.as_f64(),
        (Value::Number(_) | Value::String(_), Value::String(_)) => {
            match (quantity(applied), quantity(live)) {
                (Some(a), Some(l)) => (a - l).abs() <= 1e-9 * a.abs().max(l.abs()),
                _ => false,
            }
        }
        _ => false,
    }
}

fn quantity(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_quantity(s),
        _ => None,
    }
}

/// A Kubernetes quantity (`500m`, `1.5Gi`, `2e3`, `128974848`) as a number.
fn parse_quantity(s: &str) -> Option<f64> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    if !number.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: f64 = number.parse().ok()?;
    let binary = |p: i32| 1024f64.powi(p);
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            if exponent.is_empty() || exponent.starts_with('+') && exponent.len() == 1 {
                return None;
            }
            10f64.powi(exponent.parse().ok()?)
        }
    };
    Some(n * multiplier)
}

/// Standard base64 with padding (what the API server returns for `data`).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| ALPHABET[((n >> shift) & 63) as usize] as char;
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop",
                         "labels": {"app.kubernetes.io/name": "web", "tier": "front"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "web", "image": "web:1", "args": ["--port", "80"],
                            "ports": [{"containerPort": 80}],
                            "resources": {"limits": {"cpu": "0.5", "memory": "1Gi"}},
                            "volumeMounts": [{"mountPath": "/data", "name": "data"}]
                        }],
                        "volumes": [{"name": "data", "emptyDir": {}}],
                        "tolerations": [{"key": "edge", "operator": "Exists"}]
                    }
                }
            }
        })
    }

    /// The manifest as the server returns it: defaults, server metadata, status added.
    fn served() -> Value {
        let mut d = deployment();
        d["metadata"]["uid"] = json!("1234");
        d["metadata"]["resourceVersion"] = json!("99");
        d["metadata"]["generation"] = json!(7);
        d["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        d["metadata"]["managedFields"] = json!([{"manager": "fleetlet"}]);
        d["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "3"});
        d["spec"]["strategy"] = json!({"type": "RollingUpdate"});
        d["spec"]["revisionHistoryLimit"] = json!(10);
        let c = &mut d["spec"]["template"]["spec"]["containers"][0];
        c["imagePullPolicy"] = json!("IfNotPresent");
        c["resources"]["limits"]["cpu"] = json!("500m");
        c["ports"][0]["protocol"] = json!("TCP");
        d["spec"]["template"]["spec"]["volumes"][0]["emptyDir"] = json!({});
        d["spec"]["template"]["spec"]["tolerations"][0]["effect"] = json!("");
        d["status"] = json!({"replicas": 3});
        d
    }

    fn with(mut v: Value, pointer: &str, new: Value) -> Value {
        *v.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("{pointer}")) = new;
        v
    }

    #[test]
    fn drifted_table() {
        let containers = "/spec/template/spec/containers";
        let mut sidecar = served();
        sidecar["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .insert(0, json!({"name": "istio-proxy", "image": "proxy:1"}));
        let mut label_removed = served();
        label_removed["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("app.kubernetes.io/name");
        let mut volume_gone = served();
        volume_gone["spec"]["template"]["spec"]["volumes"] = json!([]);

        let cases: Vec<(&str, Value, Value, Vec<&str>)> = vec![
            (
                "no drift: defaults, server fields, normalised quantities",
                deployment(),
                served(),
                vec![],
            ),
            (
                "replicas changed",
                deployment(),
                with(served(), "/spec/replicas", json!(1)),
                vec![".spec.replicas"],
            ),
            (
                "image changed",
                deployment(),
                with(served(), &format!("{containers}/0/image"), json!("web:2")),
                vec![".spec.template.spec.containers[name=\"web\"].image"],
            ),
            (
                "label key with dots",
                deployment(),
                label_removed,
                vec![".metadata.labels[\"app.kubernetes.io/name\"]"],
            ),
            (
                "scalar list is atomic",
                deployment(),
                with(
                    served(),
                    &format!("{containers}/0/args"),
                    json!(["--port", "8080"]),
                ),
                vec![".spec.template.spec.containers[name=\"web\"].args"],
            ),
            (
                "element added by another manager is not drift",
                deployment(),
                sidecar,
                vec![],
            ),
            (
                "keyed element removed",
                deployment(),
                volume_gone,
                vec![".spec.template.spec.volumes[name=\"data\"]"],
            ),
            (
                "keyed by containerPort",
                deployment(),
                with(
                    served(),
                    &format!("{containers}/0/ports/0/containerPort"),
                    json!(8080),
                ),
                vec![".spec.template.spec.containers[name=\"web\"].ports[containerPort=80]"],
            ),
            (
                "name is the first merge key when unique",
                deployment(),
                with(
                    served(),
                    &format!("{containers}/0/volumeMounts/0/mountPath"),
                    json!("/other"),
                ),
                vec![
                    ".spec.template.spec.containers[name=\"web\"].volumeMounts[name=\"data\"].mountPath",
                ],
            ),
            (
                "unkeyed list of objects: by index",
                deployment(),
                with(
                    served(),
                    "/spec/template/spec/tolerations/0/operator",
                    json!("Equal"),
                ),
                vec![".spec.template.spec.tolerations[0].operator"],
            ),
            (
                "unkeyed list of objects: length change is drift of the list",
                deployment(),
                with(served(), "/spec/template/spec/tolerations", json!([])),
                vec![".spec.template.spec.tolerations"],
            ),
            (
                "quantity really changed",
                deployment(),
                with(
                    served(),
                    &format!("{containers}/0/resources/limits/memory"),
                    json!("512Mi"),
                ),
                vec![".spec.template.spec.containers[name=\"web\"].resources.limits.memory"],
            ),
            (
                "type changed",
                deployment(),
                with(served(), "/spec/selector", json!("app=web")),
                vec![".spec.selector"],
            ),
            (
                "several, sorted",
                deployment(),
                with(
                    with(served(), "/spec/replicas", json!(2)),
                    "/metadata/labels/tier",
                    json!("back"),
                ),
                vec![".metadata.labels.tier", ".spec.replicas"],
            ),
            (
                "missing whole spec",
                deployment(),
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop",
                       "labels": {"app.kubernetes.io/name": "web", "tier": "front"}}}),
                vec![".spec"],
            ),
            (
                "dry run is not an object",
                json!({"kind": "ConfigMap"}),
                json!(null),
                vec![".kind"],
            ),
            (
                "applied is not an object, equal",
                json!(3),
                json!(3),
                vec![],
            ),
            (
                "applied is not an object, unequal",
                json!(3),
                json!("x"),
                vec!["."],
            ),
        ];
        for (name, applied, dry_run, want) in cases {
            assert_eq!(drifted(&applied, &dry_run), want, "{name}");
        }
    }

    #[test]
    fn drifted_edge_cases_table() {
        let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data});
        let cases: Vec<(&str, Value, Value, Vec<&str>)> = vec![
            (
                "server metadata and status in the applied manifest are ignored",
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "c", "uid": "old", "resourceVersion": "1", "generation": 1,
                                    "creationTimestamp": null, "managedFields": []},
                       "status": {"phase": "x"}}),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "uid": "new", "resourceVersion": "2"}}),
                vec![],
            ),
            (
                "null in applied sets nothing",
                cm(json!({"a": null})),
                cm(json!({"b": "x"})),
                vec![],
            ),
            (
                "empty map and list match missing",
                json!({"kind": "X", "spec": {"a": {}, "b": []}}),
                json!({"kind": "X", "spec": {}}),
                vec![],
            ),
            (
                "empty list does not match elements",
                json!({"kind": "X", "spec": {"b": []}}),
                json!({"kind": "X", "spec": {"b": ["x"]}}),
                vec![".spec.b"],
            ),
            (
                "value removed",
                cm(json!({"a": "1"})),
                cm(json!({})),
                vec![".data.a"],
            ),
            (
                "string vs number: not quantities",
                cm(json!({"a": "x1"})),
                cm(json!({"a": "x2"})),
                vec![".data.a"],
            ),
            (
                "number equals float",
                json!({"spec": {"n": 1}}),
                json!({"spec": {"n": 1.0}}),
                vec![],
            ),
            (
                "bool changed",
                json!({"spec": {"b": true}}),
                json!({"spec": {"b": false}}),
                vec![".spec.b"],
            ),
            (
                "bool vs string",
                json!({"spec": {"b": true}}),
                json!({"spec": {"b": "true"}}),
                vec![".spec.b"],
            ),
            (
                "cpu number vs string",
                json!({"spec": {"cpu": 2}}),
                json!({"spec": {"cpu": "2"}}),
                vec![],
            ),
            (
                "quantity units",
                json!({"spec": {"m": "1Gi"}}),
                json!({"spec": {"m": "1073741824"}}),
                vec![],
            ),
            (
                "quantity exponent",
                json!({"spec": {"m": "2e3"}}),
                json!({"spec": {"m": "2k"}}),
                vec![],
            ),
            (
                "quantity micro",
                json!({"spec": {"m": "0.000001"}}),
                json!({"spec": {"m": "1u"}}),
                vec![],
            ),
            (
                "quantity differs",
                json!({"spec": {"m": "100m"}}),
                json!({"spec": {"m": "1"}}),
                vec![".spec.m"],
            ),
            (
                "secret stringData matches base64 data",
                json!({"apiVersion": "v1", "kind": "Secret", "stringData": {"user": "admin", "pw": "hunter2", "e": ""}}),
                json!({"apiVersion": "v1", "kind": "Secret", "data": {"user": "YWRtaW4=", "pw": "aHVudGVyMg==", "e": ""}}),
                vec![],
            ),
            (
                "secret stringData changed",
                json!({"apiVersion": "v1", "kind": "Secret", "stringData": {"user": "admin", "pw": "hunter2"}}),
                json!({"apiVersion": "v1", "kind": "Secret", "data": {"user": "YWRtaW4=", "pw": "b3RoZXI="}}),
                vec![".stringData.pw"],
            ),
            (
                "stringData of a non-Secret compares as written",
                json!({"apiVersion": "example.com/v1", "kind": "Secret", "stringData": {"user": "admin"}}),
                json!({"apiVersion": "example.com/v1", "kind": "Secret", "data": {"user": "YWRtaW4="}}),
                vec![".stringData"],
            ),
            (
                "duplicate names: not a merge key, by index",
                json!({"spec": {"l": [{"name": "a", "v": 1}, {"name": "a", "v": 2}]}}),
                json!({"spec": {"l": [{"name": "a", "v": 1}, {"name": "a", "v": 3}]}}),
                vec![".spec.l[1].v"],
            ),
            (
                "numeric merge key",
                json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
                json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}, {"port": 80, "targetPort": 8081, "protocol": "TCP"}]}}),
                vec![".spec.ports[port=80].targetPort"],
            ),
            (
                "nested lists of lists by index",
                json!({"spec": {"m": [[1, 2], [3]]}}),
                json!({"spec": {"m": [[1, 2], [4]]}}),
                vec![".spec.m[1]"],
            ),
        ];
        for (name, applied, dry_run, want) in cases {
            assert_eq!(drifted(&applied, &dry_run), want, "{name}");
        }
    }

    #[test]
    fn strip_server_fields_table() {
        let cases: Vec<(&str, Value, Value)> = vec![
            (
                "server fields removed, the rest kept",
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "c", "namespace": "n", "labels": {"a": "b"}, "annotations": {"x": "y"},
                                    "uid": "u", "resourceVersion": "1", "generation": 2, "creationTimestamp": "t",
                                    "managedFields": [], "selfLink": "/api", "deletionTimestamp": "t",
                                    "deletionGracePeriodSeconds": 30},
                       "data": {"k": "v"}, "status": {"x": 1}}),
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "c", "namespace": "n", "labels": {"a": "b"}, "annotations": {"x": "y"}},
                       "data": {"k": "v"}}),
            ),
            (
                "no metadata",
                json!({"kind": "X", "status": {}}),
                json!({"kind": "X"}),
            ),
            (
                "metadata not an object",
                json!({"metadata": "m"}),
                json!({"metadata": "m"}),
            ),
            ("not an object", json!([1, 2]), json!([1, 2])),
            (
                "spec.status is not top-level status",
                json!({"spec": {"status": 1}}),
                json!({"spec": {"status": 1}}),
            ),
        ];
        for (name, mut input, want) in cases {
            strip_server_fields(&mut input);
            assert_eq!(input, want, "{name}");
        }
    }

    #[test]
    fn base64_and_quantities() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
        let cases: Vec<(&str, Option<f64>)> = vec![
            ("1", Some(1.0)),
            ("500m", Some(0.5)),
            ("1.5Gi", Some(1.5 * 1024f64.powi(3))),
            ("2E", Some(2e18)),
            ("2e3", Some(2000.0)),
            ("2E-3", Some(0.002)),
            ("+1k", Some(1000.0)),
            (".5", Some(0.5)),
            ("", None),
            ("m", None),
            ("1x", None),
            ("1e", None),
            ("1e+", None),
            ("web", None),
            ("1-2", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_quantity(input), want, "{input:?}");
        }
    }
}
