//! The signing keys on the real API server: the controller creates the signing Secret on first
//! start, publishes the next key ahead, rotates and drops retired keys on time, never touches a
//! Secret of that name that is not ours, creates a deleted one again at once, writes nothing at
//! rest, writes only as the leader, and two controllers starting at once agree on one key.
//! Each test uses its own namespace as the controller's (`POD_NAMESPACE`).

mod support;

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use keyward::signing::{self, KeySet, Stored};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use support::{DEADLINE, Operator, TestNamespace, sample, wait_for};

const SECRET: &str = signing::DEFAULT_SECRET_NAME;
/// A schedule short enough to watch: a key signs 6 s, is published 3 s ahead, and a retired
/// key is kept 4 s.
const SHORT: [&str; 6] =
    ["--signing-key-rotation", "6s", "--signing-key-publish-ahead", "3s", "--signing-key-retain", "4s"];

const CREATES: &str = r#"keyward_signing_key_writes_total{verb="create"}"#;
const UPDATES: &str = r#"keyward_signing_key_writes_total{verb="update"}"#;
const LOOKS: &str = "keyward_signing_key_looks_total";

/// A controller whose own namespace is the test's.
fn controller(ns: &TestNamespace, extra: &[&str], env: &[(&str, &str)]) -> Operator {
    let env: Vec<(&str, &str)> = [("POD_NAMESPACE", ns.name.as_str())].into_iter().chain(env.iter().copied()).collect();
    Operator::start(&ns.name, extra, &env)
}

/// The keys of a signing Secret, `(kid, signsFrom)`, oldest first.
fn keys_of(secret: &Secret) -> Vec<(String, Timestamp)> {
    let stored = signing::read_stored(SECRET, secret).expect("a key set");
    let mut keys: Vec<(String, Timestamp)> = stored.keys.into_iter().map(|k| (k.kid, k.signs_from)).collect();
    keys.sort_by_key(|(_, from)| *from);
    keys
}

fn stored_of(secret: &Secret) -> Stored {
    signing::read_stored(SECRET, secret).expect("a key set")
}

async fn wait_signing_secret(ns: &TestNamespace, what: &str, condition: impl Fn(&Secret) -> bool) -> Secret {
    ns.wait_secret(SECRET, what, condition).await
}

async fn metric(operator: &Operator, series: &str) -> Option<f64> {
    sample(&operator.metrics().await, series)
}

fn secs(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_secs(n)
}

#[tokio::test]
async fn the_first_start_creates_the_secret_with_one_key_that_signs_now() {
    let ns = TestNamespace::new("signing-first").await;
    let before = Timestamp::now();
    let controller = controller(&ns, &[], &[]);
    let secret = wait_signing_secret(&ns, "created", |_| true).await;
    let after = Timestamp::now();
    assert_eq!(secret.type_.as_deref(), Some(signing::SECRET_TYPE));
    assert_eq!(secret.labels().get("app.kubernetes.io/managed-by").map(String::as_str), Some("keyward"));
    assert!(secret.metadata.owner_references.is_none(), "the signing Secret outlives any owner");
    let keys = keys_of(&secret);
    assert_eq!(keys.len(), 1, "one key: {keys:?}");
    let (kid, signs_from) = &keys[0];
    assert!(
        before.as_second() <= signs_from.as_second() && *signs_from <= after,
        "the key signs from its creation: {signs_from}, created between {before} and {after}"
    );
    let set = KeySet::from_secret(SECRET, &secret).expect("a usable key set");
    assert_eq!(set.current(Timestamp::now()).map(|k| k.kid.as_str()), Some(kid.as_str()));

    let metrics = controller.wait_metric("keyward_signing_keys", "one key", |n| n == Some(1.0)).await;
    assert_eq!(sample(&metrics, CREATES), Some(1.0), "{metrics}");
    let next = sample(&metrics, "keyward_signing_key_next_rotation_timestamp_seconds").expect("next rotation");
    assert_eq!(next as i64, signs_from.as_second() + 30 * 86_400, "the next key signs one rotation later");
    let age = sample(&metrics, "keyward_signing_key_age_seconds").expect("age");
    assert!((0.0..60.0).contains(&age), "a new key's age: {age}");
}

#[tokio::test]
async fn two_controllers_started_at_once_on_an_empty_namespace_end_with_one_secret_and_one_key() {
    let ns = TestNamespace::new("signing-race").await;
    let (first, second) = (controller(&ns, &[], &[]), controller(&ns, &[], &[]));
    let created = wait_signing_secret(&ns, "created", |_| true).await;
    for operator in [&first, &second] {
        operator.wait_metric("keyward_signing_keys", "one key", |n| n == Some(1.0)).await;
    }
    let next = |metrics: &str| sample(metrics, "keyward_signing_key_next_rotation_timestamp_seconds");
    let (a, b) = (first.metrics().await, second.metrics().await);
    assert_eq!(next(&a), next(&b), "both see the same key:\n{a}\n{b}");
    let created_total = sample(&a, CREATES).unwrap_or(0.0) + sample(&b, CREATES).unwrap_or(0.0);
    assert!((1.0..=2.0).contains(&created_total), "creates: {created_total}");
    assert_eq!(sample(&a, UPDATES).or(sample(&b, UPDATES)), None, "nobody replaced the first key:\n{a}\n{b}");
    let conflicts = |m: &str| sample(m, "keyward_signing_key_write_conflicts_total").unwrap_or(0.0);
    assert_eq!(conflicts(&a) + conflicts(&b), created_total - 1.0, "a create that lost is a conflict");
    let now = ns.secrets().get(SECRET).await.expect("the Secret");
    assert_eq!(now.uid(), created.uid(), "one Secret, never deleted and made again");
    assert_eq!(now.resource_version(), created.resource_version(), "never written again");
    assert_eq!(keys_of(&now).len(), 1, "one current key");
    let all = ns.secrets().list(&ListParams::default()).await.expect("list").items;
    let ours = all.iter().filter(|s| s.type_.as_deref() == Some(signing::SECRET_TYPE)).count();
    assert_eq!(ours, 1);
}

/// Every version of the signing Secret a watch saw, with the time it was seen.
struct History(Arc<Mutex<Vec<(Timestamp, Secret)>>>, tokio::task::JoinHandle<()>);

impl History {
    async fn start(secrets: Api<Secret>) -> Self {
        let seen: Arc<Mutex<Vec<(Timestamp, Secret)>>> = Arc::default();
        let record = seen.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={SECRET}"));
        let task = tokio::spawn(async move {
            let mut stream = watcher(secrets, config).default_backoff().applied_objects().boxed();
            while let Some(Ok(secret)) = stream.next().await {
                let mut seen = record.lock().expect("history");
                if seen.last().map(|(_, s)| s.resource_version()) != Some(secret.resource_version()) {
                    seen.push((Timestamp::now(), secret));
                }
            }
        });
        Self(seen, task)
    }

    fn versions(&self) -> Vec<(Timestamp, Vec<(String, Timestamp)>)> {
        self.0.lock().expect("history").iter().map(|(at, s)| (*at, keys_of(s))).collect()
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.1.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_key_is_published_ahead_becomes_current_and_the_retired_key_is_dropped_after_retain() {
    let ns = TestNamespace::new("signing-rotation").await;
    let history = History::start(ns.secrets()).await;
    let controller = controller(&ns, &SHORT, &[]);
    let first = wait_signing_secret(&ns, "created", |_| true).await;
    let a = keys_of(&first)[0].clone();
    // Until the first key is dropped: A, then A+B (published ahead), A+B+C, then B+C.
    let dropped = wait_signing_secret(&ns, "the first key dropped", |s| {
        let keys = keys_of(s);
        !keys.is_empty() && keys.iter().all(|(kid, _)| *kid != a.0)
    })
    .await;
    // The history's watch may trail the read that saw the drop: wait until it has it too.
    let versions = wait_for("the history to show the first key dropped", DEADLINE, || async {
        let versions = history.versions();
        let has_drop = versions.iter().any(|(_, keys)| !keys.is_empty() && keys.iter().all(|(kid, _)| *kid != a.0));
        if has_drop { Ok(versions) } else { Err(format!("{} versions, all with the first key", versions.len())) }
    })
    .await;
    let shown = format!("{versions:#?}");
    let b = keys_of(&dropped)[0].clone();
    assert_eq!(b.1, a.1 + secs(6), "the second key signs one rotation after the first: {shown}");
    // B was published before it began to sign.
    let published = versions.iter().find(|(_, keys)| keys.iter().any(|(kid, _)| *kid == b.0)).expect("B seen");
    assert!(published.0 + secs(1) < b.1, "B was seen at {} only, it signs from {}: {shown}", published.0, b.1);
    assert_eq!(published.1.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), [a.0.clone(), b.0.clone()]);
    // A stayed until retain after B began to sign, and never came back.
    let gone_at = versions.iter().find(|(_, keys)| keys.iter().all(|(kid, _)| *kid != a.0)).expect("A gone").0;
    assert!(gone_at >= b.1 + secs(4), "A was dropped at {gone_at}, before B's signsFrom {} + 4 s: {shown}", b.1);
    let last_with_a = versions.iter().rposition(|(_, keys)| keys.iter().any(|(kid, _)| *kid == a.0)).expect("A");
    assert!(versions[..=last_with_a].iter().all(|(_, keys)| keys[0].0 == a.0), "A was always there until dropped");
    assert!(versions[last_with_a + 1..].iter().all(|(_, keys)| keys.iter().all(|(kid, _)| *kid != a.0)));
    // The third key follows B by one rotation; after A is dropped, B is current.
    let keys = keys_of(&dropped);
    assert_eq!(keys.len(), 2, "B and the waiting C: {shown}");
    assert_eq!(keys[1].1, b.1 + secs(6), "{shown}");
    let set = KeySet::from_secret(SECRET, &dropped).expect("key set");
    assert_eq!(set.current(gone_at).map(|k| k.kid.clone()), Some(b.0.clone()), "B signs once A is gone");
    assert_eq!(set.current(b.1 - secs(1)).map(|k| k.kid.clone()), Some(b.0.clone()), "and C waits");
    // Every version is a usable key set of at most three keys, each kid a new key.
    for (at, keys) in &versions {
        assert!((1..=3).contains(&keys.len()), "at {at}: {keys:?}");
    }
    let metrics = controller.metrics().await;
    assert!(sample(&metrics, UPDATES).unwrap_or(0.0) >= 3.0, "B, C, the drop of A: {metrics}");
    assert_eq!(sample(&metrics, CREATES), Some(1.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_rotating_at_once_never_replace_a_published_key() {
    let ns = TestNamespace::new("signing-rotation-race").await;
    let history = History::start(ns.secrets()).await;
    // Without leader election both plan the same rotations at the same instants.
    let (first, second) = (controller(&ns, &SHORT, &[]), controller(&ns, &SHORT, &[]));
    let created = wait_signing_secret(&ns, "created", |_| true).await;
    let a = keys_of(&created)[0].0.clone();
    let versions = wait_for("the history to show the first key dropped", DEADLINE, || async {
        let versions = history.versions();
        let dropped = versions.last().is_some_and(|(_, keys)| keys.iter().all(|(kid, _)| *kid != a));
        if dropped { Ok(versions) } else { Err(format!("{versions:?}")) }
    })
    .await;
    let shown = format!("{versions:#?}");
    // Each key, once published, stays in every later version until it is dropped: no write
    // ever replaced a key another controller had published.
    let mut kids: Vec<&String> = versions.iter().flat_map(|(_, keys)| keys.iter().map(|(kid, _)| kid)).collect();
    kids.dedup();
    kids.sort();
    kids.dedup();
    for kid in kids {
        let present: Vec<bool> = versions.iter().map(|(_, keys)| keys.iter().any(|(k, _)| k == kid)).collect();
        let first_seen = present.iter().position(|p| *p).expect("seen");
        let last_seen = present.iter().rposition(|p| *p).expect("seen");
        assert!(present[first_seen..=last_seen].iter().all(|p| *p), "key {kid} vanished and came back: {shown}");
    }
    // A key leaves only as the oldest, retain (4 s) after its successor began to sign.
    for pair in versions.windows(2) {
        let ((_, before), (seen_at, after)) = (&pair[0], &pair[1]);
        for (i, (kid, _)) in before.iter().enumerate() {
            if after.iter().any(|(k, _)| k == kid) {
                continue;
            }
            assert_eq!(i, 0, "key {kid}, not the oldest, was replaced: {shown}");
            let successor = before.get(1).map(|(_, from)| *from).expect("a successor");
            assert!(*seen_at >= successor + secs(4), "key {kid} dropped at {seen_at}, before retain: {shown}");
        }
    }
    // One chain of keys, each signing one rotation after the one before.
    for (at, keys) in &versions {
        for pair in keys.windows(2) {
            assert_eq!(pair[1].1, pair[0].1 + secs(6), "at {at}: {keys:?}\n{shown}");
        }
    }
    // A write is counted when it is sent and a conflict when its refusal comes back, so the
    // sums agree once the last race's loser has had its refusal and its winner's version has
    // reached the history.
    let writes = |m: &str| sample(m, CREATES).unwrap_or(0.0) + sample(m, UPDATES).unwrap_or(0.0);
    let conflicts = |m: &str| sample(m, "keyward_signing_key_write_conflicts_total").unwrap_or(0.0);
    wait_for("every write to have either won or lost", DEADLINE, || async {
        let (a, b) = (first.metrics().await, second.metrics().await);
        let won = history.versions().len() as f64;
        let (sent, settled) = (writes(&a) + writes(&b), won + conflicts(&a) + conflicts(&b));
        if sent == settled { Ok(()) } else { Err(format!("{sent} sent, {settled} won or lost:\n{a}\n{b}")) }
    })
    .await;
}

#[tokio::test]
async fn a_secret_of_that_name_that_is_not_ours_is_left_untouched_and_the_refusal_logged_and_counted() {
    let ns = TestNamespace::new("signing-foreign").await;
    let content = "someone else's data, not for the log";
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET, "labels": {"team": "a"}},
        "type": "Opaque",
        "data": {"keys.json": ByteString(content.as_bytes().to_vec()), "other": ByteString(b"x".to_vec())},
    }))
    .expect("a Secret");
    let before = ns.secrets().create(&PostParams::default(), &foreign).await.expect("create the foreign Secret");
    let controller = controller(&ns, &[], &[]);
    controller.wait_metric("keyward_signing_secret_refusals_total", "a refusal", |n| n >= Some(1.0)).await;
    // A change of it is looked at again, and still refused.
    let patch = json!({"metadata": {"annotations": {"touched": "yes"}}});
    let touched =
        ns.secrets().patch(SECRET, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate it");
    controller.wait_metric("keyward_signing_secret_refusals_total", "a second refusal", |n| n >= Some(2.0)).await;
    let after = ns.secrets().get(SECRET).await.expect("the Secret");
    assert_eq!(after.resource_version(), touched.resource_version(), "the controller wrote it");
    assert_eq!((&after.type_, &after.data), (&before.type_, &before.data), "its content changed");
    assert_eq!(after.labels(), before.labels());
    let metrics = controller.metrics().await;
    assert!(!metrics.contains("keyward_signing_key_writes_total{"), "{metrics}");
    assert_eq!(sample(&metrics, "keyward_signing_keys"), None, "no keys are shown for a Secret not ours: {metrics}");
    let logs = controller.logs();
    let refusal = logs.lines().find(|l| l.contains("ERROR") && l.contains(SECRET)).unwrap_or_else(|| panic!("{logs}"));
    assert!(refusal.contains("Opaque") && refusal.contains(&ns.name), "the error names type and namespace: {refusal}");
    assert!(!logs.contains(content), "the Secret's content was logged:\n{logs}");

    // Once it is removed, ours is created at once.
    ns.secrets().delete(SECRET, &DeleteParams::default()).await.expect("delete it");
    let ours = wait_signing_secret(&ns, "ours", |s| s.type_.as_deref() == Some(signing::SECRET_TYPE)).await;
    assert_eq!(keys_of(&ours).len(), 1);
}

#[tokio::test]
async fn a_deleted_signing_secret_is_created_again_at_once() {
    let ns = TestNamespace::new("signing-deleted").await;
    let controller = controller(&ns, &[], &[]);
    let first = wait_signing_secret(&ns, "created", |_| true).await;
    ns.secrets().delete(SECRET, &DeleteParams::default()).await.expect("delete it");
    // The default schedule plans no look for 30 days: only the watch can bring it back.
    let again = wait_signing_secret(&ns, "created again", |s| s.uid() != first.uid()).await;
    let keys = keys_of(&again);
    assert_eq!(keys.len(), 1);
    assert_ne!(keys[0].0, keys_of(&first)[0].0, "a new key");
    controller.wait_metric(CREATES, "two creates", |n| n == Some(2.0)).await;
}

#[tokio::test]
async fn at_rest_the_secret_is_never_written() {
    let ns = TestNamespace::new("signing-rest").await;
    let mut controller = controller(&ns, &[], &[]);
    wait_signing_secret(&ns, "created", |_| true).await;
    controller.wait_metric("keyward_signing_keys", "one key", |n| n == Some(1.0)).await;
    // Each change of the Secret is a look; none of them writes.
    for round in 0..2 {
        let looks = metric(&controller, LOOKS).await.expect("looks");
        let patch = json!({"metadata": {"annotations": {"round": round.to_string()}}});
        let touched = ns.secrets().patch(SECRET, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("touch");
        controller.wait_metric(LOOKS, "a look at the change", |n| n > Some(looks)).await;
        let now = ns.secrets().get(SECRET).await.expect("the Secret");
        assert_eq!(now.resource_version(), touched.resource_version(), "written at rest (round {round})");
    }
    let metrics = controller.metrics().await;
    assert_eq!(sample(&metrics, CREATES), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, UPDATES), None, "{metrics}");
    // A restart reads it and writes nothing.
    let version = ns.secrets().get(SECRET).await.expect("the Secret").resource_version();
    controller.kill().await;
    controller.restart();
    controller.wait_metric(LOOKS, "a look after the restart", |n| n >= Some(1.0)).await;
    controller.wait_metric("keyward_signing_keys", "the key read", |n| n == Some(1.0)).await;
    let metrics = controller.metrics().await;
    assert!(!metrics.contains("keyward_signing_key_writes_total{"), "written after a restart: {metrics}");
    assert_eq!(ns.secrets().get(SECRET).await.expect("the Secret").resource_version(), version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leader_election_only_the_leader_writes_the_signing_secret() {
    let ns = TestNamespace::new("signing-leader").await;
    let lease = "keyward-signing-test";
    let flags: Vec<&str> = ["--leader-election", "--lease-name", lease].into_iter().chain(SHORT).collect();
    let replicas = [
        ("keyward-a", controller(&ns, &flags, &[("POD_NAME", "keyward-a")])),
        ("keyward-b", { controller(&ns, &flags, &[("POD_NAME", "keyward-b")]) }),
    ];
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    let holder = wait_for("a holder of the Lease", DEADLINE, || async {
        leases.get_opt(lease).await.expect("read the Lease").and_then(|l| l.spec?.holder_identity)
    })
    .await;
    let leader = replicas.iter().position(|(pod, _)| *pod == holder).expect("a replica holds the Lease");
    let (leader, standby) = (&replicas[leader].1, &replicas[1 - leader].1);
    wait_signing_secret(&ns, "created", |_| true).await;
    // A rotation later (the next key published), the leader has written twice, the standby never.
    leader.wait_metric(UPDATES, "the next key published", |n| n >= Some(1.0)).await;
    assert_eq!(metric(leader, CREATES).await, Some(1.0));
    let metrics = standby.metrics().await;
    assert_eq!(sample(&metrics, "keyward_leader"), Some(0.0));
    assert_eq!(sample(&metrics, LOOKS), Some(0.0), "the standby read the keys:\n{metrics}");
    assert!(!metrics.contains("keyward_signing_key_writes_total{"), "the standby wrote the keys:\n{metrics}");
    assert_eq!(sample(&metrics, "keyward_signing_keys"), None, "{metrics}");
}

/// Fragments of a key set that must never leave the Secret: each private key's PEM body line,
/// and pieces of the Secret's data as the API server sends it (base64).
fn secret_fragments(secret: &Secret) -> Vec<String> {
    let stored = stored_of(secret);
    let mut fragments = vec!["PRIVATE KEY".to_string()];
    for key in &stored.keys {
        let pem: String = serde_json::to_value(&key.private_key).expect("pem").as_str().expect("a string").to_string();
        fragments.extend(pem.lines().filter(|l| !l.starts_with("-----")).map(String::from));
    }
    let data = serde_json::to_value(&secret.data.as_ref().expect("data")[signing::DATA_KEY]).expect("base64");
    let encoded = data.as_str().expect("a base64 string");
    fragments.extend(encoded.as_bytes().chunks(48).map(|c| String::from_utf8_lossy(c).into_owned()));
    fragments
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_appear_in_no_log_event_or_metric() {
    let ns = TestNamespace::new("signing-leak").await;
    let controller = controller(&ns, &SHORT, &[("RUST_LOG", "trace")]);
    // A rotation: a create and updates, each logged at trace level.
    let secret = wait_signing_secret(&ns, "three keys", |s| keys_of(s).len() == 3).await;
    let metrics = controller.metrics().await;
    let events = ns.events().list(&ListParams::default()).await.expect("events").items;
    let events = serde_json::to_string(&events).expect("events as JSON");
    let logs = controller.logs();
    assert!(logs.contains("TRACE"), "the log is at trace level");
    for fragment in secret_fragments(&secret) {
        for (what, text) in [("log", &logs), ("metrics", &metrics), ("events", &events)] {
            assert!(!text.contains(&fragment), "the {what} hold private key material ({} chars)", fragment.len());
        }
    }
}
