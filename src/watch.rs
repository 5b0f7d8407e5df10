//! Where watches run: the whole cluster, or each namespace named with watches of its own. The
//! controller, the verifier and the webhook's callers all scope their watches this way.

use kube::runtime::watcher;
use kube::{Api, Client, Resource};

/// Scopes to run in: all namespaces, or each listed one with its own watches.
/// One watch per namespace named (a name given twice still once, in the order first given: two
/// watches of one scope would each take the other's objects for gone after a relist), or a
/// single cluster-wide one when none is.
pub fn watch_scopes(namespaces: &[String]) -> Vec<Option<String>> {
    if namespaces.is_empty() {
        return vec![None];
    }
    let mut scopes: Vec<Option<String>> = Vec::with_capacity(namespaces.len());
    for namespace in namespaces {
        if !scopes.iter().any(|known| known.as_deref() == Some(namespace.as_str())) {
            scopes.push(Some(namespace.clone()));
        }
    }
    scopes
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
    fn each_namespace_is_one_scope_however_often_it_is_named() {
        let named = |names: &[&str]| watch_scopes(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        assert_eq!(named(&[]), vec![None]);
        assert_eq!(
            named(&["team-b", "team-a", "team-b", "team-a"]),
            vec![Some("team-b".to_string()), Some("team-a".to_string())]
        );
    }

    #[test]
    fn streaming_lists_are_asked_for_only_when_the_flag_says_so() {
        assert_eq!(initial_list(false).initial_list_strategy, InitialListStrategy::ListWatch);
        assert_eq!(initial_list(true).initial_list_strategy, InitialListStrategy::StreamingList);
    }
}
