//! Every ApiKey behaviour of the contract, on the real API server, each in its own namespace.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keyward::api::Phase;
use keyward::token::{Token, TokenHash};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::{TestNamespace, token_in, wait_for};

fn hash_of(token: &str) -> String {
    TokenHash::of(token.as_bytes()).to_string()
}

#[tokio::test]
async fn issue_once_writes_the_token_to_its_secret_and_only_the_hash_to_status() {
    let ns = TestNamespace::new("issue-once").await;
    let _controller = ns.controller(&[]);
    ns.create_key("ci-deploy", json!({"expiresAfter": "30d", "scopes": ["orders.read"]})).await;
    let key = ns.wait_phase("ci-deploy", Phase::Active).await;
    let status = key.status.clone().expect("status");

    let secret = ns.secrets().get("ci-deploy-apikey").await.expect("the Secret exists");
    let token = token_in(&secret).expect("data.token");
    let parsed = Token::parse(&token).expect("a well-formed token");
    assert_eq!(parsed.prefix(), "kw");
    assert_eq!(status.record.token_hash.as_deref(), Some(hash_of(&token).as_str()));
    assert_eq!(status.record.key_id.as_deref(), Some(parsed.key_id().as_str()));
    assert_eq!(status.record.secret_name.as_deref(), Some("ci-deploy-apikey"));
    assert!(status.record.issued_at.is_some());
    let created = key.metadata.creation_timestamp.clone().expect("created").0;
    assert_eq!(status.record.expires_at.expect("expiresAt").0, created + jiff::SignedDuration::from_hours(30 * 24));
    let ready = &status.conditions[0];
    assert_eq!((ready.type_.as_str(), ready.status.as_str(), ready.reason.as_str()), ("Ready", "True", "Issued"));
    assert!(!serde_json::to_string(&key).expect("json").contains(&token), "the token leaked into the ApiKey");

    // The Secret layout of the contract.
    assert_eq!(secret.type_.as_deref(), Some("keyward.io/token"));
    let labels = secret.labels();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("keyward"));
    assert_eq!(labels.get("keyward.io/owner-uid"), key.uid().as_ref());
    let annotations = secret.annotations();
    assert_eq!(annotations.get("keyward.io/token-hash"), status.record.token_hash.as_ref());
    assert_eq!(annotations.get("keyward.io/key-id"), status.record.key_id.as_ref());
    assert_eq!(annotations.get("keyward.io/owner").map(String::as_str), Some("ApiKey/ci-deploy"));
    assert!(annotations.contains_key("keyward.io/issued-at") && annotations.contains_key("keyward.io/expires-at"));
    let owners = secret.owner_references();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str(), owners[0].controller),
        ("ApiKey", key.uid().expect("uid").as_str(), Some(true))
    );
    // The operator never writes spec or adds defaults to it.
    assert_eq!(
        serde_json::to_value(&key.spec).expect("json"),
        json!({"expiresAfter": "30d", "scopes": ["orders.read"]})
    );
}

#[tokio::test]
async fn issue_once_a_wiped_status_never_produces_a_second_token() {
    let ns = TestNamespace::new("issue-once-wiped").await;
    let mut controller = ns.controller(&[]);
    ns.create_key("wiped", json!({})).await;
    let before = ns.wait_phase("wiped", Phase::Active).await.status.expect("status");
    let token = ns.token_of("wiped-apikey").await;

    controller.kill().await;
    ns.keys()
        .patch_status("wiped", &PatchParams::default(), &Patch::Merge(json!({"status": null})))
        .await
        .expect("wipe the status");
    assert!(ns.keys().get("wiped").await.expect("get").status.is_none());
    controller.restart();
    let after = ns.wait_phase("wiped", Phase::Active).await.status.expect("status");
    assert_eq!(after.record.token_hash, before.record.token_hash);
    assert_eq!(ns.token_of("wiped-apikey").await, token);
}

#[tokio::test]
async fn never_overwrite_a_secret_that_is_not_ours() {
    let ns = TestNamespace::new("never-overwrite").await;
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "taken-apikey"},
        "stringData": {"token": "not-yours"},
    }))
    .expect("secret");
    let foreign = ns.secrets().create(&PostParams::default(), &foreign).await.expect("create foreign Secret");
    let _controller = ns.controller(&[]);
    ns.create_key("taken", json!({})).await;
    let key = ns.wait_phase("taken", Phase::Failed).await;
    let ready = &key.status.as_ref().expect("status").conditions[0];
    assert_eq!(ready.reason, "SecretConflict");
    assert!(ready.message.contains("taken-apikey"), "{}", ready.message);
    ns.wait_event("taken", "SecretConflict").await;
    let after = ns.secrets().get("taken-apikey").await.expect("still there");
    assert_eq!(after.resource_version(), foreign.resource_version(), "the foreign Secret was written to");
    assert_eq!(token_in(&after).as_deref(), Some("not-yours"));
}

#[tokio::test]
async fn never_overwrite_two_keys_naming_one_secret_the_second_gets_the_conflict() {
    let ns = TestNamespace::new("never-overwrite-two").await;
    let _controller = ns.controller(&[]);
    ns.create_key("first", json!({"secretName": "shared"})).await;
    ns.wait_phase("first", Phase::Active).await;
    let token = ns.token_of("shared").await;
    ns.create_key("second", json!({"secretName": "shared"})).await;
    let second = ns.wait_phase("second", Phase::Failed).await;
    assert_eq!(second.status.expect("status").conditions[0].reason, "SecretConflict");
    assert_eq!(ns.token_of("shared").await, token);
    assert_eq!(
        ns.wait_phase("first", Phase::Active).await.status.expect("status").record.token_hash,
        Some(hash_of(&token))
    );
}

#[tokio::test]
async fn expiry_deletes_the_secret_at_expires_at_and_keeps_the_hash() {
    let ns = TestNamespace::new("expiry").await;
    let _controller = ns.controller(&[]);
    ns.create_key("short", json!({"expiresAfter": "4s"})).await;
    let active = ns.wait_phase("short", Phase::Active).await.status.expect("status");
    let expired = ns.wait_phase("short", Phase::Expired).await.status.expect("status");
    ns.wait_secret_gone("short-apikey").await;
    assert_eq!(expired.record.token_hash, active.record.token_hash, "the hash stays for audit");
    assert_eq!(expired.record.expires_at, active.record.expires_at);
    assert_eq!(expired.conditions[0].reason, "Expired");
    assert!(jiff::Timestamp::now() >= expired.record.expires_at.expect("expiresAt").0);
    ns.wait_event("short", "Expired").await;
}

/// A reconcile leaves a far wake to the sweeps of the cache (`--wake-lookahead`, 5m by
/// default): with a lookahead of 2s, a key expiring in 12s is woken only by a sweep, and is
/// still expired at its second.
#[tokio::test]
async fn expiry_beyond_the_reconciles_own_wake_is_enforced_by_the_sweep() {
    let ns = TestNamespace::new("expiry-sweep").await;
    let _controller = ns.controller(&["--wake-lookahead", "2s"]);
    ns.create_key("later", json!({"expiresAfter": "12s"})).await;
    let active = ns.wait_phase("later", Phase::Active).await.status.expect("status");
    let expires_at = active.record.expires_at.expect("expiresAt").0;
    let expired = ns.wait_phase("later", Phase::Expired).await.status.expect("status");
    assert!(jiff::Timestamp::now() >= expires_at, "expired before {expires_at}");
    assert_eq!(expired.record.expires_at.expect("expiresAt").0, expires_at);
    ns.wait_secret_gone("later-apikey").await;
}

#[tokio::test]
async fn expiry_an_expired_key_is_not_reissued_by_state_but_is_by_a_new_expiry() {
    let ns = TestNamespace::new("expiry-reissue").await;
    let _controller = ns.controller(&[]);
    ns.create_key("short", json!({"expiresAfter": "3s"})).await;
    let first = ns.wait_phase("short", Phase::Expired).await.status.expect("status");
    ns.wait_secret_gone("short-apikey").await;

    ns.patch_spec("short", json!({"state": "Inactive"})).await;
    ns.wait_phase("short", Phase::Expired).await;
    ns.patch_spec("short", json!({"state": "Active"})).await;
    let still = ns.wait_phase("short", Phase::Expired).await.status.expect("status");
    assert_eq!(still.record.token_hash, first.record.token_hash);
    assert!(ns.secrets().get_opt("short-apikey").await.expect("get").is_none(), "a state change re-issued the key");

    ns.patch_spec("short", json!({"expiresAfter": "1h"})).await;
    let renewed = ns.wait_phase("short", Phase::Active).await.status.expect("status");
    assert_ne!(renewed.record.token_hash, first.record.token_hash);
    assert_eq!(renewed.record.token_hash, Some(hash_of(&ns.token_of("short-apikey").await)));
}

#[tokio::test]
async fn inactive_keeps_the_secret_and_reactivation_restores_the_same_token() {
    let ns = TestNamespace::new("inactive").await;
    let _controller = ns.controller(&[]);
    ns.create_key("toggle", json!({})).await;
    ns.wait_phase("toggle", Phase::Active).await;
    let token = ns.token_of("toggle-apikey").await;

    ns.patch_spec("toggle", json!({"state": "Inactive"})).await;
    let inactive = ns.wait_phase("toggle", Phase::Inactive).await.status.expect("status");
    assert_eq!(inactive.conditions[0].status, "False");
    assert_eq!(inactive.conditions[0].reason, "Inactive");
    assert_eq!(ns.token_of("toggle-apikey").await, token, "the Secret is kept while inactive");

    ns.patch_spec("toggle", json!({"state": "Active"})).await;
    let active = ns.wait_phase("toggle", Phase::Active).await.status.expect("status");
    assert_eq!(ns.token_of("toggle-apikey").await, token);
    assert_eq!(active.record.token_hash, Some(hash_of(&token)));
}

#[tokio::test]
async fn inactive_from_creation_issues_the_token_but_is_not_ready() {
    let ns = TestNamespace::new("inactive-new").await;
    let _controller = ns.controller(&[]);
    ns.create_key("dormant", json!({"state": "Inactive"})).await;
    let status = ns.wait_phase("dormant", Phase::Inactive).await.status.expect("status");
    assert_eq!(status.record.token_hash, Some(hash_of(&ns.token_of("dormant-apikey").await)));
    let ready = &status.conditions[0];
    assert_eq!((ready.type_.as_str(), ready.status.as_str(), ready.reason.as_str()), ("Ready", "False", "Inactive"));
}

#[tokio::test]
async fn deletion_removes_the_secret_through_garbage_collection() {
    let ns = TestNamespace::new("deletion").await;
    let _controller = ns.controller(&[]);
    ns.create_key("doomed", json!({})).await;
    ns.wait_phase("doomed", Phase::Active).await;
    let key = ns.keys().get("doomed").await.expect("get");
    assert!(key.finalizers().is_empty(), "no finalizer is needed");
    ns.delete_key("doomed").await;
    ns.wait_secret_gone("doomed-apikey").await;
}

#[tokio::test]
async fn lost_secret_is_reissued_with_a_token_reissued_warning() {
    let ns = TestNamespace::new("lost-secret").await;
    let _controller = ns.controller(&[]);
    ns.create_key("lost", json!({"expiresAfter": "2h"})).await;
    let before = ns.wait_phase("lost", Phase::Active).await.status.expect("status");
    ns.secrets().delete("lost-apikey", &Default::default()).await.expect("delete the Secret");
    let after = ns.wait_new_token("lost", &before.record.token_hash).await;
    assert_eq!(after.record.token_hash, Some(hash_of(&ns.token_of("lost-apikey").await)));
    assert_eq!(after.record.expires_at, before.record.expires_at, "re-issue never extends expiry");
    let event = ns.wait_event("lost", "TokenReissued").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.message.unwrap_or_default().contains("deleted"));
}

#[tokio::test]
async fn tampered_secret_is_reissued_with_a_token_reissued_warning() {
    let ns = TestNamespace::new("tampered-secret").await;
    let _controller = ns.controller(&[]);
    ns.create_key("tampered", json!({})).await;
    let before = ns.wait_phase("tampered", Phase::Active).await.status.expect("status");
    let forged = Token::generate("kw");
    ns.secrets()
        .patch(
            "tampered-apikey",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"token": ByteString(forged.expose().as_bytes().to_vec())}})),
        )
        .await
        .expect("tamper");
    let after = ns.wait_new_token("tampered", &before.record.token_hash).await;
    let token = ns.token_of("tampered-apikey").await;
    assert_ne!(token, forged.expose(), "the forged token was adopted");
    assert_eq!(after.record.token_hash, Some(hash_of(&token)));
    let event = ns.wait_event("tampered", "TokenReissued").await;
    assert!(event.message.unwrap_or_default().contains("no longer matched"));
}

/// Rewrites a key's Secret so that it checks out against itself: the token and its own hash
/// annotation, as a writer of Secrets (not of status) could.
async fn plant_token(ns: &TestNamespace, secret: &str, token: &str) {
    ns.secrets()
        .patch(
            secret,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {"keyward.io/token-hash": hash_of(token)}},
                "data": {"token": ByteString(token.as_bytes().to_vec())},
            })),
        )
        .await
        .expect("plant a token");
}

#[tokio::test]
async fn tampered_secret_with_a_chosen_token_and_its_own_hash_is_reissued() {
    let ns = TestNamespace::new("tampered-chosen").await;
    let _controller = ns.controller(&[]);
    ns.create_key("chosen", json!({})).await;
    let before = ns.wait_phase("chosen", Phase::Active).await.status.expect("status");
    let chosen = Token::generate("kw");
    plant_token(&ns, "chosen-apikey", chosen.expose()).await;
    let after = ns.wait_new_token("chosen", &before.record.token_hash).await;
    assert_ne!(after.record.token_hash, Some(hash_of(chosen.expose())), "the chosen token was adopted");
    let token = ns.token_of("chosen-apikey").await;
    assert_ne!(token, chosen.expose());
    assert_eq!(after.record.token_hash, Some(hash_of(&token)));
    let event = ns.wait_event("chosen", "TokenReissued").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn another_keys_token_copied_into_a_secret_is_never_adopted_and_the_genuine_key_stays_valid() {
    let ns = TestNamespace::new("tampered-copied").await;
    let mut controller = ns.controller(&[]);
    let verifier = ns.verifier(&[]).await;
    ns.create_key("genuine", json!({})).await;
    ns.create_key("thief", json!({})).await;
    ns.wait_phase("genuine", Phase::Active).await;
    let thief = ns.wait_phase("thief", Phase::Active).await.status.expect("status");
    let genuine_token = ns.token_of("genuine-apikey").await;

    // With status recording the thief's own token, the copy is tampering.
    plant_token(&ns, "thief-apikey", &genuine_token).await;
    let after = ns.wait_new_token("thief", &thief.record.token_hash).await;
    assert_ne!(after.record.token_hash, Some(hash_of(&genuine_token)));
    assert_ne!(ns.token_of("thief-apikey").await, genuine_token);
    ns.wait_event("thief", "TokenReissued").await;

    // With no hash in status (the crash-between-writes case, here a wiped status), the Secret's
    // own record may be adopted, but never a hash another key holds.
    controller.kill().await;
    plant_token(&ns, "thief-apikey", &genuine_token).await;
    ns.keys()
        .patch_status("thief", &PatchParams::default(), &Patch::Merge(json!({"status": null})))
        .await
        .expect("wipe the status");
    controller.restart();
    let after = ns.wait_phase("thief", Phase::Active).await.status.expect("status");
    assert_ne!(after.record.token_hash, Some(hash_of(&genuine_token)), "another key's hash was adopted");
    assert_eq!(after.record.token_hash, Some(hash_of(&ns.token_of("thief-apikey").await)));

    let genuine = ns.keys().get("genuine").await.expect("get").status.expect("status");
    assert_eq!(genuine.record.token_hash, Some(hash_of(&genuine_token)), "the genuine key keeps its token");
    verifier.wait_code(&genuine_token, "VALID", support::DEADLINE).await;
}

#[tokio::test]
async fn bad_spec_fails_with_invalid_spec_naming_the_field_and_value() {
    let ns = TestNamespace::new("bad-spec").await;
    let _controller = ns.controller(&[]);
    let cases = [
        ("bad-duration", json!({"expiresAfter": "3x"}), "spec.expiresAfter", "3x"),
        ("bad-timestamp", json!({"expiresAt": "next tuesday"}), "spec.expiresAt", "next tuesday"),
        (
            "both-expiries",
            json!({"expiresAt": "2030-01-01T00:00:00Z", "expiresAfter": "1d"}),
            "spec.expiresAt",
            "2030-01-01T00:00:00Z",
        ),
        ("bad-cidr", json!({"allowedCIDRs": ["10.0.0.0/8", "10.1.2.3/40"]}), "spec.allowedCIDRs[1]", "10.1.2.3/40"),
        ("bad-prefix", json!({"tokenPrefix": "Acme_"}), "spec.tokenPrefix", "Acme_"),
        ("bad-scope", json!({"scopes": ["orders.read", "orders..write"]}), "spec.scopes[1]", "orders..write"),
        (
            "bad-template",
            json!({"secretTemplate": {"data": {"token": "x"}}}),
            "spec.secretTemplate.data[token]",
            "token",
        ),
        // Well-formed, but past the last second the operator computes with: says so.
        (
            "far-timestamp",
            json!({"expiresAt": "9999-12-31T23:59:59Z"}),
            "spec.expiresAt",
            "later than the latest expiry",
        ),
    ];
    for (name, spec, _, _) in &cases {
        ns.create_key(name, spec.clone()).await;
    }
    ns.create_key("good", json!({})).await;
    for (name, _, field, value) in &cases {
        let key = ns.wait_phase(name, Phase::Failed).await;
        let ready = &key.status.as_ref().expect("status").conditions[0];
        assert_eq!(ready.reason, "InvalidSpec", "{name}");
        assert!(ready.message.contains(field) && ready.message.contains(value), "{name}: {}", ready.message);
        assert!(ns.secrets().get_opt(&format!("{name}-apikey")).await.expect("get").is_none(), "{name} got a Secret");
    }
    ns.wait_event("bad-duration", "InvalidSpec").await;
    ns.wait_phase("good", Phase::Active).await;

    // Fixing the spec issues the token.
    ns.patch_spec("bad-duration", json!({"expiresAfter": "3d"})).await;
    ns.wait_phase("bad-duration", Phase::Active).await;
}

#[tokio::test]
async fn max_expiry_refuses_longer_keys_instead_of_clamping() {
    let ns = TestNamespace::new("max-expiry").await;
    let _controller = ns.controller(&["--max-expiry", "30d", "--default-expiry", "7d"]);
    ns.create_key("too-long", json!({"expiresAfter": "31d"})).await;
    ns.create_key("fits", json!({"expiresAfter": "30d"})).await;
    ns.create_key("default", json!({})).await;
    let refused = ns.wait_phase("too-long", Phase::Failed).await;
    let message = &refused.status.expect("status").conditions[0].message;
    assert!(
        message.contains("spec.expiresAfter") && message.contains("31d") && message.contains("max-expiry"),
        "{message}"
    );
    ns.wait_phase("fits", Phase::Active).await;
    let default = ns.wait_phase("default", Phase::Active).await;
    let created = default.metadata.creation_timestamp.expect("created").0;
    assert_eq!(
        default.status.expect("status").record.expires_at.expect("expiresAt").0,
        created + jiff::SignedDuration::from_hours(7 * 24)
    );
}

#[tokio::test]
async fn max_expiry_alone_lowers_the_default_expiry_to_the_cap() {
    let ns = TestNamespace::new("max-expiry-alone").await;
    let _controller = ns.controller(&["--max-expiry", "7d"]);
    ns.create_key("default", json!({})).await;
    let key = ns.wait_phase("default", Phase::Active).await;
    let created = key.metadata.creation_timestamp.expect("created").0;
    assert_eq!(
        key.status.expect("status").record.expires_at.expect("expiresAt").0,
        created + jiff::SignedDuration::from_hours(7 * 24)
    );
}

#[tokio::test]
async fn a_key_created_already_expired_says_no_secret_was_written() {
    let ns = TestNamespace::new("born-expired").await;
    let _controller = ns.controller(&[]);
    ns.create_key("late", json!({"expiresAt": "2020-01-01T00:00:00Z"})).await;
    let key = ns.wait_phase("late", Phase::Expired).await;
    let status = key.status.expect("status");
    assert_eq!(status.record.token_hash, None);
    let message = &status.conditions[0].message;
    assert!(message.contains("before a token was issued; no Secret was written"), "{message}");
    assert!(ns.secrets().get_opt("late-apikey").await.expect("get").is_none());
}

#[tokio::test]
async fn secret_template_changes_reach_the_secret_without_rewriting_the_token() {
    let ns = TestNamespace::new("template").await;
    let _controller = ns.controller(&[]);
    ns.create_key(
        "templated",
        json!({"secretTemplate": {"labels": {"team": "a"}, "annotations": {"note": "one"}, "data": {"endpoint": "https://a.example"}}}),
    )
    .await;
    ns.wait_phase("templated", Phase::Active).await;
    let secret = ns.secrets().get("templated-apikey").await.expect("secret");
    let token = token_in(&secret).expect("token");
    assert_eq!(secret.labels().get("team").map(String::as_str), Some("a"));
    assert_eq!(secret.annotations().get("note").map(String::as_str), Some("one"));
    assert_eq!(secret.data.as_ref().expect("data")["endpoint"].0, b"https://a.example");

    // Someone else's label on our Secret survives template changes.
    ns.secrets()
        .patch(
            "templated-apikey",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"backup": "yes"}}})),
        )
        .await
        .expect("label");
    ns.keys()
        .patch(
            "templated",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"secretTemplate": {"labels": {"team": "b"}, "annotations": null, "data": {"endpoint": null, "region": "eu"}}}})),
        )
        .await
        .expect("change the template");
    let secret = ns
        .wait_secret("templated-apikey", "the new template", |s| {
            s.labels().get("team").map(String::as_str) == Some("b")
                && !s.annotations().contains_key("note")
                && s.data.as_ref().is_some_and(|d| !d.contains_key("endpoint") && d.contains_key("region"))
        })
        .await;
    assert_eq!(token_in(&secret).as_deref(), Some(token.as_str()), "the token was rewritten");
    assert_eq!(secret.labels().get("backup").map(String::as_str), Some("yes"));
    let labels: BTreeMap<_, _> = secret.labels().clone();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("keyward"));
}

#[tokio::test]
async fn keys_and_credentials_at_rest_cause_no_writes() {
    let ns = TestNamespace::new("at-rest").await;
    let mut controller = ns.controller(&[]);
    for i in 0..5 {
        ns.create_key(&format!("rest-{i}"), json!({})).await;
    }
    ns.create_credential("rest-cred", json!({"tokens": [{"name": "a"}, {"name": "b"}]})).await;
    ns.wait_credential("rest-cred", "two tokens", |s| s.active_tokens == Some(2)).await;
    let mut versions = Vec::new();
    for i in 0..5 {
        let key = ns.wait_phase(&format!("rest-{i}"), Phase::Active).await;
        let secret = ns.secrets().get(&format!("rest-{i}-apikey")).await.expect("secret");
        versions.push((key.resource_version(), secret.resource_version()));
    }
    // The write counter the check below reads is the one that counted the 7 tokens' Secrets.
    let creates = r#"keyward_api_writes_total{resource="secrets",verb="create"}"#;
    controller.wait_metric(creates, "7 Secrets written", |n| n == Some(7.0)).await;
    // A restart re-lists and reconciles every key: nothing may be written. The new process
    // counts from 0, and its initial lists queue every object of this namespace (the only one it
    // watches) at once, 32 reconciles at a time: 5 ApiKey and 1 Credential reconciles done.
    controller.kill().await;
    controller.restart();
    for (kind, objects) in [("ApiKey", 5.0), ("Credential", 1.0)] {
        let series = format!(r#"keyward_reconciles_total{{kind="{kind}"}}"#);
        controller.wait_metric(&series, &format!("every {kind} reconciled"), |n| n >= Some(objects)).await;
    }
    // No write request at all, not even a no-op status apply (which would leave versions alone).
    let metrics = controller.metrics().await;
    assert!(!metrics.contains("keyward_reconcile_errors_total{"), "reconciles failed at rest:\n{metrics}");
    let writes: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("keyward_api_writes_total") && !l.ends_with(" 0")).collect();
    assert!(writes.is_empty(), "writes after a restart at rest: {writes:?}");
    for (i, version) in versions.iter().enumerate() {
        let key = ns.keys().get(&format!("rest-{i}")).await.expect("key");
        let secret = ns.secrets().get(&format!("rest-{i}-apikey")).await.expect("secret");
        assert_eq!(&(key.resource_version(), secret.resource_version()), version, "rest-{i} was written at rest");
    }
}

#[tokio::test]
async fn deletion_a_key_recreated_under_the_same_name_gets_a_new_token_after_collection() {
    let ns = TestNamespace::new("recreate").await;
    let _controller = ns.controller(&[]);
    ns.create_key("again", json!({})).await;
    let old = ns.wait_phase("again", Phase::Active).await.status.expect("status").record.token_hash;
    ns.delete_key("again").await;
    ns.create_key("again", json!({})).await;
    let status = ns.wait_new_token("again", &old).await;
    let secret = ns.secrets().get("again-apikey").await.expect("secret");
    let new = ns.keys().get("again").await.expect("get");
    assert_eq!(secret.owner_references()[0].uid, new.uid().expect("uid"));
    assert_eq!(status.record.token_hash, Some(hash_of(&token_in(&secret).expect("token"))));
}

#[tokio::test]
async fn renaming_the_secret_issues_a_fresh_token_there_and_removes_the_old_secret() {
    let ns = TestNamespace::new("rename-secret").await;
    let controller = ns.controller(&[]);
    ns.create_key("moving", json!({})).await;
    let before = ns.wait_phase("moving", Phase::Active).await.status.expect("status");
    ns.patch_spec("moving", json!({"secretName": "moved-token"})).await;
    let after = ns.wait_new_token("moving", &before.record.token_hash).await;
    assert_eq!(after.record.secret_name.as_deref(), Some("moved-token"));
    assert_eq!(after.record.token_hash, Some(hash_of(&ns.token_of("moved-token").await)));
    ns.wait_secret_gone("moving-apikey").await;
    // Events are written asynchronously, a few at once, from a queue. The rename's own is
    // Issued (its second); then the Inactive event of a later reconcile is waited for. A
    // re-issue is logged in its reconcile, and any reconcile queued before the Inactive one
    // (the rename's, or one woken by the old Secret's deletion) has finished once the Inactive
    // event exists; its TokenReissued event may still be in flight, so the log is what tells.
    wait_for("the rename's Issued event", support::DEADLINE, || async {
        let issued = ns.events_for("moving").await.iter().filter(|e| e.reason.as_deref() == Some("Issued")).count();
        if issued >= 2 { Ok(()) } else { Err(format!("{issued} Issued events")) }
    })
    .await;
    ns.patch_spec("moving", json!({"state": "Inactive"})).await;
    ns.wait_event("moving", "Inactive").await;
    let reasons: Vec<String> = ns.events_for("moving").await.into_iter().filter_map(|e| e.reason).collect();
    assert!(!reasons.iter().any(|r| r == "TokenReissued"), "a rename is not a lost Secret: {reasons:?}");
    let logs = controller.logs();
    let renamed = logs.lines().any(|line| line.contains("issued token") && line.contains("moved-token"));
    assert!(renamed && !logs.contains("re-issued token"), "a rename is not a lost Secret:\n{logs}");
}
