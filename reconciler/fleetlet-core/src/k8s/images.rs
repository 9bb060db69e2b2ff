//! Container images of pod-carrying objects, and pinning them to digests.

use super::group_kind;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The JSON pointer of the pod spec inside an object of this `(group, kind)`, or `None` for
/// kinds that carry no pod template. Kinds match only in their own API group (a custom
/// resource called `Job` has its own layout).
fn pod_spec_pointer(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("", "Pod") => Some("/spec"),
        ("apps" | "extensions", "Deployment" | "DaemonSet" | "ReplicaSet")
        | ("apps", "StatefulSet")
        | ("", "ReplicationController")
        | ("batch", "Job") => Some("/spec/template/spec"),
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// The container lists of a pod spec, in start order; ephemeral containers exist only on Pods
/// (templates cannot have them).
fn container_lists(is_pod: bool) -> &'static [&'static str] {
    if is_pod {
        &["initContainers", "containers", "ephemeralContainers"]
    } else {
        &["initContainers", "containers"]
    }
}

/// Every container image of a pod-carrying object, as `(JSON pointer, image as written)`.
///
/// Rule: Pod (`/spec`); Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController,
/// Job (`/spec/template/spec`); CronJob (`/spec/jobTemplate/spec/template/spec`). In each,
/// `initContainers` then `containers` (then `ephemeralContainers` for a Pod), in list order.
/// Containers without a string `image` are skipped (the API server will refuse them; that is
/// not this function's call). Other kinds, including custom resources that embed pod
/// templates, have none: pinning them would need their schema.
pub fn images(object: &Value) -> Vec<(String, String)> {
    let (group, kind) = group_kind(object);
    let Some(spec_ptr) = pod_spec_pointer(group, kind) else {
        return Vec::new();
    };
    let Some(spec) = object.pointer(spec_ptr) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for list in container_lists(kind == "Pod") {
        let Some(containers) = spec.get(*list).and_then(Value::as_array) else {
            continue;
        };
        for (i, c) in containers.iter().enumerate() {
            if let Some(image) = c.get("image").and_then(Value::as_str) {
                out.push((format!("{spec_ptr}/{list}/{i}/image"), image.to_string()));
            }
        }
    }
    out
}

/// Rewrites the object's images (see [`images`]) to their pinned form.
///
/// `pins` maps an image exactly as written in the manifest (`ghcr.io/acme/web:1.4`) to the
/// reference to run (`ghcr.io/acme/web:1.4@sha256:...`, resolved by the engine, verified by
/// policy). Returns the images that have no pin, sorted and deduplicated — except images
/// already written with a digest (`...@sha256:...`), which are pinned as they stand and are
/// left alone unless `pins` has an entry for them. Pinning the pod template is what makes a
/// tag that moves in the registry not silently change what runs (Flux leaves this to image
/// automation; fleetlet decides it at render time).
pub fn pin_images(object: &mut Value, pins: &BTreeMap<String, String>) -> Vec<String> {
    let mut unpinned = BTreeSet::new();
    for (pointer, image) in images(object) {
        match pins.get(&image) {
            Some(pinned) => {
                if let Some(slot) = object.pointer_mut(&pointer) {
                    *slot = Value::String(pinned.clone());
                }
            }
            None if image.contains('@') => {}
            None => {
                unpinned.insert(image);
            }
        }
    }
    unpinned.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_spec() -> Value {
        json!({
            "initContainers": [{"name": "init", "image": "busybox:1.36"}],
            "containers": [
                {"name": "web", "image": "ghcr.io/acme/web:1.4"},
                {"name": "sidecar", "image": "envoy:v1"}
            ]
        })
    }

    fn templated(api_version: &str, kind: &str) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"},
               "spec": {"template": {"spec": pod_spec()}}})
    }

    fn want(prefix: &str) -> Vec<(String, String)> {
        vec![
            (
                format!("{prefix}/initContainers/0/image"),
                "busybox:1.36".into(),
            ),
            (
                format!("{prefix}/containers/0/image"),
                "ghcr.io/acme/web:1.4".into(),
            ),
            (format!("{prefix}/containers/1/image"), "envoy:v1".into()),
        ]
    }

    type ImagesCase = (&'static str, Value, Vec<(String, String)>);

    #[test]
    fn images_table() {
        let tpl = "/spec/template/spec";
        let cases: Vec<ImagesCase> = vec![
            ("deployment", templated("apps/v1", "Deployment"), want(tpl)),
            (
                "statefulset",
                templated("apps/v1", "StatefulSet"),
                want(tpl),
            ),
            ("daemonset", templated("apps/v1", "DaemonSet"), want(tpl)),
            ("replicaset", templated("apps/v1", "ReplicaSet"), want(tpl)),
            (
                "replicationcontroller",
                templated("v1", "ReplicationController"),
                want(tpl),
            ),
            ("job", templated("batch/v1", "Job"), want(tpl)),
            (
                "cronjob",
                json!({"apiVersion": "batch/v1", "kind": "CronJob",
                       "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": pod_spec()}}}}}),
                want("/spec/jobTemplate/spec/template/spec"),
            ),
            (
                "pod, with ephemeral containers",
                json!({"apiVersion": "v1", "kind": "Pod", "spec": {
                    "containers": [{"name": "a", "image": "a:1"}],
                    "ephemeralContainers": [{"name": "debug", "image": "busybox"}]}}),
                vec![
                    ("/spec/containers/0/image".into(), "a:1".into()),
                    ("/spec/ephemeralContainers/0/image".into(), "busybox".into()),
                ],
            ),
            (
                "ephemeral containers are not read from templates",
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": {
                    "ephemeralContainers": [{"name": "debug", "image": "busybox"}]}}}}),
                vec![],
            ),
            (
                "missing and non-string images are skipped, indexes kept",
                json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [
                    {"name": "a"}, {"name": "b", "image": 7}, {"name": "c", "image": "c:1"}, "junk"]}}),
                vec![("/spec/containers/2/image".into(), "c:1".into())],
            ),
            (
                "containers is not a list",
                json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": {"a": {"image": "a"}}}}),
                vec![],
            ),
            (
                "no spec",
                json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
                vec![],
            ),
            (
                "configmap",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"image": "x"}}),
                vec![],
            ),
            (
                "job of another group",
                templated("batch.volcano.sh/v1alpha1", "Job"),
                vec![],
            ),
            (
                "unknown kind",
                templated("example.com/v1", "Widget"),
                vec![],
            ),
        ];
        for (name, o, want) in cases {
            assert_eq!(images(&o), want, "{name}");
        }
    }

    #[test]
    fn pin_images_table() {
        let digest = "sha256:".to_string() + &"a".repeat(64);
        let pinned = |image: &str| format!("{image}@{digest}");
        let pins: BTreeMap<String, String> = [
            ("busybox:1.36".to_string(), pinned("busybox:1.36")),
            (
                "ghcr.io/acme/web:1.4".to_string(),
                pinned("ghcr.io/acme/web:1.4"),
            ),
        ]
        .into_iter()
        .collect();

        struct Case {
            name: &'static str,
            object: Value,
            pins: BTreeMap<String, String>,
            want_images: Vec<String>,
            want_unpinned: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "deployment: init and app containers pinned, one left",
                object: templated("apps/v1", "Deployment"),
                pins: pins.clone(),
                want_images: vec![
                    pinned("busybox:1.36"),
                    pinned("ghcr.io/acme/web:1.4"),
                    "envoy:v1".into(),
                ],
                want_unpinned: vec!["envoy:v1"],
            },
            Case {
                name: "cronjob",
                object: json!({"apiVersion": "batch/v1", "kind": "CronJob",
                    "spec": {"jobTemplate": {"spec": {"template": {"spec": pod_spec()}}}}}),
                pins: pins.clone(),
                want_images: vec![
                    pinned("busybox:1.36"),
                    pinned("ghcr.io/acme/web:1.4"),
                    "envoy:v1".into(),
                ],
                want_unpinned: vec!["envoy:v1"],
            },
            Case {
                name: "unpinned images deduplicated and sorted",
                object: json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [
                    {"name": "a", "image": "z:1"}, {"name": "b", "image": "a:1"}, {"name": "c", "image": "z:1"}]}}),
                pins: BTreeMap::new(),
                want_images: vec!["z:1".into(), "a:1".into(), "z:1".into()],
                want_unpinned: vec!["a:1", "z:1"],
            },
            Case {
                name: "already pinned by digest: left as written, not reported",
                object: json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [
                    {"name": "a", "image": pinned("nginx:1.27")}]}}),
                pins: BTreeMap::new(),
                want_images: vec![pinned("nginx:1.27")],
                want_unpinned: vec![],
            },
            Case {
                name: "pins match the image exactly as written",
                object: json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [
                    {"name": "a", "image": "docker.io/library/busybox:1.36"}]}}),
                pins: pins.clone(),
                want_images: vec!["docker.io/library/busybox:1.36".into()],
                want_unpinned: vec!["docker.io/library/busybox:1.36"],
            },
            Case {
                name: "no pod template: nothing to pin",
                object: json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"image": "busybox:1.36"}}),
                pins: pins.clone(),
                want_images: vec![],
                want_unpinned: vec![],
            },
        ];
        for mut c in cases {
            let unpinned = pin_images(&mut c.object, &c.pins);
            assert_eq!(unpinned, c.want_unpinned, "{}: unpinned", c.name);
            let now: Vec<String> = images(&c.object).into_iter().map(|(_, i)| i).collect();
            assert_eq!(now, c.want_images, "{}: images after", c.name);
        }
    }

    #[test]
    fn pin_images_touches_only_images() {
        let mut o = templated("apps/v1", "Deployment");
        let before = o.clone();
        let pins: BTreeMap<String, String> =
            [("envoy:v1".to_string(), "envoy:v1@sha256:00".to_string())]
                .into_iter()
                .collect();
        pin_images(&mut o, &pins);
        let mut expected = before;
        expected["spec"]["template"]["spec"]["containers"][1]["image"] =
            json!("envoy:v1@sha256:00");
        assert_eq!(o, expected);
    }
}
