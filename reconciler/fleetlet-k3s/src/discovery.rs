//! Which resource (plural, scope) serves an `apiVersion`/`kind`, asked of the API server once
//! per `apiVersion` and cached for the adapter's lifetime.
//!
//! A kind missing from the cached list triggers one fresh lookup of its `apiVersion` before it
//! is reported unknown: a CRD applied earlier in the same apply run becomes usable for its
//! custom resources without restarting the agent.

use kube::core::discovery::{ApiResource, Scope};
use kube::core::gvk::GroupVersion;
use std::collections::HashMap;
use std::sync::Mutex;

/// One served kind: where its objects live and whether they are namespaced.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// The served kinds of each `apiVersion` looked up so far.
#[derive(Debug, Default)]
pub(crate) struct DiscoveryCache {
    by_api_version: Mutex<HashMap<String, Vec<Served>>>,
}

/// Result of looking a kind up in the cache.
pub(crate) enum Cached {
    Hit(Served),
    /// Not cached, or cached without this kind: ask the server.
    Miss,
}

impl DiscoveryCache {
    pub fn lookup(&self, api_version: &str, kind: &str) -> Cached {
        let cache = self
            .by_api_version
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match cache
            .get(api_version)
            .and_then(|kinds| kinds.iter().find(|s| s.resource.kind == kind))
        {
            Some(served) => Cached::Hit(served.clone()),
            None => Cached::Miss,
        }
    }

    /// Replaces what is known of `api_version` (an empty list: the server does not serve it).
    pub fn store(&self, api_version: &str, kinds: Vec<Served>) {
        let mut cache = self
            .by_api_version
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache.insert(api_version.to_string(), kinds);
    }

    /// Forgets `api_version`, after the server said a path of it is not served any more.
    pub fn forget(&self, api_version: &str) {
        let mut cache = self
            .by_api_version
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache.remove(api_version);
    }
}

/// Asks the server which kinds `gv` serves (`/api/v1` or `/apis/{group}/{version}`).
/// `Ok(None)`: the group/version is not served at all (404).
pub(crate) async fn fetch(
    client: &kube::Client,
    gv: &GroupVersion,
) -> Result<Option<Vec<Served>>, kube::Error> {
    match kube::discovery::pinned_group(client, gv).await {
        Ok(group) => Ok(Some(
            group
                .versioned_resources(&gv.version)
                .into_iter()
                .map(|(resource, caps)| Served {
                    resource,
                    namespaced: caps.scope == Scope::Namespaced,
                })
                .collect(),
        )),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}
