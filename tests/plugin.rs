//! `kubectl apikey` (the `kubectl-apikey` binary) as a user runs it: a child process against the
//! real API server, its stdout, stderr and exit code checked, each test in its own namespace.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use keyward::api::usage::usage_name;
use keyward::api::{ApiKey, ApiKeyStatus, Credential, KeyUsage, Kind, Phase};
use keyward::token::{Token, TokenHash};
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::json;
use support::TestNamespace;
use support::command::{PLUGIN, Run, apikey};
use support::webhook::{self, grant_refusal, user_client};

/// A command line written as one string, split at spaces.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn hash_of(token: &str) -> String {
    TokenHash::of(token.as_bytes()).to_string()
}

/// Creates a key from `spec`, waits until the running controller has issued it, and returns
/// its token and status.
async fn issued_key(ns: &TestNamespace, name: &str, spec: serde_json::Value) -> (String, ApiKeyStatus) {
    ns.create_key(name, spec).await;
    let status = ns.wait_phase(name, Phase::Active).await.status.expect("status");
    (ns.token_of(&format!("{name}-apikey")).await, status)
}

/// Asserts the namespace holds no ApiKey at all.
async fn assert_no_keys(ns: &TestNamespace, after: &Run) {
    let keys = ns.keys().list(&Default::default()).await.expect("list keys").items;
    let names: Vec<String> = keys.iter().map(ResourceExt::name_any).collect();
    assert!(names.is_empty(), "keys were created: {names:?}\n{after}");
}

/// A copy of the test kubeconfig whose server is `server`.
fn kubeconfig_with_server(dir: &Path, server: &str) -> PathBuf {
    let admin = std::env::var_os("KUBECONFIG").expect("KUBECONFIG");
    let text = std::fs::read_to_string(&admin).expect("read the kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("a YAML kubeconfig");
    for cluster in config["clusters"].as_sequence_mut().expect("clusters") {
        cluster["cluster"]["server"] = server.into();
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).expect("YAML")).expect("write the kubeconfig");
    path
}

/// Grants `user` the `rules` in the test namespace (a Role and its RoleBinding).
async fn grant(ns: &TestNamespace, user: &str, rules: serde_json::Value) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let role: Role = serde_json::from_value(json!({"metadata": {"name": user}, "rules": rules})).expect("Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .expect("RoleBinding");
    let roles: kube::Api<Role> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    let bindings: kube::Api<RoleBinding> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    roles.create(&PostParams::default(), &role).await.expect("create the Role");
    bindings.create(&PostParams::default(), &binding).await.expect("create the RoleBinding");
}

/// Writes the KeyUsage of the key `name` of `kind` (UID `uid`) with `status`, as the verifier
/// would: created bare (a create cannot set status), then its status.
async fn record_usage(ns: &TestNamespace, kind: Kind, name: &str, uid: &str, status: serde_json::Value) {
    record_usage_owned_by(ns, kind, name, (name, uid), status).await;
}

/// Writes the KeyUsage of the key `name` of `kind` with `status`, its controller `owner` (name,
/// UID) another key of that kind, which must exist: the garbage collector deletes a KeyUsage
/// whose owner is gone, maybe before its status is written.
async fn record_usage_owned_by(
    ns: &TestNamespace,
    kind: Kind,
    name: &str,
    (owner, uid): (&str, &str),
    status: serde_json::Value,
) {
    let usage: KeyUsage = serde_json::from_value(json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": "KeyUsage",
        "metadata": {"name": usage_name(kind, name), "ownerReferences": [{
            "apiVersion": "keyward.io/v1alpha1", "kind": kind.as_str(), "name": owner, "uid": uid, "controller": true,
        }]},
        "spec": {"kind": kind.as_str(), "name": name},
    }))
    .expect("a KeyUsage");
    let usages: kube::Api<KeyUsage> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    usages
        .create(&PostParams::default(), &usage)
        .await
        .unwrap_or_else(|e| panic!("create the KeyUsage of {name}: {e}"));
    usages
        .patch_status(&usage_name(kind, name), &Default::default(), &kube::api::Patch::Merge(json!({"status": status})))
        .await
        .unwrap_or_else(|e| panic!("write the KeyUsage status of {name}: {e}"));
}

/// A time `seconds` ago, to the second, as the API server writes times.
fn ago(seconds: i64) -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - seconds).expect("a time").to_string()
}

// create

#[tokio::test]
async fn create_prints_the_token_once_on_stdout_and_warns_on_stderr() {
    let ns = TestNamespace::new("plugin_create").await;
    let _controller = ns.controller(&[]);
    let args = words("create ci --scope orders.read --expires-after 30d --description D");
    let run = apikey(&ns.name, &args).run().await.exits(0).says("stderr", &["shown only once"]);
    assert!(run.stdout.lines().count() == 1 && run.stdout.ends_with('\n'), "stdout is not exactly one line\n{run}");
    let token = run.stdout.trim_end().to_string();
    assert_eq!(token, ns.token_of("ci-apikey").await, "stdout is not the token in the Secret\n{run}");
    let status = ns.keys().get("ci").await.expect("get").status.expect("status");
    assert_eq!(status.record.token_hash, Some(hash_of(&token)), "{run}");
    let key_id = status.record.key_id.expect("keyId");
    run.says("stderr", &[&key_id]).never_shows_on_stderr(&token);
}

#[tokio::test]
async fn create_with_output_json_prints_a_document_with_the_token() {
    let ns = TestNamespace::new("plugin_create_json").await;
    let _controller = ns.controller(&[]);
    let run = apikey(&ns.name, &["create", "ci", "-o", "json"]).run().await.exits(0);
    let document = run.json();
    let token = ns.token_of("ci-apikey").await;
    let status = ns.keys().get("ci").await.expect("get").status.expect("status");
    assert_eq!(document["token"], json!(token), "{run}");
    assert_eq!(document["keyId"], json!(status.record.key_id), "{run}");
    assert_eq!(document["secretName"], json!("ci-apikey"), "{run}");
    assert_eq!(document["namespace"], json!(ns.name), "{run}");
    assert_eq!(document["name"], json!("ci"), "{run}");
}

#[tokio::test]
async fn create_dry_run_prints_the_manifest_without_any_cluster() {
    let ns = TestNamespace::new("plugin_dry_run").await;
    let args = words(
        "create ci --dry-run --scope orders.read --scope orders.write --cidr 10.0.0.0/8 --expires-after 30d \
         --description D",
    );
    let run = apikey(&ns.name, &args).env("KUBECONFIG", "/nonexistent").run().await.exits(0);
    let key: ApiKey = serde_yaml::from_str(&run.stdout).unwrap_or_else(|e| panic!("not an ApiKey: {e}\n{run}"));
    assert_eq!((key.name_any(), key.namespace()), ("ci".to_string(), Some(ns.name.clone())), "{run}");
    assert_eq!(
        serde_json::to_value(&key.spec).expect("json"),
        json!({"description": "D", "scopes": ["orders.read", "orders.write"], "allowedCIDRs": ["10.0.0.0/8"], "expiresAfter": "30d"}),
        "{run}"
    );
    assert!(key.status.is_none(), "{run}");
    assert_no_keys(&ns, &run).await;
}

#[tokio::test]
async fn create_dry_run_server_prints_what_the_server_would_store_and_stores_nothing() {
    let ns = TestNamespace::new("plugin_dry_run_server").await;
    let run = apikey(&ns.name, &["create", "ci", "--dry-run=server", "--scope", "orders.read"]).run().await.exits(0);
    let key: ApiKey = serde_yaml::from_str(&run.stdout).unwrap_or_else(|e| panic!("not an ApiKey: {e}\n{run}"));
    assert_eq!((key.name_any(), key.namespace()), ("ci".to_string(), Some(ns.name.clone())), "{run}");
    assert_eq!(key.spec.policy.scopes, ["orders.read"], "{run}");
    assert!(key.metadata.creation_timestamp.is_some(), "not the server's answer\n{run}");
    assert!(ns.keys().get_opt("ci").await.expect("get").is_none(), "the dry run stored the key\n{run}");
}

#[tokio::test]
async fn create_with_an_invalid_flag_exits_2_naming_the_flag_and_value_and_creates_nothing() {
    let ns = TestNamespace::new("plugin_invalid_flags").await;
    let flags = [
        ("--expires-after", "3x"),
        ("--cidr", "10.0.0/8"),
        ("--scope", "a..b"),
        ("--expires-at", "2020-01-01T00:00:00Z"),
    ];
    for (flag, value) in flags {
        let run = apikey(&ns.name, &["create", "bad", flag, value]).run().await.exits(2);
        let run = run.says("stderr", &[flag, &format!("{value:?}")]);
        assert_no_keys(&ns, &run).await;
    }
}

#[tokio::test]
async fn an_expiry_starting_with_a_hyphen_is_refused_with_2_naming_the_flag_and_value() {
    let ns = TestNamespace::new("plugin_hyphen_expiry").await;
    for (flag, value) in [("--expires-after", "-5d"), ("--expires-at", "-1d")] {
        let run = apikey(&ns.name, &["create", "bad", flag, value]).run().await.exits(2);
        let run = run.says("stderr", &[&format!("invalid {flag} {value:?}")]);
        assert!(!run.stderr.contains("unexpected argument"), "clap refused it, not validation\n{run}");
        assert_no_keys(&ns, &run).await;
    }
    let args = ["credential", "create", "billing", "--token", "primary", "--expires-after", "-5d"];
    apikey(&ns.name, &args).run().await.exits(2).says("stderr", &[r#"invalid --expires-after "-5d""#]);
    ns.create_credential("rotating", json!({"tokens": [{"name": "primary"}]})).await;
    apikey(&ns.name, &["credential", "add-token", "rotating", "next", "--expires-after", "-5d"])
        .run()
        .await
        .exits(2)
        .says("stderr", &[r#"invalid --expires-after "-5d""#]);
    let rotating = ns.credentials().get("rotating").await.expect("get");
    assert_eq!(rotating.spec.tokens.len(), 1, "a refused add-token changed the Credential");
}

#[tokio::test]
async fn create_of_a_name_that_exists_exits_7() {
    let ns = TestNamespace::new("plugin_exists").await;
    ns.create_key("taken", json!({})).await;
    apikey(&ns.name, &["create", "taken"]).run().await.exits(7).says("stderr", &["\"taken\"", "already exists"]);
}

#[tokio::test]
async fn create_without_a_controller_times_out_with_9_and_leaves_the_key_created() {
    let ns = TestNamespace::new("plugin_no_controller").await;
    let run = apikey(&ns.name, &["create", "orphan", "--timeout", "2s"])
        .run()
        .await
        .exits(9)
        .says("stderr", &["was created", "has not issued its token within 2s"]);
    assert!(run.stdout.is_empty(), "{run}");
    assert!(ns.keys().get_opt("orphan").await.expect("get").is_some(), "the ApiKey is not there\n{run}");
    assert!(!run.stderr.contains("waiting for the controller"), "a progress line off a terminal\n{run}");
}

#[tokio::test]
async fn create_on_a_terminal_shows_what_it_waits_for() {
    let ns = TestNamespace::new("plugin_terminal").await;
    apikey(&ns.name, &["create", "spun", "--timeout", "2s"])
        .on_terminal()
        .run()
        .await
        .exits(9)
        .says("stdout", &["waiting for the controller to issue the token of apikey/spun", "has not issued its token"]);
}

#[tokio::test]
async fn create_of_a_key_the_controller_refuses_exits_8_with_its_reason() {
    let ns = TestNamespace::new("plugin_refused").await;
    let _controller = ns.controller(&["--max-expiry", "7d", "--default-expiry", "7d"]);
    let run = apikey(&ns.name, &["create", "too-long", "--expires-after", "30d"])
        .run()
        .await
        .exits(8)
        .says("stderr", &["the controller refused", "InvalidSpec", "spec.expiresAfter", "30d", "--max-expiry"]);
    assert!(run.stdout.is_empty(), "{run}");
    ns.wait_phase("too-long", Phase::Failed).await;
}

#[tokio::test]
async fn create_by_a_user_who_may_not_read_secrets_exits_5_once_the_token_is_issued() {
    let ns = TestNamespace::new("plugin_no_secrets").await;
    let _controller = ns.controller(&[]);
    let rules =
        json!([{"apiGroups": ["keyward.io"], "resources": ["apikeys"], "verbs": ["get", "list", "watch", "create"]}]);
    grant(&ns, "keyward-user-1", rules).await;
    let run = apikey(&ns.name, &["create", "ci"])
        .env("KUBECONFIG", support::user_kubeconfig(1))
        .run()
        .await
        .exits(5)
        .says("stderr", &["is issued", "may not read Secret \"ci-apikey\""]);
    assert!(run.stdout.is_empty(), "{run}");
    ns.wait_phase("ci", Phase::Active).await;
}

// list

#[tokio::test]
async fn list_prints_a_table_with_one_row_per_key() {
    let ns = TestNamespace::new("plugin_list").await;
    let _controller = ns.controller(&[]);
    let (_, first) = issued_key(&ns, "first", json!({"scopes": ["orders.read"]})).await;
    let (_, second) = issued_key(&ns, "second", json!({})).await;
    let run = apikey(&ns.name, &["list"]).run().await.exits(0);
    assert_eq!(run.header(), "NAME PHASE KEY ID SCOPES EXPIRES IN LAST USED CREATED BY AGE", "{run}");
    assert_eq!(run.stdout.lines().count(), 3, "not one row per key\n{run}");
    for (name, status, scopes) in [("first", first, "orders.read"), ("second", second, "<none>")] {
        let rows = run.rows_starting(name);
        assert_eq!(rows.len(), 1, "no row for {name}\n{run}");
        assert_eq!(rows[0][1..4], ["Active", status.record.key_id.as_deref().expect("keyId"), scopes], "{run}");
    }
}

#[tokio::test]
async fn list_shows_when_each_key_was_last_used_from_its_keyusage_and_a_dash_without() {
    let ns = TestNamespace::new("plugin_last_used").await;
    let two_days = ago(2 * 86_400);
    for name in ["used", "idle", "none", "renamed"] {
        ns.create_key(name, json!({})).await;
    }
    let uid = |key: ApiKey| key.uid().expect("uid");
    let used = uid(ns.keys().get("used").await.expect("get"));
    let idle = uid(ns.keys().get("idle").await.expect("get"));
    record_usage(&ns, Kind::ApiKey, "used", &used, json!({"lastUsedAt": two_days})).await;
    // Seen by an application, but never with a VALID answer.
    let apps = json!([{"name": "a", "state": "Pending", "firstSeenAt": two_days, "lastSeenAt": two_days}]);
    record_usage(&ns, Kind::ApiKey, "idle", &idle, json!({"applications": apps})).await;
    // A KeyUsage of this name that another key owns, as one left by a deleted key of the same
    // name is until the garbage collector takes it (an owner that is gone would let the
    // collector take it before the list, and the dash would prove nothing): not this key's.
    record_usage_owned_by(&ns, Kind::ApiKey, "renamed", ("used", &used), json!({"lastUsedAt": two_days})).await;
    let billing = ns.create_credential("billing", json!({"tokens": [{"name": "primary"}]})).await;
    let tokens = json!([{"name": "primary", "lastUsedAt": two_days}]);
    record_usage(
        &ns,
        Kind::Credential,
        "billing",
        &billing.uid().expect("uid"),
        json!({"lastUsedAt": two_days, "tokens": tokens}),
    )
    .await;
    ns.create_credential("quiet", json!({})).await;

    let run = apikey(&ns.name, &["list"]).run().await.exits(0);
    // NAME, four columns of the kind, LAST USED.
    for (name, last_used) in [("used", "2d"), ("idle", "-"), ("none", "-"), ("renamed", "-")] {
        let rows = run.rows_starting(name);
        assert_eq!(rows.len(), 1, "no row for {name}\n{run}");
        assert_eq!(rows[0][5], last_used, "{name}\n{run}");
    }
    assert!(run.stderr.is_empty(), "{run}");
    let run = apikey(&ns.name, &["credential", "list"]).run().await.exits(0);
    assert_eq!(run.header(), "NAME PHASE TOKENS SCOPES NEXT EXPIRY LAST USED CREATED BY AGE", "{run}");
    assert_eq!(run.rows_starting("billing")[0][5], "2d", "{run}");
    assert_eq!(run.rows_starting("quiet")[0][5], "-", "{run}");
    let run = apikey(&ns.name, &["list", "-A"]).run().await.exits(0);
    let rows = run.rows_starting(&ns.name);
    let used: Vec<_> = rows.iter().filter(|r| r[1] == "used").collect();
    assert_eq!(used.len(), 1, "{run}");
    assert_eq!(used[0][6], "2d", "{run}");
}

#[tokio::test]
async fn list_and_describe_by_a_user_who_may_not_read_keyusages_show_dashes_and_succeed() {
    let ns = TestNamespace::new("plugin_last_used_forbidden").await;
    let key = ns.create_key("used", json!({})).await;
    record_usage(&ns, Kind::ApiKey, "used", &key.uid().expect("uid"), json!({"lastUsedAt": ago(86_400)})).await;
    let rules = json!([{"apiGroups": ["keyward.io"], "resources": ["apikeys"], "verbs": ["get", "list"]}]);
    grant(&ns, "keyward-user-1", rules).await;
    let run = apikey(&ns.name, &["list"])
        .env("KUBECONFIG", support::user_kubeconfig(1))
        .run()
        .await
        .exits(0)
        .says("stderr", &["may not list keyusages.keyward.io", "LAST USED shows -"]);
    assert_eq!(run.rows_starting("used")[0][5], "-", "{run}");
    let run = apikey(&ns.name, &["describe", "used"]).env("KUBECONFIG", support::user_kubeconfig(1)).run().await;
    run.exits(0).says("stdout", &["<cannot read its KeyUsage: forbidden>"]);
    // The same key, read by someone who may: its last use.
    let run = apikey(&ns.name, &["list"]).run().await.exits(0);
    assert_eq!(run.rows_starting("used")[0][5], "24h", "{run}");
}

#[tokio::test]
async fn list_all_namespaces_adds_a_namespace_column() {
    let ns = TestNamespace::new("plugin_list_all").await;
    ns.create_key("mine", json!({})).await;
    let run = apikey(&ns.name, &["list", "-A"]).run().await.exits(0);
    assert_eq!(run.header(), "NAMESPACE NAME PHASE KEY ID SCOPES EXPIRES IN LAST USED CREATED BY AGE", "{run}");
    let rows = run.rows_starting(&ns.name);
    assert_eq!(rows.len(), 1, "not exactly one row for this namespace\n{run}");
    assert_eq!(rows[0][1], "mine", "{run}");
}

#[tokio::test]
async fn list_output_json_is_a_list_of_the_apikeys() {
    let ns = TestNamespace::new("plugin_list_json").await;
    ns.create_key("b-key", json!({"scopes": ["orders.read"]})).await;
    ns.create_key("a-key", json!({})).await;
    let run = apikey(&ns.name, &["list", "-o", "json"]).run().await.exits(0);
    let list = run.json();
    assert_eq!((&list["apiVersion"], &list["kind"]), (&json!("v1"), &json!("List")), "{run}");
    let items: Vec<ApiKey> = serde_json::from_value(list["items"].clone())
        .unwrap_or_else(|e| panic!("the items are not ApiKeys: {e}\n{run}"));
    let names: Vec<String> = items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["a-key", "b-key"], "{run}");
    assert_eq!(items[1].spec.policy.scopes, ["orders.read"], "{run}");
    for item in list["items"].as_array().expect("items") {
        assert_eq!((&item["apiVersion"], &item["kind"]), (&json!("keyward.io/v1alpha1"), &json!("ApiKey")), "{run}");
        assert!(item["metadata"].get("managedFields").is_none(), "managedFields are shown\n{run}");
    }
}

#[tokio::test]
async fn list_of_an_empty_namespace_says_so_on_stderr_and_exits_0() {
    let ns = TestNamespace::new("plugin_list_empty").await;
    let run = apikey(&ns.name, &["list"]).run().await.exits(0).says("stderr", &["No apikeys found"]);
    assert!(run.stdout.is_empty(), "{run}");
}

#[tokio::test]
async fn create_list_and_describe_read_the_same_time_left_seconds_apart() {
    let ns = TestNamespace::new("plugin_time_left").await;
    let _controller = ns.controller(&[]);
    let created = apikey(&ns.name, &["create", "ci", "--expires-after", "30d"])
        .run()
        .await
        .exits(0)
        .says("stderr", &["(in 30d)"]);
    // Past the second the key was created in, less than 30 whole days are left.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let list = apikey(&ns.name, &["list"]).run().await.exits(0);
    let rows = list.rows_starting("ci");
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0][4], "30d", "list reads another time left than create did\n{created}\n{list}");
    let describe = apikey(&ns.name, &["describe", "ci"]).run().await.exits(0);
    let expires = describe.stdout.lines().find(|l| l.starts_with("Expires:")).unwrap_or_default();
    assert!(expires.ends_with("(in 30d)"), "describe reads another time left\n{describe}");
}

#[tokio::test]
async fn list_shows_who_created_each_key_and_created_by_filters_on_it_exactly() {
    let ns = TestNamespace::new("plugin_created_by").await;
    // Made before the webhook ran: no creator recorded.
    ns.create_key("before", json!({})).await;
    ns.create_credential("before", json!({})).await;
    let _webhook = webhook::register(&ns, &[]).await;
    webhook::grant(&ns, 1, "writer", Some(&[])).await;
    webhook::grant(&ns, 2, "writer2", Some(&[])).await;
    for (n, name) in [(1, "alices"), (2, "bobs")] {
        let client = user_client(n).await;
        let keys = kube::Api::<ApiKey>::namespaced(client.clone(), &ns.name);
        keys.create(&PostParams::default(), &support::key(name, json!({}))).await.expect("create the ApiKey");
        let credential = Credential::new(name, serde_json::from_value(json!({})).expect("spec"));
        let credentials = kube::Api::<Credential>::namespaced(client, &ns.name);
        credentials.create(&PostParams::default(), &credential).await.expect("create the Credential");
    }

    for kind in [&[][..], &["credential"]] {
        let command = |args: &[&'static str]| -> Vec<&'static str> { [kind, args].concat() };
        let run = apikey(&ns.name, &command(&["list"])).run().await.exits(0);
        assert!(run.header().ends_with(" CREATED BY AGE"), "{run}");
        // NAME, four columns of the kind, LAST USED, CREATED BY, AGE.
        for (name, created_by) in [("alices", "keyward-user-1"), ("bobs", "keyward-user-2"), ("before", "-")] {
            let rows = run.rows_starting(name);
            assert_eq!(rows.len(), 1, "no row for {name}\n{run}");
            assert_eq!(rows[0].get(6).map(String::as_str), Some(created_by), "{name}\n{run}");
        }

        let run = apikey(&ns.name, &command(&["list", "--created-by", "keyward-user-1"])).run().await.exits(0);
        assert_eq!(run.stdout.lines().count(), 2, "not only alices\n{run}");
        assert_eq!(run.rows_starting("alices").len(), 1, "{run}");
        let run = apikey(&ns.name, &command(&["list", "--created-by", "keyward-user-2", "-o", "json"])).run().await;
        let run = run.exits(0);
        let list = run.json();
        let items = list["items"].as_array().expect("items");
        let names: Vec<&str> = items.iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
        assert_eq!(names, ["bobs"], "{run}");
        // Exact: neither a prefix nor the dash shown for no creator matches.
        for near in ["keyward-user", "KEYWARD-USER-1", "-"] {
            let run = apikey(&ns.name, &command(&["list", "--created-by", near])).run().await.exits(0);
            assert!(run.stdout.is_empty(), "{near:?} matched\n{run}");
            run.says("stderr", &[&format!("created by {near:?} found")]);
        }
    }

    // Across namespaces: every row shown is bob's, and this namespace's is among them.
    let run = apikey(&ns.name, &["list", "-A", "--created-by", "keyward-user-2"]).run().await.exits(0);
    let rows = run.rows_starting(&ns.name);
    assert_eq!(rows.len(), 1, "{run}");
    assert_eq!((rows[0][1].as_str(), rows[0][7].as_str()), ("bobs", "keyward-user-2"), "{run}");
    for line in run.stdout.lines().skip(1) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells.get(7), Some(&"keyward-user-2"), "{line}\n{run}");
    }
}

// describe

#[tokio::test]
async fn describe_shows_status_conditions_and_events_but_never_the_token() {
    let ns = TestNamespace::new("plugin_describe").await;
    let _controller = ns.controller(&[]);
    let (token, status) = issued_key(&ns, "ci", json!({"scopes": ["orders.read"], "description": "deploys"})).await;
    ns.wait_event("ci", "Issued").await;
    let key_id = status.record.key_id.expect("keyId");
    let hash = status.record.token_hash.expect("tokenHash");
    let run = apikey(&ns.name, &["describe", "ci"])
        .run()
        .await
        .exits(0)
        .says("stdout", &["deploys", "orders.read", &key_id, &hash, "ci-apikey", "Conditions:", "Events:"]);
    let line = |label: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(label))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no line {label:?}\n{run}"))
    };
    assert_eq!(line("Phase:"), "Phase: Active", "{run}");
    let (conditions, events) = run.stdout.split_once("Events:").expect("an Events section");
    let ready = conditions.lines().find(|l| l.trim_start().starts_with("Ready")).unwrap_or_default();
    assert!(ready.contains("True") && ready.contains("Issued"), "no Ready/Issued condition\n{run}");
    let issued = events.lines().find(|l| l.contains("Issued")).unwrap_or_default();
    assert!(issued.contains("Normal") && issued.contains(&key_id), "no Issued event\n{run}");
    run.never_shows(&token);
}

#[tokio::test]
async fn describe_shows_the_last_use_and_every_application_seen_or_named_in_spec() {
    let ns = TestNamespace::new("plugin_describe_usage").await;
    let applications = json!({"default": "Pending", "allowed": ["billing-worker"], "denied": ["legacy-cron"]});
    let key = ns.create_key("ci", json!({"applications": applications})).await;
    let (two_days, hour) = (ago(2 * 86_400), ago(3600));
    let seen = json!([
        {"name": "billing-worker", "state": "Allowed", "firstSeenAt": two_days, "lastSeenAt": hour},
        {"name": "new-report", "state": "Pending", "firstSeenAt": hour, "lastSeenAt": hour},
    ]);
    let status = json!({"lastUsedAt": two_days, "applications": seen, "applicationsOverflow": 3});
    record_usage(&ns, Kind::ApiKey, "ci", &key.uid().expect("uid"), status).await;

    let run = apikey(&ns.name, &["describe", "ci"]).run().await.exits(0);
    let last_used = run.stdout.lines().find(|l| l.starts_with("Last used:")).unwrap_or_default();
    assert!(last_used.ends_with(&format!("{two_days} (2d ago)")), "{run}");
    let section = run.stdout.split_once("Applications:\n").map(|(_, rest)| rest).unwrap_or_default();
    let section = section.split_once("Conditions:").map(|(section, _)| section).unwrap_or_default();
    let lines: Vec<String> = section.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(
        lines,
        [
            "Default: Pending",
            "Allowed: billing-worker",
            "Denied: legacy-cron",
            "NAME STATE FIRST SEEN LAST SEEN",
            "billing-worker Allowed 2d ago 60m ago",
            "new-report Pending 60m ago 60m ago",
            "legacy-cron Denied - -",
            "+3 sightings of other applications, not listed (a KeyUsage lists at most 64)",
        ],
        "{run}"
    );

    let billing = ns.create_credential("billing", json!({"tokens": [{"name": "primary"}, {"name": "next"}]})).await;
    let tokens = json!([{"name": "primary", "lastUsedAt": hour}]);
    let status = json!({"lastUsedAt": hour, "tokens": tokens});
    record_usage(&ns, Kind::Credential, "billing", &billing.uid().expect("uid"), status).await;
    let run = apikey(&ns.name, &["credential", "describe", "billing"]).run().await.exits(0);
    let row = |token: &str| {
        let line = run.stdout.lines().find(|l| l.trim_start().starts_with(&format!("{token} ")));
        line.unwrap_or_else(|| panic!("no line for token {token}\n{run}")).to_string()
    };
    assert!(row("primary").ends_with("60m ago"), "{run}");
    assert!(row("next").ends_with(" -"), "{run}");
    // Without a policy every application passes; none seen.
    let section = run.stdout.split_once("Applications:\n").map(|(_, rest)| rest).unwrap_or_default();
    assert!(
        section.starts_with("  Default:  Allow (default)\n  Allowed:  <none>\n  Denied:   <none>\n  <none seen>\n"),
        "{run}"
    );
}

#[tokio::test]
async fn describe_of_a_missing_key_exits_6() {
    let ns = TestNamespace::new("plugin_describe_missing").await;
    apikey(&ns.name, &["describe", "nope"]).run().await.exits(6).says("stderr", &["\"nope\"", "not found"]);
}

#[tokio::test]
async fn describe_of_a_credential_exits_6_and_says_to_use_credential_describe() {
    let ns = TestNamespace::new("plugin_other_kind").await;
    ns.create_credential("billing", json!({"tokens": [{"name": "primary"}]})).await;
    ns.create_key("ci", json!({})).await;
    apikey(&ns.name, &["describe", "billing"])
        .run()
        .await
        .exits(6)
        .says("stderr", &["\"billing\"", "not found", "Credential", "`kubectl apikey credential describe billing`"]);
    apikey(&ns.name, &["credential", "describe", "ci"])
        .run()
        .await
        .exits(6)
        .says("stderr", &["\"ci\"", "not found", "ApiKey", "`kubectl apikey describe ci`"]);
    apikey(&ns.name, &["deactivate", "billing"])
        .run()
        .await
        .exits(6)
        .says("stderr", &["`kubectl apikey credential deactivate billing`"]);
    apikey(&ns.name, &["delete", "billing"])
        .run()
        .await
        .exits(6)
        .says("stderr", &["`kubectl apikey credential delete billing`"]);
    let billing = ns.credentials().get("billing").await.expect("the Credential is still there");
    assert!(billing.spec.policy.state.is_none(), "the Credential was changed");
    let run = apikey(&ns.name, &["describe", "nope"]).run().await.exits(6);
    assert!(!run.stderr.contains("kubectl apikey"), "a hint for a name no key has\n{run}");
}

// activate, deactivate

#[tokio::test]
async fn deactivate_makes_verify_say_inactive_and_activate_makes_it_valid_again() {
    let ns = TestNamespace::new("plugin_toggle").await;
    let _controller = ns.controller(&[]);
    let (token, _) = issued_key(&ns, "toggle", json!({})).await;

    apikey(&ns.name, &["deactivate", "toggle"]).run().await.exits(0).says("stdout", &["toggle deactivated"]);
    // verify judges the spec as it is now: no need to wait for the controller.
    let run = apikey(&ns.name, &["verify"]).stdin(&token).run().await.exits(10);
    assert!(run.stdout.starts_with("INACTIVE"), "{run}");
    ns.wait_phase("toggle", Phase::Inactive).await;
    assert_eq!(ns.token_of("toggle-apikey").await, token, "the Secret changed while inactive");

    apikey(&ns.name, &["deactivate", "toggle"]).run().await.exits(0).says("stdout", &["unchanged"]);

    apikey(&ns.name, &["activate", "toggle"]).run().await.exits(0).says("stdout", &["toggle activated"]);
    ns.wait_phase("toggle", Phase::Active).await;
    let run = apikey(&ns.name, &["verify"]).stdin(&token).run().await.exits(0);
    assert!(run.stdout.starts_with("VALID"), "{run}");
}

#[tokio::test]
async fn activate_of_an_expired_key_exits_8() {
    let ns = TestNamespace::new("plugin_activate_expired").await;
    let _controller = ns.controller(&[]);
    ns.create_key("short", json!({"expiresAfter": "2s"})).await;
    ns.wait_phase("short", Phase::Expired).await;
    apikey(&ns.name, &["activate", "short"]).run().await.exits(8).says("stderr", &["\"short\"", "has expired"]);
}

// verify

#[tokio::test]
async fn verify_of_a_valid_token_says_valid_names_the_key_and_exits_0() {
    let ns = TestNamespace::new("plugin_verify_valid").await;
    let _controller = ns.controller(&[]);
    let (token, status) = issued_key(&ns, "ci", json!({"scopes": ["orders.read"]})).await;
    let key_id = status.record.key_id.expect("keyId");
    let run = apikey(&ns.name, &["verify", "--scope", "orders.read"]).stdin(&format!("{token}\n")).run().await.exits(0);
    assert!(run.stdout.starts_with("VALID"), "{run}");
    run.says("stdout", &[&format!("ApiKey {}/ci", ns.name), &key_id]).never_shows(&token);
}

#[tokio::test]
async fn verify_with_a_scope_the_key_lacks_is_insufficient_scope_and_exits_10() {
    let ns = TestNamespace::new("plugin_verify_scope").await;
    let _controller = ns.controller(&[]);
    let (token, _) = issued_key(&ns, "ci", json!({"scopes": ["orders.read"]})).await;
    let run = apikey(&ns.name, &["verify", "--scope", "orders.write"]).stdin(&token).run().await.exits(10);
    assert!(run.stdout.starts_with("INSUFFICIENT_SCOPE"), "{run}");
}

#[tokio::test]
async fn verify_of_a_key_with_cidrs_and_no_ip_says_to_pass_ip_and_exits_10() {
    let ns = TestNamespace::new("plugin_verify_no_ip").await;
    let _controller = ns.controller(&[]);
    let (token, _) = issued_key(&ns, "ci", json!({"allowedCIDRs": ["10.0.0.0/8"]})).await;
    let run = apikey(&ns.name, &["verify"]).stdin(&token).run().await.exits(10).says("stderr", &["--ip ADDRESS"]);
    assert!(run.stdout.starts_with("IP_NOT_ALLOWED"), "{run}");
    run.never_shows(&token);
    let run = apikey(&ns.name, &["verify", "--ip", "192.0.2.1"]).stdin(&token).run().await.exits(10);
    assert!(run.stdout.starts_with("IP_NOT_ALLOWED") && !run.stderr.contains("--ip"), "{run}");
    apikey(&ns.name, &["verify", "--ip", "10.1.2.3"]).stdin(&token).run().await.exits(0).says("stdout", &["VALID"]);
}

#[tokio::test]
async fn verify_of_a_well_formed_unknown_token_is_not_found_and_exits_10() {
    let ns = TestNamespace::new("plugin_verify_unknown").await;
    let unknown = Token::generate("kw");
    let run = apikey(&ns.name, &["verify"]).stdin(unknown.expose()).run().await.exits(10);
    assert!(run.stdout.starts_with("NOT_FOUND"), "{run}");
}

#[tokio::test]
async fn verify_of_garbage_is_malformed_and_exits_10() {
    let ns = TestNamespace::new("plugin_verify_garbage").await;
    let run = apikey(&ns.name, &["verify"]).stdin("garbage").run().await.exits(10);
    assert!(run.stdout.starts_with("MALFORMED"), "{run}");
}

#[tokio::test]
async fn verify_with_nothing_on_stdin_exits_2() {
    let ns = TestNamespace::new("plugin_verify_empty").await;
    let run = apikey(&ns.name, &["verify"]).stdin("").run().await.exits(2).says("stderr", &["no token on stdin"]);
    assert!(run.stdout.is_empty(), "{run}");
}

#[tokio::test]
async fn verify_reads_every_page_of_a_large_namespace() {
    let ns = TestNamespace::new("plugin_verify_pages").await;
    let _controller = ns.controller(&[]);
    // The plugin lists 500 at a time, in name order: `zz-last` is on the second page.
    support::create_keys(ns.keys(), "filler", 600, 32).await;
    let (token, _) = issued_key(&ns, "zz-last", json!({})).await;
    apikey(&ns.name, &["verify"]).stdin(&token).run().await.exits(0).says("stdout", &["VALID", "zz-last"]);
}

#[tokio::test]
async fn verify_finds_a_key_of_another_namespace_only_with_all_namespaces() {
    let home = TestNamespace::new("plugin_verify_home").await;
    let elsewhere = TestNamespace::new("plugin_verify_elsewhere").await;
    let _controller = home.controller(&[]);
    let (token, _) = issued_key(&home, "ci", json!({})).await;
    let run = apikey(&elsewhere.name, &["verify"]).stdin(&token).run().await.exits(10);
    assert!(run.stdout.starts_with("NOT_FOUND"), "{run}");
    let run = apikey(&elsewhere.name, &["verify", "-A"]).stdin(&token).run().await.exits(0);
    assert!(run.stdout.starts_with("VALID"), "{run}");
    run.says("stdout", &[&format!("ApiKey {}/ci", home.name)]);
}

#[tokio::test]
async fn verify_output_json_is_the_verifiers_answer() {
    let ns = TestNamespace::new("plugin_verify_json").await;
    let _controller = ns.controller(&[]);
    let (token, status) = issued_key(&ns, "ci", json!({"scopes": ["orders.read"]})).await;
    let run = apikey(&ns.name, &["verify", "-o", "json"]).stdin(&token).run().await.exits(0);
    let answer = run.json();
    assert_eq!((&answer["valid"], &answer["code"]), (&json!(true), &json!("VALID")), "{run}");
    let key = &answer["key"];
    assert_eq!(
        (&key["kind"], &key["namespace"], &key["name"], &key["keyId"], &key["scopes"]),
        (&json!("ApiKey"), &json!(ns.name), &json!("ci"), &json!(status.record.key_id), &json!(["orders.read"])),
        "{run}"
    );
}

// delete

#[tokio::test]
async fn delete_removes_the_key_and_its_secret_goes_with_it() {
    let ns = TestNamespace::new("plugin_delete").await;
    let _controller = ns.controller(&[]);
    issued_key(&ns, "doomed", json!({})).await;
    let run = apikey(&ns.name, &["delete", "doomed"]).run().await.exits(0).says("stdout", &["\"doomed\" deleted"]);
    // No finalizer and background propagation: the object goes at once, the Secret by GC.
    assert!(ns.keys().get_opt("doomed").await.expect("get").is_none(), "the ApiKey is still there\n{run}");
    ns.wait_secret_gone("doomed-apikey").await;
}

#[tokio::test]
async fn delete_of_a_missing_key_exits_6() {
    let ns = TestNamespace::new("plugin_delete_missing").await;
    apikey(&ns.name, &["delete", "nope"]).run().await.exits(6).says("stderr", &["\"nope\"", "not found"]);
}

// credential

#[tokio::test]
async fn credential_create_and_add_token_print_each_new_token_once() {
    let ns = TestNamespace::new("plugin_cred_create").await;
    let _controller = ns.controller(&[]);
    let args = words("credential create billing --scope orders.read --token primary --expires-after 30d");
    let run = apikey(&ns.name, &args).run().await.exits(0).says("stderr", &["shown only once"]);
    assert_eq!(run.stdout.trim_end(), ns.token_of("billing-primary").await, "{run}");
    let primary = run.stdout.trim_end().to_string();
    run.says("stderr", &["token \"primary\" of credential/billing"]).never_shows_on_stderr(&primary);

    let run = apikey(&ns.name, &["credential", "add-token", "billing", "next"]).run().await.exits(0);
    let next = run.stdout.trim_end().to_string();
    assert_eq!(next, ns.token_of("billing-next").await, "{run}");
    assert_ne!(next, primary, "{run}");
    assert_eq!(ns.token_of("billing-primary").await, primary, "adding a token changed another");
}

#[tokio::test]
async fn credential_add_token_of_a_name_it_has_exits_7() {
    let ns = TestNamespace::new("plugin_cred_add_twice").await;
    let _controller = ns.controller(&[]);
    apikey(&ns.name, &["credential", "create", "billing", "--token", "primary"]).run().await.exits(0);
    apikey(&ns.name, &["credential", "add-token", "billing", "next"]).run().await.exits(0);
    let next = ns.token_of("billing-next").await;
    apikey(&ns.name, &["credential", "add-token", "billing", "next"])
        .run()
        .await
        .exits(7)
        .says("stderr", &["already has a token \"next\""]);
    assert_eq!(ns.token_of("billing-next").await, next, "the second add-token changed the token");
}

#[tokio::test]
async fn credential_add_token_with_a_bad_name_or_beyond_sixteen_exits_2_and_changes_nothing() {
    let ns = TestNamespace::new("plugin_cred_add_bad").await;
    let tokens: Vec<_> = (0..16).map(|i| json!({"name": format!("t{i}")})).collect();
    ns.create_credential("full", json!({"tokens": tokens})).await;
    ns.create_credential("one", json!({"tokens": [{"name": "t0"}]})).await;
    let generations = || async {
        let credentials = ns.credentials().list(&Default::default()).await.expect("list").items;
        credentials.iter().map(|c| (c.name_any(), c.metadata.generation)).collect::<Vec<_>>()
    };
    let before = generations().await;
    apikey(&ns.name, &["credential", "add-token", "full", "t16"])
        .run()
        .await
        .exits(2)
        .says("stderr", &["holds 16 tokens", "remove one first"]);
    apikey(&ns.name, &["credential", "add-token", "one", "Bad_Name"])
        .run()
        .await
        .exits(2)
        .says("stderr", &["invalid token name \"Bad_Name\"", "DNS label"]);
    apikey(&ns.name, &["credential", "add-token", "one", "next", "--expires-after", "1y"])
        .run()
        .await
        .exits(2)
        .says("stderr", &["invalid --expires-after \"1y\""]);
    assert_eq!(generations().await, before, "a refused add-token changed a Credential");
}

#[tokio::test]
async fn credential_list_and_describe_show_every_token_but_no_token_value() {
    let ns = TestNamespace::new("plugin_cred_show").await;
    let _controller = ns.controller(&[]);
    let args = ["credential", "create", "billing", "--scope", "orders.read", "--token", "primary"];
    let primary = apikey(&ns.name, &args).run().await.exits(0).stdout.trim_end().to_string();
    let next = apikey(&ns.name, &["credential", "add-token", "billing", "next"]).run().await.exits(0).stdout;
    let next = next.trim_end().to_string();

    let run = apikey(&ns.name, &["credential", "list"]).run().await.exits(0);
    assert_eq!(run.header(), "NAME PHASE TOKENS SCOPES NEXT EXPIRY LAST USED CREATED BY AGE", "{run}");
    let rows = run.rows_starting("billing");
    assert_eq!(rows.len(), 1, "{run}");
    assert_eq!(rows[0][1..4], ["Active", "2/2", "orders.read"], "{run}");

    let status = ns.credentials().get("billing").await.expect("get").status.expect("status");
    let run = apikey(&ns.name, &["credential", "describe", "billing"]).run().await.exits(0);
    for token in &status.tokens {
        let key_id = token.record.key_id.as_deref().expect("keyId");
        let secret = format!("billing-{}", token.name);
        let line = run.stdout.lines().find(|l| l.trim_start().starts_with(&format!("{} ", token.name)));
        let line = line.unwrap_or_else(|| panic!("no line for token {}\n{run}", token.name));
        assert!(line.contains("Active") && line.contains(key_id) && line.contains(&secret), "{run}");
    }
    assert_eq!(status.tokens.len(), 2, "{run}");
    run.never_shows(&primary);
    run.never_shows(&next);
}

#[tokio::test]
async fn credential_remove_token_refuses_it_and_deletes_its_secret() {
    let ns = TestNamespace::new("plugin_cred_remove").await;
    let _controller = ns.controller(&[]);
    let primary = apikey(&ns.name, &["credential", "create", "billing", "--token", "primary"]).run().await.exits(0);
    let primary = primary.stdout.trim_end().to_string();
    let next = apikey(&ns.name, &["credential", "add-token", "billing", "next"]).run().await.exits(0);
    let next = next.stdout.trim_end().to_string();

    apikey(&ns.name, &["credential", "remove-token", "billing", "primary"])
        .run()
        .await
        .exits(0)
        .says("stdout", &["token \"primary\" removed"]);
    // verify judges by the spec: refused whether or not the controller has caught up.
    let run = apikey(&ns.name, &["verify"]).stdin(&primary).run().await.exits(10);
    assert!(!run.stdout.starts_with("VALID"), "{run}");
    ns.wait_secret_gone("billing-primary").await;
    let run = apikey(&ns.name, &["verify"]).stdin(&next).run().await.exits(0);
    assert!(run.stdout.starts_with("VALID") && run.stdout.contains("token \"next\""), "{run}");
}

#[tokio::test]
async fn credential_remove_token_of_a_missing_token_exits_6() {
    let ns = TestNamespace::new("plugin_cred_remove_missing").await;
    ns.create_credential("billing", json!({"tokens": [{"name": "primary"}]})).await;
    apikey(&ns.name, &["credential", "remove-token", "billing", "nope"])
        .run()
        .await
        .exits(6)
        .says("stderr", &["has no token \"nope\""]);
    let credential = ns.credentials().get("billing").await.expect("get");
    assert_eq!(credential.spec.tokens.len(), 1, "the token list changed");
}

// app allow, deny, forget

/// The key's spec.applications as JSON (`null` when absent), and its resourceVersion.
async fn applications_of(ns: &TestNamespace, name: &str) -> (serde_json::Value, String) {
    let key = ns.keys().get(name).await.expect("get");
    (json!(key.spec.policy.applications), key.resource_version().expect("resourceVersion"))
}

#[tokio::test]
async fn app_allow_deny_and_forget_edit_spec_applications_and_say_so() {
    let ns = TestNamespace::new("plugin_app_edit").await;
    ns.create_key("ci", json!({})).await;

    // No policy yet: allow lists the application and leaves the default (Allow) absent, and says
    // that the list lets nothing new in until the default is changed.
    let run = apikey(&ns.name, &words("app allow ci billing-worker")).run().await.exits(0);
    let run = run.says("stdout", &["apikey.keyward.io/ci: application \"billing-worker\" allowed"]);
    let patch = format!("kubectl patch apikey ci -n {} --type merge -p", ns.name);
    run.says("stderr", &["default is Allow (unset)", "every application not denied passes already", &patch]);
    let (applications, version) = applications_of(&ns, "ci").await;
    assert_eq!(applications, json!({"allowed": ["billing-worker"]}));
    // Nothing to change: no write.
    apikey(&ns.name, &words("app allow ci billing-worker"))
        .run()
        .await
        .exits(0)
        .says("stdout", &["apikey.keyward.io/ci unchanged (application \"billing-worker\" is already allowed)"]);
    assert_eq!(applications_of(&ns, "ci").await.1, version, "an unchanged edit was written");

    // Deny moves it between the lists (the emptied list goes).
    apikey(&ns.name, &words("app deny ci billing-worker"))
        .run()
        .await
        .exits(0)
        .says("stdout", &["apikey.keyward.io/ci: application \"billing-worker\" denied"]);
    assert_eq!(applications_of(&ns, "ci").await.0, json!({"denied": ["billing-worker"]}));

    // With a default of Pending, allowing needs no note; the default is kept.
    ns.patch_spec("ci", json!({"applications": {"default": "Pending"}})).await;
    let run = apikey(&ns.name, &words("app allow ci new-report")).run().await.exits(0);
    assert!(run.stderr.is_empty(), "a note under the default Pending\n{run}");
    let policy = json!({"default": "Pending", "allowed": ["new-report"], "denied": ["billing-worker"]});
    assert_eq!(applications_of(&ns, "ci").await.0, policy);

    // Forget takes it out of both lists: the default applies again.
    apikey(&ns.name, &words("app forget ci billing-worker"))
        .run()
        .await
        .exits(0)
        .says("stdout", &["application \"billing-worker\" forgotten; the default applies to it again (Pending)"]);
    let (applications, version) = applications_of(&ns, "ci").await;
    assert_eq!(applications, json!({"default": "Pending", "allowed": ["new-report"]}));
    apikey(&ns.name, &words("app forget ci billing-worker"))
        .run()
        .await
        .exits(0)
        .says("stdout", &["unchanged (application \"billing-worker\" is in neither"]);
    assert_eq!(applications_of(&ns, "ci").await.1, version, "an unchanged edit was written");

    // The same for a Credential, and a key of the other kind is pointed at its command.
    ns.create_credential("billing", json!({})).await;
    apikey(&ns.name, &words("credential app deny billing legacy-cron"))
        .run()
        .await
        .exits(0)
        .says("stdout", &["credential.keyward.io/billing: application \"legacy-cron\" denied"]);
    let billing = ns.credentials().get("billing").await.expect("get");
    assert_eq!(json!(billing.spec.policy.applications), json!({"denied": ["legacy-cron"]}));
    apikey(&ns.name, &words("app allow billing worker"))
        .run()
        .await
        .exits(6)
        .says("stderr", &["`kubectl apikey credential app allow billing worker`"]);
    apikey(&ns.name, &words("app allow nope worker")).run().await.exits(6).says("stderr", &["\"nope\"", "not found"]);
}

#[tokio::test]
async fn app_with_a_malformed_application_name_exits_2_before_any_request() {
    let ns = TestNamespace::new("plugin_app_bad_name").await;
    ns.create_key("ci", json!({})).await;
    let version = applications_of(&ns, "ci").await.1;
    for bad in ["a b", "ä", ".hidden", "x/y"] {
        apikey(&ns.name, &["app", "allow", "ci", bad])
            .run()
            .await
            .exits(2)
            .says("stderr", &[&format!("'{bad}'"), "application names are"]);
    }
    // Not even a cluster is needed to refuse it.
    apikey(&ns.name, &["app", "deny", "ci", "a b"]).env("KUBECONFIG", "/nonexistent").run().await.exits(2);
    assert_eq!(applications_of(&ns, "ci").await.1, version, "a refused name changed the key");
}

#[tokio::test]
async fn an_app_edit_computed_from_a_stale_read_is_refused_with_13_and_the_other_edit_is_kept() {
    use keyward::plugin::apps::{self, Edit, Verb};
    use keyward::plugin::cluster::{Cluster, ConnectArgs};
    let ns = TestNamespace::new("plugin_app_conflict").await;
    ns.create_key("ci", json!({"applications": {"default": "Pending"}})).await;
    let cluster = Cluster::connect(&ConnectArgs { namespace: Some(ns.name.clone()), ..Default::default() })
        .await
        .expect("connect");

    // The plugin reads the key and computes its edit; someone else writes the key in between.
    let read: ApiKey = keyward::plugin::keys::get(&cluster, "ci").await.expect("read");
    let Edit::Changed(allowed) = apps::edit(read.spec.policy.applications.as_ref(), "worker", Verb::Allow) else {
        panic!("no change")
    };
    ns.patch_spec("ci", json!({"applications": {"denied": ["cron"]}})).await;
    let error = apps::write(&cluster, &read, allowed.as_ref()).await.expect_err("a stale write was accepted");
    assert_eq!(error.exit_code(), 13, "{error}");
    let message = error.to_string();
    assert!(message.contains("apikey.keyward.io \"ci\"") && message.contains("nothing was written"), "{message}");
    assert_eq!(applications_of(&ns, "ci").await.0, json!({"default": "Pending", "denied": ["cron"]}), "overwritten");

    // Run again, the edit is computed from the key as it is now, and keeps the other one.
    apikey(&ns.name, &words("app allow ci worker")).run().await.exits(0);
    let policy = json!({"default": "Pending", "allowed": ["worker"], "denied": ["cron"]});
    assert_eq!(applications_of(&ns, "ci").await.0, policy);
}

#[tokio::test]
async fn a_pending_application_is_told_the_command_that_approves_it_and_that_command_lets_it_in() {
    let ns = TestNamespace::new("plugin_app_pending").await;
    let _controller = ns.controller(&[]);
    let args = ["credential", "create", "billing", "--token", "primary"];
    let token = apikey(&ns.name, &args).run().await.exits(0).stdout.trim_end().to_string();
    ns.credentials()
        .patch(
            "billing",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"applications": {"default": "Pending"}}})),
        )
        .await
        .expect("patch the Credential");
    let approve = "kubectl apikey credential app allow billing new-report";
    let run = apikey(&ns.name, &words("verify --app new-report")).stdin(&token).run().await;
    run.exits(10).says("stdout", &["APP_PENDING", approve]).never_shows(&token);
    let approve: Vec<&str> = approve.split_whitespace().skip(2).collect();
    apikey(&ns.name, &approve).run().await.exits(0);
    let run = apikey(&ns.name, &words("verify --app new-report")).stdin(&token).run().await;
    run.exits(0).says("stdout", &["VALID"]).never_shows(&token);
}

// errors

#[tokio::test]
async fn a_user_without_rbac_gets_exit_5_and_is_told_it_is_forbidden() {
    let ns = TestNamespace::new("plugin_forbidden").await;
    apikey(&ns.name, &["list"])
        .env("KUBECONFIG", support::user_kubeconfig(1))
        .run()
        .await
        .exits(5)
        .says("stderr", &["forbidden", "keyward-user-1"]);
}

#[tokio::test]
async fn a_scope_the_user_may_not_grant_exits_5_with_the_webhooks_refusal_on_every_write() {
    let ns = TestNamespace::new("plugin_grant_refused").await;
    let _controller = ns.controller(&[]);
    let _webhook = webhook::register(&ns, &[]).await;
    webhook::grant(&ns, 1, "orders", Some(&["orders.>"])).await;
    let kubeconfig = support::user_kubeconfig(1);
    let as_user = |args: &[&str]| apikey(&ns.name, args).env("KUBECONFIG", &kubeconfig);
    let denied = "admission webhook \"validate.keyward.io\" denied the request: ";
    let refusal = grant_refusal("keyward-user-1", "payments.write", &ns.name, &["payments.>", ">"]);
    let refused = format!("{denied}{refusal}");

    // What the grant covers is admitted (a server-side dry run: nothing stored, no Secret to read).
    as_user(&["create", "reads", "--scope", "orders.read", "--dry-run=server"]).run().await.exits(0);
    for args in [
        &["create", "pays", "--scope", "payments.write"][..],
        &["create", "pays", "--scope", "orders.read", "--scope", "payments.write", "--dry-run=server"],
        &["credential", "create", "pays", "--scope", "payments.write", "--token", "primary"],
    ] {
        let run = as_user(args).run().await.exits(5).says("stderr", &[&refused]);
        assert!(run.stdout.is_empty(), "{run}");
        assert!(!run.stderr.contains("ask a cluster administrator for a Role"), "the RBAC hint\n{run}");
        assert_no_keys(&ns, &run).await;
    }
    assert!(ns.credentials().get_opt("pays").await.expect("get").is_none(), "a refused Credential was stored");

    // Writes that put an issued key's scopes into use again: its token is never shown.
    ns.create_credential("billing", json!({"scopes": ["payments.write"], "tokens": [{"name": "primary"}]})).await;
    ns.wait_credential("billing", "primary issued", |s| s.tokens.iter().any(|t| t.record.phase == Some(Phase::Active)))
        .await;
    let primary = ns.token_of("billing-primary").await;
    let (key, _) = issued_key(&ns, "paying", json!({"scopes": ["payments.write"]})).await;
    let run = as_user(&["credential", "add-token", "billing", "next"]).run().await.exits(5).says("stderr", &[&refused]);
    run.never_shows(&primary);
    assert_eq!(ns.credentials().get("billing").await.expect("get").spec.tokens.len(), 1, "{run}");
    // Anyone who may edit a key may revoke it; turning it back on is a grant.
    as_user(&["deactivate", "paying"]).run().await.exits(0);
    let run = as_user(&["activate", "paying"]).run().await.exits(5).says("stderr", &[&refused]);
    run.never_shows(&key);
    let state = ns.keys().get("paying").await.expect("get").spec.policy.state;
    assert_eq!(state, Some(keyward::api::KeyState::Inactive), "{run}");
}

#[tokio::test]
async fn a_spec_refused_at_admission_but_not_by_the_plugin_exits_2_with_the_webhooks_message() {
    let ns = TestNamespace::new("plugin_admission_spec").await;
    let _webhook = webhook::register(&ns, &["--max-expiry", "30d"]).await;
    let denied = "admission webhook \"validate.keyward.io\" denied the request: ";
    // The plugin does not know the operator's --max-expiry: 31d passes its own check.
    apikey(&ns.name, &["create", "month", "--expires-after", "30d", "--dry-run=server"]).run().await.exits(0);
    let run = apikey(&ns.name, &["create", "long", "--expires-after", "31d"])
        .run()
        .await
        .exits(2)
        .says("stderr", &[&format!("{denied}spec.expiresAfter: invalid value \"31d\""), "--max-expiry"]);
    assert!(run.stdout.is_empty(), "{run}");
    assert_no_keys(&ns, &run).await;
    let args = ["credential", "create", "long", "--token", "primary", "--expires-after", "31d"];
    apikey(&ns.name, &args)
        .run()
        .await
        .exits(2)
        .says("stderr", &[&format!("{denied}spec.tokens[0].expiresAfter: invalid value \"31d\"")]);
    assert!(ns.credentials().get_opt("long").await.expect("get").is_none(), "a refused Credential was stored");
    ns.create_credential("billing", json!({"tokens": [{"name": "primary"}]})).await;
    apikey(&ns.name, &["credential", "add-token", "billing", "next", "--expires-after", "31d"])
        .run()
        .await
        .exits(2)
        .says("stderr", &[&format!("{denied}spec.tokens[1].expiresAfter: invalid value \"31d\"")]);
    assert_eq!(ns.credentials().get("billing").await.expect("get").spec.tokens.len(), 1, "the token was added");
}

#[tokio::test]
async fn an_api_server_that_cannot_be_reached_exits_3() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig_with_server(dir.path(), "https://127.0.0.1:1");
    apikey("default", &["list"])
        .env("KUBECONFIG", &kubeconfig)
        .run()
        .await
        .exits(3)
        .says("stderr", &["cannot reach", "127.0.0.1:1"]);
}

#[tokio::test]
async fn a_missing_kubeconfig_exits_3() {
    apikey("default", &["list"])
        .env("KUBECONFIG", "/nonexistent")
        .run()
        .await
        .exits(3)
        .says("stderr", &["no kubeconfig at /nonexistent"]);
}

#[tokio::test]
async fn an_unknown_context_exits_3() {
    apikey("default", &["list", "--context", "nope"]).run().await.exits(3).says("stderr", &["no context \"nope\""]);
}

#[tokio::test]
async fn a_cluster_without_the_crds_exits_4_and_says_they_are_not_installed() {
    let bare = support::bare_kubeconfig().await;
    for args in [&["list"][..], &["describe", "x"]] {
        apikey("default", args)
            .env("KUBECONFIG", &bare)
            .run()
            .await
            .exits(4)
            .says("stderr", &["CRDs are not installed"]);
    }
}

// kubectl

#[tokio::test]
async fn kubectl_finds_the_plugin_on_the_path() {
    let ns = TestNamespace::new("plugin_kubectl").await;
    ns.create_key("found", json!({})).await;
    let plugin_dir = Path::new(PLUGIN).parent().expect("the plugin's directory");
    let cache = std::env::var_os("KEYWARD_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").expect("HOME");
        std::env::var_os("XDG_CACHE_HOME")
            .map_or_else(|| Path::new(&home).join(".cache"), PathBuf::from)
            .join("keyward")
    });
    let path = std::iter::once(plugin_dir.to_path_buf())
        .chain(std::iter::once(cache.join("bin")))
        .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()))
        .collect::<Vec<_>>();
    let path = std::env::join_paths(path).expect("a PATH");
    let through_kubectl = apikey(&ns.name, &["list"]).through_kubectl(path).run().await.exits(0);
    let direct = apikey(&ns.name, &["list"]).run().await.exits(0);
    assert_eq!(
        through_kubectl.header(),
        "NAME PHASE KEY ID SCOPES EXPIRES IN LAST USED CREATED BY AGE",
        "{through_kubectl}"
    );
    assert_eq!(through_kubectl.header(), direct.header(), "{direct}");
    assert_eq!(through_kubectl.rows_starting("found").len(), 1, "{through_kubectl}");
}

// no command shows a token it did not just issue

#[tokio::test]
async fn no_command_but_the_issuing_one_ever_prints_a_token() {
    let ns = TestNamespace::new("plugin_no_leak").await;
    let _controller = ns.controller(&[]);
    let created = apikey(&ns.name, &["create", "ci", "--scope", "orders.read"]).run().await.exits(0);
    let token = created.stdout.trim_end().to_string();
    let args = ["credential", "create", "billing", "--scope", "orders.read", "--token", "primary"];
    let credential = apikey(&ns.name, &args).run().await.exits(0);
    let cred_token = credential.stdout.trim_end().to_string();
    assert!(Token::parse(&token).is_ok() && Token::parse(&cred_token).is_ok(), "{created}\n{credential}");
    ns.wait_event("ci", "Issued").await;

    let mut runs = vec![created.stderr_only(), credential.stderr_only()];
    for args in [
        &["list"][..],
        &["list", "-A"],
        &["list", "-o", "yaml"],
        &["list", "-o", "json"],
        &["describe", "ci"],
        &["credential", "list", "-o", "yaml"],
        &["credential", "describe", "billing"],
    ] {
        runs.push(apikey(&ns.name, args).run().await.exits(0));
    }
    for secret in [&token, &cred_token] {
        runs.push(apikey(&ns.name, &["verify"]).stdin(secret).run().await.exits(0));
        runs.push(apikey(&ns.name, &["verify", "-o", "yaml"]).stdin(secret).run().await.exits(0));
    }
    for run in &runs {
        run.never_shows(&token);
        run.never_shows(&cred_token);
    }
}
