//! What the plugin reads of KeyUsages, which only the verifier writes: when each key was last
//! used (`list`), and its tokens' last use and its applications (`describe`). Usage recording
//! is optional (off, or not installed, or not readable by this user), so a KeyUsage that cannot
//! be read shows as `-` and never fails the command.

use std::collections::HashMap;

use jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

use super::cluster::{Cluster, Subject};
use super::error::Result;
use super::keys::{self, KeyResource};
use crate::api::usage::usage_name;
use crate::api::{Key, KeyUsage};

/// kubectl's name of the resource, in errors and notes.
const NOUN: &str = "keyusages";

/// Whether `usage` is `key`'s: its controller ownerReference names the key's UID. The KeyUsage
/// of a deleted key of the same name (until the garbage collector takes it) is not.
pub fn belongs_to<K: Resource>(usage: &KeyUsage, key: &K) -> bool {
    let owner = usage.owner_references().iter().find(|o| o.controller == Some(true));
    owner.is_some_and(|owner| key.meta().uid.as_ref() == Some(&owner.uid))
}

/// The last use of the keys of one kind, from one paged list of the KeyUsages beside them.
#[derive(Debug, Default)]
pub struct LastUse {
    /// By namespace and KeyUsage name: the owning key's UID and `status.lastUsedAt`.
    by_name: HashMap<(String, String), (String, Timestamp)>,
}

impl LastUse {
    /// Keeps what `usage` says of the last use of a key of kind `K`; nothing of another kind's,
    /// of one never used, or of one without an owner to tell which key it is.
    pub fn insert<K: Key>(&mut self, usage: &KeyUsage) {
        if usage.spec.kind != K::KIND.as_str() {
            return;
        }
        let Some(last_used) = usage.status.as_ref().and_then(|s| s.last_used_at.as_ref()) else { return };
        let Some(owner) = usage.owner_references().iter().find(|o| o.controller == Some(true)) else { return };
        let name = (usage.namespace().unwrap_or_default(), usage.name_any());
        self.by_name.insert(name, (owner.uid.clone(), last_used.0));
    }

    /// When `key` was last used, if its own KeyUsage says so.
    pub fn of<K: Key>(&self, key: &K) -> Option<Timestamp> {
        let name = (key.namespace().unwrap_or_default(), usage_name(K::KIND, &key.name_any()));
        let (owner, last_used) = self.by_name.get(&name)?;
        (key.meta().uid.as_ref() == Some(owner)).then_some(*last_used)
    }
}

/// The last use of every key of kind `K` in the namespace (or every namespace), from one paged
/// list. Empty, with a note on stderr, when this user may not list keyusages (403); empty and
/// quiet when the API server has no keyusages (404: usage recording is not installed).
pub async fn last_use<K: KeyResource>(cluster: &Cluster, all_namespaces: bool) -> Result<LastUse> {
    let api: Api<KeyUsage> = match all_namespaces {
        true => Api::all(cluster.client.clone()),
        false => Api::namespaced(cluster.client.clone(), &cluster.namespace),
    };
    let mut last_use = LastUse::default();
    let namespace = (!all_namespaces).then_some(cluster.namespace.as_str());
    let subject = Subject { resource: NOUN, name: None, namespace, ours: true };
    match keys::pages(&api, ListParams::default(), |usage| last_use.insert::<K>(&usage)).await {
        Ok(()) => Ok(last_use),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            eprintln!("note: you may not list {subject}, so LAST USED shows - for every key");
            Ok(LastUse::default())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(LastUse::default()),
        Err(e) => Err(cluster.explain(e, subject).await),
    }
}

/// The KeyUsage of `key`, for `describe`: `None` when there is none (never used, or usage
/// recording is off) or only a deleted namesake's; the problem when it cannot be read.
pub async fn usage_of<K: KeyResource>(cluster: &Cluster, key: &K) -> Result<Option<KeyUsage>, String> {
    let api: Api<KeyUsage> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    match api.get_opt(&usage_name(K::KIND, &key.name_any())).await {
        Ok(usage) => Ok(usage.filter(|usage| belongs_to(usage, key))),
        Err(kube::Error::Api(status)) if status.code == 403 => Err("forbidden".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKey;
    use crate::api::Credential;

    fn usage(name: &str, kind: &str, owner: &str, last_used: Option<&str>) -> KeyUsage {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.io/v1alpha1", "kind": "KeyUsage",
            "metadata": {"name": name, "namespace": "team-a", "ownerReferences": [{
                "apiVersion": "keyward.io/v1alpha1", "kind": kind, "name": "x", "uid": owner, "controller": true,
            }]},
            "spec": {"kind": kind, "name": "x"},
            "status": {"lastUsedAt": last_used},
        }))
        .unwrap()
    }

    fn apikey(name: &str, uid: &str) -> ApiKey {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.io/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": "team-a", "uid": uid}, "spec": {},
        }))
        .unwrap()
    }

    #[test]
    fn a_key_has_the_last_use_of_its_own_keyusage_only() {
        let mut last_use = LastUse::default();
        last_use.insert::<ApiKey>(&usage("apikey.ci", "ApiKey", "uid-ci", Some("2026-12-01T10:05:00Z")));
        last_use.insert::<ApiKey>(&usage("apikey.old", "ApiKey", "uid-deleted", Some("2026-12-01T10:05:00Z")));
        last_use.insert::<ApiKey>(&usage("apikey.idle", "ApiKey", "uid-idle", None));
        last_use.insert::<ApiKey>(&usage("credential.ci", "Credential", "uid-ci", Some("2026-12-02T00:00:00Z")));
        assert_eq!(last_use.of(&apikey("ci", "uid-ci")), Some("2026-12-01T10:05:00Z".parse().unwrap()));
        assert_eq!(last_use.of(&apikey("old", "uid-new")), None, "a deleted namesake's");
        assert_eq!(last_use.of(&apikey("idle", "uid-idle")), None, "never used");
        assert_eq!(last_use.of(&apikey("none", "uid-none")), None, "no KeyUsage");

        let mut credentials = LastUse::default();
        credentials.insert::<Credential>(&usage("apikey.ci", "ApiKey", "uid-ci", Some("2026-12-01T10:05:00Z")));
        assert!(credentials.by_name.is_empty(), "an ApiKey's KeyUsage kept for Credentials");
    }

    #[test]
    fn a_keyusage_belongs_to_the_key_its_controller_reference_names() {
        let mine = usage("apikey.ci", "ApiKey", "uid-ci", None);
        assert!(belongs_to(&mine, &apikey("ci", "uid-ci")));
        assert!(!belongs_to(&mine, &apikey("ci", "uid-other")));
        let mut orphan = mine.clone();
        orphan.metadata.owner_references = None;
        assert!(!belongs_to(&orphan, &apikey("ci", "uid-ci")));
    }
}
