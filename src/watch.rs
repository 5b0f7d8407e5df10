//! Where watches run: the whole cluster, or each namespace named with watches of its own. The
//! controller, the verifier and the webhook's callers all scope their watches this way.

use kube::runtime::watcher;
use kube::{Api, Client, Resource};

/// Scopes to run in: all namespaces, or each listed one with its own watches.
/// One watch per namespace named, or a single cluster-wide one when none is.
pub fn watch_scopes(namespaces: &[String]) -> Vec<Option<String>> {
    if namespaces.is_empty() { vec![None] } else { namespaces.iter().cloned().map(Some).collect() }
}

pub fn api_in<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// How a watch makes its first list: paged LISTs, which every API server serves; or, with
/// `streaming`, a watch that streams the initial state and says with a bookmark when it is all
/// there (Kubernetes 1.27 and later with the WatchList feature: no page held whole, no
/// round trip per page). The local 1.20 API server cannot, so it is a flag, off by default.
pub fn initial_list(streaming: bool) -> watcher::Config {
    let config = watcher::Config::default();
    if streaming { config.streaming_lists() } else { config }
}

/// The process's own namespace: `POD_NAMESPACE` (the downward API), else the client's default
/// namespace (the kubeconfig's, or the in-cluster one). The leader Lease and the signing Secret
/// live there.
pub fn own_namespace(client: &Client) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::InitialListStrategy;

    #[test]
    fn streaming_lists_are_asked_for_only_when_the_flag_says_so() {
        assert_eq!(initial_list(false).initial_list_strategy, InitialListStrategy::ListWatch);
        assert_eq!(initial_list(true).initial_list_strategy, InitialListStrategy::StreamingList);
    }
}
