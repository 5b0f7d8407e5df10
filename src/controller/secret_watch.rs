//! Which owners a watch event of our Secrets wakes. Every change wakes its owner; and because a
//! Secret deleted while the watch was down (an API server restart, a 410 after a long gap) never
//! gets a delete event, each relist is compared with the Secrets known before it, and the owners
//! of those that vanished are woken too, so that a lost token is re-issued at once rather than at
//! the owner's next periodic look.
//!
//! The same watch keeps [`SecretNames`]: which of our Secrets each owner has, so that a
//! reconcile reads only the Secrets that exist instead of listing them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource};

use crate::api::{Kind, LABEL_MANAGED_BY, MANAGED_BY_VALUE};
use crate::watch::api_in;

type SecretMeta = PartialObjectMeta<Secret>;

/// The names of the Secrets Credentials control (an ApiKey's one Secret is read by name), by
/// the UID of the Credential, as the watch last saw them, for the scopes (every namespace, or one) whose first list is in. Names only: what a
/// Secret holds is always read fresh (see [`super::secret::SecretStore::read`]).
#[derive(Default)]
pub struct SecretNames {
    by_owner: RwLock<HashMap<String, BTreeSet<String>>>,
    /// Watch scopes whose first list is in: `None` for every namespace.
    listed: tokio::sync::watch::Sender<HashSet<Option<String>>>,
}

/// The UID of the Credential that controls a Secret.
fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    let controller = owners.iter().find(|r| r.controller == Some(true))?;
    (controller.kind == crate::api::Kind::Credential.as_str()).then_some(controller.uid.as_str())
}

impl SecretNames {
    /// The names of the Secrets `owner_uid` controls in `namespace`; `None` until the watch of
    /// that namespace has listed once.
    pub fn of(&self, namespace: &str, owner_uid: &str) -> Option<BTreeSet<String>> {
        let listed = {
            let listed = self.listed.borrow();
            listed.contains(&None) || listed.contains(&Some(namespace.to_string()))
        };
        listed.then(|| self.owners().get(owner_uid).cloned().unwrap_or_default())
    }

    /// Resolves once the watch of `scope` has listed (the controller is ready only then).
    pub async fn listed(&self, scope: Option<String>) {
        let _ = self.listed.subscribe().wait_for(|listed| listed.contains(&scope)).await;
    }

    fn owners(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.by_owner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a Secret: seen by the watch, or just written by this process (so that a
    /// reconcile right after its own create does not take the Secret for missing).
    pub(crate) fn insert(&self, meta: &ObjectMeta) {
        let (Some(uid), Some(name)) = (controller_uid(meta), &meta.name) else { return };
        self.owners().entry(uid.to_string()).or_default().insert(name.clone());
    }

    /// Forgets a Secret: deleted, as the watch saw or this process did.
    pub(crate) fn remove(&self, meta: &ObjectMeta) {
        let (Some(uid), Some(name)) = (controller_uid(meta), &meta.name) else { return };
        let mut owners = self.owners();
        if let Some(owned) = owners.get_mut(uid) {
            owned.remove(name);
            if owned.is_empty() {
                owners.remove(uid);
            }
        }
    }
}

/// The Secrets known from the watch, by namespace and name: just enough of each (its
/// controller) to wake its owner if it vanishes, and to keep [`SecretNames`] if given one.
#[derive(Default)]
pub struct SecretLedger {
    /// Each Secret's controller (or `None`), by namespace (one shared string) and name.
    known: HashMap<Arc<str>, HashMap<Box<str>, Option<Controller>>>,
    /// The Secrets of the relist under way, once one has started.
    relisted: Option<HashMap<Arc<str>, HashSet<Box<str>>>>,
    /// The names index this ledger keeps, and the scope its watch covers.
    names: Option<(Arc<SecretNames>, Option<String>)>,
}

/// What is kept of a Secret's controller, when it is one of our kinds: a few short strings, not
/// a copy of its owner reference.
#[derive(Clone, Debug, PartialEq)]
struct Controller {
    kind: Kind,
    name: Box<str>,
    uid: Box<str>,
}

/// The controller of a Secret, when it is one of our kinds.
fn controller_of(meta: &ObjectMeta) -> Option<Controller> {
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    let owner = owners.iter().find(|r| r.controller == Some(true))?;
    let kind = [Kind::ApiKey, Kind::Credential].into_iter().find(|kind| kind.as_str() == owner.kind)?;
    Some(Controller { kind, name: owner.name.as_str().into(), uid: owner.uid.as_str().into() })
}

fn key_of(meta: &ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// A Secret as the owner's wake needs it: its name and its controller.
fn revive(namespace: &str, name: &str, controller: Option<Controller>) -> SecretMeta {
    let owner = controller.map(|controller| {
        let api_version = match controller.kind {
            Kind::ApiKey => crate::api::ApiKey::api_version(&()),
            Kind::Credential => crate::api::Credential::api_version(&()),
        };
        OwnerReference {
            api_version: api_version.into_owned(),
            kind: controller.kind.as_str().into(),
            name: controller.name.into(),
            uid: controller.uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    });
    SecretMeta {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            owner_references: owner.map(|owner| vec![owner]),
            ..Default::default()
        },
        ..Default::default()
    }
}

impl SecretLedger {
    /// A ledger that also keeps `names` for the watch of `scope` (a namespace, or `None`).
    pub fn keeping(names: Arc<SecretNames>, scope: Option<String>) -> Self {
        Self { names: Some((names, scope)), ..Default::default() }
    }

    fn names(&self) -> Option<&SecretNames> {
        self.names.as_ref().map(|(names, _)| names.as_ref())
    }

    /// The namespace's shared string, added if new.
    fn namespace(&mut self, meta: &ObjectMeta) -> Arc<str> {
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        match self.known.get_key_value(namespace) {
            Some((shared, _)) => shared.clone(),
            None => {
                let shared: Arc<str> = namespace.into();
                self.known.insert(shared.clone(), HashMap::new());
                shared
            }
        }
    }

    fn remember(&mut self, meta: &ObjectMeta) {
        let namespace = self.namespace(meta);
        let name: Box<str> = meta.name.as_deref().unwrap_or_default().into();
        if let Some(relisted) = self.relisted.as_mut() {
            relisted.entry(namespace.clone()).or_default().insert(name.clone());
        }
        self.known.entry(namespace).or_default().insert(name, controller_of(meta));
    }

    fn forget(&mut self, meta: &ObjectMeta) {
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        if let Some(secrets) = self.known.get_mut(namespace) {
            secrets.remove(meta.name.as_deref().unwrap_or_default());
            if secrets.is_empty() {
                self.known.remove(namespace);
            }
        }
    }

    /// Records `event` and returns the Secrets whose owners must look again. `own_write` tells
    /// a version this process wrote itself: it changes nothing its owner does not know.
    pub fn wake(&mut self, event: Event<SecretMeta>, own_write: impl Fn(&ObjectMeta) -> bool) -> Vec<SecretMeta> {
        match event {
            Event::Apply(secret) | Event::InitApply(secret) => {
                if let Some(names) = self.names() {
                    names.insert(&secret.metadata);
                }
                self.remember(&secret.metadata);
                if own_write(&secret.metadata) { Vec::new() } else { vec![secret] }
            }
            Event::Delete(secret) => {
                if let Some(names) = self.names() {
                    names.remove(&secret.metadata);
                }
                self.forget(&secret.metadata);
                vec![secret]
            }
            Event::Init => {
                self.relisted = Some(HashMap::new());
                Vec::new()
            }
            Event::InitDone => {
                let Some(relisted) = self.relisted.take() else { return Vec::new() };
                let mut woken = Vec::new();
                self.known.retain(|namespace, secrets| {
                    let kept = relisted.get(namespace);
                    secrets.retain(|name, controller| {
                        let vanished = !kept.is_some_and(|kept| kept.contains(name));
                        if vanished {
                            woken.push(revive(namespace, name, controller.take()));
                        }
                        !vanished
                    });
                    !secrets.is_empty()
                });
                if let Some((names, scope)) = &self.names {
                    woken.iter().for_each(|secret| names.remove(&secret.metadata));
                    names.listed.send_if_modified(|listed| listed.insert(scope.clone()));
                }
                if !woken.is_empty() {
                    tracing::info!(
                        count = woken.len(),
                        "Secrets vanished while the watch was down; waking their owners"
                    );
                }
                woken
            }
        }
    }
}

/// Versions of Secrets this process wrote itself, by Secret UID, and the creates under way. The
/// watch events of our own writes would only wake the owner to find what it had just written,
/// so the Secret watch drops them.
#[derive(Default)]
pub struct OwnWrites {
    versions: Mutex<HashMap<String, String>>,
    /// `(namespace, name)` of each create under way.
    creating: Mutex<HashSet<(String, String)>>,
    /// Bumped whenever a create under way ends.
    settled: tokio::sync::watch::Sender<u64>,
}

/// How long the Secret watch holds the event of a Secret whose create by this process is under
/// way, waiting to learn whether the version is ours.
const CREATE_SETTLE: Duration = Duration::from_secs(2);

/// Marks a create under way until dropped (after its result is recorded).
pub struct Creating<'a> {
    writes: &'a OwnWrites,
    key: (String, String),
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        lock(&self.writes.creating).remove(&self.key);
        self.writes.settled.send_modify(|count| *count = count.wrapping_add(1));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl OwnWrites {
    /// Remembers a Secret version returned by one of our writes.
    pub fn record(&self, meta: &ObjectMeta) {
        if let (Some(uid), Some(version)) = (&meta.uid, &meta.resource_version) {
            lock(&self.versions).insert(uid.clone(), version.clone());
        }
    }

    /// Marks the create of `namespace/name` under way: until the guard drops, the watch holds
    /// that Secret's events (at most [`CREATE_SETTLE`]), which may arrive before the create's
    /// own answer says the version is ours.
    pub fn creating(&self, namespace: &str, name: &str) -> Creating<'_> {
        let key = (namespace.to_string(), name.to_string());
        lock(&self.creating).insert(key.clone());
        Creating { writes: self, key }
    }

    /// True when `meta` is a version this process wrote (the token in it is one it issued).
    pub fn wrote(&self, meta: &ObjectMeta) -> bool {
        let (Some(uid), Some(version)) = (&meta.uid, &meta.resource_version) else { return false };
        lock(&self.versions).get(uid) == Some(version)
    }

    /// Waits while a create of this Secret by this process is under way (at most
    /// [`CREATE_SETTLE`]).
    async fn settle(&self, meta: &ObjectMeta) {
        let key = key_of(meta);
        let mut settled = self.settled.subscribe();
        let pending = || lock(&self.creating).contains(&key);
        if pending() {
            let _ = tokio::time::timeout(CREATE_SETTLE, settled.wait_for(|_| !pending())).await;
        }
    }

    /// True for the event of a version we wrote; a later version of that Secret forgets it.
    fn is_own(&self, meta: &ObjectMeta) -> bool {
        let Some(uid) = &meta.uid else { return false };
        let mut versions = lock(&self.versions);
        match versions.get(uid) {
            Some(version) if meta.resource_version.as_ref() == Some(version) => true,
            Some(_) => {
                versions.remove(uid);
                false
            }
            None => false,
        }
    }
}

/// The Secrets whose owners must look again, by the owner's kind.
pub struct Wakes {
    pub apikeys: tokio::sync::mpsc::Receiver<SecretMeta>,
    pub credentials: tokio::sync::mpsc::Receiver<SecretMeta>,
}

/// Wakes waiting for a slow reconciler, at most, before the watch waits for it.
const WAKES_QUEUED: usize = 1024;

/// One metadata-only watch of the Secrets the operator wrote, for one namespace (or all),
/// shared by both kinds: it keeps the ledger and the names index, and hands each owner kind the
/// Secrets that wake it. The future runs until the receivers are gone.
pub fn watch(
    client: &Client,
    namespace: Option<&str>,
    own_writes: Arc<OwnWrites>,
    names: Arc<SecretNames>,
) -> (impl Future<Output = ()> + Send + 'static, Wakes) {
    let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}");
    let mut ledger = SecretLedger::keeping(names, namespace.map(str::to_string));
    let events = watcher(
        api_in::<SecretMeta>(client, namespace),
        // Paged lists from etcd: an any-version list is served whole from the watch cache,
        // one response holding every Secret's metadata.
        watcher::Config::default().labels(&selector),
    )
    .backoff(crate::retry::WatchBackoff::default());
    let (apikeys, apikey_wakes) = tokio::sync::mpsc::channel(WAKES_QUEUED);
    let (credentials, credential_wakes) = tokio::sync::mpsc::channel(WAKES_QUEUED);
    let run = async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(%error, "Secret watch failed; retrying with backoff");
                    continue;
                }
            };
            if let Event::Apply(secret) | Event::InitApply(secret) = &event {
                own_writes.settle(&secret.metadata).await;
            }
            for secret in ledger.wake(event, |meta| own_writes.is_own(meta)) {
                let to = match controller_of(&secret.metadata).map(|owner| owner.kind) {
                    Some(Kind::ApiKey) => &apikeys,
                    Some(Kind::Credential) => &credentials,
                    None => continue,
                };
                if to.send(secret).await.is_err() {
                    return;
                }
            }
        }
    };
    (run, Wakes { apikeys: apikey_wakes, credentials: credential_wakes })
}

/// The wakes for one kind as the stream its controller owns.
pub fn stream(
    wakes: tokio::sync::mpsc::Receiver<SecretMeta>,
) -> impl futures::Stream<Item = Result<SecretMeta, watcher::Error>> + Send + 'static {
    futures::stream::unfold(wakes, |mut wakes| async move { wakes.recv().await.map(|secret| (Ok(secret), wakes)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, owner: &str) -> SecretMeta {
        let metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            uid: Some(format!("uid-{name}")),
            owner_references: Some(vec![OwnerReference {
                kind: "ApiKey".into(),
                name: owner.into(),
                uid: format!("uid-{owner}"),
                controller: Some(true),
                ..Default::default()
            }]),
            annotations: Some([("keyward.io/token-hash".to_string(), "sha256:x".to_string())].into()),
            ..Default::default()
        };
        SecretMeta { metadata, ..Default::default() }
    }

    fn names(woken: &[SecretMeta]) -> Vec<&str> {
        let mut names: Vec<&str> = woken.iter().map(|s| s.metadata.name.as_deref().unwrap_or_default()).collect();
        names.sort();
        names
    }

    fn list(ledger: &mut SecretLedger, secrets: &[SecretMeta]) -> Vec<SecretMeta> {
        let mut woken = ledger.wake(Event::Init, |_| false);
        for secret in secrets {
            woken.extend(ledger.wake(Event::InitApply(secret.clone()), |_| true));
        }
        woken.extend(ledger.wake(Event::InitDone, |_| false));
        woken
    }

    #[test]
    fn a_relist_wakes_the_owners_of_secrets_that_vanished_from_it() {
        let mut ledger = SecretLedger::default();
        let (a, b, c) = (secret("a-apikey", "a"), secret("b-apikey", "b"), secret("c-apikey", "c"));
        assert!(list(&mut ledger, &[a.clone(), b.clone()]).is_empty(), "the first list: nothing vanished");
        ledger.wake(Event::Apply(c.clone()), |_| false);
        // The watch was down; b was deleted meanwhile, and the relist no longer holds it.
        let woken = list(&mut ledger, &[a.clone(), c.clone()]);
        assert_eq!(names(&woken), ["b-apikey"]);
        let owner = &woken[0].metadata.owner_references.as_ref().expect("owners")[0];
        assert_eq!((owner.name.as_str(), owner.uid.as_str()), ("b", "uid-b"), "enough to find the owner");
        assert_eq!(
            (owner.kind.as_str(), owner.api_version.as_str(), owner.controller),
            ("ApiKey", "keyward.io/v1alpha1", Some(true))
        );
        assert_eq!(woken[0].metadata.namespace.as_deref(), Some("team-a"));
        assert!(woken[0].metadata.annotations.is_none(), "the ledger keeps no more than it needs");
        assert!(list(&mut ledger, &[a, c]).is_empty(), "it is woken once");
    }

    #[test]
    fn changes_wake_their_owners_unless_they_are_our_own_writes_and_deletes_always_do() {
        let mut ledger = SecretLedger::default();
        let a = secret("a-apikey", "a");
        assert_eq!(names(&ledger.wake(Event::Apply(a.clone()), |_| false)), ["a-apikey"]);
        assert!(ledger.wake(Event::Apply(a.clone()), |_| true).is_empty());
        assert_eq!(names(&ledger.wake(Event::Delete(a.clone()), |_| true)), ["a-apikey"]);
        assert!(list(&mut ledger, &[]).is_empty(), "a deleted Secret is not woken again by a relist");
    }

    #[test]
    fn the_names_index_answers_once_its_scope_has_listed_and_follows_every_change() {
        let cred = |name: &str, owner: &str| {
            let mut secret = secret(name, owner);
            secret.metadata.owner_references.as_mut().expect("owners")[0].kind = "Credential".into();
            secret
        };
        let names = Arc::new(SecretNames::default());
        let mut ledger = SecretLedger::keeping(names.clone(), Some("team-a".into()));
        ledger.wake(Event::Init, |_| false);
        ledger.wake(Event::InitApply(cred("billing-primary", "billing")), |_| true);
        assert_eq!(names.of("team-a", "uid-billing"), None, "not listed yet: the caller lists instead");
        ledger.wake(Event::InitApply(cred("billing-next", "billing")), |_| true);
        ledger.wake(Event::InitApply(secret("ci-apikey", "ci")), |_| true);
        ledger.wake(Event::InitDone, |_| false);
        let of = |owner: &str| names.of("team-a", owner).map(|n| n.into_iter().collect::<Vec<_>>());
        assert_eq!(of("uid-billing"), Some(vec!["billing-next".to_string(), "billing-primary".to_string()]));
        assert_eq!(of("uid-other"), Some(vec![]), "an owner without Secrets has none");
        assert_eq!(of("uid-ci"), Some(vec![]), "an ApiKey's Secret is read by name, not indexed");
        assert_eq!(names.of("team-b", "uid-billing"), None, "another namespace's watch has not listed");
        ledger.wake(Event::Delete(cred("billing-next", "billing")), |_| true);
        // Our own writes are not woken but are indexed.
        assert!(ledger.wake(Event::Apply(cred("billing-third", "billing")), |_| true).is_empty());
        assert_eq!(of("uid-billing"), Some(vec!["billing-primary".to_string(), "billing-third".to_string()]));
        // A relist that no longer holds one drops it from the index too.
        list(&mut ledger, &[cred("billing-third", "billing")]);
        assert_eq!(of("uid-billing"), Some(vec!["billing-third".to_string()]));
    }
}
