//! Tokens as the tests see them: read from Secrets, every value each Secret ever held (from a
//! watch), and checked against the hashes in status.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::namespace::TestNamespace;
use super::wait::{DEADLINE, wait_for};

/// The token in a Secret's `data.token`.
pub fn token_in(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get("token")?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Records every token value each Secret in a namespace ever held, from a watch.
pub struct TokenHistory {
    pub seen: std::sync::Arc<std::sync::Mutex<BTreeMap<String, Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenHistory {
    /// Starts watching; returns once the watch has listed what exists.
    pub async fn start(secrets: Api<Secret>) -> Self {
        let seen: std::sync::Arc<std::sync::Mutex<BTreeMap<String, Vec<String>>>> = Default::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream =
                watcher(secrets, watcher::Config::default()).backoff(keyward::retry::WatchBackoff::default()).boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                        let id = format!("{}/{}", secret.name_any(), secret.uid().unwrap_or_default());
                        if let Some(token) = token_in(&secret) {
                            let mut seen = record.lock().expect("history lock");
                            let tokens = seen.entry(id).or_default();
                            if tokens.last() != Some(&token) {
                                tokens.push(token);
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(DEADLINE, ready_rx).await.expect("Secret watch listed in time").expect("watch task alive");
        Self { seen, task }
    }

    /// Every token any Secret held.
    pub fn all_tokens(&self) -> Vec<String> {
        self.seen.lock().expect("history lock").values().flatten().cloned().collect()
    }

    /// Secrets (name/uid) whose token changed after it was first written.
    pub fn rewritten(&self) -> Vec<String> {
        self.seen.lock().expect("history lock").iter().filter(|(_, t)| t.len() > 1).map(|(id, _)| id.clone()).collect()
    }

    /// Asserts no Secret's token ever changed and exactly `count` Secret objects held a token.
    /// Waits for the `count`th first: this watch of Secrets may trail whatever the caller
    /// waited on (watches of different resources keep no order between them).
    pub async fn assert_one_token_per_secret(&self, count: usize) {
        wait_for(format!("{count} Secrets in the token history"), DEADLINE, || async {
            let seen = self.secret_objects();
            if seen >= count { Ok(()) } else { Err(format!("{seen} so far")) }
        })
        .await;
        assert!(self.rewritten().is_empty(), "tokens changed after they were written: {:?}", self.rewritten());
        assert_eq!(self.secret_objects(), count, "some key got more than one Secret over the run");
    }

    /// How many distinct Secret objects (name/uid) held a token.
    pub fn secret_objects(&self) -> usize {
        self.seen.lock().expect("history lock").len()
    }
}

impl Drop for TokenHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks every named key's Secret holds a token hashing to the key's `status.tokenHash`, and
/// returns the tokens.
pub async fn assert_tokens_match_status(ns: &TestNamespace, names: &[String]) -> Vec<String> {
    let keys = ns.keys().list(&ListParams::default()).await.expect("list keys").items;
    let secrets = ns
        .secrets()
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=keyward"))
        .await
        .expect("list")
        .items
        .into_iter()
        // The signing keys' Secret, when the controller's namespace is this one, holds no token.
        .filter(|s| s.type_.as_deref() == Some(keyward::api::SECRET_TYPE))
        .collect::<Vec<_>>();
    assert_eq!(secrets.len(), names.len(), "exactly one Secret per key");
    let by_name: BTreeMap<String, &Secret> = secrets.iter().map(|s| (s.name_any(), s)).collect();
    let mut tokens = Vec::new();
    for key in keys.iter().filter(|k| names.contains(&k.name_any())) {
        let status = key.status.as_ref().expect("status");
        let secret = by_name
            .get(&format!("{}-apikey", key.name_any()))
            .unwrap_or_else(|| panic!("no Secret for {}", key.name_any()));
        let token = token_in(secret).expect("token");
        assert_eq!(
            status.record.token_hash.as_deref(),
            Some(keyward::token::TokenHash::of(token.as_bytes()).as_str()),
            "{}: the Secret's token does not hash to status.tokenHash",
            key.name_any()
        );
        tokens.push(token);
    }
    assert_eq!(tokens.len(), names.len());
    tokens
}
