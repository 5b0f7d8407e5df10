//! How a request that presents a token is judged, and what it is answered: the codes of the
//! contract, what a key's tokens share (its policy), the judgement of one entry, and the
//! answer `/v1/verify` and `kubectl apikey verify` both give. The verifier's index and the
//! plugin's one-off lookup only find the entry; everything else happens here.

mod entries;

pub use entries::{Judged, apikey_entries, credential_entries};

use std::borrow::Borrow;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::api::{AppState, Applications, Kind};
use crate::token::{self, Digest};

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
    /// The application is neither allowed nor denied, and the key's default is `Pending`.
    AppPending,
    /// The application is denied, or unlisted under the default `Deny`.
    AppDenied,
}

impl Code {
    /// Every code, in declaration order (`code as usize` is its place here).
    pub const ALL: [Code; 9] = [
        Code::Valid,
        Code::NotFound,
        Code::Malformed,
        Code::Expired,
        Code::Inactive,
        Code::IpNotAllowed,
        Code::InsufficientScope,
        Code::AppPending,
        Code::AppDenied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "VALID",
            Code::NotFound => "NOT_FOUND",
            Code::Malformed => "MALFORMED",
            Code::Expired => "EXPIRED",
            Code::Inactive => "INACTIVE",
            Code::IpNotAllowed => "IP_NOT_ALLOWED",
            Code::InsufficientScope => "INSUFFICIENT_SCOPE",
            Code::AppPending => "APP_PENDING",
            Code::AppDenied => "APP_DENIED",
        }
    }
}

/// One key object: its kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    /// Shared by every key of the namespace in the verifier's index.
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
pub(crate) enum Standing {
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
    pub(crate) cidrs: Vec<IpNet>,
    pub(crate) standing: Standing,
    /// `spec.applications`; `None` when every application passes.
    pub applications: Option<Box<Applications>>,
}

impl Policy {
    /// The verdict on the application a request names (`None`: it names none).
    pub fn app_state(&self, app: Option<&str>) -> AppState {
        self.applications.as_deref().map_or(AppState::Allowed, |apps| apps.state(app))
    }
}

/// One token, with everything needed to judge and describe it. Boxed strings
/// and shared parts keep 100,000 of them in a few tens of MiB.
#[derive(Clone, Debug)]
pub struct Entry {
    pub(crate) digest: Digest,
    pub object: Arc<ObjectKey>,
    /// The key object's `metadata.uid`, shared by its entries: what access tokens name it by.
    pub uid: Option<Arc<str>>,
    /// The Credential token's name; `None` for an ApiKey.
    pub token: Option<Box<str>>,
    pub key_id: Box<str>,
    pub expires_at: Timestamp,
    pub policy: Arc<Policy>,
    /// The last sighting the usage recorder took from this entry (see [`crate::usage::Mark`]).
    pub(crate) usage_mark: crate::usage::Mark,
}

impl Entry {
    /// Judges a request that presented this entry's token. Pure: the clock is an argument.
    ///
    /// The token itself first (expired, inactive), then the application, then the request
    /// (address, scopes): an application that is not let in is not told whether its address
    /// and scopes would pass.
    pub fn judge<S: AsRef<str>>(&self, request: &Request<'_, S>, now: Timestamp) -> Code {
        let Request { scopes: required, client, app } = *request;
        if now >= self.expires_at {
            return Code::Expired;
        }
        if self.policy.standing != Standing::Active {
            return Code::Inactive;
        }
        match self.policy.app_state(app) {
            AppState::Allowed => {}
            AppState::Pending => return Code::AppPending,
            AppState::Denied => return Code::AppDenied,
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

/// The one entry among `entries` whose token hashes to `digest`, compared in constant time; a
/// hash claimed by two entries is not found (neither key is trusted).
pub fn unique<'e, E: Borrow<Entry>>(entries: impl IntoIterator<Item = &'e E>, digest: &Digest) -> Option<&'e E> {
    let mut found = None;
    let mut matches = 0u32;
    for entry in entries {
        if bool::from(entry.borrow().digest.ct_eq(digest)) {
            matches += 1;
            found = Some(entry);
        }
    }
    found.filter(|_| matches == 1)
}

/// A verdict on one presented token.
#[derive(Debug)]
pub struct Verdict {
    pub code: Code,
    /// The key, for every code but `NOT_FOUND` and `MALFORMED`.
    pub entry: Option<Arc<Entry>>,
    /// The scopes the presented token itself holds, when they may be narrower than its key's
    /// (an access token's `scope`, less any the key no longer grants); `None`: the key's.
    pub scopes: Option<Arc<[Box<str>]>>,
}

impl Verdict {
    /// A verdict on a token that holds its key's scopes.
    pub fn of(code: Code, entry: Option<Arc<Entry>>) -> Self {
        Self { code, entry, scopes: None }
    }

    /// The scopes the token grants: its own when narrower, else its key's.
    pub fn scopes(&self) -> &[Box<str>] {
        match (&self.scopes, &self.entry) {
            (Some(scopes), _) => scopes,
            (None, Some(entry)) => &entry.policy.scopes,
            (None, None) => &[],
        }
    }
}

/// The whole check of one request, but the lookup: a malformed token is refused before the
/// index is touched, and a found entry is judged after the index is let go.
pub fn verify<S: AsRef<str>>(
    token: &str,
    request: &Request<'_, S>,
    now: Timestamp,
    lookup: impl FnOnce(&Digest) -> Option<Arc<Entry>>,
) -> Verdict {
    if token::check(token).is_err() {
        return Verdict::of(Code::Malformed, None);
    }
    match lookup(&token::digest_of(token)) {
        None => Verdict::of(Code::NotFound, None),
        Some(entry) => Verdict::of(entry.judge(request, now), Some(entry)),
    }
}

/// What a request asks beside its token: the scopes it needs, the client's address and the
/// application it names.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a, S> {
    pub scopes: &'a [S],
    pub client: Option<IpAddr>,
    pub app: Option<&'a str>,
}

impl Request<'static, &'static str> {
    /// A request that needs no scope and names no application, from `client`.
    pub fn from(client: Option<IpAddr>) -> Self {
        Request { scopes: &[], client, app: None }
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

/// Keys to judge, for the tests of the judge and of the verifier's index.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::api::{
        ApiKey, ApiKeySpec, ApiKeyStatus, Credential, CredentialSpec, CredentialStatus, CredentialToken, Phase,
        TokenRecord, TokenStatus,
    };
    use crate::token::Token;
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    pub const CREATED: &str = "2026-01-01T00:00:00Z";

    pub fn apikey(token: &Token, spec: serde_json::Value, status_expiry: &str) -> ApiKey {
        let spec: ApiKeySpec = serde_json::from_value(spec).unwrap();
        let mut key = ApiKey::new("ci-deploy", spec);
        key.metadata.namespace = Some("team-a".into());
        key.metadata.generation = Some(1);
        key.metadata.creation_timestamp = Some(Time(ts(CREATED)));
        key.status = Some(ApiKeyStatus {
            record: TokenRecord {
                phase: Some(Phase::Active),
                key_id: Some(token.key_id()),
                token_hash: Some(token.hash().to_string()),
                expires_at: Some(Time(ts(status_expiry))),
                ..Default::default()
            },
            observed_generation: Some(1),
            ..Default::default()
        });
        key
    }

    pub fn credential(tokens: &[(&str, &Token)], spec_tokens: &[&str]) -> Credential {
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
                    record: TokenRecord {
                        key_id: Some(token.key_id()),
                        token_hash: Some(token.hash().to_string()),
                        issued_at: Some(Time(ts(CREATED))),
                        expires_at: Some(Time(ts("2026-03-01T00:00:00Z"))),
                        ..Default::default()
                    },
                })
                .collect(),
            ..Default::default()
        });
        credential
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::api::Phase;
    use crate::token::Token;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn check(entries: &[Entry], token: &Token, scopes: &[&str], ip: Option<&str>, now: &str) -> Code {
        check_app(entries, token, scopes, ip, None, now)
    }

    fn check_app(
        entries: &[Entry],
        token: &Token,
        scopes: &[&str],
        ip: Option<&str>,
        app: Option<&str>,
        now: &str,
    ) -> Code {
        let request = Request { scopes, client: ip.map(|ip| ip.parse().unwrap()), app };
        verify(token.expose(), &request, ts(now), |d| unique(entries, d).cloned().map(Arc::new)).code
    }

    fn single(key: &crate::api::ApiKey) -> Vec<Entry> {
        apikey_entries(key)
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
        let Some(entry) = unique(&index, &token.digest()) else { panic!("indexed") };
        assert_eq!((&*entry.object.name, &*entry.key_id), ("ci-deploy", token.key_id().as_str()));
    }

    #[test]
    fn unknown_and_malformed_tokens_are_told_apart() {
        let index = Vec::new();
        assert_eq!(check(&index, &Token::generate("kw"), &[], None, CREATED), Code::NotFound);
        let mut lookups = 0;
        for bad in [
            "",
            "kw_",
            "kw_short",
            "KW_0123456789ABCDEFGHIJabcdefghij4Us3aw",
            "kw_0123456789ABCDEFGHIJabcdefghij4Us3ax",
        ] {
            let verdict = verify(bad, &Request::from(None), ts(CREATED), |_| {
                lookups += 1;
                None
            });
            assert_eq!(verdict.code, Code::Malformed, "{bad:?}");
        }
        assert_eq!(lookups, 0, "a malformed token never reaches the index");
    }

    #[test]
    fn all_holds_every_code_in_its_place() {
        for (place, code) in Code::ALL.iter().enumerate() {
            // Fails to compile when a code is added, so that ALL cannot fall behind.
            match code {
                Code::Valid
                | Code::NotFound
                | Code::Malformed
                | Code::Expired
                | Code::Inactive
                | Code::IpNotAllowed
                | Code::InsufficientScope
                | Code::AppPending
                | Code::AppDenied => assert_eq!(*code as usize, place, "{code:?}"),
            }
        }
    }

    #[test]
    fn applications_are_judged_after_the_token_and_before_the_request() {
        let token = Token::generate("kw");
        let spec = serde_json::json!({
            "scopes": ["orders.read"],
            "allowedCIDRs": ["10.0.0.0/8"],
            "applications": {"default": "Pending", "allowed": ["billing-worker"], "denied": ["legacy-cron"]},
        });
        let index = single(&apikey(&token, spec, "2026-03-01T00:00:00Z"));
        let (now, inside, outside) = ("2026-02-01T00:00:00Z", Some("10.1.2.3"), Some("192.0.2.1"));
        let app = |app, scopes: &[&str], ip| check_app(&index, &token, scopes, ip, app, now);
        assert_eq!(app(Some("billing-worker"), &["orders.read"], inside), Code::Valid);
        assert_eq!(app(Some("new-report"), &["orders.read"], inside), Code::AppPending);
        assert_eq!(app(None, &["orders.read"], inside), Code::AppPending, "no name follows the default");
        assert_eq!(app(Some("legacy-cron"), &["orders.read"], inside), Code::AppDenied);
        // An application not let in is told so, not what the key's scopes or networks are.
        assert_eq!(app(Some("new-report"), &["orders.write"], outside), Code::AppPending);
        assert_eq!(app(Some("billing-worker"), &["orders.write"], inside), Code::InsufficientScope);
        assert_eq!(app(Some("billing-worker"), &["orders.read"], outside), Code::IpNotAllowed);
        // The token itself comes first.
        let late = "2026-03-01T00:00:00Z";
        assert_eq!(check_app(&index, &token, &[], inside, Some("legacy-cron"), late), Code::Expired);
        let inactive = serde_json::json!({"state": "Inactive", "applications": {"default": "Deny"}});
        let index = single(&apikey(&token, inactive, "2026-03-01T00:00:00Z"));
        assert_eq!(check_app(&index, &token, &[], None, Some("x"), now), Code::Inactive);
        // No policy: every application, and none, passes.
        let index = single(&apikey(&token, serde_json::json!({}), "2026-03-01T00:00:00Z"));
        assert_eq!(check_app(&index, &token, &[], None, Some("anything"), now), Code::Valid);
        let deny = serde_json::json!({"applications": {"default": "Deny", "allowed": ["a"]}});
        let index = single(&apikey(&token, deny, "2026-03-01T00:00:00Z"));
        assert_eq!(check_app(&index, &token, &[], None, Some("b"), now), Code::AppDenied);
        assert_eq!(check_app(&index, &token, &[], None, Some("a"), now), Code::Valid);
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
        key.status.as_mut().unwrap().record.phase = Some(Phase::Failed);
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

    #[test]
    fn keys_being_deleted_or_never_issued_are_not_indexed() {
        let token = Token::generate("kw");
        let mut key = apikey(&token, serde_json::json!({}), "2026-03-01T00:00:00Z");
        key.metadata.deletion_timestamp = Some(Time(ts(CREATED)));
        assert!(apikey_entries(&key).is_empty());
        let mut key = apikey(&token, serde_json::json!({}), "2026-03-01T00:00:00Z");
        key.status.as_mut().unwrap().record.token_hash = Some("sha256:not-hex".into());
        assert!(apikey_entries(&key).is_empty());
        key.status = None;
        assert!(apikey_entries(&key).is_empty());
    }
}
