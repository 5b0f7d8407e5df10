//! `keyward webhook` on the real API server: registered by URL on loopback (a certificate of
//! the test's own), writes by users with their own identities (the control plane's token-file
//! users) and real RBAC. Each test has its namespace, its webhook process and its webhook
//! configurations, which match only that namespace.

mod support;

use k8s_openapi::api::rbac::v1::ClusterRole;
use keyward::api::{ApiKey, Credential};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::command::CommandLine;
use support::webhook::{bind, grant, grant_refusal, register, user_client};
use support::{TestNamespace, wait_for};

/// The annotation the webhook keeps.
const CREATED_BY: &str = "keyward.io/created-by";

fn dry_run() -> PostParams {
    PostParams { dry_run: true, ..Default::default() }
}

fn key_spec(name: &str, spec: Value) -> ApiKey {
    support::key(name, spec)
}

/// Creates a key as `client`; `Err` holds the API server's code and message.
async fn create_as(client: &Client, namespace: &str, name: &str, spec: Value) -> Result<ApiKey, (u16, String)> {
    Api::<ApiKey>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &key_spec(name, spec))
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) => (status.code, status.message),
            other => panic!("create {name}: {other}"),
        })
}

#[tokio::test]
async fn a_scope_is_granted_only_by_a_covering_grant_in_the_keys_namespace() {
    let ns = TestNamespace::new("webhook-grant").await;
    let _webhook = register(&ns, &[]).await;
    grant(&ns, 1, "orders", Some(&["orders.>"])).await;
    grant(&ns, 2, "literal", Some(&["orders.*"])).await;
    grant(&ns, 3, "everything", None).await;
    let (alice, bob, carol) = (user_client(1).await, user_client(2).await, user_client(3).await);

    create_as(&alice, &ns.name, "reads", json!({"scopes": ["orders.read"]}))
        .await
        .expect("orders.> covers orders.read");
    create_as(&alice, &ns.name, "wild", json!({"scopes": ["orders.*", "orders.>"]}))
        .await
        .expect("and patterns under it");
    let (code, message) =
        create_as(&alice, &ns.name, "pays", json!({"scopes": ["payments.write"]})).await.expect_err("payments");
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains(&grant_refusal("keyward-user-1", "payments.write", &ns.name, &["payments.>", ">"])),
        "{message}"
    );

    // A literal grant of orders.* covers exactly that scope.
    create_as(&bob, &ns.name, "star", json!({"scopes": ["orders.*"]})).await.expect("orders.* by its literal grant");
    let (code, message) =
        create_as(&bob, &ns.name, "star-read", json!({"scopes": ["orders.read"]})).await.expect_err("not orders.read");
    assert_eq!(code, 403, "{message}");

    // A rule without resourceNames grants every scope.
    create_as(&carol, &ns.name, "anything", json!({"scopes": ["payments.write", "anything.>"]}))
        .await
        .expect("every scope");

    // The same grant in a RoleBinding stops at its namespace.
    let other = TestNamespace::new("webhook-grant-other").await;
    let _other_webhook = register(&other, &[]).await;
    let writer = format!("{}-writer", other.name);
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": writer}, "rules": [
        {"apiGroups": ["keyward.io"], "resources": ["apikeys"], "verbs": ["create", "get"]}]}))
    .expect("role");
    Api::<ClusterRole>::all(ns.client.clone()).create(&PostParams::default(), &role).await.expect("ClusterRole");
    bind(&other, &other.name, 1, &writer).await;
    let (code, message) = create_as(&alice, &other.name, "reads", json!({"scopes": ["orders.read"]}))
        .await
        .expect_err("another namespace");
    assert_eq!(code, 403, "{message}");
    assert!(message.contains(&format!("in namespace {:?}", other.name)), "{message}");
    // No scopes, nothing to grant.
    create_as(&alice, &other.name, "plain", json!({})).await.expect("a key without scopes");
}

#[tokio::test]
async fn updates_need_a_grant_only_for_what_they_put_into_use() {
    let ns = TestNamespace::new("webhook-update").await;
    let _webhook = register(&ns, &[]).await;
    grant(&ns, 1, "admin", None).await;
    grant(&ns, 2, "none", Some(&[])).await;
    let (admin, editor) = (user_client(1).await, user_client(2).await);
    create_as(&admin, &ns.name, "k", json!({"scopes": ["a.read", "b.read"], "expiresAfter": "30d"}))
        .await
        .expect("create");
    let keys = Api::<ApiKey>::namespaced(editor.clone(), &ns.name);
    let patch = |spec: Value| {
        let keys = keys.clone();
        async move { keys.patch("k", &PatchParams::default(), &Patch::Merge(json!({"spec": spec}))).await }
    };
    let refused = |result: Result<ApiKey, kube::Error>| match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Without any grant: a description, fewer scopes, an earlier expiry, Inactive.
    patch(json!({"description": "only words"})).await.expect("description");
    patch(json!({"scopes": ["a.read"]})).await.expect("removing a scope");
    patch(json!({"expiresAfter": "10d"})).await.expect("an earlier expiry");
    patch(json!({"state": "Inactive"})).await.expect("revoking");
    // What puts a token into use needs a grant for every scope.
    let (code, message) = refused(patch(json!({"state": "Active"})).await);
    assert_eq!(code, 403, "Inactive to Active: {message}");
    let (code, _) = refused(patch(json!({"expiresAfter": "60d"})).await);
    assert_eq!(code, 403, "a later expiry");
    let (code, message) = refused(patch(json!({"scopes": ["a.read", "c.write"]})).await);
    assert_eq!(code, 403);
    assert!(message.contains("\"c.write\""), "the added scope is named: {message}");
    // The same for a Credential: adding a token is a grant, removing one is not.
    let credentials = Api::<Credential>::namespaced(admin.clone(), &ns.name);
    let credential: Credential =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "spec": {"scopes": ["a.read"], "tokens": [{"name": "one"}, {"name": "two"}]}}))
            .expect("credential");
    credentials.create(&PostParams::default(), &credential).await.expect("create a Credential");
    let as_editor = Api::<Credential>::namespaced(editor, &ns.name);
    let tokens = |tokens: Value| json!({"spec": {"tokens": tokens}});
    as_editor
        .patch("c", &PatchParams::default(), &Patch::Merge(tokens(json!([{"name": "one"}]))))
        .await
        .expect("removing a token");
    match as_editor
        .patch("c", &PatchParams::default(), &Patch::Merge(tokens(json!([{"name": "one"}, {"name": "three"}]))))
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{}", status.message),
        other => panic!("adding a token without a grant: {other:?}"),
    }
    as_editor
        .patch("c", &PatchParams::default(), &Patch::Merge(json!({"spec": {"description": "renamed"}})))
        .await
        .expect("a description");
    // A Credential's scopes: removing one needs no grant, adding one does.
    let scopes = |scopes: Value| json!({"spec": {"scopes": scopes}});
    as_editor.patch("c", &PatchParams::default(), &Patch::Merge(scopes(json!([])))).await.expect("removing a scope");
    match as_editor.patch("c", &PatchParams::default(), &Patch::Merge(scopes(json!(["a.read"])))).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{}", status.message),
        other => panic!("adding a scope to a Credential without a grant: {other:?}"),
    }
}

#[tokio::test]
async fn created_by_is_set_on_create_replaces_a_forged_value_and_never_changes() {
    let ns = TestNamespace::new("webhook-created-by").await;
    let _webhook = register(&ns, &[]).await;
    grant(&ns, 1, "admin", None).await;
    grant(&ns, 2, "admin2", None).await;
    let (alice, bob) = (user_client(1).await, user_client(2).await);
    let made = create_as(&alice, &ns.name, "mine", json!({})).await.expect("create");
    assert_eq!(made.annotations().get(CREATED_BY).map(String::as_str), Some("keyward-user-1"));
    let mut forged = key_spec("forged", json!({}));
    forged.metadata.annotations = Some([(CREATED_BY.to_string(), "someone-else".to_string())].into());
    let made = Api::<ApiKey>::namespaced(alice.clone(), &ns.name)
        .create(&PostParams::default(), &forged)
        .await
        .expect("create");
    assert_eq!(made.annotations().get(CREATED_BY).map(String::as_str), Some("keyward-user-1"), "forged value replaced");

    let as_bob = Api::<ApiKey>::namespaced(bob, &ns.name);
    let change = json!({"metadata": {"annotations": {CREATED_BY: "keyward-user-2"}}});
    match as_bob.patch("mine", &PatchParams::default(), &Patch::Merge(change)).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{}", status.message);
            assert!(status.message.contains(CREATED_BY), "{}", status.message);
        }
        other => panic!("a changed created-by was let through: {other:?}"),
    }
    // A replace that drops the annotation keeps it (a GitOps apply without it).
    let mut current = as_bob.get("mine").await.expect("get");
    current.metadata.annotations = None;
    current.spec.policy.description = Some("replaced".into());
    let replaced = as_bob.replace("mine", &PostParams::default(), &current).await.expect("replace");
    assert_eq!(replaced.annotations().get(CREATED_BY).map(String::as_str), Some("keyward-user-1"));
}

#[tokio::test]
async fn bad_specs_are_refused_at_apply_naming_the_field_and_value() {
    let ns = TestNamespace::new("webhook-spec").await;
    let _webhook = register(&ns, &["--max-expiry", "30d"]).await;
    let keys = ns.keys();
    for (spec, field, value) in [
        (json!({"expiresAfter": "3x"}), "spec.expiresAfter", "3x"),
        (json!({"expiresAt": "next tuesday"}), "spec.expiresAt", "next tuesday"),
        (json!({"allowedCIDRs": ["10.1.2.3/40"]}), "spec.allowedCIDRs[0]", "10.1.2.3/40"),
        (json!({"tokenPrefix": "Acme_"}), "spec.tokenPrefix", "Acme_"),
        (json!({"scopes": ["orders..write"]}), "spec.scopes[0]", "orders..write"),
        (json!({"secretTemplate": {"data": {"token": "x"}}}), "spec.secretTemplate.data[token]", "token"),
        (json!({"expiresAfter": "31d"}), "spec.expiresAfter", "31d"),
        (json!({"applications": {"allowed": ["etl"], "denied": ["etl"]}}), "spec.applications.denied[0]", "etl"),
        (json!({"applications": {"allowed": ["etl", "etl"]}}), "spec.applications.allowed[1]", "etl"),
    ] {
        for params in [PostParams::default(), dry_run()] {
            match keys.create(&params, &key_spec("bad", spec.clone())).await {
                Err(kube::Error::Api(status)) => {
                    assert_eq!(status.code, 422, "{spec}: {}", status.message);
                    assert!(
                        status.message.contains(&format!("{field}: invalid value {value:?}")),
                        "{spec}: {}",
                        status.message
                    );
                }
                other => panic!("{spec} (dry run: {}) was admitted: {other:?}", params.dry_run),
            }
        }
    }
    assert!(keys.get_opt("bad").await.expect("get").is_none());
    keys.create(&PostParams::default(), &key_spec("good", json!({"expiresAfter": "30d"}))).await.expect("a good spec");
}

#[tokio::test]
async fn with_the_webhook_stopped_writes_are_refused_never_let_through() {
    let ns = TestNamespace::new("webhook-stopped").await;
    let mut registered = register(&ns, &[]).await;
    ns.keys().create(&PostParams::default(), &key_spec("before", json!({}))).await.expect("admitted while it runs");
    let mut webhook = registered.webhook.take().expect("the webhook");
    webhook.kill().await;
    match ns.keys().create(&PostParams::default(), &key_spec("after", json!({"scopes": ["payments.write"]}))).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 500, "{}", status.message),
        other => panic!("a write was let through without the webhook: {other:?}"),
    }
    assert!(ns.keys().get_opt("after").await.expect("get").is_none());
}

/// A GitOps controller's identity bound to a grant-all role (the chart's
/// `<release>-scopes-grant-all`: grant on every scope) applies 100 keys, then applies them again
/// unchanged, as a sync does: every apply passes, and none changes who created them.
#[tokio::test]
async fn a_gitops_identity_bound_to_grant_all_creates_and_re_applies_100_keys() {
    let ns = TestNamespace::new("webhook-gitops").await;
    let _webhook = register(&ns, &[]).await;
    // The chart's grant-all role is `grant` on `scopes` without resourceNames, as `None` here.
    grant(&ns, 3, "gitops", None).await;
    let gitops = Api::<ApiKey>::namespaced(user_client(3).await, &ns.name);
    let manifest = |i: usize| {
        json!({"apiVersion": "keyward.io/v1alpha1", "kind": "ApiKey", "metadata": {"name": format!("app-{i}")},
               "spec": {"scopes": ["orders.read", "payments.write", format!("team.{i}.>")], "expiresAfter": "30d"}})
    };
    let apply = PatchParams::apply("argocd-application-controller");
    for round in ["create", "re-apply"] {
        let applied = futures::future::join_all((0..100).map(|i| {
            let (gitops, apply) = (gitops.clone(), apply.clone());
            async move { gitops.patch(&format!("app-{i}"), &apply, &Patch::Apply(manifest(i))).await }
        }))
        .await;
        let refused: Vec<String> = applied.iter().filter_map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
        assert!(refused.is_empty(), "{round}: {} of 100 refused, e.g. {:?}", refused.len(), refused.first());
        for key in applied.into_iter().flatten() {
            assert_eq!(key.annotations().get(CREATED_BY).map(String::as_str), Some("keyward-user-3"), "{round}");
        }
    }
    // And a writer without the grant re-applies unchanged keys too: it puts nothing new into use.
    grant(&ns, 2, "editor", Some(&[])).await;
    let editor = Api::<ApiKey>::namespaced(user_client(2).await, &ns.name);
    let reapplied =
        editor.patch("app-0", &PatchParams::apply("argocd-application-controller"), &Patch::Apply(manifest(0))).await;
    assert!(reapplied.is_ok(), "an unchanged re-apply needs no grant: {reapplied:?}");
}

/// `curl` over TLS to the webhook at `addr`, trusting `ca` (or nothing, with `None`: `-k`);
/// the body, or `None` when the TLS handshake or the request failed.
async fn curl(addr: &str, path: &str, ca: Option<&std::path::Path>) -> Option<String> {
    let trust = match ca {
        Some(ca) => vec!["--cacert".to_string(), ca.to_str().expect("UTF-8").to_string()],
        None => vec!["-k".to_string()],
    };
    let out = CommandLine::new("curl")
        .args(&["-sS", "--fail", "--max-time", "5"])
        .args(&trust)
        .args(&[format!("https://{addr}{path}")])
        .deadline(std::time::Duration::from_secs(10))
        .run()
        .await;
    out.success().then_some(out.stdout)
}

#[tokio::test]
async fn the_webhook_counts_admissions_and_serves_a_renewed_certificate_without_a_restart() {
    let ns = TestNamespace::new("webhook-reload").await;
    let registered = register(&ns, &[]).await;
    let addr = registered.webhook.as_ref().expect("the webhook").listen_addr().await;
    // register() waited for a bad spec to be refused: it was counted.
    let metrics = curl(&addr, "/metrics", None).await.expect("/metrics");
    let denied = support::sample(
        &metrics,
        r#"keyward_webhook_admissions_total{kind="ApiKey",operation="CREATE",result="denied_spec"}"#,
    );
    assert!(denied.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(curl(&addr, "/readyz", Some(&registered.certs().join("ca.crt"))).await.is_some(), "served by the first CA");

    // A renewal replaces the files in place, as a mounted Secret's update does.
    let renewed = tempfile::tempdir().expect("temp dir");
    let out = CommandLine::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane.sh"))
        .args(&["webhook-cert", renewed.path().to_str().expect("UTF-8")])
        .run()
        .await;
    assert!(out.success(), "a new certificate:\n{out}");
    for file in ["tls.key", "tls.crt"] {
        let staged = registered.certs().join(format!("{file}.new"));
        std::fs::copy(renewed.path().join(file), &staged).expect("stage");
        std::fs::rename(&staged, registered.certs().join(file)).expect("replace");
    }
    let new_ca = renewed.path().join("ca.crt");
    let renewed_served = || async { curl(&addr, "/readyz", Some(&new_ca)).await.is_some() };
    wait_for("the renewed certificate served", support::DEADLINE, renewed_served).await;
    assert!(
        curl(&addr, "/readyz", Some(&registered.certs().join("ca.crt"))).await.is_none(),
        "the old certificate still served"
    );
}

#[tokio::test]
async fn with_grants_off_any_writer_may_grant_any_scope_but_specs_are_still_checked() {
    let ns = TestNamespace::new("webhook-grants-off").await;
    let _webhook = register(&ns, &["--grants", "off"]).await;
    grant(&ns, 2, "writer", Some(&[])).await;
    let writer = user_client(2).await;
    let made =
        create_as(&writer, &ns.name, "pays", json!({"scopes": ["payments.write"]})).await.expect("no grant needed");
    assert_eq!(made.annotations().get(CREATED_BY).map(String::as_str), Some("keyward-user-2"));
    let (code, _) = create_as(&writer, &ns.name, "bad", json!({"expiresAfter": "3x"})).await.expect_err("a bad spec");
    assert_eq!(code, 422);
}
