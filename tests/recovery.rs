//! Recovery on the real API server: each test runs a control plane of its own and kills its API
//! server (SIGKILL), then starts it again with the same flags and etcd, as a crash or an upgrade
//! of a real one would. Objects are changed while it is down through a twin API server on the same
//! etcd, so the watches of the controller and the verifier miss those changes for sure.
//!
//! The catch-up times are printed (`cargo test --test recovery -- --nocapture`); the bound the
//! tests hold them to is a deadline, not a speed target.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret};
use keyward::api::{ApiKey, Phase};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use support::{DEADLINE, OwnControlPlane, TestNamespace, TokenHistory, assert_tokens_match_status, key, wait_for};
use tokio::time::Instant;

/// How long the controller and the verifier may take to catch up once the API server answers
/// again. Their watches retry within 2 s; kube's own backoff (up to a minute) or a starting API
/// server's `Retry-After: 10` would miss it.
const CATCH_UP: Duration = Duration::from_secs(8);

/// The key's status once `condition` holds for it.
async fn poll_key(
    keys: &Api<ApiKey>,
    name: &str,
    what: &str,
    condition: impl Fn(&keyward::api::ApiKeyStatus) -> bool,
) -> keyward::api::ApiKeyStatus {
    wait_for(&format!("{name}: {what}"), CATCH_UP, || async {
        keys.get(name).await.ok()?.status.filter(|s| condition(s))
    })
    .await
}

/// Creates an ApiKey, retrying while the API server cannot be reached; one whose create went
/// through but whose answer was lost is found on the retry (409).
async fn create_retrying(keys: &Api<ApiKey>, name: &str) {
    wait_for(format!("create {name}"), Duration::from_secs(120), || async {
        match keys.create(&PostParams::default(), &key(name, json!({}))).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error),
        }
    })
    .await;
}

/// The verifier's code for `token`, from `/v1/verify` at `addr`.
async fn code_at(addr: &str, token: &str) -> String {
    let body = json!({ "token": token }).to_string();
    let request = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = support::http(addr, request.as_bytes()).await;
    let answer: serde_json::Value = serde_json::from_str(&response.body).unwrap_or(json!({}));
    answer["code"].as_str().map_or_else(|| format!("HTTP {}", response.status), str::to_string)
}

/// Prints a process's log when the test fails, to see what it made of the outage.
struct DumpOnPanic<'a>(&'a support::Operator);

impl Drop for DumpOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- controller log ---\n{}", self.0.logs());
        }
    }
}

fn active(status: &keyward::api::ApiKeyStatus) -> bool {
    status.record.phase == Some(Phase::Active)
}

/// Kills the API server for `outage`, deleting a key's Secret and another key meanwhile, and
/// measures from the moment it is ready again until the controller has re-issued the lost token
/// and issued a new key's, and the verifier has dropped the deleted key and accepts the new one.
async fn catch_up_after(outage: Duration) {
    let plane = OwnControlPlane::start().await;
    let ns = TestNamespace::on(plane.client().await, "recovery").await;
    let controller = plane.operator("controller", &ns.name, &[]);
    let verifier = plane.operator("verifier", &ns.name, &[]);
    verifier.wait_ready().await;
    let _logs = DumpOnPanic(&controller);
    ns.create_key("lost-secret", json!({})).await;
    ns.create_key("deleted", json!({})).await;
    let before = ns.wait_phase("lost-secret", Phase::Active).await.status.expect("status");
    ns.wait_phase("deleted", Phase::Active).await;
    let deleted_token = ns.token_of("deleted-apikey").await;
    verifier.wait_code(&deleted_token, "VALID", DEADLINE).await;

    plane.kill_apiserver().await;
    let twin = plane.twin().await;
    Api::<Secret>::namespaced(twin.clone(), &ns.name)
        .delete("lost-secret-apikey", &DeleteParams::default())
        .await
        .expect("delete a Secret while the watches are down");
    Api::<ApiKey>::namespaced(twin, &ns.name)
        .delete("deleted", &DeleteParams::default())
        .await
        .expect("delete a key while the watches are down");
    plane.stop_twin().await;
    // The outage itself: nothing to wait for, the API server is down on purpose.
    tokio::time::sleep(outage).await;
    plane.start_apiserver().await;
    let ready = Instant::now();
    eprintln!("API server ready again at {}", jiff::Timestamp::now());

    let keys = ns.keys();
    let addr = verifier.listen_addr().await;
    let after = async {
        create_retrying(&keys, "after").await;
        poll_key(&keys, "after", "issued", active).await;
        let issued = ready.elapsed();
        let token = wait_for("the new key's Secret", CATCH_UP, || async {
            ns.secrets().get("after-apikey").await.ok().as_ref().and_then(support::token_in)
        })
        .await;
        wait_for("the verifier accepts the new key", CATCH_UP, || async {
            (code_at(&addr, &token).await == "VALID").then_some(())
        })
        .await;
        (issued, ready.elapsed())
    };
    let reissued = async {
        poll_key(&keys, "lost-secret", "a new token", |s| active(s) && s.record.token_hash != before.record.token_hash)
            .await;
        ready.elapsed()
    };
    let dropped = async {
        wait_for("the verifier drops the deleted key", CATCH_UP, || async {
            (code_at(&addr, &deleted_token).await == "NOT_FOUND").then_some(())
        })
        .await;
        ready.elapsed()
    };
    let ((issued, accepted), reissued, dropped) = tokio::join!(after, reissued, dropped);
    eprintln!(
        "after a {outage:?} outage, from API server ready: controller re-issued the lost Secret in {reissued:?} \
         and issued a new key in {issued:?}; verifier dropped the deleted key in {dropped:?} and accepted \
         the new one in {accepted:?}"
    );
    let token = ns.token_of("lost-secret-apikey").await;
    assert_eq!(
        keys.get("lost-secret").await.expect("get").status.and_then(|s| s.record.token_hash),
        Some(keyward::token::TokenHash::of(token.as_bytes()).to_string())
    );
    let event = ns.wait_event("lost-secret", "TokenReissued").await;
    assert!(event.message.unwrap_or_default().contains("was deleted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_5s_outage_a_secret_lost_in_the_watch_gap_is_reissued_and_a_deleted_key_dropped() {
    catch_up_after(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_60s_outage_both_catch_up_as_fast_as_after_a_short_one() {
    catch_up_after(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_server_killed_mid_burst_leaves_one_token_per_key_every_secret_and_right_answers() {
    const KEYS: usize = 200;
    let plane = OwnControlPlane::start().await;
    let ns = TestNamespace::on(plane.client().await, "fault").await;
    let controller = plane.operator("controller", &ns.name, &[]);
    let verifier = plane.operator("verifier", &ns.name, &[]);
    verifier.wait_ready().await;
    ns.create_key("steady", json!({})).await;
    ns.wait_phase("steady", Phase::Active).await;
    let steady = ns.token_of("steady-apikey").await;
    verifier.wait_code(&steady, "VALID", DEADLINE).await;
    let history = TokenHistory::start(ns.secrets()).await;

    // Traffic all along: the verifier answers from memory, API server or not.
    let addr = verifier.listen_addr().await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (addr, stop, steady) = (addr.clone(), stop.clone(), steady.clone());
        async move {
            let mut answers: Vec<String> = Vec::new();
            // Bounded: at most 20,000 requests, 5 ms apart.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                answers.push(code_at(&addr, &steady).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            answers
        }
    });

    let created = Arc::new(AtomicUsize::new(0));
    let names: Vec<String> = (0..KEYS).map(|i| format!("burst-{i}")).collect();
    let burst = tokio::spawn({
        let (keys, names, created) = (ns.keys(), names.clone(), created.clone());
        async move {
            futures::StreamExt::for_each_concurrent(futures::stream::iter(names), 8, |name| {
                let (keys, created) = (keys.clone(), created.clone());
                async move {
                    create_retrying(&keys, &name).await;
                    created.fetch_add(1, Ordering::Relaxed);
                }
            })
            .await
        }
    });
    wait_for("40 keys created", DEADLINE, || async { (created.load(Ordering::Relaxed) >= 40).then_some(()) }).await;
    plane.kill_apiserver().await;
    let killed_at = created.load(Ordering::Relaxed);
    // The outage itself.
    tokio::time::sleep(Duration::from_secs(5)).await;
    plane.start_apiserver().await;
    let ready = Instant::now();
    burst.await.expect("the burst");
    support::wait_all_active(ns.keys(), &names, Duration::from_secs(120)).await;
    eprintln!("killed with {killed_at} of {KEYS} keys created; all {KEYS} Active {:?} after ready", ready.elapsed());
    stop.store(true, Ordering::Relaxed);
    let answers = traffic.await.expect("traffic");

    // The history watch goes through the API server that was killed, and events are best
    // effort: the controller's own count says no token was ever replaced.
    let (_, metrics) = controller.http_get("/metrics").await;
    let replaced = support::sample(&metrics, r#"keyward_api_writes_total{resource="secrets",verb="update"}"#);
    assert_eq!(replaced.unwrap_or(0.0), 0.0, "a Secret's token was replaced:\n{metrics}");

    let mut all = names.clone();
    all.push("steady".into());
    let tokens = assert_tokens_match_status(&ns, &all).await;
    history.assert_one_token_per_secret(all.len()).await;
    let reissued: Vec<Event> = Api::<Event>::namespaced(ns.client.clone(), &ns.name)
        .list(&ListParams::default().fields("reason=TokenReissued"))
        .await
        .expect("list events")
        .items;
    assert!(
        reissued.is_empty(),
        "a token was issued twice: {:?}",
        reissued.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    // The verifier learns of each status from its own watch, a moment after the test's.
    for token in &tokens {
        wait_for("the verifier accepts every key", CATCH_UP, || async {
            (code_at(&addr, token).await == "VALID").then_some(())
        })
        .await;
    }
    let refused: Vec<&String> = answers.iter().filter(|code| *code != "VALID").collect();
    assert!(answers.len() > 100, "the traffic ran: {} answers", answers.len());
    assert!(
        refused.is_empty(),
        "{} of {} answers were not VALID: {:?}",
        refused.len(),
        answers.len(),
        &refused[..refused.len().min(5)]
    );
}
