//! What the controller shows about itself, on the real API server: Kubernetes Events for each
//! transition, Prometheus metrics (keys by phase, each token's expiry), structured JSON logs.

mod support;

use k8s_openapi::api::core::v1::Secret;
use keyward::api::Phase;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use support::{DEADLINE, Operator, TestNamespace, sample, wait_for};

/// The event with `reason` for the object `name`, once it exists.
async fn event(ns: &TestNamespace, name: &str, reason: &str) -> (String, String) {
    let event = ns.wait_event(name, reason).await;
    (event.type_.unwrap_or_default(), event.message.unwrap_or_default())
}

#[tokio::test]
async fn events_tell_each_transition_by_key_id_and_never_the_token() {
    let ns = TestNamespace::new("obs-events").await;
    let _controller = ns.controller(&[]);

    ns.create_key("life", json!({"expiresAfter": "1d"})).await;
    let status = ns.wait_phase("life", Phase::Active).await.status.expect("status");
    let key_id = status.record.key_id.expect("keyId");
    let (type_, message) = event(&ns, "life", "Issued").await;
    assert_eq!(type_, "Normal");
    assert!(message.contains(&key_id) && message.contains("life-apikey"), "{message}");
    let first_token = ns.token_of("life-apikey").await;

    ns.secrets().delete("life-apikey", &Default::default()).await.expect("delete the Secret");
    let (type_, message) = event(&ns, "life", "TokenReissued").await;
    assert_eq!(type_, "Warning", "{message}");
    ns.wait_phase("life", Phase::Active).await;
    let second_token = ns.token_of("life-apikey").await;

    ns.patch_spec("life", json!({"state": "Inactive"})).await;
    assert_eq!(event(&ns, "life", "Inactive").await.0, "Normal");
    ns.patch_spec("life", json!({"state": "Active", "expiresAfter": "ninety days"})).await;
    let (type_, message) = event(&ns, "life", "InvalidSpec").await;
    assert_eq!(type_, "Warning");
    assert!(message.contains("spec.expiresAfter") && message.contains("ninety days"), "{message}");

    let foreign = Secret {
        metadata: kube::api::ObjectMeta { name: Some("taken-apikey".into()), ..Default::default() },
        string_data: Some([("token".to_string(), "someone else's".to_string())].into()),
        ..Default::default()
    };
    ns.secrets().create(&PostParams::default(), &foreign).await.expect("a foreign Secret");
    ns.create_key("taken", json!({})).await;
    let (type_, message) = event(&ns, "taken", "SecretConflict").await;
    assert_eq!(type_, "Warning");
    assert!(message.contains("taken-apikey"), "{message}");

    ns.create_key("brief", json!({"expiresAfter": "2s"})).await;
    ns.wait_phase("brief", Phase::Expired).await;
    assert_eq!(event(&ns, "brief", "Expired").await.0, "Normal");
    let brief_token_hash = ns.keys().get("brief").await.expect("get").status.and_then(|s| s.record.token_hash);
    assert!(brief_token_hash.is_some());

    let events = ns.events().list(&ListParams::default()).await.expect("list events").items;
    let text = serde_json::to_string(&events).expect("json");
    for token in [&first_token, &second_token] {
        assert!(!text.contains(token.as_str()), "a token is in an event");
    }
}

/// Reads `/metrics` until `series` has `value`, or fails at the deadline.
async fn wait_sample(operator: &Operator, series: &str, value: f64) -> String {
    operator.wait_metric(series, &format!("{value}"), |found| found == Some(value)).await
}

#[tokio::test]
async fn metrics_count_keys_by_phase_and_show_each_tokens_expiry() {
    let ns = TestNamespace::new("obs-metrics").await;
    let controller = ns.controller(&[]);
    ns.create_key("on", json!({"expiresAt": "2030-01-01T00:00:00Z"})).await;
    ns.create_key("off", json!({"state": "Inactive"})).await;
    ns.create_key("broken", json!({"allowedCIDRs": ["nowhere"]})).await;
    ns.create_credential("svc", json!({"tokens": [{"name": "a", "expiresAt": "2031-01-01T00:00:00Z"}]})).await;
    ns.wait_phase("on", Phase::Active).await;
    ns.wait_phase("off", Phase::Inactive).await;
    ns.wait_phase("broken", Phase::Failed).await;
    ns.wait_credential("svc", "an active token", |s| s.active_tokens == Some(1)).await;

    // The census is taken from the controller's caches, each fed by a watch of its own, so it
    // is waited for: until one scrape shows every figure (and each token's expiry) at once.
    let ns_name = &ns.name;
    let expiry = |kind: &str, name: &str, token: &str| {
        format!(
            r#"keyward_key_expiration_timestamp_seconds{{kind="{kind}",namespace="{ns_name}",name="{name}",token="{token}"}}"#
        )
    };
    let at = |text: &str| text.parse::<jiff::Timestamp>().expect("a time").as_second() as f64;
    let census = [
        (r#"keyward_keys{kind="ApiKey",phase="Active"}"#.to_string(), 1.0),
        (r#"keyward_keys{kind="ApiKey",phase="Inactive"}"#.to_string(), 1.0),
        (r#"keyward_keys{kind="ApiKey",phase="Failed"}"#.to_string(), 1.0),
        (r#"keyward_keys{kind="ApiKey",phase="Expired"}"#.to_string(), 0.0),
        (r#"keyward_keys{kind="Credential",phase="Active"}"#.to_string(), 1.0),
        (expiry("ApiKey", "on", ""), at("2030-01-01T00:00:00Z")),
        (expiry("Credential", "svc", "a"), at("2031-01-01T00:00:00Z")),
    ];
    wait_for("the census of every key and token in one scrape", DEADLINE, || async {
        let metrics = controller.metrics().await;
        let wrong: Vec<_> = census.iter().filter(|(series, value)| sample(&metrics, series) != Some(*value)).collect();
        if wrong.is_empty() { Ok(()) } else { Err(format!("not yet {wrong:?}:\n{metrics}")) }
    })
    .await;
    // A reconcile is counted once it returns, after its status write.
    let metrics = controller
        .wait_metric(r#"keyward_reconciles_total{kind="ApiKey"}"#, "3 ApiKey reconciles", |n| n >= Some(3.0))
        .await;
    // The duration is observed with the count.
    assert!(metrics.contains(r#"keyward_reconcile_duration_seconds_bucket{le="0.005",kind="ApiKey"}"#), "{metrics}");
    // Events are written from their own queue after the transition, so they may still be on
    // their way when the census above is already right.
    controller
        .wait_metric(r#"keyward_api_writes_total{resource="events",verb="create"}"#, "an event written", |n| {
            n.is_some_and(|n| n >= 1.0)
        })
        .await;

    // Deleted keys leave the census at once: it is taken from the cache at each scrape.
    ns.delete_key("on").await;
    let metrics = wait_sample(&controller, r#"keyward_keys{kind="ApiKey",phase="Active"}"#, 0.0).await;
    assert_eq!(sample(&metrics, &expiry("ApiKey", "on", "")), None, "{metrics}");
}

#[tokio::test]
async fn json_logs_name_the_key_by_namespace_name_and_key_id() {
    let ns = TestNamespace::new("obs-logs").await;
    let controller = Operator::start(&ns.name, &["--log-format", "json"], &[]);
    ns.create_key("logged", json!({})).await;
    let key_id = ns.wait_phase("logged", Phase::Active).await.status.and_then(|s| s.record.key_id).expect("keyId");
    let issued = wait_for("an 'issued token' log line", DEADLINE, || async {
        let logs = controller.logs();
        logs.lines().find(|l| l.contains("issued token")).map(str::to_string).ok_or(logs)
    })
    .await;
    let record: serde_json::Value = serde_json::from_str(&issued).unwrap_or_else(|e| panic!("{e}: {issued}"));
    assert_eq!(record["level"], "INFO", "{record}");
    assert_eq!(record["message"], "issued token", "{record}");
    // The reconcile's fields sit at the top level beside the event's own.
    for (field, value) in [("kind", "ApiKey"), ("namespace", ns.name.as_str()), ("name", "logged"), ("key_id", &key_id)]
    {
        assert_eq!(record[field], value, "{field} in {record}");
    }
    assert!(record["timestamp"].as_str().is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()), "{record}");
}
