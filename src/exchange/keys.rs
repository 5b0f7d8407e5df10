//! Following the signing Secret: one watch, by `metadata.name` field selector (so that RBAC
//! `resourceNames` suffices), keeping the last good [`KeySet`] in memory. A version that
//! [`KeySet::from_secret`] refuses is logged (never its content) and counted, and the last good
//! set stays; so does the set when the Secret is deleted (the controller writes it again).

use std::sync::{Arc, PoisonError, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_objects};
use kube::{Api, Client};

use super::cache::Cache;
use super::metrics::ExchangeMetrics;
use crate::signing::KeySet;

/// The signing keys as last read; `None` until a good Secret was seen.
#[derive(Debug, Default)]
pub struct Keys {
    current: RwLock<Option<Arc<KeySet>>>,
}

impl Keys {
    pub fn get(&self) -> Option<Arc<KeySet>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Takes a new key set; says whether it differs from the last in its `kid`s.
    pub fn set(&self, keys: KeySet) -> bool {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let kids = |set: &KeySet| set.keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>();
        let changed = current.as_ref().is_none_or(|old| kids(old) != kids(&keys));
        *current = Some(Arc::new(keys));
        changed
    }
}

/// Reads one version of the Secret into `keys`.
pub fn load(name: &str, secret: &Secret, keys: &Keys, cache: &Cache, metrics: &ExchangeMetrics) {
    match KeySet::from_secret(name, secret) {
        Ok(set) => {
            let count = set.keys.len();
            let kids: Vec<String> = set.keys.iter().map(|k| k.kid.clone()).collect();
            if keys.set(set) {
                // A kept token may have been signed by a key now dropped.
                cache.clear();
                tracing::info!(secret = name, ?kids, "signing keys loaded");
            }
            metrics.set_signing_keys(count);
        }
        Err(error) => {
            metrics.secret_refused();
            // KeysError never holds key material.
            tracing::warn!(secret = name, %error, "cannot use the signing Secret; keeping the last good key set");
        }
    }
}

/// Follows the Secret `name` in `namespace`, forever.
pub async fn follow(
    client: Client,
    namespace: String,
    name: String,
    keys: Arc<Keys>,
    cache: Arc<Cache>,
    metrics: Arc<ExchangeMetrics>,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watch_objects(api, config).backoff(crate::retry::WatchBackoff::default()).boxed();
    let mut seen = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => seen = false,
            Ok(Event::InitApply(secret) | Event::Apply(secret)) => {
                seen = true;
                load(&name, &secret, &keys, &cache, &metrics);
            }
            Ok(Event::InitDone) if !seen => {
                tracing::info!(%namespace, secret = %name, "no signing Secret yet: /v1/token answers 503 until the controller writes it");
            }
            Ok(Event::InitDone) => {}
            Ok(Event::Delete(_)) => {
                tracing::warn!(%namespace, secret = %name, "the signing Secret was deleted; keeping the last good key set");
            }
            Err(error) => tracing::warn!(secret = %name, %error, "signing Secret watch failed; retrying with backoff"),
        }
    }
}
