//! Which owners a watch event of our Secrets wakes. Every change wakes its owner; and because a
//! Secret deleted while the watch was down (an API server restart, a 410 after a long gap) never
//! gets a delete event, each relist is compared with the Secrets known before it, and the owners
//! of those that vanished are woken too, so that a lost token is re-issued at once rather than at
//! the owner's next periodic look.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;

type SecretMeta = PartialObjectMeta<Secret>;

/// The Secrets known from the watch, by namespace and name: just enough of each (its owner
/// references) to wake its owner if it vanishes.
#[derive(Default)]
pub struct SecretLedger {
    known: HashMap<(String, String), SecretMeta>,
    /// The Secrets of the relist under way, once one has started.
    relisted: Option<HashSet<(String, String)>>,
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
    /// Records `event` and returns the Secrets whose owners must look again. `own_write` tells
    /// a version this process wrote itself: it changes nothing its owner does not know.
    pub fn wake(&mut self, event: Event<SecretMeta>, own_write: impl Fn(&ObjectMeta) -> bool) -> Vec<SecretMeta> {
        match event {
            Event::Apply(secret) => {
                self.known.insert(key_of(&secret.metadata), slim(&secret));
                if own_write(&secret.metadata) { Vec::new() } else { vec![secret] }
            }
            Event::Delete(secret) => {
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
                self.known.insert(key, slim(&secret));
                if own_write(&secret.metadata) { Vec::new() } else { vec![secret] }
            }
            Event::InitDone => {
                let Some(relisted) = self.relisted.take() else { return Vec::new() };
                let vanished: Vec<(String, String)> =
                    self.known.keys().filter(|key| !relisted.contains(*key)).cloned().collect();
                let woken: Vec<SecretMeta> = vanished.iter().filter_map(|key| self.known.remove(key)).collect();
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
}
