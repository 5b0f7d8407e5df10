//! The one Secret writer every kind shares: builds token Secrets, reads and classifies what
//! exists, and writes only in ways that can never overwrite a token by accident (create-only,
//! replace with a resourceVersion precondition, delete with a UID precondition).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};

use super::metrics::Metrics;
use super::{Context, OwnWrites};
use crate::api::{
    ANNOTATION_EXPIRES_AT, ANNOTATION_ISSUED_AT, ANNOTATION_KEY_ID, ANNOTATION_OWNER, ANNOTATION_TEMPLATE_KEYS,
    ANNOTATION_TOKEN_HASH, LABEL_MANAGED_BY, LABEL_OWNER_UID, MANAGED_BY_VALUE, SECRET_TOKEN_KEY, SECRET_TYPE,
    SecretTemplate, validate::template_keys,
};
use crate::error::Result;
use crate::token::{Token, TokenHash};

/// Who owns a token Secret.
#[derive(Clone, Debug)]
pub struct Owner {
    /// `ApiKey` or `Credential`.
    pub kind: &'static str,
    pub api_version: String,
    pub name: String,
    pub uid: String,
}

/// An object's identity as the reconcilers need it: owner of its Secrets, namespace and
/// creation time. Objects from the API server always have these; a missing one is an error.
pub struct Identity {
    pub owner: Owner,
    pub namespace: String,
    pub created: Timestamp,
}

impl Identity {
    pub fn of<K: super::Reconciled>(object: &K) -> Result<Self> {
        let name = object.name_any();
        let missing = |field| crate::Error::MissingObjectField(name.clone(), field);
        Ok(Self {
            namespace: object.namespace().ok_or_else(|| missing("metadata.namespace"))?,
            created: object
                .meta()
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .ok_or_else(|| missing("metadata.creationTimestamp"))?,
            owner: Owner {
                kind: K::KIND.as_str(),
                api_version: K::api_version(&()).into_owned(),
                uid: object.uid().ok_or_else(|| missing("metadata.uid"))?,
                name: name.clone(),
            },
        })
    }
}

impl Owner {
    fn reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: self.api_version.clone(),
            kind: self.kind.to_string(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// Everything about a token Secret except the token itself.
#[derive(Clone, Debug)]
pub struct TokenSecret<'a> {
    pub name: &'a str,
    pub owner: &'a Owner,
    pub expires_at: Timestamp,
    pub template: &'a SecretTemplate,
}

impl TokenSecret<'_> {
    /// Labels the Secret should carry: ours plus the template's.
    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.template.labels.clone();
        labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY_VALUE.into());
        labels.insert(LABEL_OWNER_UID.into(), self.owner.uid.clone());
        labels
    }

    /// Annotations that do not depend on the token: ours plus the template's.
    fn annotations(&self) -> BTreeMap<String, String> {
        let mut annotations = self.template.annotations.clone();
        annotations.insert(ANNOTATION_EXPIRES_AT.into(), self.expires_at.to_string());
        annotations.insert(ANNOTATION_OWNER.into(), format!("{}/{}", self.owner.kind, self.owner.name));
        annotations.insert(ANNOTATION_TEMPLATE_KEYS.into(), template_keys(self.template));
        annotations
    }

    /// The complete Secret for a newly issued token.
    pub fn build(&self, token: &Token, issued_at: Timestamp) -> Secret {
        let mut annotations = self.annotations();
        annotations.insert(ANNOTATION_TOKEN_HASH.into(), token.hash().to_string());
        annotations.insert(ANNOTATION_KEY_ID.into(), token.key_id());
        annotations.insert(ANNOTATION_ISSUED_AT.into(), super::whole_seconds(issued_at).to_string());
        let mut data: BTreeMap<String, ByteString> =
            self.template.data.iter().map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes()))).collect();
        data.insert(SECRET_TOKEN_KEY.into(), ByteString(token.expose().as_bytes().to_vec()));
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.to_string()),
                labels: Some(self.labels()),
                annotations: Some(annotations),
                owner_references: Some(vec![self.owner.reference()]),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.into()),
            data: Some(data),
            ..Default::default()
        }
    }

    /// A merge patch bringing an existing Secret's labels, annotations and template data in
    /// line with this spec, or `None` when it already is. Never touches `data.token` or the
    /// token's own annotations.
    pub fn metadata_patch(&self, existing: &Secret) -> Option<Value> {
        let previous = previous_template_keys(existing);
        let labels = map_patch(existing.metadata.labels.as_ref(), &self.labels(), &previous.labels);
        let annotations = map_patch(existing.metadata.annotations.as_ref(), &self.annotations(), &previous.annotations);
        let wanted_data: BTreeMap<String, String> = self.template.data.clone();
        let existing_data: BTreeMap<String, String> = existing
            .data
            .iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != SECRET_TOKEN_KEY)
            .map(|(k, v)| (k.clone(), base64(&v.0)))
            .collect();
        let wanted_data_b64: BTreeMap<String, String> =
            wanted_data.iter().map(|(k, v)| (k.clone(), base64(v.as_bytes()))).collect();
        let data = map_patch(Some(&existing_data), &wanted_data_b64, &previous.data);
        if labels.is_empty() && annotations.is_empty() && data.is_empty() {
            return None;
        }
        let mut patch = json!({"metadata": {}});
        if !labels.is_empty() {
            patch["metadata"]["labels"] = Value::Object(labels);
        }
        if !annotations.is_empty() {
            patch["metadata"]["annotations"] = Value::Object(annotations);
        }
        if !data.is_empty() {
            patch["data"] = Value::Object(data);
        }
        Some(patch)
    }
}

#[derive(Default, serde::Deserialize)]
struct TemplateKeys {
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    annotations: Vec<String>,
    #[serde(default)]
    data: Vec<String>,
}

fn previous_template_keys(secret: &Secret) -> TemplateKeys {
    annotation(secret, ANNOTATION_TEMPLATE_KEYS).and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default()
}

/// Merge-patch entries: set what differs, null what the previous template had and this one drops.
fn map_patch(
    existing: Option<&BTreeMap<String, String>>,
    wanted: &BTreeMap<String, String>,
    previously_templated: &[String],
) -> serde_json::Map<String, Value> {
    let mut patch = serde_json::Map::new();
    for (key, value) in wanted {
        if existing.and_then(|e| e.get(key)) != Some(value) {
            patch.insert(key.clone(), Value::String(value.clone()));
        }
    }
    for key in previously_templated {
        if !wanted.contains_key(key) && existing.is_some_and(|e| e.contains_key(key)) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    patch
}

fn base64(bytes: &[u8]) -> String {
    // Round-trip through k8s-openapi's own ByteString serializer rather than another crate.
    match serde_json::to_value(ByteString(bytes.to_vec())) {
        Ok(Value::String(encoded)) => encoded,
        _ => String::new(),
    }
}

pub fn annotation<'s>(secret: &'s Secret, key: &str) -> Option<&'s str> {
    secret.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// What the operator found under a token Secret's name.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    /// Nothing: a token can be issued.
    Missing,
    /// A Secret that is not ours: never written to.
    Foreign,
    /// Ours, from an earlier object of the same kind and name that is being garbage collected.
    PreviousOwner,
    /// Ours, but already being deleted.
    Deleting,
    /// Ours, and its token matches the hash it records.
    Intact(Issued),
    /// Ours, but its token is missing or no longer matches the hash it records.
    Tampered,
}

/// The public record of an issued token, read from its Secret's annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct Issued {
    pub hash: TokenHash,
    pub key_id: String,
    pub issued_at: Option<Timestamp>,
}

/// Classifies what exists under a token Secret's name, for the owner `owner`.
pub fn classify(secret: Option<&Secret>, owner: &Owner) -> Found {
    let Some(secret) = secret else {
        return Found::Missing;
    };
    let controller = secret.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true));
    let Some(controller) = controller else {
        return Found::Foreign;
    };
    if controller.uid != owner.uid {
        let managed = secret.metadata.labels.as_ref().and_then(|l| l.get(LABEL_MANAGED_BY)).map(String::as_str)
            == Some(MANAGED_BY_VALUE);
        let same_owner_name = controller.kind == owner.kind && controller.name == owner.name;
        return if managed && same_owner_name { Found::PreviousOwner } else { Found::Foreign };
    }
    if secret.metadata.deletion_timestamp.is_some() {
        return Found::Deleting;
    }
    let recorded = annotation(secret, ANNOTATION_TOKEN_HASH).and_then(TokenHash::parse);
    let token = secret.data.as_ref().and_then(|d| d.get(SECRET_TOKEN_KEY)).map(|t| t.0.as_slice());
    match (recorded, token) {
        (Some(hash), Some(token)) if TokenHash::of(token) == hash => Found::Intact(Issued {
            hash,
            key_id: annotation(secret, ANNOTATION_KEY_ID).unwrap_or_default().to_string(),
            issued_at: annotation(secret, ANNOTATION_ISSUED_AT).and_then(|t| t.parse().ok()),
        }),
        _ => Found::Tampered,
    }
}

/// The outcome of a write that may lose a race.
pub enum Write<T> {
    Done(T),
    /// Someone else wrote first (the Secret exists, or changed since it was read).
    LostRace,
}

/// The Secrets of one namespace, written only in ways that cannot overwrite a token by
/// accident; every write is counted in the metrics.
pub struct SecretStore {
    api: Api<Secret>,
    metrics: Arc<Metrics>,
    own_writes: Arc<OwnWrites>,
    /// Kept in step with our own writes at once (see [`super::secret_watch::SecretNames`]).
    names: Arc<super::secret_watch::SecretNames>,
    namespace: String,
}

impl SecretStore {
    pub fn new(ctx: &Context, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(ctx.client.clone(), namespace),
            metrics: ctx.metrics.clone(),
            own_writes: ctx.own_writes.clone(),
            names: ctx.secret_names.clone(),
            namespace: namespace.to_string(),
        }
    }

    fn params() -> PostParams {
        PostParams { field_manager: Some(super::FIELD_MANAGER.into()), ..Default::default() }
    }

    /// Reads a Secret with a fresh GET: the token check must never trust a cache.
    pub async fn read(&self, name: &str) -> Result<Option<Secret>> {
        self.metrics.count_read("secrets", "get");
        Ok(self.api.get_opt(name).await?)
    }

    /// Whether this process wrote this very version of the Secret.
    pub fn wrote(&self, secret: &Secret) -> bool {
        self.own_writes.wrote(&secret.metadata)
    }

    /// Every Secret written for the owner with this UID (by its owner-uid label).
    pub async fn list_owned(&self, owner_uid: &str) -> Result<Vec<Secret>> {
        let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE},{LABEL_OWNER_UID}={owner_uid}");
        self.metrics.count_read("secrets", "list");
        Ok(self.api.list(&kube::api::ListParams::default().labels(&selector)).await?.items)
    }

    /// Creates a Secret; never replaces one that exists.
    pub async fn create(&self, secret: &Secret) -> Result<Write<Secret>> {
        self.metrics.count_write("secrets", "create");
        let _creating = self.own_writes.creating(&self.namespace, &secret.name_any());
        self.written(self.api.create(&Self::params(), secret).await)
    }

    /// Replaces a tampered Secret's content, only if it is still the version that was read.
    pub async fn replace(&self, existing: &Secret, mut secret: Secret) -> Result<Write<Secret>> {
        secret.metadata.resource_version = existing.metadata.resource_version.clone();
        secret.metadata.uid = existing.metadata.uid.clone();
        self.metrics.count_write("secrets", "update");
        self.written(self.api.replace(&existing.name_any(), &Self::params(), &secret).await)
    }

    /// Deletes a Secret, only if it is still the one that was read (same UID).
    pub async fn delete(&self, existing: &Secret) -> Result<()> {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: existing.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        self.metrics.count_write("secrets", "delete");
        match self.api.delete(&existing.name_any(), &params).await {
            Ok(_) => {
                self.names.remove(&existing.metadata);
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Applies a patch from [`TokenSecret::metadata_patch`], guarded by resourceVersion.
    pub async fn patch_metadata(&self, existing: &Secret, mut patch: Value) -> Result<Write<Secret>> {
        patch["metadata"]["resourceVersion"] = json!(existing.metadata.resource_version);
        let params = PatchParams { field_manager: Some(super::FIELD_MANAGER.into()), ..Default::default() };
        self.metrics.count_write("secrets", "patch");
        self.written(self.api.patch(&existing.name_any(), &params, &Patch::Merge(patch)).await)
    }

    /// Records a written version; a conflict (exists, or changed since read) or a vanished
    /// Secret means another writer won.
    fn written(&self, result: kube::Result<Secret>) -> Result<Write<Secret>> {
        match result {
            Ok(written) => {
                self.own_writes.record(&written.metadata);
                self.names.insert(&written.metadata);
                Ok(Write::Done(written))
            }
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(Write::LostRace),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner { kind: "ApiKey", api_version: "keyward.io/v1alpha1".into(), name: "ci".into(), uid: "uid-1".into() }
    }

    fn template() -> SecretTemplate {
        SecretTemplate {
            labels: [("team".into(), "a".into())].into(),
            annotations: [("note".into(), "x".into())].into(),
            data: [("endpoint".into(), "https://api.example.com".into())].into(),
        }
    }

    fn expiry() -> Timestamp {
        "2027-01-01T00:00:00Z".parse().expect("ts")
    }

    fn token_secret<'a>(owner: &'a Owner, template: &'a SecretTemplate) -> TokenSecret<'a> {
        TokenSecret { name: "ci-apikey", owner, expires_at: expiry(), template }
    }

    fn issued_secret(token: &Token) -> Secret {
        let template = template();
        let owner = owner();
        let spec = token_secret(&owner, &template);
        spec.build(token, expiry())
    }

    #[test]
    fn built_secret_follows_the_contract_layout() {
        let token = Token::generate("kw");
        let secret = issued_secret(&token);
        assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE));
        let data = secret.data.as_ref().expect("data");
        assert_eq!(data["token"].0, token.expose().as_bytes());
        assert_eq!(data["endpoint"].0, b"https://api.example.com");
        let labels = secret.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[LABEL_MANAGED_BY], "keyward");
        assert_eq!(labels[LABEL_OWNER_UID], "uid-1");
        assert_eq!(labels["team"], "a");
        let annotations = secret.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations[ANNOTATION_TOKEN_HASH], token.hash().to_string());
        assert_eq!(annotations[ANNOTATION_KEY_ID], token.key_id());
        assert_eq!(annotations[ANNOTATION_OWNER], "ApiKey/ci");
        assert_eq!(annotations[ANNOTATION_EXPIRES_AT], "2027-01-01T00:00:00Z");
        let owners = secret.metadata.owner_references.as_ref().expect("owners");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].uid, "uid-1");
        assert_eq!(
            classify(Some(&secret), &owner()),
            Found::Intact(Issued { hash: token.hash(), key_id: token.key_id(), issued_at: Some(expiry()) })
        );
    }

    #[test]
    fn a_secret_without_our_controller_reference_is_foreign() {
        let mut secret = issued_secret(&Token::generate("kw"));
        secret.metadata.owner_references = None;
        assert_eq!(classify(Some(&secret), &owner()), Found::Foreign);
        let other = Owner { name: "other".into(), uid: "uid-2".into(), ..owner() };
        let secret = issued_secret(&Token::generate("kw"));
        assert_eq!(classify(Some(&secret), &other), Found::Foreign);
    }

    #[test]
    fn a_secret_of_a_deleted_namesake_is_awaiting_collection() {
        let secret = issued_secret(&Token::generate("kw"));
        let reborn = Owner { uid: "uid-2".into(), ..owner() };
        assert_eq!(classify(Some(&secret), &reborn), Found::PreviousOwner);
    }

    #[test]
    fn a_changed_or_missing_token_is_tampered() {
        let mut secret = issued_secret(&Token::generate("kw"));
        let other = Token::generate("kw");
        secret.data.as_mut().expect("data").insert("token".into(), ByteString(other.expose().as_bytes().to_vec()));
        assert_eq!(classify(Some(&secret), &owner()), Found::Tampered);
        secret.data.as_mut().expect("data").remove("token");
        assert_eq!(classify(Some(&secret), &owner()), Found::Tampered);
    }

    #[test]
    fn metadata_patch_is_none_when_in_line_and_never_touches_the_token() {
        let token = Token::generate("kw");
        let secret = issued_secret(&token);
        let template = template();
        let owner = owner();
        let spec = token_secret(&owner, &template);
        assert_eq!(spec.metadata_patch(&secret), None);

        let changed = SecretTemplate {
            labels: [("team".into(), "b".into())].into(),
            annotations: Default::default(),
            data: [("region".into(), "eu".into())].into(),
        };
        let spec = TokenSecret { template: &changed, ..spec };
        let patch = spec.metadata_patch(&secret).expect("a patch");
        assert_eq!(patch["metadata"]["labels"]["team"], "b");
        assert_eq!(patch["metadata"]["annotations"]["note"], Value::Null);
        assert_eq!(patch["data"]["endpoint"], Value::Null);
        assert_eq!(patch["data"]["region"], base64(b"eu"));
        assert!(patch["data"].get("token").is_none());
        assert!(!patch.to_string().contains(token.expose()));
    }
}
