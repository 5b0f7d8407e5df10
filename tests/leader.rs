//! High availability on the real API server: two controllers with `--leader-election`, only the
//! holder of the Lease writes, and a SIGKILLed leader is replaced within the Lease's duration.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use keyward::controller::leader::LEASE_DURATION_SECS;
use kube::Api;
use support::{
    DEADLINE, Operator, TestNamespace, TokenHistory, assert_tokens_match_status, create_keys, sample, wait_all_active,
    wait_for,
};

/// The Lease the replicas are told to share (`--lease-name`; the default is another name).
const LEASE_NAME: &str = "keyward-ha-test";

/// The Lease's holder once it is not `not`; fails after `within`.
async fn wait_holder(ns: &TestNamespace, not: Option<&str>, within: Duration) -> String {
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    wait_for(format!("a holder of the Lease other than {not:?}"), within, || async {
        let holder = leases.get_opt(LEASE_NAME).await.expect("read the Lease").and_then(|l| l.spec?.holder_identity);
        holder.filter(|h| Some(h.as_str()) != not)
    })
    .await
}

/// The value of a metric series on a process's `/metrics`, 0 when absent.
async fn metric(operator: &Operator, series: &str) -> f64 {
    sample(&operator.metrics().await, series).unwrap_or(0.0)
}

const SECRET_CREATES: &str = r#"keyward_api_writes_total{resource="secrets",verb="create"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_a_standby_replaces_a_killed_leader_within_the_lease() {
    let ns = TestNamespace::new("leader").await;
    let history = TokenHistory::start(ns.secrets()).await;
    let replica = |pod: &str| {
        Operator::start(
            &ns.name,
            &["--leader-election", "--lease-name", LEASE_NAME],
            &[("POD_NAMESPACE", &ns.name), ("POD_NAME", pod)],
        )
    };
    let mut replicas = [("keyward-a", replica("keyward-a")), ("keyward-b", replica("keyward-b"))];
    let first = wait_holder(&ns, None, DEADLINE).await;
    let leader = replicas.iter().position(|(pod, _)| *pod == first).expect("a replica holds the Lease");
    let standby = 1 - leader;
    for (_, operator) in &replicas {
        operator.wait_ready().await;
    }

    let names = create_keys(ns.keys(), "ha", 20, 8).await;
    wait_all_active(ns.keys(), &names, Duration::from_secs(60)).await;
    assert_eq!(metric(&replicas[leader].1, SECRET_CREATES).await, 20.0, "the leader issued every token");
    assert_eq!(metric(&replicas[standby].1, "keyward_leader").await, 0.0);
    let standby_metrics = replicas[standby].1.metrics().await;
    assert!(!standby_metrics.contains("keyward_api_writes_total{"), "the standby wrote:\n{standby_metrics}");

    replicas[leader].1.kill().await;
    let killed = Instant::now();
    let lease = Duration::from_secs(LEASE_DURATION_SECS);
    // The Lease runs out at most its duration after the leader's last renewal; then the standby
    // takes it after a random pause of up to a second (kube-lease-manager's guard against two
    // standbys colliding).
    let second = wait_holder(&ns, Some(&first), lease + Duration::from_secs(3)).await;
    eprintln!("{second} took over {:?} after {first} was killed", killed.elapsed());
    assert_eq!(second, replicas[standby].0);

    let more = create_keys(ns.keys(), "after", 10, 8).await;
    wait_all_active(ns.keys(), &more, Duration::from_secs(60)).await;
    assert_eq!(metric(&replicas[standby].1, "keyward_leader").await, 1.0);
    assert_eq!(metric(&replicas[standby].1, SECRET_CREATES).await, 10.0, "the new leader issued the new keys");
    let all: Vec<String> = names.into_iter().chain(more).collect();
    assert_tokens_match_status(&ns, &all).await;
    history.assert_one_token_per_secret(30).await;
}
