//! The Helm chart: it lints and renders what it promises (RBAC by `watchNamespaces`, a verifier
//! that cannot read Secrets, Pod Security `restricted` pods), it installs on the real API
//! server, and its ServiceAccounts' RBAC is all the controller and verifier need: both run here
//! as local processes under tokens the TokenRequest API issues to the chart's ServiceAccounts.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use keyward::api::{ApiKey, Credential, KeyUsage, Phase};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};
use support::command::{CommandLine, PLUGIN, Run};
use support::{DEADLINE, Operator, TestNamespace, wait_for};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/keyward");

// ---------------------------------------------------------------------------------------------
// Without an API server: the files, lint and rendering.
// ---------------------------------------------------------------------------------------------

#[test]
fn the_charts_crds_are_the_crds_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let chart_crds = root.join("charts/keyward/crds");
    assert_eq!(names(&chart_crds), names(&root.join("crds")), "the chart's crds/ holds other files than crds/");
    for name in names(&root.join("crds")) {
        let ours = std::fs::read(root.join("crds").join(&name)).expect("read crds/");
        let chart = std::fs::read(chart_crds.join(&name)).expect("read the chart's crds/");
        assert!(ours == chart, "charts/keyward/crds/{name} differs from crds/{name}: run `make crds` and commit");
    }
}

#[tokio::test]
async fn helm_lint_passes_and_the_schema_refuses_unknown_and_bad_values() {
    for values in [
        &[][..],
        &["--set", "watchNamespaces={team-a,team-b}"],
        &["--set", "controller.leaderElection.enabled=false", "--set", "verifier.replicas=1"],
        &["--set", "serviceMonitor.enabled=true", "--set", "verifier.trustedProxies={10.0.0.0/8,192.0.2.7}"],
        &["--set", "controller.maxExpiry=365d", "--set", "image.tag=dev"],
        &["--set", "verifier.issuer=https://keys.example.com", "--set", "verifier.accessTokenTTL=5m"],
    ] {
        let lint = helm(&[&["lint", CHART, "--strict"], values].concat()).await;
        assert!(lint.success(), "helm lint {values:?} failed:\n{lint}");
    }
    for (values, named) in [
        (&["--set", "controller.replica=3"][..], "replica"),
        (&["--set", "controller.defaultExpiry=forever"], "defaultExpiry"),
        (&["--set", "watchNamespaces={Not_A_Namespace}"], "watchNamespaces"),
        (&["--set", "logFormat=xml"], "logFormat"),
        (&["--set", "controller.signing.rotation=1month"], "rotation"),
        (&["--set", "controller.signing.secret=Not_A_Name"], "secret"),
        (&["--set", "verifier.issuer=keys.example.com"], "issuer"),
        (&["--set", "verifier.sessionMax=a day"], "sessionMax"),
    ] {
        let lint = helm(&[&["lint", CHART], values].concat()).await;
        assert!(!lint.success(), "helm lint accepted {values:?}");
        assert!(
            lint.stdout.contains(named) || lint.stderr.contains(named),
            "the refusal of {values:?} does not name {named}:\n{lint}"
        );
    }
}

#[tokio::test]
async fn by_default_the_roles_are_cluster_wide_named_after_the_release_and_the_verifier_never_reads_secrets() {
    let objects = render("kw-one", "keyward-system", &[]).await;
    assert_eq!(
        names_of(&objects, "ClusterRole"),
        [
            "kw-one-keyward-controller",
            "kw-one-keyward-verifier",
            "kw-one-keyward-webhook",
            "kw-one-keyward-view",
            "kw-one-keyward-edit",
            "kw-one-scopes-grant-all",
        ]
        .map(|n| n.to_string())
        .into(),
        "one ClusterRole per component, named after the release, the two user roles and grant-all"
    );
    for binding in of_kind(&objects, "ClusterRoleBinding") {
        let name = binding["metadata"]["name"].as_str().expect("name");
        assert_eq!(binding["roleRef"]["name"], name);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": name, "namespace": "keyward-system"}])
        );
    }
    assert_eq!(names_of(&objects, "ClusterRoleBinding").len(), 3, "grant-all is bound to nobody");
    assert_eq!(
        names_of(&objects, "Role"),
        ["kw-one-keyward-controller-leader-election", "kw-one-keyward-controller-signing-keys"]
            .map(String::from)
            .into(),
        "only the Lease and the signing keys are namespaced"
    );

    let controller = rules(named(&objects, "ClusterRole", "kw-one-keyward-controller"));
    assert_eq!(controller, controller_rules(), "the controller's ClusterRole");
    let verifier = rules(named(&objects, "ClusterRole", "kw-one-keyward-verifier"));
    assert_eq!(verifier, verifier_rules(), "the verifier's ClusterRole");
    assert!(verifier.iter().all(|(_, resource, _)| !resource.contains("secret")), "{verifier:?}");

    // The user roles: aggregated into view (read) and edit/admin (write), never status or Secrets.
    let view = named(&objects, "ClusterRole", "kw-one-keyward-view");
    let reads: BTreeSet<_> = ["get", "list", "watch"]
        .iter()
        .flat_map(|verb| {
            ["apikeys", "credentials", "keyusages"].map(|r| ("keyward.io".to_string(), r.to_string(), verb.to_string()))
        })
        .collect();
    assert_eq!(rules(view), reads, "viewers read keys and their usage");
    let edit = named(&objects, "ClusterRole", "kw-one-keyward-edit");
    let writes: BTreeSet<_> = ["create", "update", "patch", "delete", "deletecollection"]
        .iter()
        .flat_map(|verb| {
            ["apikeys", "credentials"].map(|r| ("keyward.io".to_string(), r.to_string(), verb.to_string()))
        })
        .collect();
    assert_eq!(rules(edit), writes, "editors write keys, not their status");
    let aggregated = |role: &Value, to: &str| {
        role["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{to}")] == "true"
    };
    assert!(["view", "edit", "admin"].iter().all(|to| aggregated(view, to)), "{view}");
    assert!(["edit", "admin"].iter().all(|to| aggregated(edit, to)) && !aggregated(edit, "view"), "{edit}");
    let without = render("kw-one", "keyward-system", &["--set", "userRoles.aggregate=false"]).await;
    assert_eq!(names_of(&without, "ClusterRole").len(), 4, "userRoles.aggregate=false renders no user roles");
    for role in [view, edit] {
        assert!(!rules(role).iter().any(|(_, _, verb)| verb == "grant"), "grant is never aggregated: {role}");
    }

    // Another release gets its own cluster-wide names: two installs never share a ClusterRole.
    let other = render("kw-two", "elsewhere", &[]).await;
    let shared: Vec<_> =
        names_of(&other, "ClusterRole").intersection(&names_of(&objects, "ClusterRole")).cloned().collect();
    assert!(shared.is_empty(), "{shared:?}");
}

#[tokio::test]
async fn token_exchange_is_off_by_default_and_on_reads_only_the_signing_secret() {
    let off = render("kw", "keyward-system", &[]).await;
    assert!(!container_args(&off, "verifier").iter().any(|a| a.starts_with("--issuer")));
    assert!(!names_of(&off, "Role").iter().any(|n| n.contains("verifier")), "no Secret access with exchange off");

    let on = render(
        "kw",
        "keyward-system",
        &["--set", "verifier.issuer=https://keys.example.com", "--set", "verifier.sessionMax=8h"],
    )
    .await;
    let args = container_args(&on, "verifier");
    for expected in [
        "--issuer=https://keys.example.com",
        "--access-token-ttl=15m",
        "--refresh-grace=1h",
        "--session-max=8h",
        "--signing-secret=keyward-signing-keys",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} missing from {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--audience")), "the audience defaults to the issuer: {args:?}");
    let env = &deployment(&on, "verifier")["spec"]["template"]["spec"]["containers"][0]["env"];
    let pod_namespace =
        env.as_array().expect("env").iter().find(|e| e["name"] == "POD_NAMESPACE").expect("POD_NAMESPACE");
    assert_eq!(pod_namespace["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");

    let role = named(&on, "Role", "kw-keyward-verifier-signing-keys");
    assert_eq!(role["metadata"]["namespace"], "keyward-system", "the release namespace only");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["keyward-signing-keys"], "verbs": ["get", "list", "watch"]}]),
        "the one Secret, read only"
    );
    let binding = named(&on, "RoleBinding", "kw-keyward-verifier-signing-keys");
    assert_eq!(binding["roleRef"]["name"], "kw-keyward-verifier-signing-keys");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "kw-keyward-verifier", "namespace": "keyward-system"}])
    );
    let verifier = rules(named(&on, "ClusterRole", "kw-keyward-verifier"));
    assert_eq!(verifier, verifier_rules(), "the cluster-wide rules still name no Secret");

    let audience = render(
        "kw",
        "keyward-system",
        &["--set", "verifier.issuer=https://keys.example.com", "--set", "verifier.audience=orders-api"],
    )
    .await;
    assert!(container_args(&audience, "verifier").iter().any(|a| a == "--audience=orders-api"));
}

#[tokio::test]
async fn watch_namespaces_turn_the_roles_into_a_role_per_namespace_and_nothing_cluster_wide() {
    let objects = render("kw", "keyward-system", &["--set", "watchNamespaces={team-a,team-b}"]).await;
    // Nothing cluster-wide but what admission is (webhooks, SubjectAccessReviews and the scopes
    // they check are cluster-scoped); webhook.enabled=false renders none of it.
    let webhook: BTreeSet<String> = ["kw-keyward-webhook".to_string()].into();
    assert_eq!(
        names_of(&objects, "ClusterRole"),
        ["kw-keyward-webhook", "kw-scopes-grant-all"].map(String::from).into()
    );
    assert_eq!(names_of(&objects, "ClusterRoleBinding"), webhook);
    let bare =
        render("kw", "keyward-system", &["--set", "watchNamespaces={team-a}", "--set", "webhook.enabled=false"]).await;
    assert!(of_kind(&bare, "ClusterRole").is_empty() && of_kind(&bare, "ClusterRoleBinding").is_empty());
    assert!(of_kind(&bare, "ValidatingWebhookConfiguration").is_empty());
    let placed = |kind: &str| -> BTreeSet<(String, String)> {
        of_kind(&objects, kind)
            .iter()
            .map(|o| (o["metadata"]["namespace"].as_str().expect("namespace").to_string(), name(o).to_string()))
            .collect()
    };
    let expected: BTreeSet<(String, String)> = [
        ("keyward-system", "kw-keyward-controller-leader-election"),
        ("keyward-system", "kw-keyward-controller-signing-keys"),
        ("team-a", "kw-keyward-controller"),
        ("team-a", "kw-keyward-verifier"),
        ("team-b", "kw-keyward-controller"),
        ("team-b", "kw-keyward-verifier"),
    ]
    .map(|(ns, n)| (ns.to_string(), n.to_string()))
    .into();
    assert_eq!(placed("Role"), expected);
    assert_eq!(placed("RoleBinding"), expected);
    let release_roles = |r: &&Value| name(r).ends_with("leader-election") || name(r).ends_with("signing-keys");
    for role in of_kind(&objects, "Role").into_iter().filter(|r| !release_roles(r)) {
        let want = if name(role).ends_with("controller") { controller_rules() } else { verifier_rules() };
        assert_eq!(rules(role), want, "Role {} in {}", name(role), role["metadata"]["namespace"]);
    }
    for binding in of_kind(&objects, "RoleBinding") {
        let subject = &binding["subjects"][0];
        assert_eq!(subject["namespace"], "keyward-system", "the ServiceAccounts live in the release namespace");
        let account = name(binding).trim_end_matches("-leader-election").trim_end_matches("-signing-keys");
        assert_eq!(subject["name"].as_str(), Some(account));
    }
    for component in ["controller", "verifier"] {
        let args = container_args(&objects, component);
        assert!(args.contains(&"--namespaces=team-a,team-b".to_string()), "{component}: {args:?}");
    }

    let all = render("kw", "keyward-system", &[]).await;
    for component in ["controller", "verifier"] {
        let args = container_args(&all, component);
        assert!(!args.iter().any(|a| a.starts_with("--namespaces")), "{component} watches all: {args:?}");
    }
}

#[tokio::test]
async fn the_controller_runs_two_replicas_with_leader_election_else_one_without_the_flag() {
    let objects = render("kw", "keyward-system", &[]).await;
    let controller = deployment(&objects, "controller");
    assert_eq!(controller["spec"]["replicas"], 2);
    assert!(container_args(&objects, "controller").contains(&"--leader-election".to_string()));
    let env = &controller["spec"]["template"]["spec"]["containers"][0]["env"];
    let from_field = |var: &str| {
        env.as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == var)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(from_field("POD_NAME"), Some(json!("metadata.name")));
    assert_eq!(from_field("POD_NAMESPACE"), Some(json!("metadata.namespace")));
    let lease = rules(named(&objects, "Role", "kw-keyward-controller-leader-election"));
    let lease_rules: BTreeSet<(String, String, String)> = ["create", "get", "update", "patch", "delete"]
        .map(|verb| ("coordination.k8s.io".to_string(), "leases".to_string(), verb.to_string()))
        .into();
    assert_eq!(lease, lease_rules);
    // Each release campaigns for its own Lease, and may touch only that one.
    assert!(container_args(&objects, "controller").contains(&"--lease-name=kw-keyward-controller".to_string()));
    let role = named(&objects, "Role", "kw-keyward-controller-leader-election");
    let named_leases: Vec<&serde_json::Value> =
        role["rules"].as_array().expect("rules").iter().filter_map(|r| r.get("resourceNames")).collect();
    assert_eq!(named_leases, [&json!(["kw-keyward-controller"])]);
    let other = render("other", "keyward-system", &[]).await;
    assert!(container_args(&other, "controller").contains(&"--lease-name=other-keyward-controller".to_string()));

    let single = render("kw", "keyward-system", &["--set", "controller.leaderElection.enabled=false"]).await;
    let controller = deployment(&single, "controller");
    assert_eq!(controller["spec"]["replicas"], 1);
    assert_eq!(controller["spec"]["strategy"]["type"], "Recreate", "never two controllers during a rollout");
    assert!(!container_args(&single, "controller").contains(&"--leader-election".to_string()));
    assert_eq!(
        names_of(&single, "Role"),
        ["kw-keyward-controller-signing-keys".to_string()].into(),
        "no Lease role without leader election"
    );
}

#[tokio::test]
async fn the_controller_keeps_the_signing_secret_of_its_values_and_may_touch_only_that_one_in_its_namespace() {
    let objects = render("kw", "keyward-system", &[]).await;
    let args = container_args(&objects, "controller");
    for flag in [
        "--signing-secret=keyward-signing-keys",
        "--signing-key-rotation=30d",
        "--signing-key-publish-ahead=1h",
        "--signing-key-retain=26h",
    ] {
        assert!(args.contains(&flag.to_string()), "{flag} not in {args:?}");
    }
    let role = named(&objects, "Role", "kw-keyward-controller-signing-keys");
    assert_eq!(role["metadata"]["namespace"], "keyward-system");
    let secrets: BTreeSet<(String, String, String)> = ["create", "get", "list", "watch", "update"]
        .map(|verb| (String::new(), "secrets".to_string(), verb.to_string()))
        .into();
    assert_eq!(rules(role), secrets);
    // A create cannot be limited to a name; everything else is limited to the one Secret.
    let rules = role["rules"].as_array().expect("rules");
    for rule in rules {
        match rule.get("resourceNames") {
            Some(names) => assert_eq!(names, &json!(["keyward-signing-keys"]), "{rule}"),
            None => assert_eq!(rule["verbs"], json!(["create"]), "only create is unnamed: {rule}"),
        }
    }
    let binding = named(&objects, "RoleBinding", "kw-keyward-controller-signing-keys");
    assert_eq!(binding["roleRef"]["name"], "kw-keyward-controller-signing-keys");
    assert_eq!(binding["subjects"][0]["name"], "kw-keyward-controller");

    let values = [
        "--set",
        "controller.signing.secret=team-keys",
        "--set",
        "controller.signing.rotation=7d",
        "--set",
        "controller.signing.publishAhead=2h",
        "--set",
        "controller.signing.retain=3h",
    ];
    let custom = render("kw", "keyward-system", &values).await;
    let args = container_args(&custom, "controller");
    for flag in [
        "--signing-secret=team-keys",
        "--signing-key-rotation=7d",
        "--signing-key-publish-ahead=2h",
        "--signing-key-retain=3h",
    ] {
        assert!(args.contains(&flag.to_string()), "{flag} not in {args:?}");
    }
    let role = named(&custom, "Role", "kw-keyward-controller-signing-keys");
    assert!(role["rules"].as_array().expect("rules").iter().any(|r| r["resourceNames"] == json!(["team-keys"])));
}

#[tokio::test]
async fn pods_meet_the_restricted_pod_security_profile() {
    // The local API server (1.20) has no PodSecurity admission and runs no pods, so the
    // profile is checked here, on what the chart renders.
    for values in [&[][..], &["--set", "watchNamespaces={a}", "--set", "controller.leaderElection.enabled=false"]] {
        let objects = render("kw", "keyward-system", values).await;
        for component in ["controller", "verifier", "webhook"] {
            let pod = &deployment(&objects, component)["spec"]["template"]["spec"];
            let context = &pod["securityContext"];
            assert_eq!(context["runAsNonRoot"], true, "{component}");
            assert!(context["runAsUser"].as_i64().is_some_and(|uid| uid != 0), "{component}: a non-root uid");
            assert_eq!(context["seccompProfile"]["type"], "RuntimeDefault", "{component}");
            for forbidden in ["hostNetwork", "hostPID", "hostIPC"] {
                assert!(pod.get(forbidden).is_none(), "{component}: {forbidden}");
            }
            // The webhook mounts its certificate's Secret; nothing else mounts anything.
            let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
            let secrets_only =
                volumes.iter().all(|v| v.as_object().is_some_and(|v| v.keys().all(|k| k == "name" || k == "secret")));
            assert!(secrets_only && (component == "webhook" || volumes.is_empty()), "{component}: {volumes:?}");
            let containers = pod["containers"].as_array().expect("containers");
            assert!(pod.get("initContainers").is_none() && containers.len() == 1, "{component}");
            let context = &containers[0]["securityContext"];
            assert_eq!(context["allowPrivilegeEscalation"], false, "{component}");
            assert_eq!(context["readOnlyRootFilesystem"], true, "{component}");
            assert_eq!(context["runAsNonRoot"], true, "{component}");
            assert_ne!(context["privileged"], true, "{component}");
            assert_eq!(context["capabilities"], json!({"drop": ["ALL"]}), "{component}: every capability dropped");
            assert_eq!(context["seccompProfile"]["type"], "RuntimeDefault", "{component}");
            for port in containers[0]["ports"].as_array().expect("ports") {
                assert!(port.get("hostPort").is_none(), "{component}");
            }
        }
    }
}

#[tokio::test]
async fn the_verifier_has_a_service_a_disruption_budget_probes_and_the_default_image() {
    let objects = render("kw", "keyward-system", &[]).await;
    let app_version = chart_app_version();
    for component in ["controller", "verifier"] {
        let container = &deployment(&objects, component)["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], format!("ghcr.io/keyward/keyward:{app_version}"), "{component}");
        assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http"}));
        assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "http"}));
        assert_eq!(container["ports"][0], json!({"name": "http", "containerPort": 8080, "protocol": "TCP"}));
        assert!(container["resources"]["requests"]["memory"].is_string(), "{component}: a memory request");
        assert!(container["resources"]["limits"]["memory"].is_string(), "{component}: a memory limit");
        let args = container_args(&objects, component);
        assert_eq!(args[0], component);
        assert!(args.contains(&"--listen=0.0.0.0:8080".to_string()) && args.contains(&"--log-format=json".to_string()));
    }
    let verifier = deployment(&objects, "verifier");
    assert_eq!(verifier["spec"]["replicas"], 2);
    let pod_labels = &verifier["spec"]["template"]["metadata"]["labels"];
    let service = named(&objects, "Service", "kw-keyward-verifier");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}])
    );
    assert_selects(&service["spec"]["selector"], pod_labels, "the Service");
    let budget = named(&objects, "PodDisruptionBudget", "kw-keyward-verifier");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_selects(&budget["spec"]["selector"]["matchLabels"], pod_labels, "the PodDisruptionBudget");
    assert!(of_kind(&objects, "ServiceMonitor").is_empty(), "no ServiceMonitor unless asked");

    let one = render("kw", "keyward-system", &["--set", "verifier.replicas=1"]).await;
    assert!(
        !names_of(&one, "PodDisruptionBudget").contains("kw-keyward-verifier"),
        "a budget of one replica would block every drain"
    );

    let tuned = render(
        "kw",
        "keyward-system",
        &["--set", "serviceMonitor.enabled=true", "--set", "verifier.trustedProxies={10.0.0.0/8,192.0.2.7}"],
    )
    .await;
    assert!(container_args(&tuned, "verifier").contains(&"--trusted-proxies=10.0.0.0/8,192.0.2.7".to_string()));
    let monitor = &of_kind(&tuned, "ServiceMonitor")[0];
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    let scraped: Vec<&Value> = of_kind(&tuned, "Service")
        .into_iter()
        .filter(|s| selects(&monitor["spec"]["selector"]["matchLabels"], &s["metadata"]["labels"]))
        .collect();
    assert_eq!(scraped.len(), 2, "the ServiceMonitor scrapes the controller and the verifier");
    let controller_labels = &deployment(&tuned, "controller")["spec"]["template"]["metadata"]["labels"];
    assert!(scraped.iter().any(|s| selects(&s["spec"]["selector"], controller_labels)), "a Service for the controller");
}

#[tokio::test]
async fn the_webhook_fails_closed_with_a_ca_bundle_that_signed_its_certificate() {
    let objects = render("kw", "keyward-system", &[]).await;
    let webhook = deployment(&objects, "webhook");
    assert_eq!(webhook["spec"]["replicas"], 2);
    assert!(names_of(&objects, "PodDisruptionBudget").contains("kw-keyward-webhook"));
    let args = container_args(&objects, "webhook");
    for arg in ["--tls-cert-file=/tls/tls.crt", "--tls-key-file=/tls/tls.key", "--grants=enforce"] {
        assert!(args.contains(&arg.to_string()), "{args:?}");
    }
    let container = &webhook["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "https", "scheme": "HTTPS"}));
    let service = named(&objects, "Service", "kw-keyward-webhook");
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    // It may ask SubjectAccessReviews and nothing else.
    let asks: BTreeSet<_> =
        [("authorization.k8s.io".to_string(), "subjectaccessreviews".to_string(), "create".to_string())].into();
    assert_eq!(rules(named(&objects, "ClusterRole", "kw-keyward-webhook")), asks);
    let grant_all: BTreeSet<_> = [("keyward.io".to_string(), "scopes".to_string(), "grant".to_string())].into();
    assert_eq!(rules(named(&objects, "ClusterRole", "kw-scopes-grant-all")), grant_all);
    assert!(
        of_kind(&objects, "ClusterRoleBinding")
            .iter()
            .chain(of_kind(&objects, "RoleBinding").iter())
            .all(|b| b["roleRef"]["name"] != "kw-scopes-grant-all"),
        "grant-all is bound to nobody"
    );

    let secret = named(&objects, "Secret", "kw-keyward-webhook-tls");
    let ca_b64 = secret["data"]["ca.crt"].as_str().expect("ca.crt");
    for kind in ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"] {
        let config = named(&objects, kind, "kw-keyward-webhook");
        let hook = &config["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Fail", "{kind}");
        assert_eq!(hook["sideEffects"], "None", "{kind}");
        assert!(hook["timeoutSeconds"].as_i64().is_some_and(|t| t <= 10), "{kind}: a short timeout");
        assert_eq!(hook["rules"][0]["resources"], json!(["apikeys", "credentials"]), "{kind}");
        assert_eq!(hook["rules"][0]["operations"], json!(["CREATE", "UPDATE"]), "{kind}");
        assert_eq!(hook["clientConfig"]["service"]["name"], "kw-keyward-webhook", "{kind}");
        assert_eq!(hook["clientConfig"]["caBundle"].as_str(), Some(ca_b64), "{kind}: the bundle is the Secret's CA");
    }
    // The CA signed the served certificate, for the Service's names.
    let dir = tempfile::tempdir().expect("temp dir");
    let decode = |field: &str| -> Vec<u8> {
        serde_json::from_value::<k8s_openapi::ByteString>(secret["data"][field].clone()).expect("base64").0
    };
    std::fs::write(dir.path().join("ca.crt"), decode("ca.crt")).expect("write");
    std::fs::write(dir.path().join("tls.crt"), decode("tls.crt")).expect("write");
    let file = |name: &str| dir.path().join(name).to_str().expect("UTF-8").to_string();
    let verify = CommandLine::new("openssl")
        .args(&["verify", "-CAfile", &file("ca.crt"), "-verify_hostname", "kw-keyward-webhook.keyward-system.svc"])
        .args(&[file("tls.crt")])
        .run()
        .await;
    assert!(verify.success(), "{verify}");

    // With cert-manager: its Certificate, the CA injected, no Secret of the chart's own.
    let managed = render("kw", "keyward-system", &["--set", "webhook.certManager.enabled=true"]).await;
    assert!(names_of(&managed, "Secret").is_empty());
    assert!(names_of(&managed, "Certificate").contains("kw-keyward-webhook"));
    // Its own long-lived CA signs the serving certificate, so a renewal keeps the caBundle.
    assert_eq!(named(&managed, "Certificate", "kw-keyward-webhook-ca")["spec"]["isCA"], true);
    assert_eq!(
        named(&managed, "Certificate", "kw-keyward-webhook")["spec"]["issuerRef"]["name"],
        "kw-keyward-webhook-ca"
    );
    for kind in ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"] {
        let config = named(&managed, kind, "kw-keyward-webhook");
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "keyward-system/kw-keyward-webhook"
        );
        assert!(config["webhooks"][0]["clientConfig"].get("caBundle").is_none(), "{kind}");
    }
    let off = render("kw", "keyward-system", &["--set", "webhook.enabled=false"]).await;
    assert!(
        of_kind(&off, "ValidatingWebhookConfiguration").is_empty()
            && of_kind(&off, "MutatingWebhookConfiguration").is_empty()
    );
    assert!(
        !names_of(&off, "ClusterRole").contains("kw-scopes-grant-all"),
        "without the webhook nothing checks grants"
    );
}

// ---------------------------------------------------------------------------------------------
// On the API server: helm install, then the processes under the chart's identities.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_charts_rbac_is_enough_for_the_whole_lifecycle() {
    let ns = TestNamespace::new("chart-lifecycle").await;
    let release = Release::install(&ns.name, &[]).await;
    let controller_id = release.identity("controller").await;
    let verifier_id = release.identity("verifier").await;
    // As the chart runs them: two controller replicas sharing the Lease, and the verifier.
    let controllers = [0, 1].map(|replica| release.run("controller", &controller_id, &ns.name, replica));
    let verifier = release.run("verifier", &verifier_id, &ns.name, 0);
    verifier.wait_ready().await;

    // Issue: create-only Secret, status by server-side apply; the Secret watch and fresh GET.
    ns.create_key("first", json!({"secretTemplate": {"labels": {"team": "a"}}})).await;
    let issued = ns.wait_phase("first", Phase::Active).await.status.expect("status");
    let token = ns.token_of("first-apikey").await;
    verifier.wait_code(&token, "VALID", DEADLINE).await;

    // A template change patches the Secret's labels.
    ns.patch_spec("first", json!({"secretTemplate": {"labels": {"team": "b"}}})).await;
    ns.wait_secret("first-apikey", "label team=b", |s| s.labels().get("team").map(String::as_str) == Some("b")).await;

    // A tampered token is replaced (update) and announced (events.k8s.io create).
    let mut secret = ns.secrets().get("first-apikey").await.expect("get the Secret");
    secret.data.get_or_insert_default().insert("token".into(), k8s_openapi::ByteString(b"tampered".to_vec()));
    ns.secrets().replace("first-apikey", &PostParams::default(), &secret).await.expect("tamper");
    let reissued = ns.wait_new_token("first", &issued.record.token_hash).await;
    assert_ne!(reissued.record.token_hash, issued.record.token_hash);
    ns.wait_event("first", "TokenReissued").await;
    let token = ns.token_of("first-apikey").await;
    verifier.wait_code(&token, "VALID", DEADLINE).await;

    ns.patch_spec("first", json!({"state": "Inactive"})).await;
    verifier.wait_code(&token, "INACTIVE", DEADLINE).await;
    ns.wait_phase("first", Phase::Inactive).await;

    ns.delete_key("first").await;
    ns.wait_secret_gone("first-apikey").await;
    verifier.wait_code(&token, "NOT_FOUND", DEADLINE).await;

    // A Credential: a LIST of its Secrets, two tokens, then one removed (delete).
    ns.create_credential(
        "billing",
        json!({"scopes": ["orders.read"], "tokens": [{"name": "primary"}, {"name": "next"}]}),
    )
    .await;
    ns.wait_credential("billing", "two active tokens", |s| {
        s.phase == Some(Phase::Active) && s.active_tokens == Some(2)
    })
    .await;
    let primary = ns.token_of("billing-primary").await;
    let next = ns.token_of("billing-next").await;
    verifier.wait_code(&next, "VALID", DEADLINE).await;
    ns.set_tokens("billing", json!([{"name": "next"}])).await;
    ns.wait_secret_gone("billing-primary").await;
    verifier.wait_code(&primary, "NOT_FOUND", DEADLINE).await;
    verifier.wait_code(&next, "VALID", DEADLINE).await;

    // Leader election: one of the two replicas holds the release's Lease in its namespace.
    let lease_name = format!("{}-controller", release.fullname);
    let lease = Api::<Lease>::namespaced(ns.client.clone(), &ns.name)
        .get(&lease_name)
        .await
        .unwrap_or_else(|e| panic!("the controllers' Lease {lease_name} in the release namespace: {e}"));
    let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    assert!(holder.starts_with(&format!("{}-controller-", release.fullname)), "Lease held by {holder:?}");

    // Cluster-wide, as the default chart grants.
    list_allowed::<ApiKey>(&controller_id.client, None).await;
    list_allowed::<Secret>(&controller_id.client, None).await;
    list_allowed::<Credential>(&verifier_id.client, None).await;

    for (what, process) in
        [("controller 0", &controllers[0]), ("controller 1", &controllers[1]), ("verifier", &verifier)]
    {
        let logs = process.logs().to_lowercase();
        assert!(!logs.contains("forbidden"), "{what} was refused something by RBAC:\n{}", process.logs());
    }
}

/// An AdmissionReview of a create of an ApiKey granting `scope`, by `user`.
fn review_of_create(namespace: &str, user: &str, scope: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0e5d4d8a-1111-4c3b-9f2e-000000000001",
            "kind": {"group": "keyward.io", "version": "v1alpha1", "kind": "ApiKey"},
            "resource": {"group": "keyward.io", "version": "v1alpha1", "resource": "apikeys"},
            "name": "k", "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": {"apiVersion": "keyward.io/v1alpha1", "kind": "ApiKey",
                       "metadata": {"name": "k", "namespace": namespace, "annotations": {"keyward.io/created-by": user}},
                       "spec": {"scopes": [scope]}},
            "oldObject": null, "dryRun": false,
        },
    })
}

#[tokio::test]
async fn the_webhook_serves_the_charts_certificate_asks_reviews_as_its_identity_and_nothing_else() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Namespace;
    let ns = TestNamespace::new("chart-webhook").await;
    // Its configurations admit this namespace only: no pod runs here to answer them.
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"keyward-chart-webhook": ns.name}}})),
        )
        .await
        .expect("label the namespace");
    let selector = format!("webhook.namespaceSelector.matchLabels.keyward-chart-webhook={}", ns.name);
    let release = Release::install(&ns.name, &["--set", &selector]).await;
    let name = format!("{}-webhook", release.fullname);
    let secrets = Api::<Secret>::namespaced(ns.client.clone(), &ns.name);
    let ca = |secret: &Secret| secret.data.as_ref().and_then(|d| d.get("ca.crt")).expect("ca.crt").clone();
    let tls = secrets.get(&format!("{name}-tls")).await.expect("the chart's TLS Secret");
    let config =
        Api::<ValidatingWebhookConfiguration>::all(ns.client.clone()).get(&name).await.expect("the configuration");
    let bundle = config.webhooks.as_ref().and_then(|w| w[0].client_config.ca_bundle.clone()).expect("caBundle");
    assert_eq!(bundle, ca(&tls), "the installed caBundle is the CA of the installed Secret");

    // Fail closed: with no webhook answering, no key is written in its namespaces.
    match ns.keys().create(&PostParams::default(), &support::key("unchecked", json!({}))).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 500, "{}", status.message),
        other => panic!("a key was written with no webhook answering: {other:?}"),
    }
    // An upgrade keeps the CA (and so every caBundle that trusts it).
    let upgrade =
        helm(&["upgrade", &release.name, CHART, "--namespace", &ns.name, "--set", &selector, "--timeout", "60s"]).await;
    assert!(upgrade.success(), "helm upgrade:\n{upgrade}");
    assert_eq!(ca(&secrets.get(&format!("{name}-tls")).await.expect("the Secret")), ca(&tls), "a new CA on upgrade");

    // The chart's ServiceAccount may ask SubjectAccessReviews, and read nothing.
    let identity = release.identity("webhook").await;
    assert_forbidden(
        Api::<Secret>::namespaced(identity.client.clone(), &ns.name).list(&ListParams::default()).await,
        "list Secrets",
    );
    assert_forbidden(
        Api::<ApiKey>::namespaced(identity.client.clone(), &ns.name).list(&ListParams::default()).await,
        "list ApiKeys",
    );

    // Run as that identity, serving the installed certificate, and ask it as the API server would.
    let dir = tempfile::tempdir().expect("temp dir");
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        let bytes = tls.data.as_ref().and_then(|d| d.get(file)).expect(file).0.clone();
        std::fs::write(dir.path().join(file), bytes).expect("write");
    }
    let path = |file: &str| dir.path().join(file).to_str().expect("UTF-8").to_string();
    let kubeconfig = identity.kubeconfig.path().to_str().expect("UTF-8").to_string();
    let (cert, key) = (format!("--tls-cert-file={}", path("tls.crt")), format!("--tls-key-file={}", path("tls.key")));
    let webhook = Operator::run("webhook", &ns.name, &[&cert, &key], &[("KUBECONFIG", &kubeconfig)]);
    let addr = webhook.listen_addr().await;
    let port = addr.rsplit(':').next().expect("a port");
    let host = format!("{name}.{}.svc", ns.name);
    let ask = async |user: &str| -> Value {
        let review = review_of_create(&ns.name, user, "orders.read").to_string();
        let out = CommandLine::new("curl")
            .args(&["-sS", "--max-time", "10", "--cacert", &path("ca.crt")])
            .args(&["--resolve", &format!("{host}:{port}:127.0.0.1"), "-H", "Content-Type: application/json"])
            .args(&["--data-binary", &review, &format!("https://{host}:{port}/validate")])
            .deadline(Duration::from_secs(20))
            .run()
            .await;
        assert!(out.success(), "the served certificate is not the chart's CA's:\n{out}");
        serde_json::from_str::<Value>(&out.stdout).expect("an AdmissionReview")["response"].clone()
    };
    let refused = ask("keyward-user-1").await;
    assert_eq!(refused["allowed"], false, "{refused}");
    let message = refused["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("user \"keyward-user-1\" may not grant scope \"orders.read\""),
        "the review ran: {refused}"
    );
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": format!("{}-orders", ns.name)},
        "rules": [{"apiGroups": ["keyward.io"], "resources": ["scopes"], "verbs": ["grant"], "resourceNames": ["orders.>"]}]}))
    .expect("role");
    Api::<ClusterRole>::all(ns.client.clone()).create(&PostParams::default(), &role).await.expect("ClusterRole");
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "orders", "namespace": ns.name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{}-orders", ns.name)},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "keyward-user-1"}]}))
    .expect("binding");
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding");
    // The webhook caches answers for 10 s; the authorizer learns of the binding from a watch.
    wait_for("the granted user allowed", Duration::from_secs(40), || async {
        let answer = ask("keyward-user-1").await;
        if answer["allowed"] == true { Ok(()) } else { Err(answer) }
    })
    .await;
}

#[tokio::test]
async fn the_verifiers_identity_cannot_read_secrets_or_write_status() {
    let ns = TestNamespace::new("chart-verifier-rbac").await;
    let release = Release::install(&ns.name, &[]).await;
    let verifier = release.identity("verifier").await;
    let controller = release.identity("controller").await;
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "database"}, "stringData": {"password": "x"}}))
            .expect("Secret");
    ns.secrets().create(&PostParams::default(), &secret).await.expect("create a Secret");
    ns.create_key("minted", json!({})).await;

    let secrets = Api::<Secret>::namespaced(verifier.client.clone(), &ns.name);
    assert_forbidden(secrets.get("database").await, "GET a Secret");
    assert_forbidden(secrets.list(&ListParams::default()).await, "LIST Secrets");
    assert_forbidden(
        Api::<Secret>::all(verifier.client.clone()).list(&ListParams::default()).await,
        "LIST all Secrets",
    );
    // Whoever writes status.tokenHash mints keys the verifier accepts.
    let keys = Api::<ApiKey>::namespaced(verifier.client.clone(), &ns.name);
    let mint = Patch::Merge(json!({"status": {"tokenHash": format!("sha256:{}", "0".repeat(64))}}));
    assert_forbidden(keys.patch_status("minted", &PatchParams::default(), &mint).await, "patch ApiKey status");
    assert_forbidden(keys.create(&PostParams::default(), &support::key("more", json!({}))).await, "create an ApiKey");
    // What it needs, it has.
    list_allowed::<ApiKey>(&verifier.client, Some(&ns.name)).await;
    let minted = keys.get("minted").await.expect("the verifier reads ApiKeys");
    // KeyUsages: created, then their status patched (by the usage recorder); never deleted or
    // listed.
    let usages = Api::<KeyUsage>::namespaced(verifier.client.clone(), &ns.name);
    let usage: KeyUsage = serde_json::from_value(json!({
        "metadata": {"name": "apikey.minted", "ownerReferences": [{
            "apiVersion": "keyward.io/v1alpha1", "kind": "ApiKey", "name": "minted",
            "uid": minted.metadata.uid, "controller": true,
        }]},
        "spec": {"kind": "ApiKey", "name": "minted"},
    }))
    .expect("KeyUsage");
    usages.create(&PostParams::default(), &usage).await.expect("the verifier creates a KeyUsage");
    let used = Patch::Merge(json!({"status": {"lastUsedAt": "2026-12-01T10:06:00Z"}}));
    usages.patch_status("apikey.minted", &PatchParams::default(), &used).await.expect("the verifier writes its status");
    usages.get("apikey.minted").await.expect("the verifier reads a KeyUsage");
    assert_forbidden(usages.delete("apikey.minted", &Default::default()).await.map(|_| ()), "delete a KeyUsage");
    assert_forbidden(usages.list(&ListParams::default()).await, "LIST KeyUsages");

    // The same reads with the controller's identity succeed: the refusals are the role's.
    Api::<Secret>::namespaced(controller.client.clone(), &ns.name).get("database").await.expect("controller GETs");
}

#[tokio::test]
async fn namespace_editors_manage_keys_with_kubectl_apikey_and_viewers_only_read_them() {
    let ns = TestNamespace::new("chart-user-roles").await;
    let release = Release::install(&ns.name, &[]).await;
    let controller_id = release.identity("controller").await;
    let _controller = release.run("controller", &controller_id, &ns.name, 0);
    // keyward-user-2 may edit the namespace, keyward-user-3 may view it: the built-in roles.
    for (user, role) in [("keyward-user-2", "edit"), ("keyward-user-3", "view")] {
        let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }))
        .expect("RoleBinding");
        Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(ns.client.clone(), &ns.name)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap_or_else(|e| panic!("bind {user} to {role}: {e}"));
    }
    wait_aggregated(&ns.client, "edit", "create").await;
    wait_aggregated(&ns.client, "view", "list").await;
    let editor = support::user_kubeconfig(2);
    let viewer = support::user_kubeconfig(3);

    let created =
        kubectl_apikey(&editor, &["-n", &ns.name, "create", "by-editor", "--scope", "orders.read"]).await.exits(0);
    created.never_shows_on_stderr(&ns.token_of("by-editor-apikey").await);
    assert_eq!(
        created.stdout.trim(),
        ns.token_of("by-editor-apikey").await,
        "the token printed is the one in the Secret"
    );

    let listed = kubectl_apikey(&viewer, &["-n", &ns.name, "list"]).await.exits(0);
    assert!(listed.rows_starting("by-editor").len() == 1, "a viewer lists keys:\n{listed}");
    kubectl_apikey(&viewer, &["-n", &ns.name, "deactivate", "by-editor"]).await.exits(5);
    kubectl_apikey(&viewer, &["-n", &ns.name, "create", "by-viewer"]).await.exits(5);
    assert!(ns.keys().get_opt("by-viewer").await.expect("get").is_none());
    kubectl_apikey(&editor, &["-n", &ns.name, "deactivate", "by-editor"]).await.exits(0);
    let key = ns.keys().get("by-editor").await.expect("get");
    let spec = serde_json::to_value(&key.spec).expect("JSON");
    assert_eq!(spec["state"], "Inactive", "the editor's deactivate was written: {spec}");
}

/// Waits until the clusterrole-aggregation controller has folded the chart's user roles into
/// the built-in ClusterRole `role`.
async fn wait_aggregated(client: &Client, role: &str, verb: &str) {
    wait_for(format!("ClusterRole {role} getting {verb} on apikeys by aggregation"), DEADLINE, || async {
        let current = Api::<ClusterRole>::all(client.clone()).get(role).await.expect("get the built-in role");
        current.rules.unwrap_or_default().iter().any(|rule| {
            rule.api_groups.as_ref().is_some_and(|g| g.iter().any(|g| g == "keyward.io"))
                && rule.resources.as_ref().is_some_and(|r| r.iter().any(|r| r == "apikeys"))
                && rule.verbs.iter().any(|v| v == verb)
        })
    })
    .await;
}

/// `kubectl-apikey` with `args` under `kubeconfig`, with the plugin tests' deadline.
async fn kubectl_apikey(kubeconfig: &Path, args: &[&str]) -> Run {
    CommandLine::new(PLUGIN).args(args).env("KUBECONFIG", kubeconfig).run().await
}

#[tokio::test]
async fn watch_namespaces_confine_the_controller_to_its_namespaces() {
    let watched = TestNamespace::new("chart-watched").await;
    let other = TestNamespace::new("chart-unwatched").await;
    let release = Release::install(&watched.name, &["--set", &format!("watchNamespaces={{{}}}", watched.name)]).await;
    let cluster_roles = Api::<ClusterRole>::all(watched.client.clone())
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={}", release.name)))
        .await
        .expect("list ClusterRoles");
    let names: Vec<String> = cluster_roles.items.iter().map(|role| role.name_any()).collect();
    assert!(names.is_empty(), "ClusterRoles were installed: {names:?}");
    let controller_id = release.identity("controller").await;
    let verifier_id = release.identity("verifier").await;

    other.create_key("outside", json!({})).await;
    let outside = Api::<ApiKey>::namespaced(controller_id.client.clone(), &other.name);
    assert_forbidden(outside.list(&ListParams::default()).await, "LIST ApiKeys in another namespace");
    assert_forbidden(outside.get("outside").await, "GET an ApiKey in another namespace");
    let status = Patch::Merge(json!({"status": {"phase": "Active"}}));
    assert_forbidden(outside.patch_status("outside", &PatchParams::default(), &status).await, "patch status elsewhere");
    let secrets = Api::<Secret>::namespaced(controller_id.client.clone(), &other.name);
    assert_forbidden(secrets.list(&ListParams::default()).await, "LIST Secrets in another namespace");
    let planted: Secret = serde_json::from_value(json!({"metadata": {"name": "outside-apikey"}})).expect("Secret");
    assert_forbidden(secrets.create(&PostParams::default(), &planted).await, "create a Secret in another namespace");
    assert_forbidden(
        Api::<ApiKey>::all(controller_id.client.clone()).list(&ListParams::default()).await,
        "LIST ApiKeys cluster-wide",
    );
    assert_forbidden(
        Api::<ApiKey>::namespaced(verifier_id.client.clone(), &other.name).list(&ListParams::default()).await,
        "the verifier LISTs ApiKeys in another namespace",
    );

    // In its namespace, the controller (started with --namespaces, as the chart does) works.
    let controller = release.run("controller", &controller_id, &watched.name, 0);
    let verifier = release.run("verifier", &verifier_id, &watched.name, 0);
    verifier.wait_ready().await;
    watched.create_key("inside", json!({})).await;
    watched.wait_phase("inside", Phase::Active).await;
    verifier.wait_code(&watched.token_of("inside-apikey").await, "VALID", DEADLINE).await;
    let untouched = other.keys().get("outside").await.expect("get").status;
    assert!(untouched.is_none(), "a key in an unwatched namespace got a status: {untouched:?}");
    assert!(!controller.logs().to_lowercase().contains("forbidden"), "{}", controller.logs());
}

#[tokio::test]
async fn the_controller_keeps_the_signing_secret_in_its_namespace_with_no_other_secret_there() {
    // The release namespace is not watched: only the signing-keys Role grants Secrets there.
    let release_ns = TestNamespace::new("chart-signing").await;
    let watched = TestNamespace::new("chart-signing-watched").await;
    let release =
        Release::install(&release_ns.name, &["--set", &format!("watchNamespaces={{{}}}", watched.name)]).await;
    let controller_id = release.identity("controller").await;
    let planted: Secret =
        serde_json::from_value(json!({"metadata": {"name": "database"}, "stringData": {"p": "x"}})).expect("Secret");
    release_ns.secrets().create(&PostParams::default(), &planted).await.expect("a Secret of someone else");

    let controller = release.run("controller", &controller_id, &watched.name, 0);
    let secret = release_ns
        .wait_secret("keyward-signing-keys", "created by the controller", |s| {
            s.type_.as_deref() == Some(keyward::signing::SECRET_TYPE)
        })
        .await;
    assert!(keyward::signing::KeySet::from_secret("keyward-signing-keys", &secret).is_ok());
    controller.wait_metric("keyward_signing_keys", "the key read", |n| n == Some(1.0)).await;
    assert!(!controller.logs().to_lowercase().contains("forbidden"), "{}", controller.logs());

    let secrets = Api::<Secret>::namespaced(controller_id.client.clone(), &release_ns.name);
    assert_forbidden(secrets.get("database").await, "GET another Secret in the release namespace");
    assert_forbidden(secrets.list(&ListParams::default()).await, "LIST Secrets in the release namespace");
    let mut other = release_ns.secrets().get("database").await.expect("get");
    other.metadata.managed_fields = None;
    assert_forbidden(secrets.replace("database", &PostParams::default(), &other).await, "update another Secret");
    assert_forbidden(
        secrets.delete("keyward-signing-keys", &Default::default()).await,
        "delete the signing Secret (it is never deleted)",
    );
    let by_name = ListParams::default().fields("metadata.name=keyward-signing-keys");
    assert_eq!(secrets.list(&by_name).await.expect("LIST by name is allowed").items.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// A Helm release of the chart, its release name the namespace's name, uninstalled on drop.
struct Release {
    name: String,
    namespace: String,
    /// The objects' name prefix (`<release>-keyward`).
    fullname: String,
    /// The chart's manifest as installed.
    objects: Vec<Value>,
    client: Client,
}

impl Release {
    /// Installs the chart. Its webhook configurations are cluster-wide and fail closed, and no
    /// pod runs here to answer them: unless a test asks for the webhook, it is left out, so that
    /// other tests' writes are not refused.
    async fn install(namespace: &str, values: &[&str]) -> Self {
        let name = namespace.to_string();
        let webhook_off = ["--set", "webhook.enabled=false"];
        let values: Vec<&str> = if values.iter().any(|v| v.starts_with("webhook.")) {
            values.to_vec()
        } else {
            values.iter().copied().chain(webhook_off).collect()
        };
        let install =
            helm(&[&["install", &name, CHART, "--namespace", namespace, "--timeout", "60s"], &values[..]].concat())
                .await;
        assert!(install.success(), "helm install failed:\n{install}");
        let manifest = helm(&["get", "manifest", &name, "--namespace", namespace]).await;
        assert!(manifest.success(), "helm get manifest:\n{manifest}");
        let objects = documents(&manifest.stdout);
        let client = support::client().await;
        Release { fullname: format!("{name}-keyward"), name, namespace: namespace.to_string(), objects, client }
    }

    /// A kubeconfig and a client that act as the chart's ServiceAccount of `component`, with a
    /// token from the TokenRequest API.
    async fn identity(&self, component: &str) -> Identity {
        let account = self.service_account(component);
        let request = TokenRequest {
            spec: TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() },
            ..Default::default()
        };
        let token = Api::<ServiceAccount>::namespaced(self.client.clone(), &self.namespace)
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("a token for ServiceAccount {account}: {e}"))
            .status
            .expect("a TokenRequest status")
            .token;
        Identity::new(&account, &token).await
    }

    /// The ServiceAccount the chart's Deployment of `component` runs as.
    fn service_account(&self, component: &str) -> String {
        let account = deployment(&self.objects, component)["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .expect("serviceAccountName")
            .to_string();
        assert!(
            of_kind(&self.objects, "ServiceAccount").iter().any(|sa| name(sa) == account),
            "the chart installs no ServiceAccount {account}"
        );
        account
    }

    /// Starts `keyward <component>` locally as the chart's Deployment would run it: its
    /// arguments and pod environment, as `identity`. The test sets --namespaces (the support
    /// code always passes it), --listen (a free local port) and text logs (it reads them).
    fn run(&self, component: &'static str, identity: &Identity, namespace: &str, replica: usize) -> Operator {
        let args: Vec<String> = container_args(&self.objects, component)
            .into_iter()
            .skip(1)
            .filter(|a| !["--namespaces", "--listen", "--log-format"].iter().any(|f| a.starts_with(f)))
            .collect();
        let watch = container_args(&self.objects, component).into_iter().find(|a| a.starts_with("--namespaces="));
        if let Some(watch) = watch {
            assert_eq!(watch, format!("--namespaces={namespace}"), "the chart watches other namespaces");
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pod = format!("{}-{component}-{replica}", self.fullname);
        let kubeconfig = identity.kubeconfig.path().to_str().expect("a UTF-8 path").to_string();
        Operator::run(
            component,
            namespace,
            &args,
            &[("KUBECONFIG", &kubeconfig), ("POD_NAME", &pod), ("POD_NAMESPACE", &self.namespace)],
        )
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        // Cluster-scoped objects outlive the namespace: uninstall them (best effort).
        let _ = std::process::Command::new(helm_path())
            .args(["uninstall", &self.name, "--namespace", &self.namespace, "--timeout", "30s"])
            .output();
    }
}

/// A ServiceAccount's token in a kubeconfig file of its own, and a client using it.
struct Identity {
    kubeconfig: tempfile::NamedTempFile,
    client: Client,
}

impl Identity {
    async fn new(account: &str, token: &str) -> Self {
        let admin = kube::config::Kubeconfig::read().expect("the tests' kubeconfig");
        let context = admin.current_context.clone().expect("a current context");
        let cluster = admin
            .contexts
            .iter()
            .find(|c| c.name == context)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .expect("the current context's cluster");
        let clusters: Vec<_> = admin.clusters.iter().filter(|c| c.name == cluster).collect();
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": clusters,
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": account, "context": {"cluster": cluster, "user": account}}],
            "current-context": account,
        });
        let yaml = serde_yaml::to_string(&config).expect("kubeconfig YAML");
        let kubeconfig = tempfile::NamedTempFile::new().expect("a kubeconfig file");
        std::fs::write(kubeconfig.path(), &yaml).expect("write the kubeconfig");
        let parsed = kube::config::Kubeconfig::from_yaml(&yaml).expect("parse the kubeconfig");
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(parsed, &options).await.expect("a config");
        let client = Client::try_from(config).expect("a client");
        // The API server checks the ServiceAccount in its informer cache, which may not hold a
        // new one yet: a bad token is a 401 even on /version, so wait for that to pass.
        wait_for(format!("the token of {account} accepted"), DEADLINE, || client.apiserver_version()).await;
        Identity { kubeconfig, client }
    }
}

/// The controller's rules as (API group, resource, verb).
fn controller_rules() -> BTreeSet<(String, String, String)> {
    let mut rules = BTreeSet::new();
    let mut grant = |group: &str, resources: &[&str], verbs: &[&str]| {
        for resource in resources {
            for verb in verbs {
                rules.insert((group.to_string(), resource.to_string(), verb.to_string()));
            }
        }
    };
    grant("keyward.io", &["apikeys", "credentials"], &["get", "list", "watch"]);
    grant("keyward.io", &["apikeys/status", "credentials/status"], &["patch"]);
    grant("keyward.io", &["apikeys/finalizers", "credentials/finalizers"], &["update"]);
    grant("", &["secrets"], &["get", "list", "watch", "create", "update", "patch", "delete"]);
    grant("events.k8s.io", &["events"], &["create", "patch"]);
    rules
}

/// The verifier's rules: read the keys; create, read and patch their KeyUsages (and their
/// status), as the contract says; nothing else.
fn verifier_rules() -> BTreeSet<(String, String, String)> {
    let mut rules = BTreeSet::new();
    for resource in ["apikeys", "credentials"] {
        for verb in ["get", "list", "watch"] {
            rules.insert(("keyward.io".to_string(), resource.to_string(), verb.to_string()));
        }
    }
    for resource in ["keyusages", "keyusages/status"] {
        for verb in ["get", "create", "patch"] {
            rules.insert(("keyward.io".to_string(), resource.to_string(), verb.to_string()));
        }
    }
    rules
}

/// A role's rules as (API group, resource, verb); fails on wildcards and non-resource URLs.
fn rules(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut found = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
        let strings = |field: &str| -> Vec<String> {
            rule[field]
                .as_array()
                .unwrap_or_else(|| panic!("{field} in {rule}"))
                .iter()
                .map(|v| v.as_str().expect("a string").to_string())
                .collect()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                for verb in strings("verbs") {
                    assert!(![&group, &resource, &verb].iter().any(|s| s.contains('*')), "a wildcard in {rule}");
                    found.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    found
}

/// Fails unless the API server refused the request with 403 (never prints what it answered:
/// it may be a Secret).
fn assert_forbidden<T>(result: kube::Result<T>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        Err(error) => panic!("{what}: expected 403 Forbidden, got {error}"),
        Ok(_) => panic!("{what}: expected 403 Forbidden, the request succeeded"),
    }
}

async fn list_allowed<K>(client: &Client, namespace: Option<&str>)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    if let Err(error) = api.list(&ListParams::default().limit(1)).await {
        panic!("LIST {} in {}: {error}", K::plural(&()), namespace.unwrap_or("every namespace"));
    }
}

/// `helm template` of the chart, as objects.
async fn render(release: &str, namespace: &str, values: &[&str]) -> Vec<Value> {
    let out = helm(&[&["template", release, CHART, "--namespace", namespace], values].concat()).await;
    assert!(out.success(), "helm template {values:?} failed:\n{out}");
    documents(&out.stdout)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("rendered YAML: {e}\n{yaml}")))
        .filter(|object| !object.is_null())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().expect("metadata.name")
}

fn names_of(objects: &[Value], kind: &str) -> BTreeSet<String> {
    of_kind(objects, kind).into_iter().map(|o| name(o).to_string()).collect()
}

fn named<'a>(objects: &'a [Value], kind: &str, wanted: &str) -> &'a Value {
    of_kind(objects, kind)
        .into_iter()
        .find(|o| name(o) == wanted)
        .unwrap_or_else(|| panic!("no {kind} {wanted}; {kind}s: {:?}", names_of(objects, kind)))
}

/// The Deployment of `component` (controller or verifier).
fn deployment<'a>(objects: &'a [Value], component: &str) -> &'a Value {
    let found: Vec<&Value> = of_kind(objects, "Deployment")
        .into_iter()
        .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == component)
        .collect();
    assert_eq!(found.len(), 1, "one {component} Deployment");
    found[0]
}

fn container_args(objects: &[Value], component: &str) -> Vec<String> {
    deployment(objects, component)["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string argument").to_string())
        .collect()
}

/// True when every label of `selector` is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

fn assert_selects(selector: &Value, labels: &Value, what: &str) {
    assert!(selects(selector, labels), "{what} selects {selector}, the pods carry {labels}");
}

fn chart_app_version() -> String {
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{CHART}/Chart.yaml")).expect("Chart.yaml"))
            .expect("Chart.yaml is YAML");
    chart["appVersion"].as_str().expect("appVersion").to_string()
}

/// Where `helm` is: on the PATH (`make test` puts the cached tools there), else the directory
/// `scripts/control-plane.sh tools` prints (it fetches them the first time).
fn helm_path() -> PathBuf {
    static HELM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HELM.get_or_init(|| {
        let on_path = std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("helm")).find(|f| f.is_file()));
        if let Some(helm) = on_path {
            return helm;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/control-plane.sh");
        let tools = std::process::Command::new(script).arg("tools").output().expect("run control-plane.sh tools");
        assert!(
            tools.status.success(),
            "control-plane.sh tools failed:\n{}{}",
            String::from_utf8_lossy(&tools.stdout),
            String::from_utf8_lossy(&tools.stderr)
        );
        let dir = String::from_utf8_lossy(&tools.stdout).lines().last().unwrap_or_default().trim().to_string();
        PathBuf::from(dir).join("helm")
    })
    .clone()
}

/// Runs helm with `args`, with a deadline.
async fn helm(args: &[&str]) -> Run {
    CommandLine::new(helm_path()).args(args).deadline(Duration::from_secs(120)).run().await
}
