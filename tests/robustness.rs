//! Crash safety, two controllers at once, and secrecy of the token, on the real API server.

mod support;

use std::time::Duration;

use k8s_openapi::ByteString;
use keyward::api::Phase;
use keyward::token::Token;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use support::{TestNamespace, TokenHistory, assert_tokens_match_status, create_keys, wait_all_active};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_safety_sigkill_during_200_creates_leaves_exactly_one_token_per_key() {
    let ns = TestNamespace::new("crash-safety").await;
    let history = TokenHistory::start(ns.secrets()).await;
    let mut controller = ns.controller(&[]);
    let creating = tokio::spawn(create_keys(ns.keys(), "crash", 200, 8));
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(rand::random_range(50..400))).await;
        controller.kill().await;
        controller.restart();
    }
    let names = creating.await.expect("creates finished");
    wait_all_active(ns.keys(), &names, Duration::from_secs(120)).await;
    assert_tokens_match_status(&ns, &names).await;
    history.assert_one_token_per_secret(200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_at_once_issue_exactly_one_token_per_key() {
    let ns = TestNamespace::new("two-controllers").await;
    let history = TokenHistory::start(ns.secrets()).await;
    let _first = ns.controller(&[]);
    let _second = ns.controller(&[]);
    let names = create_keys(ns.keys(), "twice", 100, 16).await;
    wait_all_active(ns.keys(), &names, Duration::from_secs(120)).await;
    // The history first: a token rewritten after Active says which writer broke the record.
    history.assert_one_token_per_secret(100).await;
    assert_tokens_match_status(&ns, &names).await;
}

/// The twin-controller race made exact: a status computed from a read that another writer has
/// since overtaken (a second controller's cache lagging the first's issued token) is refused by
/// the API server, instead of writing a pending status over the issued one.
#[tokio::test]
async fn a_status_computed_from_a_stale_read_is_refused() {
    use keyward::api::{ApiKeyStatus, TokenRecord};
    use keyward::controller::{metrics::Metrics, status};
    let ns = TestNamespace::new("stale-status").await;
    let stale = ns.create_key("stale", json!({})).await;
    let issued = format!("sha256:{}", "1".repeat(64));
    let other = json!({"status": {"phase": "Active", "tokenHash": issued}});
    ns.keys().patch_status("stale", &PatchParams::default(), &Patch::Merge(other)).await.expect("the other writer");

    let pending = ApiKeyStatus {
        record: TokenRecord { phase: Some(Phase::Pending), ..Default::default() },
        ..Default::default()
    };
    let recent = status::RecentWrites::default();
    let written =
        status::apply(&ns.keys(), &stale, stale.status.as_ref(), &pending, &recent, &Metrics::default()).await;
    match written {
        Err(keyward::Error::Kube(kube::Error::Api(refusal))) if refusal.code == 409 => {}
        other => panic!("a write from a stale read: expected 409 Conflict, got {other:?}"),
    }
    let now = ns.keys().get("stale").await.expect("get");
    assert_eq!(now.status.as_ref().and_then(|s| s.record.token_hash.as_deref()), Some(issued.as_str()), "kept");
    // From a fresh read the same write goes through.
    let wrote = status::apply(&ns.keys(), &now, now.status.as_ref(), &pending, &recent, &Metrics::default()).await;
    assert!(matches!(wrote, Ok(true)), "{wrote:?}");
}

/// Every textual form in which a token could leak.
fn forms(token: &str) -> [String; 2] {
    let base64 = match serde_json::to_value(ByteString(token.as_bytes().to_vec())) {
        Ok(serde_json::Value::String(encoded)) => encoded,
        other => panic!("base64 of a token: {other:?}"),
    };
    [token.to_string(), base64]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrecy_no_token_in_logs_events_or_status_through_a_full_lifecycle() {
    let ns = TestNamespace::new("secrecy").await;
    let history = TokenHistory::start(ns.secrets()).await;
    let text = support::Operator::start(&ns.name, &[], &[("RUST_LOG", "trace")]);
    let json_logs = support::Operator::start(&ns.name, &["--log-format", "json"], &[("RUST_LOG", "trace")]);

    ns.create_key("life", json!({"scopes": ["orders.read"], "secretTemplate": {"data": {"endpoint": "https://x"}}}))
        .await;
    ns.create_key("brief", json!({"expiresAfter": "3s"})).await;
    let first = ns.wait_phase("life", Phase::Active).await.status.expect("status").record.token_hash;

    // Tampered: re-issued.
    let forged = Token::generate("kw");
    ns.secrets()
        .patch(
            "life-apikey",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"token": ByteString(forged.expose().as_bytes().to_vec())}})),
        )
        .await
        .expect("tamper");
    let second = ns.wait_new_token("life", &first).await.record.token_hash;
    // Lost: re-issued.
    ns.secrets().delete("life-apikey", &Default::default()).await.expect("delete");
    ns.wait_new_token("life", &second).await;
    ns.patch_spec("life", json!({"state": "Inactive"})).await;
    ns.wait_phase("life", Phase::Inactive).await;
    ns.patch_spec("life", json!({"state": "Active", "secretTemplate": {"data": {"endpoint": "https://y"}}})).await;
    ns.wait_phase("life", Phase::Active).await;
    ns.patch_spec("life", json!({"expiresAfter": "bogus"})).await;
    ns.wait_phase("life", Phase::Failed).await;
    ns.patch_spec("life", json!({"expiresAfter": "1d"})).await;
    ns.wait_phase("life", Phase::Active).await;
    ns.wait_phase("brief", Phase::Expired).await;
    ns.wait_event("life", "TokenReissued").await;
    ns.delete_key("life").await;
    ns.wait_secret_gone("life-apikey").await;

    let mut tokens = history.all_tokens();
    tokens.push(forged.expose().to_string());
    assert!(tokens.len() >= 5, "the lifecycle should have produced several tokens, saw {}", tokens.len());

    let events =
        serde_json::to_string(&ns.events().list(&ListParams::default()).await.expect("events").items).expect("json");
    let keys = serde_json::to_string(&ns.keys().list(&ListParams::default()).await.expect("keys").items).expect("json");
    let (status_line, metrics) = text.http_get("/metrics").await;
    assert!(status_line.contains("200") && metrics.contains("keyward_reconciles_total"), "{status_line}\n{metrics}");
    let logs = [text.logs(), json_logs.logs()];
    assert!(logs.iter().all(|l| l.contains("TRACE") || l.contains("\"level\":\"TRACE\"")), "trace logging was not on");
    assert!(events.contains("TokenReissued"), "no events to scan");
    for token in &tokens {
        for form in forms(token) {
            for (place, text) in
                [("text logs", &logs[0]), ("json logs", &logs[1]), ("events", &events), ("ApiKeys", &keys)]
            {
                assert!(!text.contains(&form), "a token appeared in the {place}");
            }
        }
    }
}
