//! Applications and usage on the real API server: a key's `spec.applications` judged by the
//! verifier (`X-Keyward-App`, the `app` field), and the KeyUsage the verifier's usage recorder
//! writes beside each key (last use, applications seen), with its bounded writes.

mod support;

use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use keyward::api::{AppState, KeyUsage, Phase};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{DEADLINE, HttpResponse, Operator, TestNamespace, sample, wait_for};

/// The API server counts writes of every namespace: the test that counts them runs alone
/// (`write`), the others beside each other (`read`).
static API_SERVER_WRITES: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Flush every second, at a resolution of a second: what a request did shows within a second.
const FAST: [&str; 4] = ["--usage-flush-interval", "1s", "--usage-resolution", "1s"];

fn usages(ns: &TestNamespace) -> Api<KeyUsage> {
    Api::namespaced(ns.client.clone(), &ns.name)
}

/// An issued ApiKey's token.
async fn issued_key(ns: &TestNamespace, name: &str, spec: serde_json::Value) -> String {
    ns.create_key(name, spec).await;
    ns.wait_phase(name, Phase::Active).await;
    ns.token_of(&format!("{name}-apikey")).await
}

/// `/v1/auth` with the token, naming `app` (when given) in `X-Keyward-App`.
async fn auth(verifier: &Operator, token: &str, app: Option<&str>) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("Authorization", bearer.as_str())];
    if let Some(app) = app {
        headers.push(("X-Keyward-App", app));
    }
    verifier.auth("/v1/auth", &headers).await
}

/// Asks `/v1/auth` until it answers `status` (the verifier sees a spec change within moments).
async fn wait_auth(verifier: &Operator, token: &str, app: Option<&str>, status: u16) -> HttpResponse {
    wait_for(format!("/v1/auth answering {status} for {app:?}"), DEADLINE, || async {
        let answer = auth(verifier, token, app).await;
        if answer.status == status { Ok(answer) } else { Err(format!("{answer:?}")) }
    })
    .await
}

/// Waits until the KeyUsage `name` exists and satisfies `condition`.
async fn wait_usage(ns: &TestNamespace, name: &str, what: &str, condition: impl Fn(&KeyUsage) -> bool) -> KeyUsage {
    support::wait::wait_object(&usages(ns), name, what, |u| u.is_some_and(&condition), |u| format!("{u:?}"))
        .await
        .expect("the KeyUsage")
}

/// The state the KeyUsage records for `app`, if it lists it.
fn app_state(usage: &KeyUsage, app: &str) -> Option<AppState> {
    usage.status.as_ref()?.applications.iter().find(|a| a.name == app).map(|a| a.state)
}

fn last_used(usage: &KeyUsage) -> Option<Timestamp> {
    usage.status.as_ref()?.last_used_at.as_ref().map(|t| t.0)
}

/// The API server's count of requests that write keyusages (creates, patches, updates; not the
/// deletes with which namespaces of finished tests go), from its own metrics.
async fn apiserver_writes(client: &Client) -> f64 {
    let request = axum::http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(request).await.expect("the API server's /metrics");
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains(r#"resource="keyusages""#))
        .filter(|l| ["POST", "PATCH", "PUT"].iter().any(|verb| l.contains(&format!(r#"verb="{verb}""#))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The verifier's flush count.
async fn flushes(verifier: &Operator) -> f64 {
    sample(&verifier.metrics().await, "keyward_verifier_usage_flushes_total").unwrap_or(0.0)
}

/// Waits until the verifier has flushed `more` more times (each flush after the last request
/// seen by the previous one).
async fn wait_flushes(verifier: &Operator, more: f64) {
    let from = flushes(verifier).await;
    verifier
        .wait_metric("keyward_verifier_usage_flushes_total", &format!("{more} more flushes"), |n| {
            n.unwrap_or(0.0) >= from + more
        })
        .await;
}

#[tokio::test]
async fn a_pending_application_waits_for_approval_and_a_denied_one_is_refused() {
    let _alone = API_SERVER_WRITES.read().await;
    let ns = TestNamespace::new("usage-pending").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "report", json!({"applications": {"default": "Pending"}})).await;
    let verifier = ns.verifier(&FAST).await;

    let pending = auth(&verifier, &token, Some("new-report")).await;
    assert_eq!(pending.status, 401, "{pending:?}");
    assert_eq!(pending.header("x-keyward-code"), Some("APP_PENDING"));
    assert_eq!(pending.header("www-authenticate"), Some("Bearer"));
    assert_eq!(pending.header("x-keyward-key"), None, "no identity on a refusal");
    assert_eq!(auth(&verifier, &token, None).await.header("x-keyward-code"), Some("APP_PENDING"), "no name: default");

    // Within a flush interval the owner sees who asks.
    let usage = wait_usage(&ns, "apikey.report", "new-report Pending", |u| {
        app_state(u, "new-report") == Some(AppState::Pending)
    })
    .await;
    let key = ns.keys().get("report").await.expect("the key");
    let owner = &usage.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("ApiKey", "report", key.uid().unwrap().as_str())
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!((usage.spec.kind.as_str(), usage.spec.name.as_str()), ("ApiKey", "report"));
    assert_eq!(last_used(&usage), None, "a refused request is no use");

    // Approved with the plugin (a spec change: under GitOps, commit it): the next request passes.
    support::command::apikey(&ns.name, &["app", "allow", "report", "new-report"])
        .run()
        .await
        .exits(0)
        .says("stdout", &["application \"new-report\" allowed"]);
    let allowed = wait_auth(&verifier, &token, Some("new-report"), 200).await;
    assert_eq!(allowed.header("x-keyward-key"), Some(format!("{}/report", ns.name).as_str()));
    let usage = wait_usage(&ns, "apikey.report", "new-report Allowed and used", |u| {
        app_state(u, "new-report") == Some(AppState::Allowed) && last_used(u).is_some()
    })
    .await;
    let app = &usage.status.as_ref().unwrap().applications[0];
    assert!(app.first_seen_at.0 <= app.last_seen_at.0, "{app:?}");

    support::command::apikey(&ns.name, &["app", "deny", "report", "new-report"]).run().await.exits(0);
    let denied = wait_auth(&verifier, &token, Some("new-report"), 403).await;
    assert_eq!(denied.header("x-keyward-code"), Some("APP_DENIED"));
    assert_eq!(denied.header("www-authenticate"), None, "403 asks for no other credentials");
    wait_usage(&ns, "apikey.report", "new-report Denied", |u| app_state(u, "new-report") == Some(AppState::Denied))
        .await;
    // Forgotten: the default, Pending, again.
    support::command::apikey(&ns.name, &["app", "forget", "report", "new-report"]).run().await.exits(0);
    let pending = wait_auth(&verifier, &token, Some("new-report"), 401).await;
    assert_eq!(pending.header("x-keyward-code"), Some("APP_PENDING"));
}

#[tokio::test]
async fn deny_and_allow_defaults_and_the_app_field_of_verify() {
    let _alone = API_SERVER_WRITES.read().await;
    let ns = TestNamespace::new("usage-defaults").await;
    let _controller = ns.controller(&[]);
    let locked = issued_key(&ns, "locked", json!({"applications": {"default": "Deny", "allowed": ["worker"]}})).await;
    let open = issued_key(&ns, "open", json!({"applications": {"denied": ["legacy-cron"]}})).await;
    let verifier = ns.verifier(&FAST).await;

    let code = |answer: HttpResponse| (answer.status, answer.header("x-keyward-code").map(String::from));
    let refused = (403, Some("APP_DENIED".to_string()));
    assert_eq!(code(auth(&verifier, &locked, Some("worker")).await), (200, Some("VALID".into())));
    assert_eq!(code(auth(&verifier, &locked, Some("other")).await), refused);
    assert_eq!(code(auth(&verifier, &locked, None).await), refused, "no name follows the default");
    // A malformed header is no name at all (a proxy's request is not refused for it).
    assert_eq!(code(auth(&verifier, &locked, Some("-worker")).await), refused);
    assert_eq!(code(auth(&verifier, &open, Some("anything")).await).0, 200);
    assert_eq!(code(auth(&verifier, &open, None).await).0, 200);
    assert_eq!(code(auth(&verifier, &open, Some("bad name!")).await).0, 200, "malformed: as absent");
    assert_eq!(code(auth(&verifier, &open, Some("legacy-cron")).await), refused);

    let verify = |token: &str, app: serde_json::Value| {
        let body = json!({"token": token, "app": app});
        let verifier = &verifier;
        async move { verifier.verify(body).await }
    };
    assert_eq!(verify(&locked, json!("worker")).await.1["code"], "VALID");
    let (status, answer) = verify(&locked, json!("other")).await;
    assert_eq!((status, answer["code"].as_str(), answer["valid"].as_bool()), (200, Some("APP_DENIED"), Some(false)));
    assert_eq!(answer["key"]["name"], "locked", "the key is named, as for every refusal of a found key");
    let (status, answer) = verify(&locked, json!("not a name")).await;
    assert_eq!(status, 400, "a malformed app is refused by /v1/verify: {answer}");
    assert!(answer["error"].as_str().unwrap().starts_with("app: application names are"), "{answer}");
}

#[tokio::test]
async fn a_credentials_tokens_share_its_policy_and_each_has_its_last_use() {
    let _alone = API_SERVER_WRITES.read().await;
    let ns = TestNamespace::new("usage-credential").await;
    let _controller = ns.controller(&[]);
    ns.create_credential(
        "billing",
        json!({"tokens": [{"name": "primary"}, {"name": "secondary"}], "applications": {"default": "Deny", "allowed": ["worker"]}}),
    )
    .await;
    ns.wait_credential("billing", "both tokens issued", |s| {
        s.tokens.iter().filter(|t| t.record.token_hash.is_some()).count() == 2
    })
    .await;
    let primary = ns.token_of("billing-primary").await;
    let secondary = ns.token_of("billing-secondary").await;
    let verifier = ns.verifier(&FAST).await;

    for token in [&primary, &secondary] {
        assert_eq!(auth(&verifier, token, Some("worker")).await.status, 200);
        let other = auth(&verifier, token, Some("other")).await;
        assert_eq!((other.status, other.header("x-keyward-code")), (403, Some("APP_DENIED")));
    }
    let usage = wait_usage(&ns, "credential.billing", "both tokens used, both applications seen", |u| {
        u.status.as_ref().is_some_and(|s| s.tokens.len() == 2 && s.applications.len() == 2)
    })
    .await;
    assert_eq!(usage.owner_references()[0].kind, "Credential");
    let status = usage.status.unwrap();
    assert_eq!(status.tokens.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["primary", "secondary"]);
    assert!(status.tokens.iter().all(|t| Some(&t.last_used_at) <= status.last_used_at.as_ref()));
    assert_eq!(app_state_of(&status, "worker"), Some(AppState::Allowed));
    assert_eq!(app_state_of(&status, "other"), Some(AppState::Denied));
}

fn app_state_of(status: &keyward::api::KeyUsageStatus, app: &str) -> Option<AppState> {
    status.applications.iter().find(|a| a.name == app).map(|a| a.state)
}

#[tokio::test]
async fn last_use_moves_only_on_valid_answers_only_forward_and_truncated() {
    let _alone = API_SERVER_WRITES.read().await;
    let ns = TestNamespace::new("usage-last-use").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "reader", json!({"scopes": ["orders.read"]})).await;
    let verifier = ns.verifier(&["--usage-flush-interval", "1s", "--usage-resolution", "1m"]).await;

    // Refused requests (a scope the key lacks) are not uses; their application is still seen.
    let scoped =
        verifier.auth("/v1/auth?scope=orders.write", &[("X-Api-Key", &token), ("X-Keyward-App", "probe-1")]).await;
    assert_eq!(scoped.status, 403);
    let usage = wait_usage(&ns, "apikey.reader", "probe-1 seen", |u| app_state(u, "probe-1").is_some()).await;
    assert_eq!(last_used(&usage), None, "INSUFFICIENT_SCOPE is no use: {usage:?}");

    let before = Timestamp::now();
    assert_eq!(auth(&verifier, &token, None).await.status, 200);
    let after = Timestamp::now();
    let usage = wait_usage(&ns, "apikey.reader", "a last use", |u| last_used(u).is_some()).await;
    let used = last_used(&usage).unwrap();
    let minute = |t: Timestamp| Timestamp::from_second(t.as_second().div_euclid(60) * 60).unwrap();
    assert!(used == minute(before) || used == minute(after), "{used} is the request's minute ({before}..{after})");

    // A later time written by someone else (another replica's clock) is never moved back.
    let ahead = minute(Timestamp::now()) + jiff::SignedDuration::from_hours(48);
    usages(&ns)
        .patch_status(
            "apikey.reader",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastUsedAt": ahead.to_string()}})),
        )
        .await
        .expect("move lastUsedAt ahead");
    assert_eq!(auth(&verifier, &token, Some("probe-2")).await.status, 200);
    let usage = wait_usage(&ns, "apikey.reader", "probe-2 seen", |u| app_state(u, "probe-2").is_some()).await;
    assert_eq!(last_used(&usage), Some(ahead), "times only move forward");
}

#[tokio::test]
async fn a_key_at_rest_or_used_within_one_resolution_step_causes_no_writes() {
    let _alone = API_SERVER_WRITES.write().await;
    let ns = TestNamespace::new("usage-at-rest").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "steady", json!({})).await;
    // A day's resolution: the test stays inside one step, unless it starts just before midnight.
    let to_midnight = 86_400 - Timestamp::now().as_second().rem_euclid(86_400);
    if to_midnight < 120 {
        tokio::time::sleep(Duration::from_secs(to_midnight as u64 + 1)).await;
    }
    let verifier = ns.verifier(&["--usage-flush-interval", "1s", "--usage-resolution", "1d"]).await;
    assert_eq!(auth(&verifier, &token, Some("worker")).await.status, 200);
    let first = wait_usage(&ns, "apikey.steady", "a first use", |u| last_used(u).is_some()).await;
    wait_flushes(&verifier, 1.0).await;
    let (version, writes) = (first.resource_version(), apiserver_writes(&ns.client).await);
    let verifier_writes = |metrics: &str| {
        ["created", "patched"]
            .map(|r| sample(metrics, &format!(r#"keyward_verifier_usage_writes_total{{result="{r}"}}"#)))
    };
    // The first flush created it bare, then wrote its status.
    assert_eq!(verifier_writes(&verifier.metrics().await), [Some(1.0), Some(1.0)]);

    // Used all through three flushes, within one step: nothing new to write.
    let from = flushes(&verifier).await;
    while flushes(&verifier).await < from + 3.0 {
        assert_eq!(auth(&verifier, &token, Some("worker")).await.status, 200);
    }
    // Then at rest for three more.
    wait_flushes(&verifier, 3.0).await;
    let now = usages(&ns).get("apikey.steady").await.expect("the KeyUsage");
    assert_eq!(now.resource_version(), version, "no write: {now:?}");
    assert_eq!(apiserver_writes(&ns.client).await, writes, "the API server saw no KeyUsage write");
    assert_eq!(verifier_writes(&verifier.metrics().await), [Some(1.0), Some(1.0)], "no write since");
}

#[tokio::test]
async fn two_replicas_merge_into_one_keyusage() {
    let _alone = API_SERVER_WRITES.read().await;
    let ns = TestNamespace::new("usage-replicas").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "shared", json!({})).await;
    let (one, two) = (ns.verifier(&FAST).await, ns.verifier(&FAST).await);

    // Both replicas keep writing at once for a few flushes, each seeing its own applications.
    for round in 0..4 {
        let (a, b) = (format!("one-{round}"), format!("two-{round}"));
        let (x, y) = tokio::join!(auth(&one, &token, Some(&a)), auth(&two, &token, Some(&b)));
        assert_eq!((x.status, y.status), (200, 200));
        tokio::join!(wait_flushes(&one, 1.0), wait_flushes(&two, 1.0));
    }
    let usage = wait_usage(&ns, "apikey.shared", "every application of both replicas", |u| {
        u.status.as_ref().is_some_and(|s| s.applications.len() == 8)
    })
    .await;
    let mut names: Vec<String> = usage.status.unwrap().applications.into_iter().map(|a| a.name).collect();
    names.sort();
    let mut want: Vec<String> = (0..4).flat_map(|r| [format!("one-{r}"), format!("two-{r}")]).collect();
    want.sort();
    assert_eq!(names, want);
    assert_eq!(usages(&ns).list(&ListParams::default()).await.expect("list").items.len(), 1, "one KeyUsage");
}

#[tokio::test]
async fn a_keyusage_goes_with_its_key_and_one_not_ours_is_left_alone() {
    let _alone = API_SERVER_WRITES.read().await;
    let ns = TestNamespace::new("usage-gc").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "brief", json!({})).await;
    let other = issued_key(&ns, "handmade", json!({})).await;
    // A KeyUsage made by hand, without the key as its controller: never written.
    let handmade: KeyUsage = serde_json::from_value(json!({
        "metadata": {"name": "apikey.handmade"},
        "spec": {"kind": "ApiKey", "name": "handmade"},
    }))
    .expect("KeyUsage");
    usages(&ns).create(&Default::default(), &handmade).await.expect("create");
    let status = Patch::Merge(json!({"status": {"lastUsedAt": "2020-01-01T00:00:00Z"}}));
    usages(&ns).patch_status("apikey.handmade", &PatchParams::default(), &status).await.expect("its status");
    let verifier = ns.verifier(&FAST).await;

    assert_eq!(auth(&verifier, &token, None).await.status, 200);
    assert_eq!(auth(&verifier, &other, None).await.status, 200);
    wait_usage(&ns, "apikey.brief", "a last use", |u| last_used(u).is_some()).await;
    verifier
        .wait_metric(r#"keyward_verifier_usage_writes_total{result="refused"}"#, "the handmade one refused", |n| {
            n.is_some_and(|n| n >= 1.0)
        })
        .await;
    let kept = usages(&ns).get("apikey.handmade").await.expect("get");
    assert_eq!(last_used(&kept), Some("2020-01-01T00:00:00Z".parse().unwrap()), "left as it was");

    ns.delete_key("brief").await;
    support::wait::wait_object(&usages(&ns), "apikey.brief", "collected", |u| u.is_none(), |u| format!("{u:?}")).await;
}

#[tokio::test]
async fn ten_thousand_random_application_names_keep_the_recorder_and_the_keyusage_bounded() {
    let _alone = API_SERVER_WRITES.read().await;
    let ns = TestNamespace::new("usage-flood").await;
    let _controller = ns.controller(&[]);
    let token = issued_key(&ns, "flooded", json!({})).await;
    let verifier = ns.verifier(&FAST).await;

    const NAMES: usize = 10_000;
    let names: Vec<String> = (0..NAMES).map(|i| format!("app-{i}-{:08x}", rand::random::<u32>())).collect();
    let held = std::sync::Mutex::new(0f64);
    let flood = futures::stream::iter(names.chunks(NAMES / 16)).for_each_concurrent(16, |chunk| {
        let (verifier, token) = (&verifier, &token);
        async move {
            for name in chunk {
                assert_eq!(auth(verifier, token, Some(name)).await.status, 200);
            }
        }
    });
    let watch_held = async {
        loop {
            if let Some(n) = sample(&verifier.metrics().await, "keyward_verifier_usage_held_applications") {
                let mut max = held.lock().unwrap();
                *max = max.max(n);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = flood => {},
        () = watch_held => unreachable!(),
    }
    let usage = wait_usage(&ns, "apikey.flooded", "every sighting counted", |u| {
        u.status.as_ref().is_some_and(|s| s.applications.len() + s.applications_overflow as usize == NAMES)
    })
    .await;
    let status = usage.status.unwrap();
    assert_eq!(status.applications.len(), 64, "at most 64 listed");
    assert_eq!(status.applications_overflow, (NAMES - 64) as i64);
    let max = *held.lock().unwrap();
    assert!(max <= 64.0, "the recorder held {max} applications for one key");
}

#[tokio::test]
async fn a_malformed_application_name_is_refused_at_apply_by_the_schema() {
    let _alone = API_SERVER_WRITES.read().await;
    let ns = TestNamespace::new("usage-schema").await;
    // Kubernetes 1.20 names the list (`allowed`), newer servers the item (`allowed[0]`).
    for (spec, field, value) in [
        (json!({"applications": {"allowed": ["-etl"]}}), "spec.applications.allowed", "-etl"),
        (json!({"applications": {"denied": ["a b"]}}), "spec.applications.denied", "a b"),
        (json!({"applications": {"allowed": ["x".repeat(64)]}}), "spec.applications.allowed", "xxxx"),
    ] {
        match ns.keys().create(&Default::default(), &support::key("bad", spec.clone())).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{spec}: {}", status.message);
                assert!(status.message.contains(field) && status.message.contains(value), "{spec}: {}", status.message);
            }
            other => panic!("{spec} was admitted: {other:?}"),
        }
    }
}
