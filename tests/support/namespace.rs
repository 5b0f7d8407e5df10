//! A fresh namespace per test, and what a test does in it: create and change ApiKeys and
//! Credentials, wait for their status, Secrets and events, start `keyward` processes there.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use keyward::api::{ApiKey, ApiKeySpec, ApiKeyStatus, Credential, CredentialStatus, Phase};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::cluster::{client, install_crds};
use super::process::Operator;
use super::tokens::token_in;
use super::wait::{DEADLINE, wait_object};

/// A fresh namespace for one test, with the CRDs installed.
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

/// The garbage collector learns of new resource types by rediscovery, every 30 s. Tests that
/// rely on it wait, once per test binary, until it has collected a probe owned by an ApiKey.
static GC_KNOWS_CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

async fn wait_until_gc_knows_crds(client: &Client) {
    use k8s_openapi::api::core::v1::ConfigMap;
    GC_KNOWS_CRDS
        .get_or_init(|| async {
            let ns = format!("gc-probe-{}", rand::random_range(0..u32::MAX));
            let namespace: Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("ns");
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &namespace)
                .await
                .expect("probe namespace");
            let keys: Api<ApiKey> = Api::namespaced(client.clone(), &ns);
            let owner =
                keys.create(&PostParams::default(), &key("probe", serde_json::json!({}))).await.expect("probe key");
            let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let probe: ConfigMap =
                serde_json::from_value(serde_json::json!({"metadata": {"name": "probe", "ownerReferences": [{
                    "apiVersion": "keyward.io/v1alpha1", "kind": "ApiKey", "name": "probe", "uid": owner.uid(),
                }]}}))
                .expect("probe");
            maps.create(&PostParams::default(), &probe).await.expect("probe ConfigMap");
            keys.delete("probe", &DeleteParams::default()).await.expect("delete probe key");
            let gone = tokio::time::timeout(
                Duration::from_secs(120),
                await_condition(maps, "probe", |m: Option<&ConfigMap>| m.is_none()),
            )
            .await;
            assert!(matches!(gone, Ok(Ok(_))), "the garbage collector never collected an ApiKey's dependent");
            let _ = Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await;
        })
        .await;
}

impl TestNamespace {
    pub async fn new(test: &str) -> Self {
        let client = client().await;
        install_crds(&client).await;
        wait_until_gc_knows_crds(&client).await;
        Self::on(client, test).await
    }

    /// A fresh namespace on the API server of `client` (which has the CRDs installed); no wait
    /// for its garbage collector.
    pub async fn on(client: Client, test: &str) -> Self {
        let suffix: String = (0..6).map(|_| (b'a' + rand::random_range(0..26u8)) as char).collect();
        let name =
            format!("{}-{suffix}", test.replace('_', "-").chars().take(40).collect::<String>().trim_end_matches('-'));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
        namespaces.create(&PostParams::default(), &ns).await.expect("create the test namespace");
        Self { client, name }
    }

    pub fn keys(&self) -> Api<ApiKey> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn events(&self) -> Api<Event> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn credentials(&self) -> Api<Credential> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Starts a controller watching only this namespace, with extra flags.
    pub fn controller(&self, extra: &[&str]) -> Operator {
        Operator::start(&self.name, extra, &[])
    }

    /// Starts a verifier indexing only this namespace, with extra flags, and waits until it is
    /// ready (its initial lists are indexed).
    pub async fn verifier(&self, extra: &[&str]) -> Operator {
        let verifier = Operator::run("verifier", &self.name, extra, &[]);
        verifier.wait_ready().await;
        verifier
    }

    /// Creates a key from a spec given as JSON.
    pub async fn create_key(&self, name: &str, spec: serde_json::Value) -> ApiKey {
        let key = key(name, spec);
        self.keys().create(&PostParams::default(), &key).await.unwrap_or_else(|e| panic!("create ApiKey {name}: {e}"))
    }

    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) -> ApiKey {
        self.keys()
            .patch(name, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "spec": spec })))
            .await
            .unwrap_or_else(|e| panic!("patch ApiKey {name}: {e}"))
    }

    pub async fn delete_key(&self, name: &str) {
        self.keys()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete ApiKey {name}: {e}"));
    }

    /// Waits until the key is in `phase` and its status describes its current generation.
    pub async fn wait_phase(&self, name: &str, phase: Phase) -> ApiKey {
        self.wait_key(name, &format!("phase {phase:?}"), move |k| {
            k.status
                .as_ref()
                .is_some_and(|s| s.record.phase == Some(phase) && s.observed_generation == k.metadata.generation)
        })
        .await
    }

    /// Waits until `condition` holds for the key, or fails at the deadline.
    pub async fn wait_key(&self, name: &str, what: &str, condition: impl Fn(&ApiKey) -> bool) -> ApiKey {
        let describe = |k: Option<&ApiKey>| format!("status {:?}", k.and_then(|k| k.status.as_ref()));
        wait_object(&self.keys(), name, what, move |k| k.is_some_and(&condition), describe).await.expect("the key")
    }

    /// Waits until the key is Active with a token hash other than `old`; returns its status.
    pub async fn wait_new_token(&self, name: &str, old: &Option<String>) -> ApiKeyStatus {
        let key = self
            .wait_key(name, "a new token", |k| {
                k.status.as_ref().is_some_and(|s| s.record.phase == Some(Phase::Active) && &s.record.token_hash != old)
            })
            .await;
        key.status.expect("status")
    }

    /// Waits until the named Secret is gone.
    pub async fn wait_secret_gone(&self, name: &str) {
        let exists = |s: Option<&Secret>| format!("it exists: {}", s.is_some());
        wait_object(&self.secrets(), name, "deletion", |s| s.is_none(), exists).await;
    }

    /// Waits until the named Secret exists and `condition` holds for it.
    pub async fn wait_secret(&self, name: &str, what: &str, condition: impl Fn(&Secret) -> bool) -> Secret {
        // Never its data: it holds a token.
        let exists = |s: Option<&Secret>| format!("it exists: {}", s.is_some());
        wait_object(&self.secrets(), name, what, move |s| s.is_some_and(&condition), exists).await.expect("the Secret")
    }

    /// The token written in a Secret.
    pub async fn token_of(&self, secret: &str) -> String {
        let secret = self.secrets().get(secret).await.unwrap_or_else(|e| panic!("read Secret {secret}: {e}"));
        token_in(&secret).expect("a token in the Secret")
    }

    /// Events about one object, newest last.
    pub async fn events_for(&self, name: &str) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .events()
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .collect();
        events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        events
    }

    /// Waits until an event with `reason` exists for the named object.
    pub async fn wait_event(&self, name: &str, reason: &str) -> Event {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut events = watcher(self.events(), watcher::Config::default()).default_backoff().applied_objects().boxed();
        loop {
            if let Some(found) = self.events_for(name).await.into_iter().find(|e| e.reason.as_deref() == Some(reason)) {
                return found;
            }
            match tokio::time::timeout_at(deadline, events.try_next()).await {
                Ok(Ok(Some(_))) => {}
                Ok(other) => panic!("event watch ended: {:?}", other.err()),
                Err(_) => panic!("no {reason} event for {name} within {DEADLINE:?}"),
            }
        }
    }

    pub async fn create_credential(&self, name: &str, spec: serde_json::Value) -> Credential {
        let spec = serde_json::from_value(spec).expect("a valid CredentialSpec");
        let credential = Credential::new(name, spec);
        self.credentials()
            .create(&PostParams::default(), &credential)
            .await
            .unwrap_or_else(|e| panic!("create Credential {name}: {e}"))
    }

    /// Replaces the Credential's token list (a JSON merge patch replaces lists whole).
    pub async fn set_tokens(&self, name: &str, tokens: serde_json::Value) {
        self.credentials()
            .patch(name, &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"tokens": tokens}})))
            .await
            .unwrap_or_else(|e| panic!("patch Credential {name}: {e}"));
    }

    /// Waits until `condition` holds for the Credential's status at its current generation.
    pub async fn wait_credential(
        &self,
        name: &str,
        what: &str,
        condition: impl Fn(&CredentialStatus) -> bool,
    ) -> CredentialStatus {
        let current = move |c: Option<&Credential>| {
            c.is_some_and(|c| {
                c.status.as_ref().is_some_and(|s| s.observed_generation == c.metadata.generation && condition(s))
            })
        };
        let describe = |c: Option<&Credential>| format!("status {:?}", c.and_then(|c| c.status.as_ref()));
        let credential = wait_object(&self.credentials(), name, what, current, describe).await;
        credential.and_then(|c| c.status).expect("status")
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Best effort: the control plane is thrown away after the run anyway.
        let client = self.client.clone();
        let name = self.name.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = Api::<Namespace>::all(client).delete(&name, &DeleteParams::default()).await;
            });
        }
    }
}

/// An ApiKey object with a spec given as JSON.
pub fn key(name: &str, spec: serde_json::Value) -> ApiKey {
    let spec: ApiKeySpec = serde_json::from_value(spec).expect("a valid ApiKeySpec");
    ApiKey::new(name, spec)
}

/// The token statuses of a Credential by name: (tokenHash, phase).
pub fn token_states(status: &CredentialStatus) -> BTreeMap<String, (Option<String>, Option<Phase>)> {
    status.tokens.iter().map(|t| (t.name.clone(), (t.record.token_hash.clone(), t.record.phase))).collect()
}

/// Creates keys named `<prefix>-<i>` for `i` in `0..count`, `concurrency` at a time.
pub async fn create_keys(keys: Api<ApiKey>, prefix: &str, count: usize, concurrency: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    futures::stream::iter(names.clone())
        .for_each_concurrent(concurrency, |name| {
            let keys = keys.clone();
            async move {
                keys.create(&PostParams::default(), &key(&name, serde_json::json!({})))
                    .await
                    .unwrap_or_else(|e| panic!("create {name}: {e}"));
            }
        })
        .await;
    names
}

/// Waits until every named key is Active for its current generation (one watch, one deadline).
pub async fn wait_all_active(keys: Api<ApiKey>, names: &[String], deadline: Duration) {
    use std::collections::HashSet;
    let mut pending: HashSet<String> = names.iter().cloned().collect();
    let mut stream = watcher(keys, watcher::Config::default()).backoff(keyward::retry::WatchBackoff::default()).boxed();
    let until = tokio::time::Instant::now() + deadline;
    while !pending.is_empty() {
        match tokio::time::timeout_at(until, stream.next()).await {
            Ok(Some(Ok(watcher::Event::Apply(key) | watcher::Event::InitApply(key)))) => {
                let active = key.status.as_ref().is_some_and(|s| {
                    s.record.phase == Some(Phase::Active) && s.observed_generation == key.metadata.generation
                });
                if active {
                    pending.remove(&key.name_any());
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("ApiKey watch ended"),
            Err(_) => panic!(
                "{} keys not Active within {deadline:?}, e.g. {:?}",
                pending.len(),
                pending.iter().take(5).collect::<Vec<_>>()
            ),
        }
    }
}
