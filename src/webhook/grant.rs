//! Who may grant which scope, decided purely: the names whose `grant` permission covers a scope,
//! which scopes a change puts into use, and the refusal the contract words. The
//! SubjectAccessReviews themselves are asked by [`super::access`].

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::api::expiry::ExpiryPolicy;
use crate::api::{self, ApiKey, Credential, KeyPolicy, KeyState};

/// The resource names a `grant` on `scopes.keyward.io` may carry to cover `scope`, narrowest
/// first: the scope itself, then each shorter prefix with a final `>`, down to `>`. A scope's
/// own final `>` is never dropped (`a.>` is covered by `a.>` and `>`), and `*` is matched
/// literally (a grant of `orders.*` covers exactly `orders.*`).
pub fn covering_names(scope: &str) -> Vec<String> {
    let segments: Vec<&str> = scope.split('.').collect();
    let kept = match segments.last() {
        // `a.b.>` is covered by `a.b.>` itself, then `a.>`, `>`: its own `>` counts as a segment.
        Some(&">") => segments.len() - 1,
        _ => segments.len(),
    };
    let mut names = vec![scope.to_string()];
    for prefix in (1..kept).rev() {
        let name = format!("{}.>", segments[..prefix].join("."));
        if name != scope {
            names.push(name);
        }
    }
    if scope != ">" {
        names.push(">".into());
    }
    names
}

/// The contract's refusal of a grant.
pub fn refusal(user: &str, scope: &str, namespace: &str) -> String {
    let covering = covering_names(scope);
    let patterns: Vec<String> = covering[1..].iter().map(|name| format!("{name:?}")).collect();
    format!(
        "user {user:?} may not grant scope {scope:?} in namespace {namespace:?}: needs verb grant on scopes.keyward.io \
         named {scope:?} or a covering pattern ({})",
        patterns.join(", ")
    )
}

/// What of a key decides which of its scopes are in use: the scopes, whether it is active, and
/// each token's expiry (by token name, empty for an ApiKey; `None` when the spec cannot say).
#[derive(Clone, Debug, PartialEq)]
pub struct InUse {
    pub scopes: Vec<String>,
    pub active: bool,
    pub expiries: BTreeMap<String, Option<Timestamp>>,
}

impl InUse {
    /// An ApiKey's expiry counts from its creation, as the controller counts it. The cap
    /// (`--max-expiry`) is left out: a key beyond a cap added later must still be shortened or
    /// revoked without a grant (validation refuses it as a spec anyway).
    pub fn of_apikey(key: &ApiKey, created: Timestamp, expiry: &ExpiryPolicy) -> Self {
        let spec = &key.spec;
        let uncapped = ExpiryPolicy { max: None, ..expiry.clone() };
        let at =
            api::expiry::expiry("spec", spec.expires_after.as_deref(), spec.expires_at.as_deref(), created, &uncapped);
        Self::of(&spec.policy, [(String::new(), at.ok())].into())
    }

    /// A Credential token's expiry counts from its first issue, as the controller counts it:
    /// `first_issue` of each token name (its status's `issuedAt`, or now for a token not issued
    /// yet). The same base must be used for the old and the new spec, so that switching between
    /// `expiresAt` and `expiresAfter` is judged as the controller will judge it.
    pub fn of_credential(
        credential: &Credential,
        first_issue: impl Fn(&str) -> Timestamp,
        expiry: &ExpiryPolicy,
    ) -> Self {
        let uncapped = ExpiryPolicy { max: None, ..expiry.clone() };
        let expiries = credential
            .spec
            .tokens
            .iter()
            .map(|t| {
                let from = first_issue(&t.name);
                let at =
                    api::expiry::expiry("spec", t.expires_after.as_deref(), t.expires_at.as_deref(), from, &uncapped);
                (t.name.clone(), at.ok())
            })
            .collect();
        Self::of(&credential.spec.policy, expiries)
    }

    fn of(policy: &KeyPolicy, expiries: BTreeMap<String, Option<Timestamp>>) -> Self {
        Self { scopes: policy.scopes.clone(), active: policy.state.unwrap_or_default() == KeyState::Active, expiries }
    }
}

/// The scopes a change must be allowed to grant. A create grants every scope. An update grants
/// the scopes it adds; and every scope when it puts a token into use again: a token added, an
/// expiry moved later (which also re-issues an expired key), or `Inactive` turned `Active`.
/// Anything else (a description, fewer scopes or tokens, an earlier expiry, `Inactive`,
/// labels) needs no grant, so that re-applying an unchanged key always passes and anyone who
/// may edit a key may revoke it.
pub fn scopes_to_grant(old: Option<&InUse>, new: &InUse) -> Vec<String> {
    let Some(old) = old else { return unique(new.scopes.iter()) };
    let reactivated = !old.active && new.active;
    let token_back_in_use = new.expiries.iter().any(|(token, at)| match old.expiries.get(token) {
        None => true,
        Some(before) => {
            matches!((before, at), (Some(before), Some(at)) if at > before) || (before.is_none() && at.is_some())
        }
    });
    if reactivated || token_back_in_use {
        return unique(new.scopes.iter());
    }
    unique(new.scopes.iter().filter(|scope| !old.scopes.contains(scope)))
}

fn unique<'a>(scopes: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for scope in scopes {
        if !out.contains(scope) {
            out.push(scope.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_names_go_from_the_scope_to_every_shorter_prefix_then_everything() {
        assert_eq!(covering_names("a.b.c"), ["a.b.c", "a.b.>", "a.>", ">"]);
        assert_eq!(covering_names("payments.write"), ["payments.write", "payments.>", ">"]);
        assert_eq!(covering_names("orders"), ["orders", ">"]);
        assert_eq!(covering_names("a.>"), ["a.>", ">"], "a scope's own '>' is never dropped");
        assert_eq!(covering_names("a.b.>"), ["a.b.>", "a.>", ">"]);
        assert_eq!(covering_names("orders.*"), ["orders.*", "orders.>", ">"], "'*' is literal");
        assert_eq!(covering_names("a.*.c"), ["a.*.c", "a.*.>", "a.>", ">"]);
    }

    #[test]
    fn the_refusal_is_the_contracts() {
        assert_eq!(
            refusal("alice", "payments.write", "team-a"),
            r#"user "alice" may not grant scope "payments.write" in namespace "team-a": needs verb grant on scopes.keyward.io named "payments.write" or a covering pattern ("payments.>", ">")"#
        );
    }

    fn in_use(scopes: &[&str], active: bool, expiries: &[(&str, Option<&str>)]) -> InUse {
        InUse {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            active,
            expiries: expiries.iter().map(|(t, at)| (t.to_string(), at.map(|at| at.parse().expect("ts")))).collect(),
        }
    }

    const LATER: &str = "2027-06-01T00:00:00Z";
    const SOON: &str = "2027-01-01T00:00:00Z";

    #[test]
    fn a_create_grants_every_scope_once() {
        let new = in_use(&["a", "b", "a"], true, &[("", Some(SOON))]);
        assert_eq!(scopes_to_grant(None, &new), ["a", "b"]);
        let inactive = in_use(&["a"], false, &[("", Some(SOON))]);
        assert_eq!(scopes_to_grant(None, &inactive), ["a"], "an inactive key still holds a token");
    }

    #[test]
    fn an_update_grants_added_scopes_only_unless_it_puts_a_token_back_in_use() {
        let old = in_use(&["a", "b"], true, &[("", Some(SOON))]);
        assert_eq!(scopes_to_grant(Some(&old), &old), Vec::<String>::new(), "re-applying the same key");
        assert_eq!(scopes_to_grant(Some(&old), &in_use(&["a", "b", "c"], true, &[("", Some(SOON))])), ["c"]);
        assert!(scopes_to_grant(Some(&old), &in_use(&["a"], true, &[("", Some(SOON))])).is_empty(), "removing");
        assert!(scopes_to_grant(Some(&old), &in_use(&["a", "b"], false, &[("", Some(SOON))])).is_empty(), "revoking");
        let earlier = in_use(&["a", "b"], true, &[("", Some("2026-12-01T00:00:00Z"))]);
        assert!(scopes_to_grant(Some(&old), &earlier).is_empty(), "an earlier expiry");
        assert_eq!(scopes_to_grant(Some(&old), &in_use(&["a", "b"], true, &[("", Some(LATER))])), ["a", "b"]);
        let paused = in_use(&["a", "b"], false, &[("", Some(SOON))]);
        assert_eq!(scopes_to_grant(Some(&paused), &old), ["a", "b"], "Inactive to Active");
    }

    #[test]
    fn adding_a_credential_token_grants_every_scope_and_removing_one_none() {
        let old = in_use(&["a"], true, &[("primary", Some(SOON))]);
        let added = in_use(&["a"], true, &[("primary", Some(SOON)), ("next", Some(LATER))]);
        assert_eq!(scopes_to_grant(Some(&old), &added), ["a"]);
        assert!(scopes_to_grant(Some(&added), &old).is_empty());
        let no_tokens = in_use(&["a"], true, &[]);
        assert!(scopes_to_grant(Some(&old), &no_tokens).is_empty());
    }
}
