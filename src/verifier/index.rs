//! The verifier's index: token hash to the entry it belongs to (see [`crate::judge`] for how
//! entries are made from keys and judged), kept in step with the watches.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use smallvec::SmallVec;

use crate::api::Kind;
use crate::judge::{self, Entry, ObjectKey};
use crate::token::Digest;

/// Token hashes of every indexed key.
///
/// Entries are bucketed by the first 8 bytes of their digest, and the full 32 bytes are then
/// compared in constant time, so the time a lookup takes does not tell how much of a guessed
/// hash matched.
#[derive(Debug, Default)]
pub struct Index {
    buckets: HashMap<u64, Bucket>,
    /// Each object's UID and token digests, to find its entries again on change or removal.
    objects: HashMap<Arc<ObjectKey>, Indexed>,
    /// Objects by `metadata.uid`, for access tokens, which name their key by UID.
    by_uid: HashMap<Arc<str>, Arc<ObjectKey>>,
    /// One copy of each namespace name.
    namespaces: HashSet<Arc<str>>,
    tokens: usize,
    /// Digests that two or more entries claim (refused for all of them).
    shared: usize,
}

/// The entries whose digests begin with the same 8 bytes: one, but for a hash that two keys
/// claim (or a collision of 64 bits), held in place rather than in an allocation of its own.
type Bucket = SmallVec<[Arc<Entry>; 1]>;

/// What the index keeps of one object beside its entries.
#[derive(Debug)]
struct Indexed {
    uid: Option<Arc<str>>,
    digests: Box<[Digest]>,
    /// The initial list of its watch that last showed it (see [`Index::retain_listed`]).
    list: ListNumber,
}

/// Numbers the initial lists of one watch, so that the objects a relist did not show can be
/// told after it without a set of the listed ones: 100,000 keys' names held at the very moment
/// the index is fullest. 0 is no list.
pub type ListNumber = u32;

fn bucket_of(digest: &Digest) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(head)
}

impl Index {
    /// Replaces everything known of `object` with `entries`.
    pub fn replace(&mut self, object: ObjectKey, entries: Vec<Entry>) {
        self.replace_listed(object, entries, 0);
    }

    /// [`Index::replace`], for an object that the watch's initial list number `list` showed (or
    /// a change after it).
    pub fn replace_listed(&mut self, object: ObjectKey, mut entries: Vec<Entry>, list: ListNumber) {
        self.remove(&object);
        if entries.is_empty() {
            return;
        }
        let namespace = match self.namespaces.get(&object.namespace) {
            Some(known) => known.clone(),
            None => {
                self.namespaces.insert(object.namespace.clone());
                object.namespace.clone()
            }
        };
        let object = Arc::new(ObjectKey { namespace, ..object });
        let digests = entries.iter().map(|e| e.digest).collect();
        let uid = entries[0].uid.clone();
        for mut entry in entries.drain(..) {
            entry.object = object.clone();
            let bucket = self.buckets.entry(bucket_of(&entry.digest)).or_default();
            let mut claimants = bucket.iter().filter(|e| e.digest == entry.digest);
            if let Some(other) = claimants.next() {
                // Status is written by the controller alone; two keys claiming one hash means
                // someone wrote a status by hand or restored a copy. Neither key is trusted.
                tracing::warn!(
                    key_id = %entry.key_id,
                    first = %format_args!("{}/{}", other.object.namespace, other.object.name),
                    second = %format_args!("{}/{}", entry.object.namespace, entry.object.name),
                    "two keys claim the same token hash; the token is refused for both until one lets go"
                );
                if claimants.next().is_none() {
                    self.shared += 1;
                }
            }
            bucket.push(Arc::new(entry));
            self.tokens += 1;
        }
        if let Some(uid) = &uid {
            self.by_uid.insert(uid.clone(), object.clone());
        }
        self.objects.insert(object, Indexed { uid, digests, list });
    }

    /// Forgets `object` and its tokens.
    pub fn remove(&mut self, object: &ObjectKey) {
        let Some(Indexed { uid, digests, .. }) = self.objects.remove(object) else { return };
        if let Some(uid) = uid
            && self.by_uid.get(&uid).is_some_and(|o| **o == *object)
        {
            self.by_uid.remove(&uid);
        }
        for digest in digests {
            let bucket_key = bucket_of(&digest);
            if let Some(bucket) = self.buckets.get_mut(&bucket_key) {
                let claimants = |bucket: &Bucket| bucket.iter().filter(|e| e.digest == digest).count();
                let (before, claimed_before) = (bucket.len(), claimants(bucket));
                bucket.retain(|e| !(e.digest == digest && *e.object == *object));
                self.tokens -= before - bucket.len();
                if claimed_before >= 2 && claimants(bucket) < 2 {
                    self.shared -= 1;
                }
                if bucket.is_empty() {
                    self.buckets.remove(&bucket_key);
                }
            }
        }
    }

    /// After the full list number `list` of `kind` (in `namespace`, or everywhere): forgets the
    /// objects that list did not show, which were deleted while the watch was down.
    pub fn retain_listed(&mut self, kind: Kind, namespace: Option<&str>, list: ListNumber) {
        let gone: Vec<ObjectKey> = self
            .objects
            .iter()
            .filter(|(o, indexed)| {
                o.kind == kind && namespace.is_none_or(|ns| *o.namespace == *ns) && indexed.list != list
            })
            .map(|(o, _)| (**o).clone())
            .collect();
        for object in &gone {
            self.remove(object);
        }
    }

    /// Whether a key with this `metadata.uid` is indexed.
    pub fn has_uid(&self, uid: &str) -> bool {
        self.by_uid.contains_key(uid)
    }

    /// The entry whose token hashes to `digest`. A hash claimed by two keys is not found.
    pub fn lookup(&self, digest: &Digest) -> Option<Arc<Entry>> {
        judge::unique(self.buckets.get(&bucket_of(digest))?, digest).cloned()
    }

    /// The entry of the key whose `metadata.uid` is `uid` (and of its token `token`, for a
    /// Credential), as [`Index::lookup`] finds it: a hash claimed by two keys is not found.
    pub fn lookup_uid(&self, uid: &str, token: Option<&str>) -> Option<Arc<Entry>> {
        let object = self.by_uid.get(uid)?;
        let indexed = self.objects.get(object)?;
        indexed
            .digests
            .iter()
            .filter_map(|digest| self.lookup(digest))
            .find(|entry| entry.object == *object && entry.token.as_deref() == token)
    }

    /// Token hashes indexed.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Token hashes claimed by two or more entries.
    pub fn shared_hashes(&self) -> usize {
        self.shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixtures::*;
    use crate::judge::{Code, apikey_entries, credential_entries, verify};
    use crate::token::Token;

    fn indexed(objects: &[(ObjectKey, Vec<Entry>)]) -> Index {
        let mut index = Index::default();
        for (key, entries) in objects {
            index.replace(key.clone(), entries.clone());
        }
        index
    }

    fn check(index: &Index, token: &Token, scopes: &[&str], ip: Option<&str>, now: &str) -> Code {
        let request = crate::judge::Request { scopes, client: ip.map(|ip| ip.parse().unwrap()), app: None };
        verify(token.expose(), &request, ts(now), |d| index.lookup(d)).code
    }

    #[test]
    fn a_credential_token_removed_from_spec_is_refused_at_once() {
        let (primary, next) = (Token::generate("kw"), Token::generate("kw"));
        let both = credential(&[("primary", &primary), ("next", &next)], &["primary", "next"]);
        let index = indexed(&[(ObjectKey::of(Kind::Credential, &both), credential_entries(&both))]);
        let now = "2026-02-01T00:00:00Z";
        assert_eq!(check(&index, &primary, &[], None, now), Code::Valid);
        assert_eq!(check(&index, &next, &[], None, now), Code::Valid);
        let Some(entry) = index.lookup(&next.digest()) else { panic!("indexed") };
        assert_eq!(entry.token.as_deref(), Some("next"));

        let only_next = credential(&[("primary", &primary), ("next", &next)], &["next"]);
        let mut index = index;
        index.replace(ObjectKey::of(Kind::Credential, &only_next), credential_entries(&only_next));
        assert_eq!(check(&index, &primary, &[], None, now), Code::NotFound);
        assert_eq!(check(&index, &next, &[], None, now), Code::Valid);
        assert_eq!(index.tokens(), 1);
    }

    #[test]
    fn removal_and_relists_forget_keys() {
        let (a, b) = (Token::generate("kw"), Token::generate("kw"));
        let mut key_b = apikey(&b, serde_json::json!({}), "2026-03-01T00:00:00Z");
        key_b.metadata.name = Some("other".into());
        let key_a = apikey(&a, serde_json::json!({}), "2026-03-01T00:00:00Z");
        let (obj_a, obj_b) = (ObjectKey::of(Kind::ApiKey, &key_a), ObjectKey::of(Kind::ApiKey, &key_b));
        let mut index = Index::default();
        index.replace_listed(obj_a.clone(), apikey_entries(&key_a), 1);
        index.replace_listed(obj_b.clone(), apikey_entries(&key_b), 1);
        index.retain_listed(Kind::ApiKey, Some("team-a"), 1);
        assert_eq!(index.tokens(), 2, "the list that showed both keeps both");
        // The watch relists (number 2) and shows only b: a was deleted meanwhile.
        index.replace_listed(obj_b.clone(), apikey_entries(&key_b), 2);
        index.retain_listed(Kind::ApiKey, Some("team-b"), 2);
        assert_eq!(index.tokens(), 2, "a relist of another namespace keeps team-a's keys");
        index.retain_listed(Kind::ApiKey, Some("team-a"), 2);
        assert_eq!(check(&index, &a, &[], None, CREATED), Code::NotFound);
        assert_eq!(check(&index, &b, &[], None, CREATED), Code::Valid);
        index.retain_listed(Kind::Credential, None, 3);
        assert_eq!(index.tokens(), 1, "a relist of another kind keeps ApiKeys");
        index.remove(&obj_b);
        assert_eq!((index.tokens(), index.buckets.len(), index.objects.len(), index.by_uid.len()), (0, 0, 0, 0));
    }

    #[test]
    fn keys_are_found_by_uid_and_token_name_until_removed() {
        let (primary, next) = (Token::generate("kw"), Token::generate("kw"));
        let mut both = credential(&[("primary", &primary), ("next", &next)], &["primary", "next"]);
        both.metadata.uid = Some("uid-credential".into());
        let mut key = apikey(&Token::generate("kw"), serde_json::json!({}), "2026-03-01T00:00:00Z");
        key.metadata.uid = Some("uid-apikey".into());
        let object = ObjectKey::of(Kind::Credential, &both);
        let mut index = indexed(&[
            (object.clone(), credential_entries(&both)),
            (ObjectKey::of(Kind::ApiKey, &key), apikey_entries(&key)),
        ]);
        let found = |index: &Index, uid: &str, token: Option<&str>| {
            index.lookup_uid(uid, token).map(|e| (e.object.name.to_string(), e.token.as_deref().map(String::from)))
        };
        assert_eq!(found(&index, "uid-credential", Some("next")), Some(("billing".into(), Some("next".into()))));
        assert_eq!(found(&index, "uid-credential", None), None, "a Credential's entry needs its token name");
        assert_eq!(found(&index, "uid-apikey", None), Some(("ci-deploy".into(), None)));
        assert_eq!(found(&index, "uid-apikey", Some("primary")), None);
        assert_eq!(found(&index, "uid-other", None), None);
        let only_primary = {
            let mut c = both.clone();
            c.spec.tokens.retain(|t| t.name == "primary");
            c
        };
        index.replace(object.clone(), credential_entries(&only_primary));
        assert_eq!(found(&index, "uid-credential", Some("next")), None, "a removed token at once");
        // The same name, re-created: the old UID no longer names it.
        let mut recreated = only_primary.clone();
        recreated.metadata.uid = Some("uid-recreated".into());
        index.replace(object.clone(), credential_entries(&recreated));
        assert_eq!(found(&index, "uid-credential", Some("primary")), None);
        assert!(found(&index, "uid-recreated", Some("primary")).is_some());
        index.remove(&object);
        assert_eq!(found(&index, "uid-recreated", Some("primary")), None);
    }

    #[test]
    fn a_hash_claimed_by_two_keys_is_refused() {
        let token = Token::generate("kw");
        let key_a = apikey(&token, serde_json::json!({}), "2026-03-01T00:00:00Z");
        let mut copy = key_a.clone();
        copy.metadata.namespace = Some("team-b".into());
        let obj_copy = ObjectKey::of(Kind::ApiKey, &copy);
        let mut index = indexed(&[
            (ObjectKey::of(Kind::ApiKey, &key_a), apikey_entries(&key_a)),
            (obj_copy.clone(), apikey_entries(&copy)),
        ]);
        assert_eq!(check(&index, &token, &[], None, CREATED), Code::NotFound);
        assert_eq!(index.shared_hashes(), 1);
        let mut third = key_a.clone();
        third.metadata.namespace = Some("team-c".into());
        let obj_third = ObjectKey::of(Kind::ApiKey, &third);
        index.replace(obj_third.clone(), apikey_entries(&third));
        assert_eq!(index.shared_hashes(), 1, "one hash, however many claim it");
        index.remove(&obj_third);
        assert_eq!(index.shared_hashes(), 1);
        index.remove(&obj_copy);
        assert_eq!(index.shared_hashes(), 0);
        assert_eq!(check(&index, &token, &[], None, CREATED), Code::Valid);
    }
}
