//! Credential behaviours on the real API server: one identity, several tokens, overlapping
//! rotation.

mod support;

use std::time::Duration;

use keyward::api::Phase;
use keyward::token::TokenHash;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{TestNamespace, TokenHistory, token_states};

fn hash_of(token: &str) -> String {
    TokenHash::of(token.as_bytes()).to_string()
}

fn all_active(n: usize) -> impl Fn(&keyward::api::CredentialStatus) -> bool {
    move |s| s.active_tokens == Some(n as i32) && s.tokens.len() == n && s.phase == Some(Phase::Active)
}

#[tokio::test]
async fn every_token_is_issued_once_into_its_own_secret() {
    let ns = TestNamespace::new("cred-issue").await;
    let _controller = ns.controller(&[]);
    ns.create_credential(
        "billing",
        json!({"scopes": ["orders.read"], "tokens": [{"name": "primary", "expiresAfter": "30d"}, {"name": "next", "expiresAt": "2030-03-01T00:00:00Z"}]}),
    )
    .await;
    let status = ns.wait_credential("billing", "two active tokens", all_active(2)).await;
    for entry in &status.tokens {
        let secret_name = format!("billing-{}", entry.name);
        assert_eq!(entry.record.secret_name.as_deref(), Some(secret_name.as_str()));
        let secret = ns.secrets().get(&secret_name).await.expect("secret");
        let token = support::token_in(&secret).expect("token");
        assert_eq!(entry.record.token_hash, Some(hash_of(&token)));
        assert!(entry.record.key_id.as_deref().is_some_and(|id| token.starts_with(id)));
        assert_eq!(secret.owner_references()[0].kind, "Credential");
        assert_eq!(secret.annotations().get("keyward.io/owner").map(String::as_str), Some("Credential/billing"));
    }
    let primary = &status.tokens.iter().find(|t| t.name == "primary").expect("primary");
    let issued = primary.record.issued_at.clone().expect("issuedAt").0;
    assert_eq!(
        primary.record.expires_at.clone().expect("expiresAt").0,
        issued + jiff::SignedDuration::from_hours(30 * 24)
    );
    // No token value anywhere but its Secret: not in the Credential (status included), nor in
    // its events. The Issued events are waited for first, so that there is something to scan.
    let tokens = [ns.token_of("billing-primary").await, ns.token_of("billing-next").await];
    ns.wait_event("billing", "Issued").await;
    let listed =
        serde_json::to_string(&ns.credentials().list(&Default::default()).await.expect("list").items).expect("json");
    let events = serde_json::to_string(&ns.events_for("billing").await).expect("json");
    assert!(events.contains("Issued"), "no events to scan: {events}");
    for token in &tokens {
        assert!(!listed.contains(token.as_str()), "a token is in the listed Credentials");
        assert!(!events.contains(token.as_str()), "a token is in the Credential's events");
    }
}

#[tokio::test]
async fn removing_a_token_deletes_its_secret_and_status_entry() {
    let ns = TestNamespace::new("cred-remove").await;
    let _controller = ns.controller(&[]);
    ns.create_credential("svc", json!({"tokens": [{"name": "a"}, {"name": "b"}]})).await;
    ns.wait_credential("svc", "two active tokens", all_active(2)).await;
    let kept = ns.token_of("svc-a").await;
    ns.set_tokens("svc", json!([{"name": "a"}])).await;
    let removed = tokio::time::timeout(Duration::from_secs(2), ns.wait_secret_gone("svc-b")).await;
    assert!(removed.is_ok(), "the removed token's Secret was still there after 2 s");
    let status = ns.wait_credential("svc", "one token", all_active(1)).await;
    assert_eq!(status.tokens.len(), 1);
    assert_eq!(status.tokens[0].name, "a");
    assert_eq!(ns.token_of("svc-a").await, kept, "the kept token changed");
}

/// Issue 14: a Credential reconciles from the Secret watch's names, not a LIST per reconcile.
#[tokio::test]
async fn credentials_reconcile_from_the_secret_watch_without_listing_secrets() {
    let ns = TestNamespace::new("cred-no-list").await;
    let controller = ns.controller(&[]);
    // Ready only once the Secret watch has listed too: from here no reconcile needs a LIST.
    controller.wait_ready().await;
    let reads = |verb: &str| format!("keyward_api_reads_total{{resource=\"secrets\",verb=\"{verb}\"}}");
    ns.create_credential("fresh", json!({"tokens": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})).await;
    ns.wait_credential("fresh", "three active tokens", all_active(3)).await;
    let metrics = controller.metrics().await;
    assert_eq!(support::sample(&metrics, &reads("list")), None, "a LIST of Secrets:\n{metrics}");
    // (A Secret's watch event may wake the Credential once more; that pass GETs what exists.)
    let creates = "keyward_api_writes_total{resource=\"secrets\",verb=\"create\"}";
    assert_eq!(support::sample(&metrics, creates), Some(3.0), "one create per token, none refused as existing");
    // A change reads each Secret the watch saw (the tamper check needs its data), and still
    // lists nothing; the removed token's Secret, found the same way, is deleted.
    ns.set_tokens("fresh", json!([{"name": "a"}, {"name": "b"}])).await;
    ns.wait_secret_gone("fresh-c").await;
    ns.wait_credential("fresh", "two active tokens", all_active(2)).await;
    let metrics = controller.wait_metric(&reads("get"), "the Secrets read", |gets| gets >= Some(2.0)).await;
    assert_eq!(support::sample(&metrics, &reads("list")), None, "a LIST of Secrets:\n{metrics}");
}

#[tokio::test]
async fn removing_the_last_token_leaves_a_pending_credential_whose_status_still_writes() {
    let ns = TestNamespace::new("cred-remove-last").await;
    let controller = ns.controller(&[]);
    ns.create_credential("svc", json!({"tokens": [{"name": "a", "expiresAt": "2030-01-01T00:00:00Z"}]})).await;
    ns.wait_credential("svc", "one active token", all_active(1)).await;
    ns.set_tokens("svc", json!([])).await;
    ns.wait_secret_gone("svc-a").await;
    let status =
        ns.wait_credential("svc", "no tokens", |s| s.phase == Some(Phase::Pending) && s.tokens.is_empty()).await;
    assert_eq!(status.active_tokens, Some(0));
    assert!(status.conditions[0].message.contains("no tokens"), "{:?}", status.conditions);
    // Status writes go on: a token added now is issued and recorded.
    ns.set_tokens("svc", json!([{"name": "b"}])).await;
    ns.wait_credential("svc", "the new token", all_active(1)).await;
    let expiry = |token: &str| {
        format!(
            r#"keyward_key_expiration_timestamp_seconds{{kind="Credential",namespace="{}",name="svc",token="{token}"}}"#,
            ns.name
        )
    };
    // The census reads the controller's cache: wait for it to show the new token.
    let metrics = controller.wait_metric(&expiry("b"), "exported", |b| b.is_some()).await;
    assert_eq!(support::sample(&metrics, &expiry("a")), None, "the removed token's expiry is still exported");
    assert!(!metrics.contains(r#"keyward_reconcile_errors_total{kind="Credential""#), "{metrics}");
}

#[tokio::test]
async fn adding_a_token_issues_only_that_token_and_touches_no_other_secret() {
    let ns = TestNamespace::new("cred-add").await;
    let _controller = ns.controller(&[]);
    ns.create_credential("svc", json!({"tokens": [{"name": "a"}]})).await;
    ns.wait_credential("svc", "one token", all_active(1)).await;
    let before = ns.secrets().get("svc-a").await.expect("secret");
    ns.set_tokens("svc", json!([{"name": "a"}, {"name": "b"}])).await;
    ns.wait_credential("svc", "two tokens", all_active(2)).await;
    let after = ns.secrets().get("svc-a").await.expect("secret");
    assert_eq!(after.resource_version(), before.resource_version(), "Secret svc-a was written");
}

#[tokio::test]
async fn a_change_of_scopes_or_state_writes_no_secret() {
    let ns = TestNamespace::new("cred-scopes").await;
    let _controller = ns.controller(&[]);
    ns.create_credential("svc", json!({"scopes": ["orders.read"], "tokens": [{"name": "a"}, {"name": "b"}]})).await;
    ns.wait_credential("svc", "two tokens", all_active(2)).await;
    let versions = |secrets: Vec<k8s_openapi::api::core::v1::Secret>| -> Vec<(String, Option<String>)> {
        let mut v: Vec<_> = secrets.into_iter().map(|s| (s.name_any(), s.resource_version())).collect();
        v.sort();
        v
    };
    let before = versions(ns.secrets().list(&Default::default()).await.expect("list").items);
    ns.credentials()
        .patch(
            "svc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"scopes": ["orders.write"], "state": "Inactive"}})),
        )
        .await
        .expect("patch");
    let status = ns.wait_credential("svc", "Inactive", |s| s.phase == Some(Phase::Inactive)).await;
    assert!(status.tokens.iter().all(|t| t.record.phase == Some(Phase::Inactive)));
    ns.credentials()
        .patch("svc", &PatchParams::default(), &Patch::Merge(json!({"spec": {"state": "Active"}})))
        .await
        .expect("patch");
    ns.wait_credential("svc", "Active again", all_active(2)).await;
    assert_eq!(versions(ns.secrets().list(&Default::default()).await.expect("list").items), before);
}

#[tokio::test]
async fn deleting_the_credential_removes_every_secret_through_garbage_collection() {
    let ns = TestNamespace::new("cred-delete").await;
    let _controller = ns.controller(&[]);
    ns.create_credential("gone", json!({"tokens": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})).await;
    ns.wait_credential("gone", "three tokens", all_active(3)).await;
    ns.credentials().delete("gone", &Default::default()).await.expect("delete");
    for token in ["a", "b", "c"] {
        ns.wait_secret_gone(&format!("gone-{token}")).await;
    }
}

#[tokio::test]
async fn each_token_expires_on_its_own_and_a_lost_one_is_reissued_with_the_same_expiry() {
    let ns = TestNamespace::new("cred-expiry").await;
    let _controller = ns.controller(&[]);
    ns.create_credential(
        "svc",
        json!({"tokens": [{"name": "short", "expiresAfter": "3s"}, {"name": "long", "expiresAfter": "2h"}]}),
    )
    .await;
    let first = ns.wait_credential("svc", "two tokens", all_active(2)).await;
    let status = ns
        .wait_credential("svc", "short expired", |s| {
            s.tokens.iter().any(|t| t.name == "short" && t.record.phase == Some(Phase::Expired))
                && s.active_tokens == Some(1)
        })
        .await;
    ns.wait_secret_gone("svc-short").await;
    assert_eq!(status.phase, Some(Phase::Active));
    assert_eq!(token_states(&status)["short"].0, token_states(&first)["short"].0, "the hash stays for audit");

    let long_before = first.tokens.iter().find(|t| t.name == "long").expect("long").clone();
    ns.secrets().delete("svc-long", &Default::default()).await.expect("lose the Secret");
    let after = ns
        .wait_credential("svc", "long re-issued", |s| {
            s.tokens.iter().any(|t| {
                t.name == "long"
                    && t.record.phase == Some(Phase::Active)
                    && t.record.token_hash != long_before.record.token_hash
            })
        })
        .await;
    let long_after = after.tokens.iter().find(|t| t.name == "long").expect("long");
    assert_eq!(long_after.record.expires_at, long_before.record.expires_at, "re-issue never extends expiry");
    assert_eq!(long_after.record.issued_at, long_before.record.issued_at, "expiresAfter counts from the first issue");
    assert_eq!(long_after.record.token_hash, Some(hash_of(&ns.token_of("svc-long").await)));
    ns.wait_event("svc", "TokenReissued").await;
}

#[tokio::test]
async fn bad_token_specs_fail_with_invalid_spec_and_write_no_secret() {
    let ns = TestNamespace::new("cred-invalid").await;
    let _controller = ns.controller(&[]);
    ns.create_credential("bad", json!({"tokens": [{"name": "ok"}, {"name": "Not_A_Label"}]})).await;
    let status = ns.wait_credential("bad", "Failed", |s| s.phase == Some(Phase::Failed)).await;
    assert_eq!(status.conditions[0].reason, "InvalidSpec");
    assert!(
        status.conditions[0].message.contains("spec.tokens[1].name")
            && status.conditions[0].message.contains("Not_A_Label")
    );
    assert!(ns.secrets().get_opt("bad-ok").await.expect("get").is_none(), "a Secret was written for an invalid spec");
}

#[tokio::test]
async fn a_token_secret_taken_by_someone_else_is_a_conflict() {
    let ns = TestNamespace::new("cred-conflict").await;
    let foreign: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"metadata": {"name": "svc-a"}, "stringData": {"x": "y"}})).expect("secret");
    ns.secrets().create(&Default::default(), &foreign).await.expect("foreign");
    let _controller = ns.controller(&[]);
    ns.create_credential("svc", json!({"tokens": [{"name": "a"}, {"name": "b"}]})).await;
    let status = ns.wait_credential("svc", "Failed", |s| s.phase == Some(Phase::Failed)).await;
    assert_eq!(status.conditions[0].reason, "SecretConflict");
    assert!(status.conditions[0].message.contains("svc-a"));
    assert_eq!(token_states(&status)["b"].1, Some(Phase::Active), "the other token is still issued");
    assert!(support::token_in(&ns.secrets().get("svc-a").await.expect("secret")).is_none());
}

/// The README's recipe for rotating without downtime, step by step.
#[tokio::test]
async fn rotation_walkthrough_add_next_move_consumers_remove_primary() {
    let ns = TestNamespace::new("cred-rotation").await;
    let history = TokenHistory::start(ns.secrets()).await;
    let _controller = ns.controller(&[]);

    // 1. A credential with one token, `primary`.
    ns.create_credential(
        "billing",
        json!({"scopes": ["orders.read"], "tokens": [{"name": "primary", "expiresAfter": "90d"}]}),
    )
    .await;
    let step1 = ns.wait_credential("billing", "primary active", all_active(1)).await;
    let primary = ns.token_of("billing-primary").await;

    // 2. Add `next`: both are valid, primary unchanged.
    ns.set_tokens(
        "billing",
        json!([{"name": "primary", "expiresAfter": "90d"}, {"name": "next", "expiresAfter": "90d"}]),
    )
    .await;
    let step2 = ns.wait_credential("billing", "both active", all_active(2)).await;
    assert_eq!(token_states(&step2)["primary"], token_states(&step1)["primary"]);
    assert_eq!(ns.token_of("billing-primary").await, primary);
    let next = ns.token_of("billing-next").await;
    assert_eq!(token_states(&step2)["next"].0, Some(hash_of(&next)));

    // 3. Consumers move to `next`; remove `primary`: only `next` remains, unchanged.
    ns.set_tokens("billing", json!([{"name": "next", "expiresAfter": "90d"}])).await;
    let step3 = ns.wait_credential("billing", "only next", all_active(1)).await;
    ns.wait_secret_gone("billing-primary").await;
    assert_eq!(step3.tokens[0].name, "next");
    assert_eq!(token_states(&step3)["next"], token_states(&step2)["next"]);
    assert_eq!(ns.token_of("billing-next").await, next);

    // No token changed at any step: two Secrets ever, each with one token.
    history.assert_one_token_per_secret(2).await;
}
