//! Which owners a watch event of our Secrets wakes. Every change wakes its owner; and because a
//! Secret deleted while the watch was down (an API server restart, a 410 after a long gap) never
//! gets a delete event, each relist is compared with the Secrets known before it, and the owners
//! of those that vanished are woken too, so that a lost token is re-issued at once rather than at
//! the owner's next periodic look.
//!
//! The same watch keeps [`SecretNames`]: which of our Secrets each owner has, so that a
//! reconcile reads only the Secrets that exist instead of listing them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;

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

/// The Secrets known from the watch, by namespace and name: just enough of each (its owner
/// references) to wake its owner if it vanishes, and to keep [`SecretNames`] if given one.
#[derive(Default)]
pub struct SecretLedger {
    known: HashMap<(String, String), SecretMeta>,
    /// The Secrets of the relist under way, once one has started.
    relisted: Option<HashSet<(String, String)>>,
    /// The names index this ledger keeps, and the scope its watch covers.
    names: Option<(Arc<SecretNames>, Option<String>)>,
}

fn key_of(meta: &ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// What is kept of a Secret: its identity and owners, nothing of its data or annotations.
fn slim(secret: &SecretMeta) -> SecretMeta {
    let meta = &secret.metadata;
    SecretMeta {
        types: secret.types.clone(),
        metadata: ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            owner_references: meta.owner_references.clone(),
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

    /// Records `event` and returns the Secrets whose owners must look again. `own_write` tells
    /// a version this process wrote itself: it changes nothing its owner does not know.
    pub fn wake(&mut self, event: Event<SecretMeta>, own_write: impl Fn(&ObjectMeta) -> bool) -> Vec<SecretMeta> {
        match event {
            Event::Apply(secret) => {
                if let Some(names) = self.names() {
                    names.insert(&secret.metadata);
                }
                self.known.insert(key_of(&secret.metadata), slim(&secret));
                if own_write(&secret.metadata) { Vec::new() } else { vec![secret] }
            }
            Event::Delete(secret) => {
                if let Some(names) = self.names() {
                    names.remove(&secret.metadata);
                }
                self.known.remove(&key_of(&secret.metadata));
                vec![secret]
            }
            Event::Init => {
                self.relisted = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(secret) => {
                let key = key_of(&secret.metadata);
                if let Some(relisted) = self.relisted.as_mut() {
                    relisted.insert(key.clone());
                }
                if let Some(names) = self.names() {
                    names.insert(&secret.metadata);
                }
                self.known.insert(key, slim(&secret));
                if own_write(&secret.metadata) { Vec::new() } else { vec![secret] }
            }
            Event::InitDone => {
                let Some(relisted) = self.relisted.take() else { return Vec::new() };
                let vanished: Vec<(String, String)> =
                    self.known.keys().filter(|key| !relisted.contains(*key)).cloned().collect();
                let woken: Vec<SecretMeta> = vanished.iter().filter_map(|key| self.known.remove(key)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

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
