//! The verifier's index: token hash to the key it belongs to, built from ApiKeys and
//! Credentials (their spec and status; never a Secret), the judgement of one request, and the
//! answer it gets (from `/v1/verify` and `kubectl apikey verify` alike).
//!
//! Spec is read as well as status so that a change takes effect at once, before the controller
//! has reconciled it: `state: Inactive`, a removed Credential token, a shorter expiry.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::api::validate::{self, ExpiryPolicy};
use crate::api::{ApiKey, Credential, KeyPolicy, KeyState, Phase};
use crate::token::{self, Digest, TokenHash};

/// The answer codes of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Valid,
    NotFound,
    Malformed,
    Expired,
    Inactive,
    IpNotAllowed,
    InsufficientScope,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "VALID",
            Code::NotFound => "NOT_FOUND",
            Code::Malformed => "MALFORMED",
            Code::Expired => "EXPIRED",
            Code::Inactive => "INACTIVE",
            Code::IpNotAllowed => "IP_NOT_ALLOWED",
            Code::InsufficientScope => "INSUFFICIENT_SCOPE",
        }
    }
}

/// Which resource a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    ApiKey,
    Credential,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ApiKey => "ApiKey",
            Kind::Credential => "Credential",
        }
    }
}

/// One object in the index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    /// Shared by every key of the namespace (see [`Index::replace`]).
    pub namespace: Arc<str>,
    pub name: Box<str>,
}

impl ObjectKey {
    pub fn of<K: kube::Resource>(kind: Kind, object: &K) -> Self {
        Self { kind, namespace: object.namespace().unwrap_or_default().into(), name: object.name_any().into() }
    }
}

/// Whether a key may be used at all, before expiry, address and scopes are looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    Active,
    Inactive,
    /// The spec fails validation (or the controller said so for this generation): refused, as
    /// an inactive key is, rather than judged by rules that cannot be read.
    Invalid,
}

/// What every token of one key shares.
#[derive(Debug)]
pub struct Policy {
    pub scopes: Box<[Box<str>]>,
    cidrs: Vec<IpNet>,
    standing: Standing,
}

/// One token the verifier knows, with everything needed to judge and describe it. Boxed strings
/// and shared parts keep 100,000 of them in a few tens of MiB.
#[derive(Clone, Debug)]
pub struct Entry {
    digest: Digest,
    pub object: Arc<ObjectKey>,
    /// The Credential token's name; `None` for an ApiKey.
    pub token: Option<Box<str>>,
    pub key_id: Box<str>,
    pub expires_at: Timestamp,
    pub policy: Arc<Policy>,
}

impl Entry {
    /// Judges a request that presented this entry's token. Pure: the clock is an argument.
    pub fn judge<S: AsRef<str>>(&self, required: &[S], client: Option<IpAddr>, now: Timestamp) -> Code {
        if now >= self.expires_at {
            return Code::Expired;
        }
        if self.policy.standing != Standing::Active {
            return Code::Inactive;
        }
        let cidrs = &self.policy.cidrs;
        if !cidrs.is_empty() {
            // An IPv4 client seen on an IPv6 socket arrives as ::ffff:a.b.c.d.
            let allowed =
                client.map(|ip| ip.to_canonical()).is_some_and(|ip| cidrs.iter().any(|net| net.contains(&ip)));
            if !allowed {
                return Code::IpNotAllowed;
            }
        }
        if !crate::scope::grants_all(&self.policy.scopes, required) {
            return Code::InsufficientScope;
        }
        Code::Valid
    }
}

/// Expiry as the spec alone sets it: a spec naming none leaves it to status (the operator's
/// `--default-expiry` is not known here), because the default saturates to the end of time.
const SPEC_ONLY: ExpiryPolicy = ExpiryPolicy { default: Duration::MAX, max: None };

fn policy(policy: &KeyPolicy, valid: Option<KeyState>, failed_now: bool) -> Arc<Policy> {
    let standing = match valid {
        _ if failed_now => Standing::Invalid,
        None => Standing::Invalid,
        Some(KeyState::Active) => Standing::Active,
        Some(KeyState::Inactive) => Standing::Inactive,
    };
    let cidrs = policy.allowed_cidrs.iter().filter_map(|c| validate::parse_cidr(c).ok()).collect();
    let scopes = policy.scopes.iter().map(|s| s.as_str().into()).collect();
    Arc::new(Policy { scopes, cidrs, standing })
}

/// Whether the controller marked this very generation as failed (a spec the verifier cannot
/// check alone, such as one beyond `--max-expiry`).
fn failed_now(meta: &kube::api::ObjectMeta, phase: Option<Phase>, observed: Option<i64>) -> bool {
    phase == Some(Phase::Failed) && observed.is_some() && observed == meta.generation
}

/// The index entry of an ApiKey that holds a token; none while pending or being deleted.
pub fn apikey_entries(key: &ApiKey) -> Vec<Entry> {
    let Some(status) = &key.status else { return Vec::new() };
    let (Some(hash), Some(status_expiry), Some(key_id)) =
        (status.token_hash.as_deref().and_then(TokenHash::parse), &status.expires_at, &status.key_id)
    else {
        return Vec::new();
    };
    let Some(created) = &key.metadata.creation_timestamp else { return Vec::new() };
    if key.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let valid = validate::api_key(key, created.0, &SPEC_ONLY).ok();
    let expires_at = valid.as_ref().map_or(status_expiry.0, |v| v.expires_at.min(status_expiry.0));
    let failed = failed_now(&key.metadata, status.phase, status.observed_generation);
    vec![Entry {
        digest: hash.digest(),
        object: Arc::new(ObjectKey::of(Kind::ApiKey, key)),
        token: None,
        key_id: key_id.as_str().into(),
        expires_at,
        policy: policy(&key.spec.policy, valid.map(|v| v.state), failed),
    }]
}

/// The index entries of a Credential: one per issued token still named in spec.
pub fn credential_entries(credential: &Credential) -> Vec<Entry> {
    let Some(status) = &credential.status else { return Vec::new() };
    let Some(created) = &credential.metadata.creation_timestamp else { return Vec::new() };
    if credential.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let valid = validate::credential(credential, created.0, &SPEC_ONLY).ok();
    let failed = failed_now(&credential.metadata, status.phase, status.observed_generation);
    let shared = policy(&credential.spec.policy, valid.as_ref().map(|v| v.state), failed);
    let object = Arc::new(ObjectKey::of(Kind::Credential, credential));
    status
        .tokens
        .iter()
        // A token removed from spec stops working now, whatever status still says.
        .filter(|issued| credential.spec.tokens.iter().any(|t| t.name == issued.name))
        .filter_map(|issued| {
            let hash = TokenHash::parse(issued.token_hash.as_deref()?)?;
            let status_expiry = issued.expires_at.as_ref()?.0;
            let spec_expiry = valid
                .as_ref()
                .and_then(|v| v.tokens.iter().find(|t| t.name == issued.name))
                .zip(issued.issued_at.as_ref())
                .and_then(|(token, first_issued)| token.expires_at(first_issued.0, &SPEC_ONLY).ok());
            Some(Entry {
                digest: hash.digest(),
                object: object.clone(),
                token: Some(issued.name.as_str().into()),
                key_id: issued.key_id.as_deref()?.into(),
                expires_at: spec_expiry.map_or(status_expiry, |at| at.min(status_expiry)),
                policy: shared.clone(),
            })
        })
        .collect()
}

/// Token hashes of every indexed key.
///
/// Entries are bucketed by the first 8 bytes of their digest, and the full 32 bytes are then
/// compared in constant time, so the time a lookup takes does not tell how much of a guessed
/// hash matched.
#[derive(Debug, Default)]
pub struct Index {
    buckets: HashMap<u64, Vec<Arc<Entry>>>,
    /// Each object's token digests, to find its entries again on change or removal.
    objects: HashMap<Arc<ObjectKey>, Box<[Digest]>>,
    /// One copy of each namespace name.
    namespaces: HashSet<Arc<str>>,
    tokens: usize,
    /// Digests that two or more entries claim (refused for all of them).
    shared: usize,
}

fn bucket_of(digest: &Digest) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(head)
}

impl Index {
    /// Replaces everything known of `object` with `entries`.
    pub fn replace(&mut self, object: ObjectKey, mut entries: Vec<Entry>) {
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
        self.objects.insert(object, digests);
    }

    /// Forgets `object` and its tokens.
    pub fn remove(&mut self, object: &ObjectKey) {
        let Some(digests) = self.objects.remove(object) else { return };
        for digest in digests {
            let bucket_key = bucket_of(&digest);
            if let Some(bucket) = self.buckets.get_mut(&bucket_key) {
                let claimants = |bucket: &Vec<Arc<Entry>>| bucket.iter().filter(|e| e.digest == digest).count();
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

    /// After a full list of `kind` (in `namespace`, or everywhere): forgets the objects the list
    /// no longer holds, which were deleted while the watch was down.
    pub fn retain_listed(&mut self, kind: Kind, namespace: Option<&str>, listed: &HashSet<ObjectKey>) {
        let gone: Vec<ObjectKey> = self
            .objects
            .keys()
            .filter(|o| o.kind == kind && namespace.is_none_or(|ns| *o.namespace == *ns) && !listed.contains(&***o))
            .map(|o| (**o).clone())
            .collect();
        for object in &gone {
            self.remove(object);
        }
    }

    /// The entry whose token hashes to `digest`. A hash claimed by two keys is not found.
    pub fn lookup(&self, digest: &Digest) -> Option<Arc<Entry>> {
        let bucket = self.buckets.get(&bucket_of(digest))?;
        let mut found = None;
        let mut matches = 0u32;
        for entry in bucket {
            let equal = bool::from(entry.digest.ct_eq(digest));
            if equal {
                matches += 1;
                found = Some(entry);
            }
        }
        match found {
            Some(entry) if matches == 1 => Some(entry.clone()),
            _ => None,
        }
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

/// A verdict on one presented token.
#[derive(Debug)]
pub struct Verdict {
    pub code: Code,
    /// The key, for every code but `NOT_FOUND` and `MALFORMED`.
    pub entry: Option<Arc<Entry>>,
}

/// The whole check of one request, but the lookup: a malformed token is refused before the
/// index is touched, and a found entry is judged after the index is let go.
pub fn verify<S: AsRef<str>>(
    token: &str,
    required: &[S],
    client: Option<IpAddr>,
    now: Timestamp,
    lookup: impl FnOnce(&Digest) -> Option<Arc<Entry>>,
) -> Verdict {
    if token::check(token).is_err() {
        return Verdict { code: Code::Malformed, entry: None };
    }
    match lookup(&token::digest_of(token)) {
        None => Verdict { code: Code::NotFound, entry: None },
        Some(entry) => Verdict { code: entry.judge(required, client, now), entry: Some(entry) },
    }
}

/// The answer's `key` object.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    /// The Credential token's name; null for an ApiKey.
    token: Option<&'a str>,
    key_id: &'a str,
    scopes: &'a [Box<str>],
    expires_at: String,
}

impl<'a> From<&'a Entry> for KeyView<'a> {
    fn from(entry: &'a Entry) -> Self {
        KeyView {
            kind: entry.object.kind.as_str(),
            namespace: &entry.object.namespace,
            name: &entry.object.name,
            token: entry.token.as_deref(),
            key_id: &entry.key_id,
            scopes: &entry.policy.scopes,
            expires_at: entry.expires_at.to_string(),
        }
    }
}

/// The answer of `/v1/verify` (and of `kubectl apikey verify -o json`).
#[derive(Serialize)]
pub struct Answer<'a> {
    valid: bool,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<KeyView<'a>>,
}

impl<'a> From<&'a Verdict> for Answer<'a> {
    fn from(verdict: &'a Verdict) -> Self {
        Answer {
            valid: verdict.code == Code::Valid,
            code: verdict.code.as_str(),
            key: verdict.entry.as_deref().map(KeyView::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiKeySpec, ApiKeyStatus, CredentialSpec, CredentialStatus, CredentialToken, TokenStatus};
    use crate::token::Token;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    const CREATED: &str = "2026-01-01T00:00:00Z";

    fn apikey(token: &Token, spec: serde_json::Value, status_expiry: &str) -> ApiKey {
        let spec: ApiKeySpec = serde_json::from_value(spec).unwrap();
        let mut key = ApiKey::new("ci-deploy", spec);
        key.metadata.namespace = Some("team-a".into());
        key.metadata.generation = Some(1);
        key.metadata.creation_timestamp = Some(Time(ts(CREATED)));
        key.status = Some(ApiKeyStatus {
            phase: Some(Phase::Active),
            observed_generation: Some(1),
            key_id: Some(token.key_id()),
            token_hash: Some(token.hash().to_string()),
            expires_at: Some(Time(ts(status_expiry))),
            ..Default::default()
        });
        key
    }

    fn indexed(objects: &[(ObjectKey, Vec<Entry>)]) -> Index {
        let mut index = Index::default();
        for (key, entries) in objects {
            index.replace(key.clone(), entries.clone());
        }
        index
    }

    fn check(index: &Index, token: &Token, scopes: &[&str], ip: Option<&str>, now: &str) -> Code {
        let ip = ip.map(|ip| ip.parse().unwrap());
        verify(token.expose(), scopes, ip, ts(now), |d| index.lookup(d)).code
    }

    fn single(key: &ApiKey) -> Index {
        indexed(&[(ObjectKey::of(Kind::ApiKey, key), apikey_entries(key))])
    }

    #[test]
    fn a_good_token_is_valid_with_its_scopes() {
        let token = Token::generate("kw");
        let key = apikey(&token, serde_json::json!({"scopes": ["orders.read", "deploy.>"]}), "2026-03-01T00:00:00Z");
        let index = single(&key);
        let now = "2026-02-01T00:00:00Z";
        assert_eq!(check(&index, &token, &[], None, now), Code::Valid);
        assert_eq!(check(&index, &token, &["orders.read", "deploy.prod.write"], None, now), Code::Valid);
        assert_eq!(check(&index, &token, &["orders.write"], None, now), Code::InsufficientScope);
        let Some(entry) = index.lookup(&token.digest()) else { panic!("indexed") };
        assert_eq!((&*entry.object.name, &*entry.key_id), ("ci-deploy", token.key_id().as_str()));
    }

    #[test]
    fn unknown_and_malformed_tokens_are_told_apart() {
        let index = Index::default();
        assert_eq!(check(&index, &Token::generate("kw"), &[], None, CREATED), Code::NotFound);
        let mut lookups = 0;
        for bad in [
            "",
            "kw_",
            "kw_short",
            "KW_0123456789ABCDEFGHIJabcdefghij4Us3aw",
            "kw_0123456789ABCDEFGHIJabcdefghij4Us3ax",
        ] {
            let verdict = verify(bad, &[] as &[&str], None, ts(CREATED), |_| {
                lookups += 1;
                None
            });
            assert_eq!(verdict.code, Code::Malformed, "{bad:?}");
        }
        assert_eq!(lookups, 0, "a malformed token never reaches the index");
    }

    #[test]
    fn expiry_counts_to_the_second() {
        let token = Token::generate("kw");
        let key = apikey(&token, serde_json::json!({}), "2026-03-01T00:00:00Z");
        let index = single(&key);
        assert_eq!(check(&index, &token, &[], None, "2026-02-28T23:59:59Z"), Code::Valid);
        assert_eq!(check(&index, &token, &[], None, "2026-03-01T00:00:00Z"), Code::Expired);
    }

    #[test]
    fn a_shorter_spec_expiry_applies_before_the_controller_updates_status() {
        let token = Token::generate("kw");
        let key = apikey(&token, serde_json::json!({"expiresAt": "2026-02-01T00:00:00Z"}), "2026-03-01T00:00:00Z");
        assert_eq!(check(&single(&key), &token, &[], None, "2026-02-01T00:00:00Z"), Code::Expired);
        let key = apikey(&token, serde_json::json!({"expiresAfter": "1d"}), "2026-03-01T00:00:00Z");
        assert_eq!(check(&single(&key), &token, &[], None, "2026-01-02T00:00:00Z"), Code::Expired);
        // A spec naming no expiry leaves the status's (the operator's default).
        let key = apikey(&token, serde_json::json!({}), "2026-03-01T00:00:00Z");
        assert_eq!(check(&single(&key), &token, &[], None, "2026-02-28T00:00:00Z"), Code::Valid);
    }

    #[test]
    fn inactive_and_invalid_keys_are_refused_at_once() {
        let token = Token::generate("kw");
        let now = "2026-02-01T00:00:00Z";
        let key = apikey(&token, serde_json::json!({"state": "Inactive"}), "2026-03-01T00:00:00Z");
        assert_eq!(check(&single(&key), &token, &[], None, now), Code::Inactive);
        let key = apikey(&token, serde_json::json!({"allowedCIDRs": ["not-a-cidr"]}), "2026-03-01T00:00:00Z");
        assert_eq!(check(&single(&key), &token, &[], Some("10.0.0.1"), now), Code::Inactive);
        let mut key = apikey(&token, serde_json::json!({}), "2026-03-01T00:00:00Z");
        key.status.as_mut().unwrap().phase = Some(Phase::Failed);
        assert_eq!(check(&single(&key), &token, &[], None, now), Code::Inactive, "the controller refused this spec");
        key.metadata.generation = Some(2);
        assert_eq!(check(&single(&key), &token, &[], None, now), Code::Valid, "a newer spec is judged on its own");
    }

    #[test]
    fn allowed_cidrs_check_the_client_address() {
        let token = Token::generate("kw");
        let key = apikey(
            &token,
            serde_json::json!({"allowedCIDRs": ["10.0.0.0/8", "2001:db8::/32"]}),
            "2026-03-01T00:00:00Z",
        );
        let index = single(&key);
        let now = "2026-02-01T00:00:00Z";
        assert_eq!(check(&index, &token, &[], Some("10.1.2.3"), now), Code::Valid);
        assert_eq!(check(&index, &token, &[], Some("::ffff:10.1.2.3"), now), Code::Valid);
        assert_eq!(check(&index, &token, &[], Some("2001:db8::1"), now), Code::Valid);
        assert_eq!(check(&index, &token, &[], Some("192.168.0.1"), now), Code::IpNotAllowed);
        assert_eq!(check(&index, &token, &[], None, now), Code::IpNotAllowed, "no address, no pass");
    }

    fn credential(tokens: &[(&str, &Token)], spec_tokens: &[&str]) -> Credential {
        let spec = CredentialSpec {
            tokens: spec_tokens.iter().map(|n| CredentialToken { name: n.to_string(), ..Default::default() }).collect(),
            ..Default::default()
        };
        let mut credential = Credential::new("billing", spec);
        credential.metadata.namespace = Some("team-a".into());
        credential.metadata.creation_timestamp = Some(Time(ts(CREATED)));
        credential.status = Some(CredentialStatus {
            tokens: tokens
                .iter()
                .map(|(name, token)| TokenStatus {
                    name: name.to_string(),
                    key_id: Some(token.key_id()),
                    token_hash: Some(token.hash().to_string()),
                    issued_at: Some(Time(ts(CREATED))),
                    expires_at: Some(Time(ts("2026-03-01T00:00:00Z"))),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        credential
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
        let mut index = indexed(&[(obj_a.clone(), apikey_entries(&key_a)), (obj_b.clone(), apikey_entries(&key_b))]);
        assert_eq!(index.tokens(), 2);
        index.retain_listed(Kind::ApiKey, Some("team-a"), &HashSet::from([obj_b.clone()]));
        assert_eq!(check(&index, &a, &[], None, CREATED), Code::NotFound);
        assert_eq!(check(&index, &b, &[], None, CREATED), Code::Valid);
        index.retain_listed(Kind::Credential, None, &HashSet::new());
        assert_eq!(index.tokens(), 1, "a relist of another kind keeps ApiKeys");
        index.remove(&obj_b);
        assert_eq!((index.tokens(), index.buckets.len(), index.objects.len()), (0, 0, 0));
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

    #[test]
    fn keys_being_deleted_or_never_issued_are_not_indexed() {
        let token = Token::generate("kw");
        let mut key = apikey(&token, serde_json::json!({}), "2026-03-01T00:00:00Z");
        key.metadata.deletion_timestamp = Some(Time(ts(CREATED)));
        assert!(apikey_entries(&key).is_empty());
        let mut key = apikey(&token, serde_json::json!({}), "2026-03-01T00:00:00Z");
        key.status.as_mut().unwrap().token_hash = Some("sha256:not-hex".into());
        assert!(apikey_entries(&key).is_empty());
        key.status = None;
        assert!(apikey_entries(&key).is_empty());
    }
}
