//! How a failed request becomes a [`ClusterError`]: by what the engine does next (retry later,
//! give up on the object, report a conflict), not by where in the stack it failed.

use fleetlet_engine::cluster::ClusterError;
use kube::core::Status;

/// What a 404 meant, read from the Status the API server sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotFound {
    /// The object does not exist (the Status names it in `details.name`).
    Object,
    /// The namespace the object was sent to does not exist.
    Namespace(String),
    /// The path itself is not served: the kind went away (CRD deleted) since discovery.
    Kind,
}

/// Reads a 404's Status. A missing object is answered with `details.name` (and `details.kind`
/// the plural); a missing namespace names the namespace with `details.kind == "namespaces"`;
/// a path the server does not serve carries no name at all ("the server could not find the
/// requested resource", or a plain-text "404 page not found").
pub(crate) fn classify_not_found(status: &Status, object_name: &str) -> NotFound {
    match &status.details {
        Some(d) if d.kind == "namespaces" && !d.name.is_empty() && d.name != object_name => {
            NotFound::Namespace(d.name.clone())
        }
        Some(d) if !d.name.is_empty() => NotFound::Object,
        _ => NotFound::Kind,
    }
}

/// The (field, manager) pairs of a server-side apply conflict. The API server lists one cause
/// per field: `field` is the path (`.spec.replicas`), `message` reads
/// `conflict with "kubectl-edit" using apps/v1`; the manager is the first quoted name.
pub(crate) fn conflict_fields(status: &Status) -> Vec<(String, String)> {
    let Some(details) = &status.details else {
        return Vec::new();
    };
    details
        .causes
        .iter()
        .filter(|c| !c.field.is_empty())
        .map(|c| {
            let manager = quoted_manager(&c.message).unwrap_or_else(|| c.message.clone());
            (c.field.clone(), manager)
        })
        .collect()
}

fn quoted_manager(message: &str) -> Option<String> {
    let start = message.find('"')? + 1;
    let len = message[start..].find('"')?;
    Some(message[start..start + len].to_string())
}

/// The most useful text of a Status: its message, else its reason, else the code.
fn status_text(status: &Status) -> String {
    if !status.message.is_empty() {
        status.message.clone()
    } else if !status.reason.is_empty() {
        status.reason.clone()
    } else {
        format!("HTTP {}", status.code)
    }
}

/// Maps an error Status by HTTP code. 404 is the caller's business (absent object vs. unknown
/// kind vs. missing namespace, see [`classify_not_found`]); here it means the kind is unknown.
pub(crate) fn from_status(
    object: &str,
    api_version: &str,
    kind: &str,
    status: &Status,
) -> ClusterError {
    let message = status_text(status);
    match status.code {
        409 => {
            let fields = conflict_fields(status);
            if fields.is_empty() {
                // A 409 without field causes is an optimistic-concurrency clash with another
                // writer (or a resource being deleted): a retry resolves it.
                ClusterError::Unavailable(format!("{object}: {message}"))
            } else {
                ClusterError::Conflict {
                    object: object.to_string(),
                    fields,
                }
            }
        }
        401 | 403 => ClusterError::Denied {
            object: object.to_string(),
            message,
        },
        404 => ClusterError::UnknownKind {
            object: object.to_string(),
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        },
        // Request timeout, too many requests (API priority and fairness) and every 5xx say
        // nothing about the object: try again later. Code 0 means no HTTP answer at all.
        0 | 408 | 429 | 500..=599 => ClusterError::Unavailable(format!("{object}: {message}")),
        // 400, 422 and the remaining 4xx: the server refused this object as sent.
        _ => ClusterError::Invalid {
            object: object.to_string(),
            message,
        },
    }
}

/// Maps a client error that is not a 404 the caller has already looked at.
pub(crate) fn from_kube(
    object: &str,
    api_version: &str,
    kind: &str,
    error: &kube::Error,
) -> ClusterError {
    match error {
        kube::Error::Api(status) => from_status(object, api_version, kind, status),
        kube::Error::Auth(e) => ClusterError::Denied {
            object: object.to_string(),
            message: format!("cannot authenticate: {}", error_chain(e)),
        },
        kube::Error::BuildRequest(e) => ClusterError::Invalid {
            object: object.to_string(),
            message: e.to_string(),
        },
        // Connection refused or reset, TLS, timeouts from the connector, a body that does
        // not parse: nothing is known to have happened.
        other => ClusterError::Unavailable(format!("{object}: {}", error_chain(other))),
    }
}

/// Display of an error and its causes (hyper and tower put the useful part in the source).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> Status {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn conflict_causes_name_field_and_manager() {
        // As a real API server (1.33) answers a conflicting apply.
        let s = status(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Apply failed with 2 conflicts: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas",
            "reason": "Conflict",
            "details": {"causes": [
                {"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-edit\" using apps/v1", "field": ".spec.replicas"},
                {"reason": "FieldManagerConflict", "message": "conflict with \"hpa\" with subresource \"scale\" using apps/v1", "field": ".spec.template.spec.containers[name=\"web\"].image"}
            ]},
            "code": 409
        }));
        assert_eq!(
            from_status("Deployment/ns/web", "apps/v1", "Deployment", &s),
            ClusterError::Conflict {
                object: "Deployment/ns/web".into(),
                fields: vec![
                    (".spec.replicas".into(), "kubectl-edit".into()),
                    (
                        ".spec.template.spec.containers[name=\"web\"].image".into(),
                        "hpa".into()
                    ),
                ],
            }
        );
    }

    #[test]
    fn codes_map_by_what_happens_next() {
        let by_code = |code: u16| {
            from_status(
                "ConfigMap/ns/a",
                "v1",
                "ConfigMap",
                &Status::failure("boom", "X").with_code(code),
            )
        };
        assert!(matches!(by_code(400), ClusterError::Invalid { .. }));
        assert!(matches!(by_code(422), ClusterError::Invalid { .. }));
        assert!(matches!(by_code(401), ClusterError::Denied { .. }));
        assert!(matches!(by_code(403), ClusterError::Denied { .. }));
        assert!(matches!(by_code(404), ClusterError::UnknownKind { .. }));
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(by_code(code), ClusterError::Unavailable(_)),
                "{code}"
            );
        }
        // 409 without field causes: a concurrent write, retried.
        assert!(matches!(by_code(409), ClusterError::Unavailable(_)));
    }

    #[test]
    fn not_found_tells_object_from_namespace_from_kind() {
        let object = status(serde_json::json!({
            "message": "configmaps \"a\" not found", "reason": "NotFound",
            "details": {"name": "a", "kind": "configmaps"}, "code": 404
        }));
        let namespace = status(serde_json::json!({
            "message": "namespaces \"gone\" not found", "reason": "NotFound",
            "details": {"name": "gone", "kind": "namespaces"}, "code": 404
        }));
        let path = status(serde_json::json!({
            "message": "the server could not find the requested resource", "reason": "NotFound",
            "details": {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]},
            "code": 404
        }));
        assert_eq!(classify_not_found(&object, "a"), NotFound::Object);
        assert_eq!(
            classify_not_found(&namespace, "a"),
            NotFound::Namespace("gone".into())
        );
        // A Namespace object itself that is absent is an absent object, not a missing namespace.
        assert_eq!(classify_not_found(&namespace, "gone"), NotFound::Object);
        assert_eq!(classify_not_found(&path, "a"), NotFound::Kind);
    }
}
