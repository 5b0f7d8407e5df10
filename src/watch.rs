//! Where watches run: the whole cluster, or each namespace named with watches of its own. The
//! controller, the verifier and the webhook's callers all scope their watches this way.

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
