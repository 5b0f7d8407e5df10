//! Spec validation, done by the operator itself: API servers without CEL (and kubectl with
//! `--validate=false`) let anything through, and a bad key must get a condition naming the field
//! and the bad value, not a crash or a silent default.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use jiff::Timestamp;

use super::credential::{MAX_TOKEN_NAME, MAX_TOKENS};
use super::names::{dns_label, label_value, qualified_name};
use super::{
    ANNOTATION_TEMPLATE_KEYS, ApiKey, Credential, KeyPolicy, KeyState, LABEL_MANAGED_BY, MAX_KEY_SCOPES,
    MAX_SCOPE_LENGTH, SECRET_TOKEN_KEY, SecretTemplate,
};
use crate::{scope, token};

// Moved to `expiry` and `names`; still named here too, for code that imports them from here.
pub use super::expiry::{ExpiryPolicy, expiry};
pub use super::names::dns_subdomain;

/// A spec field the operator refuses, with the value it found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    pub field: String,
    pub value: String,
    pub problem: String,
}

impl SpecError {
    pub(super) fn new(field: impl Into<String>, value: &str, problem: impl Into<String>) -> Self {
        Self { field: field.into(), value: shorten(value), problem: problem.into() }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: invalid value {:?}: {}", self.field, self.value, self.problem)
    }
}

/// Keeps messages short when a field holds something huge.
fn shorten(value: &str) -> String {
    const MAX: usize = 80;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_string(),
    }
}

/// An `ApiKey` spec that passed validation, with every default applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidApiKey {
    pub state: KeyState,
    pub prefix: String,
    pub secret_name: String,
    pub expires_at: Timestamp,
    pub template: SecretTemplate,
}

/// Validates an ApiKey against the contract; `created` is its `metadata.creationTimestamp`.
pub fn api_key(key: &ApiKey, created: Timestamp, policy: &ExpiryPolicy) -> Result<ValidApiKey, SpecError> {
    let spec = &key.spec;
    common(&spec.policy)?;
    let secret_name = key.secret_name();
    if let Err(problem) = dns_subdomain(&secret_name) {
        return Err(SpecError::new("spec.secretName", &secret_name, problem));
    }
    let expires_at = expiry("spec", spec.expires_after.as_deref(), spec.expires_at.as_deref(), created, policy)?;
    Ok(ValidApiKey {
        state: spec.policy.state.unwrap_or_default(),
        prefix: spec.policy.token_prefix.clone().unwrap_or_else(|| token::DEFAULT_PREFIX.to_string()),
        secret_name,
        expires_at,
        template: spec.policy.secret_template.clone().unwrap_or_default(),
    })
}

/// A `Credential` spec that passed validation, with every default applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidCredential {
    pub state: KeyState,
    pub prefix: String,
    pub template: SecretTemplate,
    pub tokens: Vec<ValidToken>,
}

/// One Credential token that passed validation. Its expiry needs its first-issue time, known
/// only when reconciling: see [`ValidToken::expires_at`].
#[derive(Clone, Debug, PartialEq)]
pub struct ValidToken {
    pub name: String,
    pub secret_name: String,
    path: String,
    expires_after: Option<String>,
    expires_at: Option<String>,
}

impl ValidToken {
    /// The token's expiry when first issued at `first_issued`.
    pub fn expires_at(&self, first_issued: Timestamp, policy: &ExpiryPolicy) -> Result<Timestamp, SpecError> {
        expiry(&self.path, self.expires_after.as_deref(), self.expires_at.as_deref(), first_issued, policy)
    }
}

/// Validates a Credential; `created` is its `metadata.creationTimestamp`, against which token
/// lifetimes are checked here (each is checked again from its own first issue later).
pub fn credential(
    credential: &Credential,
    created: Timestamp,
    policy: &ExpiryPolicy,
) -> Result<ValidCredential, SpecError> {
    let spec = &credential.spec;
    common(&spec.policy)?;
    if spec.tokens.len() > MAX_TOKENS {
        return Err(SpecError::new(
            "spec.tokens",
            &format!("{} tokens", spec.tokens.len()),
            format!("a Credential holds at most {MAX_TOKENS} tokens"),
        ));
    }
    let mut tokens = Vec::with_capacity(spec.tokens.len());
    for (i, token) in spec.tokens.iter().enumerate() {
        let field = format!("spec.tokens[{i}].name");
        dns_label(&token.name, MAX_TOKEN_NAME).map_err(|p| SpecError::new(&field, &token.name, p))?;
        if spec.tokens[..i].iter().any(|t| t.name == token.name) {
            return Err(SpecError::new(field, &token.name, "token names must be unique"));
        }
        let secret_name = credential.secret_name(&token.name);
        dns_subdomain(&secret_name).map_err(|p| SpecError::new(&field, &token.name, format!("Secret name {p}")))?;
        let valid = ValidToken {
            name: token.name.clone(),
            secret_name,
            path: format!("spec.tokens[{i}]"),
            expires_after: token.expires_after.clone(),
            expires_at: token.expires_at.clone(),
        };
        valid.expires_at(created, policy)?;
        tokens.push(valid);
    }
    Ok(ValidCredential {
        state: spec.policy.state.unwrap_or_default(),
        prefix: spec.policy.token_prefix.clone().unwrap_or_else(|| token::DEFAULT_PREFIX.to_string()),
        template: spec.policy.secret_template.clone().unwrap_or_default(),
        tokens,
    })
}

/// The checks every kind shares: description, scopes, CIDRs, prefix, Secret template and
/// applications.
pub fn common(policy: &KeyPolicy) -> Result<(), SpecError> {
    let (description, scopes, cidrs) = (policy.description.as_deref(), &policy.scopes, &policy.allowed_cidrs);
    let (prefix, template) = (policy.token_prefix.as_deref(), policy.secret_template.as_ref());
    if let Some(description) = description
        && description.chars().count() > 1024
    {
        return Err(SpecError::new("spec.description", description, "must be at most 1024 characters"));
    }
    if scopes.len() > MAX_KEY_SCOPES {
        return Err(SpecError::new(
            "spec.scopes",
            &format!("{} scopes", scopes.len()),
            format!("a key grants at most {MAX_KEY_SCOPES} scopes"),
        ));
    }
    for (i, granted) in scopes.iter().enumerate() {
        let field = format!("spec.scopes[{i}]");
        if granted.len() > MAX_SCOPE_LENGTH {
            return Err(SpecError::new(field, granted, format!("a scope is at most {MAX_SCOPE_LENGTH} characters")));
        }
        scope::validate_granted(granted).map_err(|p| SpecError::new(field, granted, p))?;
    }
    for (i, cidr) in cidrs.iter().enumerate() {
        parse_cidr(cidr).map_err(|p| SpecError::new(format!("spec.allowedCIDRs[{i}]"), cidr, p))?;
    }
    if let Some(prefix) = prefix
        && !token::is_valid_prefix(prefix)
    {
        return Err(SpecError::new(
            "spec.tokenPrefix",
            prefix,
            "must match ^[a-z][a-z0-9]{0,15}$ (a lowercase letter, then up to 15 lowercase letters or digits)",
        ));
    }
    if let Some(template) = template {
        secret_template(template)?;
    }
    if let Some(applications) = &policy.applications {
        applications.validate()?;
    }
    Ok(())
}

/// Parses an allow-list entry: a CIDR, or a single address meaning just that host.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| "expected a CIDR such as 10.0.0.0/8 or 2001:db8::/32".to_string())
}

fn secret_template(template: &SecretTemplate) -> Result<(), SpecError> {
    for (key, value) in &template.labels {
        let field = format!("spec.secretTemplate.labels[{key}]");
        if key == LABEL_MANAGED_BY || is_reserved(key) {
            return Err(SpecError::new(field, key, "this label is set by the operator"));
        }
        qualified_name(key).map_err(|p| SpecError::new(&field, key, p))?;
        label_value(value).map_err(|p| SpecError::new(&field, value, p))?;
    }
    for key in template.annotations.keys() {
        let field = format!("spec.secretTemplate.annotations[{key}]");
        if is_reserved(key) || key == ANNOTATION_TEMPLATE_KEYS {
            return Err(SpecError::new(field, key, "annotations under keyward.io/ are set by the operator"));
        }
        qualified_name(key).map_err(|p| SpecError::new(&field, key, p))?;
    }
    for key in template.data.keys() {
        let field = format!("spec.secretTemplate.data[{key}]");
        if key == SECRET_TOKEN_KEY {
            return Err(SpecError::new(field, key, "the key token is reserved for the token itself"));
        }
        if key.is_empty() || key.len() > 253 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
            return Err(SpecError::new(field, key, "Secret data keys hold only A-Z, a-z, 0-9, '-', '_' and '.'"));
        }
    }
    Ok(())
}

fn is_reserved(key: &str) -> bool {
    key.starts_with("keyward.io/")
}

/// Template keys, recorded on the Secret so later template changes can remove what they dropped.
pub fn template_keys(template: &SecretTemplate) -> String {
    fn keys<V>(map: &BTreeMap<String, V>) -> Vec<&str> {
        map.keys().map(String::as_str).collect()
    }
    serde_json::json!({
        "labels": keys(&template.labels),
        "annotations": keys(&template.annotations),
        "data": keys(&template.data),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::ApiKeySpec;

    fn key(spec: ApiKeySpec) -> ApiKey {
        let mut key = ApiKey::new("ci-deploy", spec);
        key.metadata.namespace = Some("team-a".into());
        key
    }

    fn created() -> Timestamp {
        "2026-11-22T10:00:00Z".parse().expect("valid timestamp")
    }

    fn policy(policy: KeyPolicy) -> ApiKeySpec {
        ApiKeySpec { policy, ..Default::default() }
    }

    fn error_of(spec: ApiKeySpec) -> SpecError {
        api_key(&key(spec), created(), &ExpiryPolicy::default()).expect_err("spec should be refused")
    }

    #[test]
    fn defaults_apply_when_fields_are_absent() {
        let valid = api_key(&key(ApiKeySpec::default()), created(), &ExpiryPolicy::default()).expect("valid");
        assert_eq!(valid.prefix, "kw");
        assert_eq!(valid.secret_name, "ci-deploy-apikey");
        assert_eq!(valid.state, KeyState::Active);
        assert_eq!(valid.expires_at, "2027-02-20T10:00:00Z".parse::<Timestamp>().expect("ts"));
    }

    #[test]
    fn expires_after_counts_from_creation() {
        let spec = ApiKeySpec { expires_after: Some("1w2d".into()), ..Default::default() };
        let valid = api_key(&key(spec), created(), &ExpiryPolicy::default()).expect("valid");
        assert_eq!(valid.expires_at, "2026-12-01T10:00:00Z".parse::<Timestamp>().expect("ts"));
    }

    #[test]
    fn expires_at_is_taken_as_written() {
        let spec = ApiKeySpec { expires_at: Some("2027-01-01T00:00:00Z".into()), ..Default::default() };
        let valid = api_key(&key(spec), created(), &ExpiryPolicy::default()).expect("valid");
        assert_eq!(valid.expires_at, "2027-01-01T00:00:00Z".parse::<Timestamp>().expect("ts"));
    }

    #[test]
    fn bad_fields_are_named_with_their_value() {
        let cases: Vec<(ApiKeySpec, &str, &str)> = vec![
            (ApiKeySpec { expires_after: Some("3x".into()), ..Default::default() }, "spec.expiresAfter", "3x"),
            (ApiKeySpec { expires_at: Some("tomorrow".into()), ..Default::default() }, "spec.expiresAt", "tomorrow"),
            (
                ApiKeySpec {
                    expires_after: Some("1d".into()),
                    expires_at: Some("2027-01-01T00:00:00Z".into()),
                    ..Default::default()
                },
                "spec.expiresAt",
                "2027-01-01T00:00:00Z",
            ),
            (
                policy(KeyPolicy {
                    allowed_cidrs: vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()],
                    ..Default::default()
                }),
                "spec.allowedCIDRs[1]",
                "10.0.0.0/33",
            ),
            (policy(KeyPolicy { token_prefix: Some("Acme".into()), ..Default::default() }), "spec.tokenPrefix", "Acme"),
            (
                policy(KeyPolicy { scopes: vec!["orders..read".into()], ..Default::default() }),
                "spec.scopes[0]",
                "orders..read",
            ),
            (ApiKeySpec { secret_name: Some("Bad_Name".into()), ..Default::default() }, "spec.secretName", "Bad_Name"),
            (
                policy(KeyPolicy {
                    secret_template: Some(SecretTemplate {
                        data: [("token".into(), "x".into())].into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                "spec.secretTemplate.data[token]",
                "token",
            ),
            (
                policy(KeyPolicy {
                    secret_template: Some(SecretTemplate {
                        labels: [(LABEL_MANAGED_BY.into(), "me".into())].into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                "spec.secretTemplate.labels[app.kubernetes.io/managed-by]",
                "app.kubernetes.io/managed-by",
            ),
            (policy(KeyPolicy { description: Some("x".repeat(1025)), ..Default::default() }), "spec.description", ""),
        ];
        for (spec, field, value) in cases {
            let error = error_of(spec);
            assert_eq!(error.field, field);
            assert!(error.value.starts_with(value), "{error}");
            assert!(error.to_string().starts_with(&format!("{field}: invalid value")), "{error}");
        }
    }

    #[test]
    fn a_timestamp_beyond_the_range_is_told_apart_from_a_malformed_one() {
        let far = error_of(ApiKeySpec { expires_at: Some("9999-12-31T23:59:59Z".into()), ..Default::default() });
        assert_eq!(far.field, "spec.expiresAt");
        assert!(far.problem.contains("later than the latest expiry") && far.problem.contains("9999-12-30"), "{far}");
        let bad = error_of(ApiKeySpec { expires_at: Some("2027-13-01T00:00:00Z".into()), ..Default::default() });
        assert!(bad.problem.contains("expected an RFC 3339 timestamp"), "{bad}");
        let no_zone = error_of(ApiKeySpec { expires_at: Some("2027-01-01T00:00:00".into()), ..Default::default() });
        assert!(no_zone.problem.contains("expected an RFC 3339 timestamp"), "{no_zone}");
    }

    #[test]
    fn scopes_are_limited_in_number_and_length() {
        let largest = KeyPolicy {
            scopes: (0..MAX_KEY_SCOPES).map(|i| format!("{i:0>w$}", w = MAX_SCOPE_LENGTH)).collect(),
            ..Default::default()
        };
        assert!(common(&largest).is_ok(), "64 scopes of 128 characters are allowed");
        let too_many = KeyPolicy { scopes: vec!["a".into(); MAX_KEY_SCOPES + 1], ..Default::default() };
        let error = common(&too_many).expect_err("65 scopes");
        assert_eq!((error.field.as_str(), error.value.as_str()), ("spec.scopes", "65 scopes"));
        let too_long = KeyPolicy { scopes: vec!["ok".into(), "a".repeat(MAX_SCOPE_LENGTH + 1)], ..Default::default() };
        let error = common(&too_long).expect_err("129 characters");
        assert_eq!(error.field, "spec.scopes[1]");
        assert!(error.problem.contains("at most 128 characters"), "{error}");
    }

    #[test]
    fn a_lifetime_beyond_max_expiry_is_refused_not_clamped() {
        let policy = ExpiryPolicy { max: Some(Duration::from_secs(30 * 86_400)), ..Default::default() };
        let spec = ApiKeySpec { expires_after: Some("31d".into()), ..Default::default() };
        let error = api_key(&key(spec), created(), &policy).expect_err("beyond the cap");
        assert_eq!(error.field, "spec.expiresAfter");
        assert!(error.problem.contains("4w2d"), "{error}");
        let spec = ApiKeySpec { expires_after: Some("30d".into()), ..Default::default() };
        assert!(api_key(&key(spec), created(), &policy).is_ok());
        // The default expiry is not capped by the spec check: it is the operator's own setting.
        assert!(api_key(&key(ApiKeySpec::default()), created(), &policy).is_ok());
    }

    fn cred(tokens: serde_json::Value) -> Credential {
        let spec = serde_json::from_value(serde_json::json!({ "tokens": tokens })).expect("spec");
        Credential::new("billing", spec)
    }

    #[test]
    fn credential_tokens_get_their_secret_names_and_expiry_from_first_issue() {
        let valid = credential(
            &cred(serde_json::json!([{"name": "primary", "expiresAfter": "30d"}, {"name": "next"}])),
            created(),
            &ExpiryPolicy::default(),
        )
        .expect("valid");
        assert_eq!(valid.tokens[0].secret_name, "billing-primary");
        assert_eq!(valid.tokens[1].secret_name, "billing-next");
        let first: Timestamp = "2026-12-01T00:00:00Z".parse().expect("ts");
        let policy = ExpiryPolicy::default();
        assert_eq!(valid.tokens[0].expires_at(first, &policy), Ok("2026-12-31T00:00:00Z".parse().expect("ts")));
        assert_eq!(valid.tokens[1].expires_at(first, &policy), Ok("2027-03-01T00:00:00Z".parse().expect("ts")));
    }

    #[test]
    fn credential_token_names_are_checked() {
        let policy = ExpiryPolicy::default();
        let cases = [
            (serde_json::json!([{"name": "Primary"}]), "spec.tokens[0].name", "Primary"),
            (
                serde_json::json!([{"name": "a-very-long-token-name-x"}]),
                "spec.tokens[0].name",
                "a-very-long-token-name-x",
            ),
            (serde_json::json!([{"name": "a"}, {"name": "a"}]), "spec.tokens[1].name", "a"),
            (serde_json::json!([{"name": "a", "expiresAfter": "soon"}]), "spec.tokens[0].expiresAfter", "soon"),
        ];
        for (tokens, field, value) in cases {
            let error = credential(&cred(tokens), created(), &policy).expect_err("refused");
            assert_eq!((error.field.as_str(), error.value.as_str()), (field, value), "{error}");
        }
        let seventeen: Vec<_> = (0..17).map(|i| serde_json::json!({"name": format!("t{i}")})).collect();
        let error = credential(&cred(serde_json::json!(seventeen)), created(), &policy).expect_err("too many");
        assert_eq!(error.field, "spec.tokens");
    }

    #[test]
    fn cidrs_and_single_addresses_are_accepted() {
        for ok in ["10.0.0.0/8", "2001:db8::/32", "192.168.1.7", "::1"] {
            assert!(parse_cidr(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn huge_values_are_shortened_in_messages() {
        let error = error_of(ApiKeySpec { expires_after: Some("9".repeat(10_000)), ..Default::default() });
        assert!(error.to_string().len() < 300, "{}", error.to_string().len());
    }
}
