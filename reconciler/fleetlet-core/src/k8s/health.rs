//! Health of a live object, after kstatus (the library behind Flux's health checks and
//! `kubectl wait`-style gating): Ready (kstatus "Current"), Progressing ("InProgress"), Failed.

use super::{condition, condition_status, condition_str, group_kind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A live object's health. `reason` says what is missing or what went wrong, in the object's
/// own terms ("2/3 replicas available", "observedGeneration 3 < generation 4").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Health {
    /// The object has reached what its spec asks for.
    Ready,
    /// Not there yet; may get there without anyone acting (rollout, scheduling, pulling).
    Progressing { reason: String },
    /// Will not get there without a change (deadline exceeded, job failed, pod failed).
    Failed { reason: String },
}

fn progressing(reason: impl Into<String>) -> Health {
    Health::Progressing {
        reason: reason.into(),
    }
}

fn failed(reason: impl Into<String>) -> Health {
    Health::Failed {
        reason: reason.into(),
    }
}

fn int(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

fn string<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// `Reason: message`, `Reason`, `message`, or `fallback` when the condition says neither.
fn describe(condition: &Value, fallback: &str) -> String {
    match (
        condition_str(condition, "reason"),
        condition_str(condition, "message"),
    ) {
        ("", "") => fallback.to_string(),
        (reason, "") => reason.to_string(),
        ("", message) => message.to_string(),
        (reason, message) => format!("{reason}: {message}"),
    }
}

/// The controller has not seen the latest spec: `status.observedGeneration <
/// metadata.generation`. Until it has, every other status field describes an older spec.
/// `required`: whether a missing `observedGeneration` counts as not observed (built-in
/// controllers always report it; many custom resources never do).
fn stale(live: &Value, required: bool) -> Option<Health> {
    let generation = int(live, "/metadata/generation")?;
    match int(live, "/status/observedGeneration") {
        Some(observed) if observed < generation => Some(progressing(format!(
            "observedGeneration {observed} < generation {generation}"
        ))),
        Some(_) => None,
        None if required => Some(progressing(format!(
            "status.observedGeneration not reported yet (generation {generation})"
        ))),
        None => None,
    }
}

/// The health of a live object.
///
/// Rules (kstatus semantics, per kind; built-in kinds match only in their own API group):
/// - Any object with `metadata.deletionTimestamp`: Progressing (being deleted).
/// - Deployment: `status.observedGeneration >= metadata.generation`; a `Progressing`
///   condition with reason `ProgressDeadlineExceeded` → Failed; `updatedReplicas`,
///   `availableReplicas` == `spec.replicas` (default 1); no old replicas left
///   (`status.replicas` == `updatedReplicas`); the `Progressing` condition, when present, says
///   `NewReplicaSetAvailable` (the newest ReplicaSet is available).
/// - StatefulSet: observedGeneration; no replicas pending termination; `readyReplicas` (and
///   `availableReplicas` when reported) == replicas; `OnDelete` stops there. RollingUpdate with
///   a `partition` p > 0: `updatedReplicas >= replicas - p`; otherwise `updatedReplicas ==
///   replicas` and `currentRevision == updateRevision`.
/// - DaemonSet: observedGeneration; `desiredNumberScheduled` reported and equal to
///   `updatedNumberScheduled`, `numberReady` and `numberAvailable`.
/// - Job: condition `Failed=True` → Failed, `Complete=True` → Ready, else Progressing (with
///   `Suspended=True` said).
/// - Pod: phase `Succeeded` → Ready; `Running` with condition `Ready=True` → Ready; `Failed` →
///   Failed; otherwise Progressing, naming waiting containers (`CrashLoopBackOff`,
///   `ImagePullBackOff`) or an unschedulable pod. A crash-looping pod is Progressing, as in
///   kstatus: the engine's health timeout turns "never ready" into a failure.
/// - CustomResourceDefinition: `Established=True` → Ready; `NamesAccepted=False` → Failed.
/// - Anything else: `status.observedGeneration`, when reported, must be current; then
///   conditions: `Stalled=True` → Failed; `Reconciling=True` → Progressing; `Ready=True` →
///   Ready (unless the condition's own `observedGeneration` is older than the object's);
///   `Ready=False`/`Unknown` → Progressing with its reason and message (kstatus: a failing
///   Ready is not terminal unless `Stalled` says so). No such conditions, or no status at all
///   (ConfigMap, Secret, Service, Namespace, RBAC, ...) → Ready.
pub fn health(live: &Value) -> Health {
    if live
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return progressing("being deleted (metadata.deletionTimestamp is set)");
    }
    match group_kind(live) {
        ("apps" | "extensions", "Deployment") => deployment(live),
        ("apps", "StatefulSet") => statefulset(live),
        ("apps" | "extensions", "DaemonSet") => daemonset(live),
        ("batch", "Job") => job(live),
        ("", "Pod") => pod(live),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(live),
        _ => generic(live),
    }
}

fn deployment(live: &Value) -> Health {
    if let Some(h) = stale(live, true) {
        return h;
    }
    let progressing_condition = condition(live, "Progressing");
    if let Some(c) = progressing_condition
        && condition_str(c, "reason") == "ProgressDeadlineExceeded"
    {
        return failed(format!(
            "progress deadline exceeded: {}",
            describe(c, "rollout did not progress in time")
        ));
    }
    let replicas = int(live, "/spec/replicas").unwrap_or(1);
    let updated = int(live, "/status/updatedReplicas").unwrap_or(0);
    if updated < replicas {
        return progressing(format!("{updated}/{replicas} replicas updated"));
    }
    let current = int(live, "/status/replicas").unwrap_or(0);
    if current > updated {
        return progressing(format!(
            "{} old replicas pending termination",
            current - updated
        ));
    }
    let available = int(live, "/status/availableReplicas").unwrap_or(0);
    if available < replicas {
        return progressing(format!("{available}/{replicas} replicas available"));
    }
    if let Some(c) = progressing_condition {
        let reason = condition_str(c, "reason");
        if reason != "NewReplicaSetAvailable" {
            return progressing(format!(
                "newest ReplicaSet not yet available ({})",
                describe(c, "Progressing condition without reason")
            ));
        }
    }
    Health::Ready
}

fn statefulset(live: &Value) -> Health {
    if let Some(h) = stale(live, true) {
        return h;
    }
    let replicas = int(live, "/spec/replicas").unwrap_or(1);
    let current = int(live, "/status/replicas").unwrap_or(0);
    if current > replicas {
        return progressing(format!(
            "{} replicas pending termination",
            current - replicas
        ));
    }
    let ready = int(live, "/status/readyReplicas").unwrap_or(0);
    if ready < replicas {
        return progressing(format!("{ready}/{replicas} replicas ready"));
    }
    if let Some(available) = int(live, "/status/availableReplicas")
        && available < replicas
    {
        return progressing(format!("{available}/{replicas} replicas available"));
    }
    if string(live, "/spec/updateStrategy/type") == Some("OnDelete") {
        return Health::Ready;
    }
    let updated = int(live, "/status/updatedReplicas").unwrap_or(0);
    let partition = int(live, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
    if partition > 0 {
        let want = (replicas - partition).max(0);
        if updated < want {
            return progressing(format!(
                "{updated}/{want} replicas updated (partition {partition})"
            ));
        }
        return Health::Ready;
    }
    if updated < replicas {
        return progressing(format!("{updated}/{replicas} replicas updated"));
    }
    let current_revision = string(live, "/status/currentRevision");
    let update_revision = string(live, "/status/updateRevision");
    if current_revision != update_revision {
        return progressing(format!(
            "currentRevision {} != updateRevision {}",
            current_revision.unwrap_or("(none)"),
            update_revision.unwrap_or("(none)")
        ));
    }
    Health::Ready
}

fn daemonset(live: &Value) -> Health {
    if let Some(h) = stale(live, true) {
        return h;
    }
    let Some(desired) = int(live, "/status/desiredNumberScheduled") else {
        return progressing("status.desiredNumberScheduled not reported yet");
    };
    for (field, what) in [
        ("updatedNumberScheduled", "updated"),
        ("numberReady", "ready"),
        ("numberAvailable", "available"),
    ] {
        let n = int(live, &format!("/status/{field}")).unwrap_or(0);
        if n < desired {
            return progressing(format!("{n}/{desired} pods {what}"));
        }
    }
    Health::Ready
}

fn job(live: &Value) -> Health {
    if let Some(c) = condition(live, "Failed")
        && condition_str(c, "status") == "True"
    {
        return failed(describe(c, "job failed"));
    }
    if condition_status(live, "Complete") == Some("True") {
        return Health::Ready;
    }
    let active = int(live, "/status/active").unwrap_or(0);
    let succeeded = int(live, "/status/succeeded").unwrap_or(0);
    let failed_pods = int(live, "/status/failed").unwrap_or(0);
    let counts = format!("{active} active, {succeeded} succeeded, {failed_pods} failed");
    if condition_status(live, "Suspended") == Some("True") {
        return progressing(format!("suspended ({counts})"));
    }
    progressing(format!("not complete: {counts}"))
}

/// `container web: CrashLoopBackOff (back-off 5m0s ...)` for each waiting container.
fn waiting_containers(live: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for list in ["initContainerStatuses", "containerStatuses"] {
        let Some(statuses) = live
            .get("status")
            .and_then(|s| s.get(list))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for s in statuses {
            let Some(waiting) = s.pointer("/state/waiting") else {
                continue;
            };
            let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
            out.push(format!(
                "container {name}: {}",
                describe(waiting, "waiting")
            ));
        }
    }
    out
}

fn pod(live: &Value) -> Health {
    if let Some(h) = stale(live, false) {
        return h;
    }
    let waiting = waiting_containers(live);
    let with_waiting = |base: &str| {
        if waiting.is_empty() {
            base.to_string()
        } else {
            format!("{base}; {}", waiting.join("; "))
        }
    };
    match string(live, "/status/phase") {
        Some("Succeeded") => Health::Ready,
        Some("Failed") => {
            let reason = string(live, "/status/reason").unwrap_or("");
            let message = string(live, "/status/message").unwrap_or("");
            failed(match (reason, message) {
                ("", "") => "pod failed".to_string(),
                (r, "") => format!("pod failed: {r}"),
                ("", m) => format!("pod failed: {m}"),
                (r, m) => format!("pod failed: {r}: {m}"),
            })
        }
        Some("Running") => {
            if condition_status(live, "Ready") == Some("True") {
                Health::Ready
            } else {
                progressing(with_waiting("running but not Ready"))
            }
        }
        Some("Pending") => {
            if let Some(c) = condition(live, "PodScheduled")
                && condition_str(c, "status") == "False"
            {
                return progressing(format!("not scheduled: {}", describe(c, "unschedulable")));
            }
            progressing(with_waiting("pending"))
        }
        Some(other) => progressing(with_waiting(&format!("phase {other}"))),
        None => progressing("status.phase not reported yet"),
    }
}

fn crd(live: &Value) -> Health {
    if condition_status(live, "Established") == Some("True") {
        return Health::Ready;
    }
    if let Some(c) = condition(live, "NamesAccepted")
        && condition_str(c, "status") == "False"
    {
        return failed(format!("names not accepted: {}", describe(c, "conflict")));
    }
    progressing("not Established yet")
}

fn generic(live: &Value) -> Health {
    if let Some(h) = stale(live, false) {
        return h;
    }
    if let Some(c) = condition(live, "Stalled")
        && condition_str(c, "status") == "True"
    {
        return failed(format!("stalled: {}", describe(c, "no reason given")));
    }
    if let Some(c) = condition(live, "Reconciling")
        && condition_str(c, "status") == "True"
    {
        return progressing(format!("reconciling: {}", describe(c, "no reason given")));
    }
    let Some(ready) = condition(live, "Ready") else {
        return Health::Ready;
    };
    if let (Some(generation), Some(observed)) = (
        int(live, "/metadata/generation"),
        ready.get("observedGeneration").and_then(Value::as_i64),
    ) && observed < generation
    {
        return progressing(format!(
            "Ready condition observedGeneration {observed} < generation {generation}"
        ));
    }
    match condition_str(ready, "status") {
        "True" => Health::Ready,
        "False" => progressing(format!(
            "Ready=False: {}",
            describe(ready, "no reason given")
        )),
        other => {
            let status = if other.is_empty() { "Unknown" } else { other };
            progressing(format!(
                "Ready={status}: {}",
                describe(ready, "no reason given")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ready() -> Health {
        Health::Ready
    }
    fn prog(reason: &str) -> Health {
        progressing(reason)
    }
    fn fail(reason: &str) -> Health {
        failed(reason)
    }

    fn run(cases: Vec<(&str, Value, Health)>) {
        for (name, live, want) in cases {
            assert_eq!(health(&live), want, "{name}");
        }
    }

    fn deploy(spec_replicas: Option<i64>, status: Value) -> Value {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "web", "generation": 4}, "spec": {}, "status": status});
        if let Some(r) = spec_replicas {
            d["spec"]["replicas"] = json!(r);
        }
        d
    }

    fn progressing_cond(reason: &str) -> Value {
        json!({"type": "Progressing", "status": "True", "reason": reason, "message": "m"})
    }

    #[test]
    fn deployment_table() {
        let done = |replicas: i64| {
            json!({"observedGeneration": 4, "replicas": replicas, "updatedReplicas": replicas,
                   "readyReplicas": replicas, "availableReplicas": replicas,
                   "conditions": [progressing_cond("NewReplicaSetAvailable"),
                                  {"type": "Available", "status": "True"}]})
        };
        let mut stale = done(3);
        stale["observedGeneration"] = json!(3);
        let mut no_observed = done(3);
        no_observed
            .as_object_mut()
            .unwrap()
            .remove("observedGeneration");
        let mut deadline = done(3);
        deadline["conditions"][0] = json!({"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-7d\" has timed out progressing."});
        let mut partly_available = done(3);
        partly_available["availableReplicas"] = json!(2);
        let mut partly_updated = done(3);
        partly_updated["updatedReplicas"] = json!(1);
        let mut old_left = done(3);
        old_left["replicas"] = json!(4);
        let mut rs_updated = done(3);
        rs_updated["conditions"][0] = progressing_cond("ReplicaSetUpdated");
        let mut no_conditions = done(3);
        no_conditions.as_object_mut().unwrap().remove("conditions");
        let mut deadline_and_stale = deadline.clone();
        deadline_and_stale["observedGeneration"] = json!(3);

        run(vec![
            ("rolled out", deploy(Some(3), done(3)), ready()),
            ("replicas default to 1", deploy(None, done(1)), ready()),
            (
                "scaled to zero, empty status counts",
                deploy(Some(0), json!({"observedGeneration": 4})),
                ready(),
            ),
            (
                "stale generation",
                deploy(Some(3), stale),
                prog("observedGeneration 3 < generation 4"),
            ),
            (
                "observedGeneration missing",
                deploy(Some(3), no_observed),
                prog("status.observedGeneration not reported yet (generation 4)"),
            ),
            (
                "progress deadline exceeded",
                deploy(Some(3), deadline),
                fail(
                    "progress deadline exceeded: ProgressDeadlineExceeded: ReplicaSet \"web-7d\" has timed out progressing.",
                ),
            ),
            (
                "deadline on an older generation is not yet a verdict",
                deploy(Some(3), deadline_and_stale),
                prog("observedGeneration 3 < generation 4"),
            ),
            (
                "partly updated",
                deploy(Some(3), partly_updated),
                prog("1/3 replicas updated"),
            ),
            (
                "old replicas left",
                deploy(Some(3), old_left),
                prog("1 old replicas pending termination"),
            ),
            (
                "partly available",
                deploy(Some(3), partly_available),
                prog("2/3 replicas available"),
            ),
            (
                "newest ReplicaSet not reported available",
                deploy(Some(3), rs_updated),
                prog("newest ReplicaSet not yet available (ReplicaSetUpdated: m)"),
            ),
            (
                "no conditions, counts fine",
                deploy(Some(3), no_conditions),
                ready(),
            ),
            (
                "no status at all",
                deploy(Some(2), json!(null)),
                prog("status.observedGeneration not reported yet (generation 4)"),
            ),
            (
                "counts of the wrong type count as zero",
                deploy(
                    Some(2),
                    json!({"observedGeneration": 4, "updatedReplicas": "2"}),
                ),
                prog("0/2 replicas updated"),
            ),
        ]);
    }

    fn sts(spec: Value, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "db", "generation": 2}, "spec": spec, "status": status})
    }

    #[test]
    fn statefulset_table() {
        let done = json!({"observedGeneration": 2, "replicas": 3, "readyReplicas": 3, "availableReplicas": 3,
            "updatedReplicas": 3, "currentReplicas": 3, "currentRevision": "db-1", "updateRevision": "db-1"});
        let with = |patch: Value| {
            let mut s = done.clone();
            for (k, v) in patch.as_object().unwrap() {
                s[k] = v.clone();
            }
            s
        };
        run(vec![
            (
                "rolled out",
                sts(json!({"replicas": 3}), done.clone()),
                ready(),
            ),
            (
                "stale",
                sts(
                    json!({"replicas": 3}),
                    with(json!({"observedGeneration": 1})),
                ),
                prog("observedGeneration 1 < generation 2"),
            ),
            (
                "not ready",
                sts(json!({"replicas": 3}), with(json!({"readyReplicas": 1}))),
                prog("1/3 replicas ready"),
            ),
            (
                "ready missing",
                sts(json!({"replicas": 3}), with(json!({"readyReplicas": null}))),
                prog("0/3 replicas ready"),
            ),
            (
                "not available",
                sts(
                    json!({"replicas": 3}),
                    with(json!({"availableReplicas": 2})),
                ),
                prog("2/3 replicas available"),
            ),
            (
                "scale down pending",
                sts(json!({"replicas": 2}), done.clone()),
                prog("1 replicas pending termination"),
            ),
            (
                "revision rolling",
                sts(
                    json!({"replicas": 3}),
                    with(json!({"updateRevision": "db-2", "updatedReplicas": 1})),
                ),
                prog("1/3 replicas updated"),
            ),
            (
                "all updated but revision not yet current",
                sts(
                    json!({"replicas": 3}),
                    with(json!({"updateRevision": "db-2"})),
                ),
                prog("currentRevision db-1 != updateRevision db-2"),
            ),
            (
                "update revision missing",
                sts(
                    json!({"replicas": 3}),
                    with(json!({"updateRevision": null})),
                ),
                prog("currentRevision db-1 != updateRevision (none)"),
            ),
            (
                "partitioned rollout complete",
                sts(
                    json!({"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}),
                    with(json!({"updateRevision": "db-2", "updatedReplicas": 1})),
                ),
                ready(),
            ),
            (
                "partitioned rollout in progress",
                sts(
                    json!({"replicas": 3, "updateStrategy": {"rollingUpdate": {"partition": 1}}}),
                    with(json!({"updateRevision": "db-2", "updatedReplicas": 1})),
                ),
                prog("1/2 replicas updated (partition 1)"),
            ),
            (
                "OnDelete: revisions are the user's business",
                sts(
                    json!({"replicas": 3, "updateStrategy": {"type": "OnDelete"}}),
                    with(json!({"updateRevision": "db-2", "updatedReplicas": 0})),
                ),
                ready(),
            ),
            (
                "replicas default to 1",
                sts(
                    json!({}),
                    with(
                        json!({"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1}),
                    ),
                ),
                ready(),
            ),
        ]);
    }

    fn ds(status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
               "metadata": {"name": "agent", "generation": 1}, "status": status})
    }

    #[test]
    fn daemonset_table() {
        let s = |desired: i64, updated: i64, ready: i64, available: i64| {
            json!({"observedGeneration": 1, "desiredNumberScheduled": desired, "currentNumberScheduled": desired,
                   "updatedNumberScheduled": updated, "numberReady": ready, "numberAvailable": available})
        };
        run(vec![
            ("rolled out", ds(s(3, 3, 3, 3)), ready()),
            ("no nodes", ds(s(0, 0, 0, 0)), ready()),
            ("updating", ds(s(3, 2, 3, 3)), prog("2/3 pods updated")),
            ("not ready", ds(s(3, 3, 1, 1)), prog("1/3 pods ready")),
            (
                "not available",
                ds(s(3, 3, 3, 2)),
                prog("2/3 pods available"),
            ),
            (
                "desired not reported",
                ds(json!({"observedGeneration": 1})),
                prog("status.desiredNumberScheduled not reported yet"),
            ),
            (
                "stale",
                ds(json!({"observedGeneration": 0, "desiredNumberScheduled": 1})),
                prog("observedGeneration 0 < generation 1"),
            ),
        ]);
    }

    fn job(status: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"}, "status": status})
    }

    #[test]
    fn job_table() {
        run(vec![
            (
                "complete",
                job(
                    json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
                ),
                ready(),
            ),
            (
                "failed",
                job(
                    json!({"failed": 6, "conditions": [{"type": "Failed", "status": "True",
                    "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
                ),
                fail("BackoffLimitExceeded: Job has reached the specified backoff limit"),
            ),
            (
                "failed without words",
                job(json!({"conditions": [{"type": "Failed", "status": "True"}]})),
                fail("job failed"),
            ),
            (
                "Failed=False does not fail",
                job(json!({"active": 1, "conditions": [{"type": "Failed", "status": "False"}]})),
                prog("not complete: 1 active, 0 succeeded, 0 failed"),
            ),
            (
                "running",
                job(json!({"active": 2, "succeeded": 1, "failed": 1})),
                prog("not complete: 2 active, 1 succeeded, 1 failed"),
            ),
            (
                "no status",
                job(json!(null)),
                prog("not complete: 0 active, 0 succeeded, 0 failed"),
            ),
            (
                "suspended",
                job(json!({"conditions": [{"type": "Suspended", "status": "True"}]})),
                prog("suspended (0 active, 0 succeeded, 0 failed)"),
            ),
        ]);
    }

    fn pod(status: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": status})
    }

    #[test]
    fn pod_table() {
        run(vec![
            ("succeeded", pod(json!({"phase": "Succeeded"})), ready()),
            (
                "running and ready",
                pod(
                    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
                ),
                ready(),
            ),
            (
                "running, crash looping",
                pod(
                    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [
                        {"name": "ok", "state": {"running": {}}},
                        {"name": "web", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}}]}),
                ),
                prog("running but not Ready; container web: CrashLoopBackOff: back-off 5m0s"),
            ),
            (
                "pending, image pull in an init container",
                pod(json!({"phase": "Pending", "initContainerStatuses": [
                    {"name": "init", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]})),
                prog("pending; container init: ImagePullBackOff"),
            ),
            (
                "unschedulable",
                pod(
                    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": "0/1 nodes are available"}]}),
                ),
                prog("not scheduled: Unschedulable: 0/1 nodes are available"),
            ),
            (
                "failed",
                pod(json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"})),
                fail("pod failed: Evicted: low on memory"),
            ),
            (
                "failed, no words",
                pod(json!({"phase": "Failed"})),
                fail("pod failed"),
            ),
            (
                "unknown phase",
                pod(json!({"phase": "Unknown"})),
                prog("phase Unknown"),
            ),
            (
                "no status",
                pod(json!(null)),
                prog("status.phase not reported yet"),
            ),
            (
                "phase not a string",
                pod(json!({"phase": 3})),
                prog("status.phase not reported yet"),
            ),
        ]);
    }

    #[test]
    fn crd_table() {
        let crd = |conditions: Value| {
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                   "metadata": {"name": "widgets.example.com"}, "status": {"conditions": conditions}})
        };
        run(vec![
            (
                "established",
                crd(json!([{"type": "Established", "status": "True"}])),
                ready(),
            ),
            (
                "not yet",
                crd(json!([{"type": "Established", "status": "False"}])),
                prog("not Established yet"),
            ),
            (
                "no conditions",
                crd(json!(null)),
                prog("not Established yet"),
            ),
            (
                "names conflict",
                crd(
                    json!([{"type": "NamesAccepted", "status": "False", "reason": "ListKindConflict"}]),
                ),
                fail("names not accepted: ListKindConflict"),
            ),
        ]);
    }

    #[test]
    fn generic_table() {
        let cr = |generation: Option<i64>, status: Value| {
            let mut o = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                               "metadata": {"name": "x"}, "status": status});
            if let Some(g) = generation {
                o["metadata"]["generation"] = json!(g);
            }
            o
        };
        let cond = |t: &str, s: &str, reason: &str, message: &str| json!({"type": t, "status": s, "reason": reason, "message": message});
        run(vec![
            (
                "configmap",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}),
                ready(),
            ),
            (
                "service",
                json!({"apiVersion": "v1", "kind": "Service", "spec": {"type": "ClusterIP"}, "status": {"loadBalancer": {}}}),
                ready(),
            ),
            (
                "namespace active",
                json!({"apiVersion": "v1", "kind": "Namespace", "status": {"phase": "Active"}}),
                ready(),
            ),
            (
                "namespace terminating",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Terminating"}}),
                prog("being deleted (metadata.deletionTimestamp is set)"),
            ),
            (
                "ready true",
                cr(
                    Some(2),
                    json!({"observedGeneration": 2, "conditions": [cond("Ready", "True", "Succeeded", "")]}),
                ),
                ready(),
            ),
            (
                "ready false is progressing",
                cr(
                    None,
                    json!({"conditions": [cond("Ready", "False", "InstallFailed", "chart not found")]}),
                ),
                prog("Ready=False: InstallFailed: chart not found"),
            ),
            (
                "ready false and stalled is failed",
                cr(
                    None,
                    json!({"conditions": [cond("Ready", "False", "InstallFailed", "x"), cond("Stalled", "True", "RetriesExceeded", "gave up")]}),
                ),
                fail("stalled: RetriesExceeded: gave up"),
            ),
            (
                "stalled false is not a failure",
                cr(
                    None,
                    json!({"conditions": [cond("Ready", "True", "", ""), cond("Stalled", "False", "", "")]}),
                ),
                ready(),
            ),
            (
                "reconciling",
                cr(
                    None,
                    json!({"conditions": [cond("Ready", "Unknown", "Progressing", "upgrading"), cond("Reconciling", "True", "Progressing", "upgrading")]}),
                ),
                prog("reconciling: Progressing: upgrading"),
            ),
            (
                "ready unknown",
                cr(
                    None,
                    json!({"conditions": [cond("Ready", "Unknown", "", "")]}),
                ),
                prog("Ready=Unknown: no reason given"),
            ),
            (
                "ready status missing",
                cr(None, json!({"conditions": [{"type": "Ready"}]})),
                prog("Ready=Unknown: no reason given"),
            ),
            (
                "stale status.observedGeneration",
                cr(
                    Some(5),
                    json!({"observedGeneration": 4, "conditions": [cond("Ready", "True", "", "")]}),
                ),
                prog("observedGeneration 4 < generation 5"),
            ),
            (
                "stale Ready condition",
                cr(
                    Some(5),
                    json!({"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 4}]}),
                ),
                prog("Ready condition observedGeneration 4 < generation 5"),
            ),
            (
                "no observedGeneration reported is fine for custom resources",
                cr(Some(5), json!({})),
                ready(),
            ),
            ("no status", cr(None, json!(null)), ready()),
            (
                "conditions not a list",
                cr(None, json!({"conditions": {"Ready": "False"}})),
                ready(),
            ),
            (
                "a Deployment of another group is generic",
                json!({"apiVersion": "example.com/v1", "kind": "Deployment", "metadata": {"generation": 1}}),
                ready(),
            ),
            ("not an object", json!("hello"), ready()),
        ]);
    }

    #[test]
    fn health_serialises_tagged() {
        assert_eq!(
            serde_json::to_value(Health::Ready).unwrap(),
            json!({"state": "ready"})
        );
        assert_eq!(
            serde_json::to_value(prog("1/2 replicas available")).unwrap(),
            json!({"state": "progressing", "reason": "1/2 replicas available"})
        );
        let back: Health =
            serde_json::from_value(json!({"state": "failed", "reason": "x"})).unwrap();
        assert_eq!(back, fail("x"));
    }
}
